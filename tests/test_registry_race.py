"""Invariant 4 under real concurrency: OS processes, each with its own Registry, racing on
one (model, slice), on SQLite and on PostgreSQL.

Whatever the interleaving, every transition must be won by exactly one process, the losers
must get ConflictError, and the audit log must record exactly the transitions that the
processes saw succeed.

Starting a process costs about a second of CPU here (interpreter, SQLAlchemy, pydantic),
so one set of eight processes runs every phase, each phase on its own model and each
started together at a barrier: (a) one compare-and-set tried by all, (b) the L1 ladder,
(c) the L0 ladder with its skips. A second set drives the `modelops` command line the same
way: a bare rollback, a named rollback, and a canary walked with `--expect-percent`.

No wait here has a deadline that could decide a run: on a loaded machine eight interpreters
starting and a few hundred CLI calls can take minutes, and that is slowness, not a failure.
The parent instead watches the children: one that crashes or dies breaks the barrier for
the others, and the test fails at once with what happened. Only the test timeout bounds a
hang.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import traceback
from collections import Counter
from collections.abc import Callable
from queue import Empty
from typing import Any

from test_registry_kit import bootstrap_prod, new_model, version

from modelops.cli import main as cli_main
from modelops.errors import ConflictError, ModelopsError
from modelops.registry import Registry
from modelops.spec import State, Tier

S = State
SLICE = "global"
PROCS = 8
MAX_ATTEMPTS = 60
POLL_S = 0.2  # how often the parent looks for a dead child while it waits for results
# Longer than the test timeout (pyproject: 600 s), so it never decides a run: it only lets
# racers orphaned by a killed parent exit instead of waiting at the barrier forever.
ORPHAN_S = 900
CAS_MODEL, L1_MODEL, L0_MODEL = "cas", "ladder-l1", "ladder-l0"

# The ladder each racer walks a version along: (state, percent) -> (target, percent).
NEXT: dict[tuple[State, int | None], tuple[State, int | None]] = {
    (S.OFFLINE_PASSED, None): (S.APPROVED_SHADOW, None),
    (S.APPROVED_SHADOW, None): (S.SHADOW, None),
    (S.SHADOW, 100): (S.APPROVED_CANARY, None),
    (S.APPROVED_CANARY, None): (S.CANARY, 1),
    (S.CANARY, 1): (S.CANARY, 5),
    (S.CANARY, 5): (S.CANARY, 10),
    (S.CANARY, 10): (S.PROMOTED, None),
}
# At L0 the racers take these skips: version -> the state it is promoted straight from.
L0_SKIPS: dict[int, State] = {3: S.OFFLINE_PASSED, 4: S.SHADOW}
LADDER_VERSIONS = [2, 3, 4]  # version 1 is the bootstrapped prod

Win = tuple[int, str, int | None, str, int | None, str]  # v, from, %, to, %, actor


def next_step(v: int, st: State, pct: int | None, tier: str) -> tuple[State, int | None]:
    if tier == "L0" and L0_SKIPS.get(v) is st:
        return S.PROMOTED, None
    return NEXT[(st, pct)]


# ---------------------------------------------------------------------------- in the children


def _cas_once(reg: Registry, actor: str) -> tuple[str, Any]:
    try:
        res = reg.transition(CAS_MODEL, 2, S.SHADOW, actor=actor, expected=S.APPROVED_SHADOW)
    except ConflictError as e:
        return ("conflict", str(e))
    return ("won", res.audit_id)


def _ladder(reg: Registry, actor: str, model: str, tier: str) -> dict[str, Any]:
    """Read the first unfinished version, try its next step as a compare-and-set; repeat."""
    wins: list[Win] = []
    conflicts = 0
    refusals: list[str] = []
    for _ in range(MAX_ATTEMPTS):
        current = None
        for v in LADDER_VERSIONS:
            mv = reg.get_version(model, v)
            st = mv.state[SLICE]
            if st not in (S.PROMOTED, S.DEPRECATED):
                pct = {S.CANARY: mv.canary_percent.get(SLICE), S.SHADOW: 100}.get(st)
                current = (v, st, pct)
                break
        if current is None:
            break
        v, st, pct = current
        target, tpct = next_step(v, st, pct, tier)
        try:
            reg.transition(
                model,
                v,
                target,
                actor=actor,
                expected=st,
                expected_percent=pct if st is S.CANARY else None,
                percent=tpct,
                automated=True,
            )
        except ConflictError:
            conflicts += 1
            continue
        except ModelopsError as e:
            refusals.append(f"{v} {st.value} -> {target.value}: {e}")
            continue
        wins.append((v, st.value, pct, target.value, tpct, actor))
    return {"wins": wins, "conflicts": conflicts, "refusals": refusals}


def _racer(url: str, barrier: Any, queue: Any, idx: int) -> None:
    """One OS process with its own Registry; reports every phase, or its traceback."""
    try:
        actor = f"racer-{idx}"
        out: dict[str, Any] = {}
        with Registry(url) as reg:
            barrier.wait(ORPHAN_S)
            out["cas"] = _cas_once(reg, actor)
            barrier.wait(ORPHAN_S)
            out["l1"] = _ladder(reg, actor, L1_MODEL, "L1")
            barrier.wait(ORPHAN_S)
            out["l0"] = _ladder(reg, actor, L0_MODEL, "L0")
        queue.put(("ok", out))
    except BaseException:  # noqa: BLE001 - the parent fails the test with it
        queue.put(("crash", traceback.format_exc()))


def race(url: str, racer: Callable[..., None] = _racer) -> list[dict[str, Any]]:
    """Run PROCS racers to the end and return what each reported.

    A racer reports ("ok", results) or ("crash", traceback). The first crash, or a racer
    that exits without a report, aborts the barrier so that no racer waits for it forever.
    """
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCS)
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=racer, args=(url, barrier, queue, i), daemon=True) for i in range(PROCS)
    ]
    for p in procs:
        p.start()
    results: list[tuple[str, Any]] = []

    def take(report: tuple[str, Any]) -> None:
        results.append(report)
        if report[0] == "crash":
            barrier.abort()  # the others fail fast instead of waiting at the barrier

    try:
        while len(results) < PROCS:
            try:
                take(queue.get(timeout=POLL_S))
            except Empty:
                # A racer's report is in the pipe before it exits: count the exits, then
                # drain; fewer reports than exits means one died without reporting.
                exited = [p.exitcode for p in procs if p.exitcode is not None]
                with contextlib.suppress(Empty):
                    while len(results) < PROCS:
                        take(queue.get_nowait())
                if len(results) < len(exited):
                    barrier.abort()
                    raise AssertionError(
                        f"a racer died without reporting; exit codes {exited}, reports {results}"
                    ) from None
    finally:
        for p in procs:
            if len(results) == PROCS:
                p.join()  # each reported, so each is on its way out
            else:
                p.join(timeout=5)  # the test is failing already: do not wait on stragglers
                if p.is_alive():
                    p.kill()
    crashes = [r for kind, r in results if kind == "crash"]
    assert not crashes, "\n".join(crashes)
    assert [p.exitcode for p in procs] == [0] * PROCS
    return [r for _, r in results]


RB_BARE, RB_NAMED, WALK = "rb-bare", "rb-named", "walk"


def _cli(url: str, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main(["--registry", url, *argv])
        except SystemExit as exc:  # a usage error
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def _walk(url: str, actor: str) -> dict[str, Any]:
    """Step the canary one percent up from what `show` says, until 10%, as the CLI user would."""
    wins: list[tuple[int, int]] = []
    other: list[tuple[int, str, str]] = []
    conflicts = 0
    for _ in range(MAX_ATTEMPTS):
        code, out, err = _cli(url, "show", f"{WALK}@2", "--json")
        if code != 0:
            other.append((code, out, err))
            break
        pct = json.loads(out)["canary_percent"][SLICE]
        if pct >= 10:
            break
        code, out, err = _cli(
            url, "transition", WALK, "2", "CANARY", "--percent", str(pct + 1),
            "--expect", "CANARY", "--expect-percent", str(pct), "--actor", actor,
        )  # fmt: skip
        if code == 0:
            wins.append((pct, pct + 1))
        elif code == 1 and err.startswith("error: conflict:"):
            conflicts += 1
        else:
            other.append((code, out, err))
    return {"wins": wins, "conflicts": conflicts, "other": other}


def _cli_racer(url: str, barrier: Any, queue: Any, idx: int) -> None:
    try:
        actor = f"racer-{idx}"
        out: dict[str, Any] = {}
        barrier.wait(ORPHAN_S)
        out["bare"] = _cli(url, "rollback", RB_BARE, "--actor", actor)
        barrier.wait(ORPHAN_S)
        out["named"] = _cli(url, "rollback", RB_NAMED, "--version", "2", "--actor", actor)
        barrier.wait(ORPHAN_S)
        out["walk"] = _walk(url, actor)
        queue.put(("ok", out))
    except BaseException:  # noqa: BLE001 - the parent fails the test with it
        queue.put(("crash", traceback.format_exc()))


# ---------------------------------------------------------------------------- in the parent


def expected_path(v: int, tier: str) -> list[tuple[str, str, int | None]]:
    """(from, to, percent as audited) for every step of version v's walk."""
    path = []
    st, pct = S.OFFLINE_PASSED, None
    while st is not S.PROMOTED:
        target, tpct = next_step(v, st, pct, tier)
        audited = 100 if target is S.SHADOW else tpct
        path.append((st.value, target.value, audited))
        st, pct = target, audited
    return path


def replay(entries: list[Any]) -> dict[int, State]:
    """The state each version ends in, according to the audit log alone."""
    state: dict[int, State] = {}
    for e in entries:
        if e.action == "register_version":
            state[e.version] = S.REGISTERED
        elif e.action in ("gate_result", "transition", "rollback"):
            state[e.version] = S(e.payload["to"])
            if e.payload.get("deprecated") is not None:
                state[e.payload["deprecated"]] = S.DEPRECATED
    return state


def check_cas(reg: Registry, results: list[tuple[str, Any]], seq_before: int) -> None:
    won = [r for kind, r in results if kind == "won"]
    lost = [r for kind, r in results if kind == "conflict"]
    assert (len(won), len(lost)) == (1, PROCS - 1), results
    for msg in lost:
        assert "cas@2 on slice 'global' is SHADOW (100%), not APPROVED_SHADOW as expected" in msg
    new = reg.audit_entries(CAS_MODEL)[seq_before:]
    assert [(e.id, e.action, e.payload["to"]) for e in new] == [(won[0], "transition", "SHADOW")]
    assert reg.state_of(CAS_MODEL, 2) is S.SHADOW
    shadow = reg.desired_state(CAS_MODEL).shadow
    assert shadow is not None and shadow.version == 2


def check_ladder(
    reg: Registry, model: str, tier: str, results: list[dict[str, Any]], seq_before: int
) -> None:
    assert [r["refusals"] for r in results] == [[]] * PROCS
    wins: list[Win] = [w for r in results for w in r["wins"]]
    # No step was taken twice, and none was taken from a stale read.
    steps = [(v, frm, pct, to, tpct) for v, frm, pct, to, tpct, _ in wins]
    assert len(set(steps)) == len(steps), Counter(steps).most_common(3)
    # The audit log holds exactly the winners' transitions, attributed to the winners.
    race_entries = reg.audit_entries(model)[seq_before:]
    assert {e.action for e in race_entries} == {"transition"}
    logged = Counter(
        (
            e.version,
            e.payload["from"],
            e.payload["to"],
            e.payload["percent"] if e.payload["to"] == "CANARY" else None,
            e.actor,
        )
        for e in race_entries
    )
    assert logged == Counter((v, frm, to, tpct, actor) for v, frm, _, to, tpct, actor in wins)
    # In commit order, each version walked its whole ladder, one step at a time.
    for v in LADDER_VERSIONS:
        path = [
            (e.payload["from"], e.payload["to"], e.payload["percent"])
            for e in race_entries
            if e.version == v
        ]
        assert path == expected_path(v, tier), v
    # The final states are what the audit log says, and exactly one version is prod.
    final = {mv.version: mv.state[SLICE] for mv in reg.list_versions(model)}
    assert final == replay(reg.audit_entries(model))
    assert final == {1: S.DEPRECATED, 2: S.DEPRECATED, 3: S.DEPRECATED, 4: S.PROMOTED}
    d = reg.desired_state(model)
    assert (d.prod_version, d.rollback_target, d.canary, d.shadow) == (4, 3, None, None)


def test_eight_processes_race_on_one_slice(registry: Registry) -> None:
    new_model(registry, CAS_MODEL, tier=Tier.L0)
    bootstrap_prod(registry, CAS_MODEL)
    version(registry, CAS_MODEL)
    registry.transition(CAS_MODEL, 2, S.APPROVED_SHADOW, actor="ops")
    for model, tier in ((L1_MODEL, Tier.L1), (L0_MODEL, Tier.L0)):
        new_model(registry, model, tier=tier)
        assert bootstrap_prod(registry, model) == 1
        assert [version(registry, model).version for _ in range(3)] == LADDER_VERSIONS
    seqs = {m: len(registry.audit_entries(m)) for m in (CAS_MODEL, L1_MODEL, L0_MODEL)}

    results = race(registry.url)

    check_cas(registry, [r["cas"] for r in results], seqs[CAS_MODEL])
    check_ladder(registry, L1_MODEL, "L1", [r["l1"] for r in results], seqs[L1_MODEL])
    check_ladder(registry, L0_MODEL, "L0", [r["l0"] for r in results], seqs[L0_MODEL])
    assert registry.verify_audit().ok


def check_one_rollback(
    reg: Registry,
    model: str,
    results: list[tuple[int, str, str]],
    seq_before: int,
    rolled: tuple[int, str],
    final: dict[int, State],
) -> None:
    """Exactly one process rolled back; the other seven were told who did, and wrote nothing."""
    version_, from_state = rolled
    assert [(code, err) for code, _, err in results] == [(0, "")] * PROCS, results
    won = [out for _, out, _ in results if f"{from_state} -> ROLLED_BACK" in out]
    assert len(won) == 1, results
    new = reg.audit_entries(model)[seq_before:]
    assert [(e.action, e.version, e.payload["from"]) for e in new] == [
        ("rollback", version_, from_state)
    ]
    winner = new[0].actor
    answers = [out for _, out, _ in results if out not in won]
    assert len(answers) == PROCS - 1
    for out in answers:
        assert out.startswith(f"{model}@{version_} [{SLICE}] already rolled back by {winner} ")
        assert f"(audit entry {new[0].id})" in out
    assert {mv.version: mv.state[SLICE] for mv in reg.list_versions(model)} == final


def test_eight_cli_processes_roll_back_once_and_step_the_canary_forward(
    registry: Registry,
) -> None:
    # rb-bare: v1 deprecated, v2 prod, v3 in shadow. rb-named: v1 deprecated, v2 prod.
    for model in (RB_BARE, RB_NAMED):
        new_model(registry, model, tier=Tier.L0)
        bootstrap_prod(registry, model)
        bootstrap_prod(registry, model)
    version(registry, RB_BARE)
    for st in (S.APPROVED_SHADOW, S.SHADOW):
        registry.transition(RB_BARE, 3, st, actor="ops")
    # walk: v1 prod, v2 in canary at 1%.
    new_model(registry, WALK, tier=Tier.L1)
    bootstrap_prod(registry, WALK)
    version(registry, WALK)
    for st in (S.APPROVED_SHADOW, S.SHADOW, S.APPROVED_CANARY, S.CANARY):
        registry.transition(WALK, 2, st, actor="ops")
    seqs = {m: len(registry.audit_entries(m)) for m in (RB_BARE, RB_NAMED, WALK)}

    results = race(registry.url, _cli_racer)

    check_one_rollback(
        registry,
        RB_BARE,
        [r["bare"] for r in results],
        seqs[RB_BARE],
        (3, "SHADOW"),
        {1: S.DEPRECATED, 2: S.PROMOTED, 3: S.ROLLED_BACK},
    )
    check_one_rollback(
        registry,
        RB_NAMED,
        [r["named"] for r in results],
        seqs[RB_NAMED],
        (2, "PROMOTED"),
        {1: S.PROMOTED, 2: S.ROLLED_BACK},
    )
    walks = [r["walk"] for r in results]
    assert [w["other"] for w in walks] == [[]] * PROCS
    wins = sorted(step for w in walks for step in w["wins"])
    assert wins == [(p, p + 1) for p in range(1, 10)]  # each step once, none from a stale read
    steps = [
        (e.payload["from"], e.payload["to"], e.payload["percent"])
        for e in registry.audit_entries(WALK)[seqs[WALK] :]
    ]
    assert steps == [("CANARY", "CANARY", p) for p in range(2, 11)]  # forward, in commit order
    assert registry.get_version(WALK, 2).canary_percent == {SLICE: 10}
    assert registry.verify_audit().ok
