"""The demo's governance phase: issue 11's five outcomes against the demo's own registry.

`run_governance_phase(home, say)` works on the registry and artifact store under `home`
(the demo home after its last phase, or any fresh directory) with its own models, so it
never touches the fleet's:

1. `counters_ranker` (STATE_SNAPSHOT, a SQLite counter table): v2 enters CANARY (the entry
   snapshot), writes counters, is rolled back; the table is restored and the writes after
   the snapshot's cursor are counted and reverted.
2. `credit_scorer` (IRREVERSIBLE, feeds the feature `credit_score`): v2 is promoted, then
   rolled back; the five-step report is written, `limit_setter` (whose contract reads
   `credit_score`) is marked NEEDS_RETRAIN, and `risk_index` (an index built from its
   outputs) gets its pre-promotion snapshot back.
3. `checkout_ranker`: a break-glass deploy on two signed senior approvals; its postmortem
   ticket waits in the outbox while the local receiver is down and arrives once it is up.
4. A forged approval of the L3 `limit_setter` is refused with the registry's one line.
5. `limit_setter@1` (L3): its Article 11 technical documentation, from records alone.

Every rollback goes through `modelops.rollback.run_rollback`, the rollback job's own body,
and its report through the job's `report_events`, so the figures are the job's. Nothing is
trained and no serving plane is needed: versions are small blobs in the artifact store,
and the cutover is the registry's (the serving-plane pass is the same for every class).

`python -m demo.governance_phase --home DIR` runs it alone on a fresh directory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from modelops.artifacts import LocalArtifactStore
from modelops.contracts import Feature, FeatureContract
from modelops.errors import ModelopsError, SignatureRefused
from modelops.identity import SignedKind, SignedStatement, SigningKey, generate_signing_key
from modelops.registry import Registry
from modelops.spec import (
    CodeRef,
    DecisionPolicy,
    Framework,
    ModelClass,
    ModelSpec,
    RollbackClass,
    State,
    Tier,
    VersionMeta,
)
from modelops.state_stores import SqlTableStoreSpec

__all__ = ["GovernancePhaseFailed", "MODELS", "run_governance_phase", "main"]

S = State
MODELS = ("counters_ranker", "risk_index", "limit_setter", "credit_scorer", "checkout_ranker")
CANARY_WRITES = 37
"""Application writes to the counter table while v2 is in canary (after the snapshot)."""
INDEX_WRITES = 12
"""Rows of risk_index rewritten from credit_scorer v2's outputs after its promotion."""

# name: (team, role). The L3 model needs one approver outside its owning team (risk).
PEOPLE = {
    "rank-oncall": ("ranking", "engineer"),
    "rank-lead": ("ranking", "engineer"),
    "risk-eng": ("risk", "engineer"),
    "risk-lead": ("risk", "engineer"),
    "model-risk-officer": ("model-risk", "engineer"),
    "sre-a": ("ranking", "senior"),
    "sre-b": ("risk", "senior"),
}


class GovernancePhaseFailed(ModelopsError):
    """An outcome of the governance phase was not what the registry should have produced."""


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise GovernancePhaseFailed(f"phase 'governance': {what}")


class _Receiver(BaseHTTPRequestHandler):
    """The postmortem webhook: records each POSTed ticket."""

    got: list[dict[str, Any]]

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.got.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class _Phase:
    def __init__(
        self, home: Path, say: Callable[[str], None], dagster_home: Path | None = None
    ) -> None:
        self.home = home
        self.say = say
        self.dagster_home = dagster_home if dagster_home is not None else home / "dagster"
        self.work = home / "governance"
        self.work.mkdir(parents=True, exist_ok=True)
        self.reg = Registry(f"sqlite:///{home / 'registry.db'}")
        self.store = LocalArtifactStore(home / "artifacts")
        self.keys: dict[str, SigningKey] = {}

    # -- records ------------------------------------------------------------------------

    def setup(self) -> None:
        known = set(self.reg.list_models())
        taken = [m for m in MODELS if m in known]
        if taken:
            raise GovernancePhaseFailed(
                f"phase 'governance': {', '.join(taken)} already in the registry at {self.home}; "
                "allowed: a home without these models (a fresh directory)"
            )
        for name, (team, role) in PEOPLE.items():
            self.reg.add_team(team, actor="demo")
            self.keys[name] = generate_signing_key()
            self.reg.enroll_actor(
                name, team, role=role, public_key=self.keys[name].public_key, actor="demo"
            )
        for name, kind in (("applications", "dataset"), ("applications-eval", "eval_set")):
            path = self.work / f"{name}-v1.parquet"
            path.write_bytes(hashlib.sha256(name.encode()).digest() * 64)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            self.reg.register_dataset(
                name, 1, path.as_uri(), kind=kind, content_hash=digest, actor="demo"
            )

    def spec(self, model_id: str, team: str, tier: Tier, cls: RollbackClass, **kw: Any) -> None:
        self.reg.create_model(
            ModelSpec(
                model_id=model_id,
                owner_team=team,
                tier=tier,
                rollback_class=cls,
                model_class=ModelClass.dnn,
                framework=Framework.onnx,
                policy=DecisionPolicy(primary_metric="auc"),
                **kw,
            ),
            actor="demo",
        )

    def version(self, model_id: str, n: int, contract: str | None = None) -> int:
        """Register a small weights blob as a version and pass its offline gates."""
        ref = self.store.put_bytes(f"{model_id} weights v{n}\n".encode() * 16)
        meta = VersionMeta(
            training_code_version=CodeRef(
                repo="git@example.org:ml/models", commit_sha=f"{n:07d}", path=f"{model_id}.py"
            ),
            eval_metrics={"auc": 0.80 + n / 100},
            eval_slice_metrics={"global": {"auc": 0.80 + n / 100}},
        )
        v = self.reg.register_version(
            model_id,
            weights_hash=ref.sha256,
            weights_uri=ref.uri,
            training_run_id=f"{model_id}-train-{n}",
            training_data="applications@1",
            eval_set="applications-eval@1",
            feature_contract_ref=contract,
            parent=n - 1 if n > 1 else None,
            meta=meta,
            actor="trainer",
        ).version
        self.reg.record_gate_result(
            model_id, v, passed=True, results={"auc": 0.80 + n / 100}, actor="gates"
        )
        return v

    def approve(self, model_id: str, v: int, who: str, target: State) -> None:
        self.reg.approve(model_id, v, actor=who, key=self.keys[who], target=target)

    def move(self, model_id: str, v: int, target: State, actor: str, **kw: Any) -> None:
        self.reg.transition(
            model_id, v, target, actor=actor, expected=self.reg.state_of(model_id, v), **kw
        )

    # -- 1. STATE_SNAPSHOT --------------------------------------------------------------

    def state_snapshot(self) -> dict[str, Any]:
        from modelops.rollback import enter_with_snapshots, run_rollback

        m = "counters_ranker"
        db = self.work / "counters.db"
        app = sqlite3.connect(db, isolation_level=None, timeout=30)
        app.execute("CREATE TABLE counters (user_id INTEGER PRIMARY KEY, clicks INTEGER)")
        app.executemany("INSERT INTO counters VALUES (?, ?)", [(u, u % 17) for u in range(500)])
        store = SqlTableStoreSpec(name="counters", url=f"sqlite:///{db}", table="counters")
        self.spec(
            m, "ranking", Tier.L1, RollbackClass.STATE_SNAPSHOT,
            description="ranks items using per-user click counters it keeps in a SQL table",
            intended_purpose="orders a user's feed; no decision about a person",
            state_stores=[store],
        )  # fmt: skip
        v1 = self.version(m, 1)
        self.move(m, v1, S.PROMOTED, "rank-oncall", reason="first version")
        v2 = self.version(m, 2)
        for st in (S.APPROVED_SHADOW, S.SHADOW, S.APPROVED_CANARY):
            self.move(m, v2, st, "rank-oncall")
        before = _rows(app, "counters")
        enter_with_snapshots(self.reg, self.store, m, v2, S.CANARY, actor="rank-oncall", percent=5)
        [snap] = self.reg.snapshots_of(m, v2)
        self.say(
            f"gov       {m} v2 -> CANARY 5%: entry snapshot {snap.sha256[:12]} of "
            f"counters ({len(before)} rows)"
        )
        rng = random.Random(11)
        for i in range(CANARY_WRITES):  # the canary's own writes, through the app's connection
            if i % 6 == 5:
                app.execute("INSERT INTO counters VALUES (?, ?)", (10_000 + i, 1))
            elif i % 9 == 8:
                app.execute("DELETE FROM counters WHERE user_id = ?", (rng.randrange(250, 500),))
            else:
                app.execute(
                    "UPDATE counters SET clicks = clicks + 1 WHERE user_id = ?",
                    (rng.randrange(0, 40),),
                )
        report = run_rollback(
            self.reg, self.store, m, v2, actor="rank-oncall", expected=S.CANARY,
            reason="v2 canary inflates counters",
        )  # fmt: skip
        after = _rows(app, "counters")
        app.close()
        [st] = report.state
        _check(after == before, f"{m}: the counter table differs from its pre-canary rows")
        _check(
            st.writes_after_cursor == CANARY_WRITES,
            f"{m}: {st.writes_after_cursor} writes reverted, {CANARY_WRITES} were made",
        )
        keys = [json.loads(k)["user_id"] for k in st.keys_after_cursor]
        shown = ", ".join(map(str, keys[:8])) + (", ..." if len(keys) > 8 else "")
        self.say(
            f"outcome   {m} v2 rolled back: state restored from snapshot "
            f"{st.snapshot_sha256[:12]}, {st.writes_after_cursor} writes after the cursor "
            f"reverted ({len(keys)} keys: user_id {shown}); restore {st.elapsed_s} s "
            f"({st.mode}), hash verified; table == pre-canary rows ({len(after)})"
        )
        return {
            "model": m,
            "version": v2,
            "snapshot": st.snapshot_sha256,
            "writes_reverted": st.writes_after_cursor,
            "keys": keys,
            "restore_s": st.elapsed_s,
            "mode": st.mode,
            "rows_restored_equal": after == before,
            "rollback_report": f"rollback_reports/{report.id}",
        }

    # -- 2. IRREVERSIBLE, with 4. the forged approval -------------------------------------

    def irreversible(self) -> tuple[dict[str, Any], dict[str, Any]]:
        from modelops.rollback import enter_with_snapshots, run_rollback

        db = self.work / "risk_index.db"
        index = sqlite3.connect(db, isolation_level=None, timeout=30)
        index.execute("CREATE TABLE risk_index (item INTEGER PRIMARY KEY, vec TEXT)")
        index.executemany(
            "INSERT INTO risk_index VALUES (?, ?)", [(i, f"v1-{i}") for i in range(200)]
        )
        self.spec(
            "risk_index", "risk", Tier.L1, RollbackClass.STATE_SNAPSHOT,
            description="a retrieval index of applicants built from credit_scorer's outputs",
            intended_purpose="finds similar past applications for a human reviewer",
            state_stores=[
                SqlTableStoreSpec(name="index", url=f"sqlite:///{db}", table="risk_index")
            ],
        )  # fmt: skip
        self.spec(
            "limit_setter", "risk", Tier.L3, RollbackClass.STATELESS,
            description="proposes a credit limit from the applicant's credit score",
            intended_purpose=(
                "proposes credit limits for existing customers; a human reviews every decline"
            ),
        )  # fmt: skip
        contract = self.reg.register_contract(
            FeatureContract(
                name="limit_setter.features",
                version=1,
                features=[
                    Feature(name="credit_score", dtype="float32"),
                    Feature(name="income_band", dtype="string"),
                ],
            ),
            actor="demo",
        )
        self.spec(
            "credit_scorer", "risk", Tier.L2, RollbackClass.IRREVERSIBLE,
            description="scores applications; the score is a feature other models read",
            intended_purpose="scores credit applications for the limit setter and reviewers",
            downstream_dependents=["limit_setter", "risk_index"],
            feeds_features=["credit_score"],
        )  # fmt: skip
        ri = self.version("risk_index", 1)
        self.move("risk_index", ri, S.PROMOTED, "risk-eng", reason="first version")

        # The L3 model: a forged approval first, then the two genuine ones.
        ls = self.version("limit_setter", 1, contract=contract)
        forged = self.forged_approval("limit_setter", ls)
        for who in ("risk-lead", "model-risk-officer"):
            self.approve("limit_setter", ls, who, S.PROMOTED)
        self.move("limit_setter", ls, S.PROMOTED, "risk-eng", reason="reviewed: limits v1")
        self.say(
            "gov       limit_setter v1 (L3) PROMOTED: 2 signed approvals (risk-lead, "
            "model-risk-officer), documentation gate passed"
        )

        m = "credit_scorer"
        v1 = self.version(m, 1)
        self.approve(m, v1, "risk-lead", S.PROMOTED)
        self.override(m, v1)
        self.move(m, v1, S.PROMOTED, "risk-eng", reason="first version")
        v2 = self.version(m, 2)
        for st in (S.APPROVED_SHADOW, S.SHADOW):
            self.move(m, v2, st, "risk-eng")
        self.approve(m, v2, "risk-lead", S.APPROVED_CANARY)
        self.move(m, v2, S.APPROVED_CANARY, "risk-eng")
        index_before = _rows(index, "risk_index")
        enter_with_snapshots(self.reg, self.store, m, v2, S.CANARY, actor="risk-eng", percent=5)
        self.approve(m, v2, "risk-lead", S.PROMOTED)
        self.override(m, v2)
        self.move(m, v2, S.PROMOTED, "risk-eng", reason="canary healthy")
        for i in range(INDEX_WRITES):  # the index is rebuilt from v2's scores
            index.execute(
                "INSERT INTO risk_index VALUES (?, ?) ON CONFLICT(item) DO UPDATE SET "
                "vec = excluded.vec",
                (i * 7 if i < 9 else 1000 + i, f"v2-{i}"),
            )
        self.say(
            f"gov       {m} v2 PROMOTED (IRREVERSIBLE: signed approval + override); its scores "
            f"feed credit_score; risk_index rebuilt from them ({INDEX_WRITES} writes)"
        )
        report = run_rollback(
            self.reg, self.store, m, v2, actor="risk-eng", expected=S.PROMOTED,
            reason="v2 shifted approval rates for thin-file applicants",
        )  # fmt: skip
        index_after = _rows(index, "risk_index")
        index.close()
        md_uri, json_uri = self.report_artifacts(report)
        marks = self.reg.needs_retrain("limit_setter")
        [ds] = report.downstream_state
        w = report.decay_window or {}
        _check(report.cutover.restored_version == v1, f"{m}: v{v1} is not back after the rollback")
        _check([d["model_id"] for d in report.needs_retrain] == ["limit_setter"], "no mark")
        _check(len(marks) == 1, "limit_setter is not marked NEEDS_RETRAIN in the registry")
        _check(index_after == index_before, "risk_index differs from its pre-promotion rows")
        _check(ds.writes_after_cursor == INDEX_WRITES, "risk_index writes miscounted")
        self.say(
            f"outcome   {m} v2 rolled back (IRREVERSIBLE), five-step report "
            f"rollback_reports/{report.id}: {self.home / 'rollback_reports' / report.id}"
            "/REPORT.md"
        )
        self.say(
            f"            1 cutover v2 -> v{report.cutover.restored_version} in "
            f"{report.cutover.total_s} s (registry)"
        )
        feats = ", ".join(f["feature"] for f in report.contaminated_features)
        self.say(f"            2 {feats} flagged contaminated since v2's promotion (no action)")
        self.say(
            "            3 limit_setter marked NEEDS_RETRAIN, not rolled back (modelops show "
            "limit_setter)"
        )
        self.say(
            f"            4 risk_index/index restored to its pre-promotion snapshot: "
            f"{ds.writes_after_cursor} writes reverted"
        )
        self.say(
            f"            5 decay window: thresholds relaxed x{w.get('relax_factor')} for "
            f"{w.get('days')} days"
        )
        return forged, {
            "model": m,
            "version": v2,
            "restored_version": report.cutover.restored_version,
            "cutover_s": report.cutover.total_s,
            "rollback_report": f"rollback_reports/{report.id}",
            "report_markdown": _path(md_uri),
            "report_copy": str(self.home / "rollback_reports" / report.id / "REPORT.md"),
            "report_json": _path(json_uri),
            "contaminated_features": [f["feature"] for f in report.contaminated_features],
            "needs_retrain": [mk.model_id for mk in marks],
            "downstream_restored": {
                f"{ds.owner_model}/{ds.store}": ds.writes_after_cursor,
            },
            "index_equal_pre_promotion": index_after == index_before,
            "decay_window": w,
        }

    def override(self, model_id: str, v: int) -> None:
        self.reg.override(
            model_id,
            v,
            actor="model-risk-officer",
            key=self.keys["model-risk-officer"],
            reason="irreversible effects reviewed with risk",
        )

    def forged_approval(self, model_id: str, v: int) -> dict[str, Any]:
        """An approval signed with a key that is not the named approver's, presented under
        that approver's key id: the registry must refuse it and write nothing."""
        target, epoch = self.reg.approval_subject(model_id, v, target=S.PROMOTED)
        mallory = generate_signing_key()
        signed = self.reg.sign_as(
            mallory, kind=SignedKind.approval, signer="model-risk-officer", epoch=epoch,
            model=model_id, version=v, slice="global", target_state=target.value,
        )  # fmt: skip
        posing = SignedStatement(
            payload=signed.payload,
            key_id=self.keys["model-risk-officer"].key_id,
            signature=signed.signature,
        )
        rows = self.reg.row_counts()
        try:
            self.reg.approve(model_id, v, statement=posing)
        except SignatureRefused as exc:
            line = " ".join(str(exc).split())
        else:
            raise GovernancePhaseFailed(
                f"phase 'governance': a forged approval of {model_id} counted"
            )
        _check(self.reg.row_counts() == rows, "the refused forged approval left rows behind")
        self.say(f"outcome   forged approval refused: {line}")
        return {"model": model_id, "version": v, "refused": line, "rows_written": 0}

    def report_artifacts(self, report: Any) -> tuple[str, str]:
        """The job's own materialization of the report: content-addressed markdown and JSON
        in the artifact store; recorded on the home's Dagster instance when it has one."""
        from jobs.rollback_job import report_events

        events = report_events(report, self.store)
        meta = events[0].metadata
        dagster_home = self.dagster_home
        if (dagster_home / "dagster.yaml").exists():
            import dagster as dg

            with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
                for ev in events:
                    instance.report_runless_asset_event(ev)
        md, js = (getattr(meta[k], "value", meta[k]) for k in ("markdown_uri", "json_uri"))
        # A readable copy beside the home's docs/; the artifact store keeps the original.
        out = self.home / "rollback_reports" / report.id
        out.mkdir(parents=True, exist_ok=True)
        (out / "REPORT.md").write_text(report.markdown())
        return str(md), str(js)

    # -- 3. break-glass -------------------------------------------------------------------

    def break_glass(self) -> dict[str, Any]:
        m = "checkout_ranker"
        self.spec(
            m, "ranking", Tier.L2, RollbackClass.STATELESS,
            description="ranks checkout recommendations",
            intended_purpose="orders add-on offers at checkout; no decision about a person",
        )  # fmt: skip
        v1 = self.version(m, 1)
        self.approve(m, v1, "rank-lead", S.PROMOTED)
        self.move(m, v1, S.PROMOTED, "rank-oncall", reason="first version")
        v2 = self.version(m, 2)
        why = "v1 breaks checkout for app users"

        def sign(who: str) -> Any:
            return self.reg.sign_break_glass(m, v2, self.keys[who], signer=who, reason=why)

        res = self.reg.break_glass(
            m, v2, statement=sign("rank-oncall"), approvals=[sign("sre-a"), sign("sre-b")]
        )
        _check(self.reg.state_of(m, v2) is S.PROMOTED, f"{m} v2 is not PROMOTED")
        self.say(
            f"outcome   {m} v2 break-glass: {res.from_state.value} -> PROMOTED, shadow and canary "
            f"skipped; approvers {', '.join(res.approvers)} (signed, senior); heightened "
            f"monitoring until {res.heightened_until:%Y-%m-%d %H:%M} UTC; postmortem ticket "
            f"#{res.ticket_id} in the outbox"
        )
        with socket.socket() as s:  # a port nobody listens on yet
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}/tickets"
        down = self.reg.deliver_outbox(url, timeout_s=2)
        self.say(
            f"gov       receiver down: delivered {down[0]}, pending {down[1]} (kept for retry)"
        )
        server = HTTPServer(("127.0.0.1", port), _Receiver)
        server.got = []  # type: ignore[attr-defined]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            t0 = time.monotonic()
            attempts = 0
            delivered = 0
            while delivered == 0 and time.monotonic() - t0 < 15:
                time.sleep(0.5)  # the outbox's backoff: the next attempt is due after 2 s
                attempts += 1
                delivered, _ = self.reg.deliver_outbox(url, timeout_s=5)
            again = self.reg.deliver_outbox(url, timeout_s=5)
        finally:
            server.shutdown()
            server.server_close()
        got = [t for t in server.got if t.get("outbox_id") == res.ticket_id]  # type: ignore[attr-defined]
        _check(len(got) == 1 and again == (0, 0), f"ticket #{res.ticket_id} received {len(got)}x")
        self.say(
            f"outcome   postmortem ticket #{res.ticket_id} arrived once the receiver was up "
            f"({time.monotonic() - t0:.1f} s later, on the outbox's retry); received exactly "
            "once (the next delivery sent nothing)"
        )
        return {
            "model": m,
            "version": v2,
            "from_state": res.from_state.value,
            "approvers": res.approvers,
            "heightened_until": res.heightened_until.isoformat(),
            "ticket_id": res.ticket_id,
            "ticket": got[0],
            "received": len(got),
            "while_down": list(down),
        }

    # -- 5. Article 11 ------------------------------------------------------------------

    def article11(self) -> dict[str, Any]:
        from modelops.compliance import build_document, write_document

        m, v = "limit_setter", 1
        doc = build_document(self.reg, m, v)
        md, js = write_document(doc, self.home / "docs" / m / f"v{v}")
        gaps = [f"§{g.section} {g.record}" for g in doc.gaps]
        self.say(
            f"outcome   Article 11 documentation of {m}@{v} (L3): {md}; {len(doc.gaps)} gap(s), "
            f"{len(doc.required_gaps)} in required sections"
            + (f" ({'; '.join(gaps)})" if gaps else "")
        )
        return {
            "model": m,
            "version": v,
            "markdown": str(md),
            "json": str(js),
            "sections": [s.title for s in doc.sections],
            "gaps": gaps,
            "required_gaps": len(doc.required_gaps),
        }


def _rows(conn: sqlite3.Connection, table: str) -> dict[int, Any]:
    return dict(conn.execute(f"SELECT * FROM {table}").fetchall())  # noqa: S608 - our table


def _path(uri: str) -> str:
    return uri.removeprefix("file://")


def run_governance_phase(
    home: Path, say: Callable[[str], None], *, dagster_home: Path | None = None
) -> dict[str, Any]:
    """Issue 11's five outcomes against the registry at `home`; returns them for the
    demo's result JSON. Raises GovernancePhaseFailed naming an outcome that did not hold.

    `make demo` gives it a registry of its own beside the fleet's (the controller serves every
    desired state in a registry, and these versions are not servable models), so it can run
    while the fleet's refresh is under way; `dagster_home` is the instance its rollback
    reports are recorded on (default `<home>/dagster`)."""
    t0, c0 = time.monotonic(), time.process_time()
    home = Path(home).resolve()
    say("phase 5   governance: STATE_SNAPSHOT and IRREVERSIBLE rollbacks, break-glass, "
        "a forged approval, Article 11 documentation")  # fmt: skip
    phase = _Phase(home, say, dagster_home)
    try:
        phase.setup()
        out: dict[str, Any] = {"state_snapshot": phase.state_snapshot()}
        forged, out["irreversible"] = phase.irreversible()
        out["break_glass"] = phase.break_glass()
        out["forged_approval"] = forged
        out["article11"] = phase.article11()
    finally:
        phase.reg.close()
    out["elapsed_s"] = round(time.monotonic() - t0, 1)
    out["cpu_s"] = round(time.process_time() - c0, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m demo.governance_phase", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--home", type=Path, required=True, help="a fresh directory (or a demo home)")
    args = ap.parse_args(argv)
    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {msg}", flush=True)

    args.home.mkdir(parents=True, exist_ok=True)
    try:
        out = run_governance_phase(args.home, say)
    except ModelopsError as exc:
        print(f"governance phase failed: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    (args.home / "governance-result.json").write_text(json.dumps(out, indent=2, default=str))
    say(f"done in {out['elapsed_s']} s ({out['cpu_s']} s CPU); {args.home}/governance-result.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
