"""Registry benchmark: a production-sized fleet, measured through the Registry API in process.

Run: `.venv/bin/python bench/registry.py [--backends sqlite,postgres] [--quick]`
(`make bench` does the first). It builds the fleet on each backend, measures the hot paths,
writes one flat JSON object to bench/results/registry.json and prints a Markdown table.

The fleet: 500 models x 10 versions x 2 slices, 50 features shared through 100 feature
contracts, a DAG of model-to-model downstream dependencies with a few back edges (cycles),
training datasets and eval sets registered and pinned, and 200,000 audit entries. Everything
is built through the Registry API except the bulk of the audit history, which is topped up
with valid hash-chained entries (the same hash and head bookkeeping as `audit.append`), so
`verify_audit` still passes; the JSON says how many entries were bulk-inserted.

PostgreSQL: a fresh database modelops_bench_<pid> is created, migrated and dropped at the end.
SQLite: a file in a temporary directory.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib import machine_info, postgres_backend, sqlite_backend
from report import render_registry
from sqlalchemy import bindparam, func, insert, select, update

from modelops import audit as audit_mod
from modelops.contracts import DType, Feature, FeatureContract
from modelops.identity import generate_signing_key
from modelops.registry import Registry
from modelops.spec import (
    DecisionPolicy,
    Framework,
    ModelClass,
    ModelSpec,
    RollbackClass,
    State,
    Tier,
)
from modelops.store import db
from modelops.store.tables import audit_heads, audit_log

RESULTS = Path(__file__).resolve().parent / "results" / "registry.json"
SLICES = ["global", "eu"]
ACTOR = "bench-deployer"
APPROVERS = [("bench-approver-a", "platform"), ("bench-approver-b", "risk")]
# Approvals are signed: each approver's key, made once per run.
BENCH_KEYS = {name: generate_signing_key() for name, _ in APPROVERS}
WARMUP_MODEL = "bench-warmup"

TARGETS = {
    "resolve_p99_ms": ("<=", 1.0),
    "dependents_of_feature_p99_ms": ("<=", 10.0),
    "transitive_dependents_p99_ms": ("<=", 10.0),
    "register_version_p99_ms": ("<=", 10.0),
}
SQLITE_TRANSITIONS_PER_S = 300.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- fleet shape


class Fleet:
    """The fleet's shape, deterministic from a seed so every backend gets the same fleet."""

    def __init__(self, *, quick: bool, seed: int = 20260101) -> None:
        self.quick = quick
        self.n_models = 50 if quick else 500
        self.n_versions = 10
        self.n_features = 50
        self.n_contract_names = 50  # x 2 versions = 100 contracts
        self.features_per_contract = 10
        self.n_train = 10 if quick else 100  # training datasets, each with n_versions versions
        self.n_eval = 5 if quick else 50  # eval sets, each with 2 versions
        self.audit_total = 20_000 if quick else 200_000
        self.ladders = 40 if quick else 120  # (model, slice) pairs walked up the ladder
        rng = random.Random(seed)
        self.rng = rng
        self.model_ids = [f"m{i:03d}" for i in range(self.n_models)]
        tiers = [Tier.L0] * 40 + [Tier.L1] * 40 + [Tier.L2] * 15 + [Tier.L3] * 5
        self.tiers = {m: tiers[rng.randrange(len(tiers))] for m in self.model_ids}
        self.features = [f"feat_{k:02d}" for k in range(self.n_features)]
        self.contracts: dict[str, list[str]] = {}
        for j in range(self.n_contract_names):
            base = rng.sample(self.features, self.features_per_contract)
            self.contracts[f"cf_{j:02d}@1"] = base
            swapped = base[:-2] + rng.sample(
                [f for f in self.features if f not in base], 2
            )  # version 2 drops two features and adds two others
            self.contracts[f"cf_{j:02d}@2"] = swapped
        n = self.n_models
        self.downstream: dict[str, list[str]] = {}
        for i, m in enumerate(self.model_ids):
            cands = list(range(i + 1, min(n, i + 40)))
            k = min(len(cands), rng.randint(1, 3))
            self.downstream[m] = [self.model_ids[j] for j in sorted(rng.sample(cands, k))]
        # A couple of back edges make cycles, so the closure must be cycle-safe.
        self.back_edges = [(n - 20, n // 10), (int(n * 0.6), n // 20 + 1), (n - 1, 0)]
        for src, dst in self.back_edges:
            self.downstream[self.model_ids[src]].append(self.model_ids[dst])
        self.edges = sum(len(v) for v in self.downstream.values())

    def spec(self, model_id: str, i: int) -> ModelSpec:
        tier = self.tiers[model_id]
        rc = [RollbackClass.STATELESS, RollbackClass.STATELESS, RollbackClass.STATE_SNAPSHOT][i % 3]
        return ModelSpec(
            model_id=model_id,
            owner_team=f"team-{i % 12:02d}",
            tier=tier,
            rollback_class=rc,
            model_class=ModelClass.dnn,
            framework=[Framework.pytorch, Framework.onnx, Framework.tensorflow][i % 3],
            description=f"benchmark fleet model {i}",
            intended_purpose="scores synthetic benchmark traffic; no decisions",
            slices=list(SLICES),
            policy=DecisionPolicy(primary_metric="auc", min_samples=1000),
            downstream_dependents=self.downstream[model_id],
        )

    def version_args(self, i: int, model_id: str, v: int) -> dict[str, Any]:
        wh = hashlib.sha256(f"weights:{model_id}:{v}".encode()).hexdigest()
        return {
            "weights_hash": wh,
            "weights_uri": f"s3://bench-weights/{wh}",
            "training_run_id": f"run-{model_id}-{v}",
            "training_data": f"train_{i % self.n_train:03d}@{v}",
            "eval_set": f"eval_{i % self.n_eval:02d}@{1 if v <= 5 else 2}",
            "feature_contract_ref": f"cf_{i % self.n_contract_names:02d}@{1 if v <= 5 else 2}",
            "parent": v - 1 if v > 1 else None,
            "actor": ACTOR,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "models": self.n_models,
            "versions_per_model": self.n_versions,
            "slices": list(SLICES),
            "features": self.n_features,
            "feature_contracts": 2 * self.n_contract_names,
            "features_per_contract": self.features_per_contract,
            "training_datasets": f"{self.n_train} x {self.n_versions} versions",
            "eval_sets": f"{self.n_eval} x 2 versions",
            "dependency_edges": self.edges,
            "dependency_back_edges": len(self.back_edges),
            "tiers": {t.value: sum(1 for x in self.tiers.values() if x is t) for t in Tier},
            "audit_entries_target": self.audit_total,
            "built_through_api": "datasets, contracts, models, versions 1-9, gate results, "
            "approvals and first promotions; version 10 is registered in the measured phase",
        }


# ---------------------------------------------------------------------------- timing


def pct(samples_ns: list[int], p: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    s = sorted(samples_ns)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k] / 1e6


def summarize(prefix: str, samples_ns: list[int]) -> dict[str, Any]:
    return {
        f"{prefix}_p50_ms": round(pct(samples_ns, 50), 3),
        f"{prefix}_p99_ms": round(pct(samples_ns, 99), 3),
        f"{prefix}_mean_ms": round(sum(samples_ns) / len(samples_ns) / 1e6, 3),
        f"{prefix}_samples": len(samples_ns),
    }


def timed(fn: Callable[[], Any]) -> tuple[int, Any]:
    t0 = time.perf_counter_ns()
    out = fn()
    return time.perf_counter_ns() - t0, out


# ---------------------------------------------------------------------------- backends


def _migrate(url: str) -> None:
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()


def _backend(name: str) -> Any:
    if name == "sqlite":
        return sqlite_backend("modelops-bench-", "registry.db")
    return postgres_backend("modelops_bench", _migrate)


# ---------------------------------------------------------------------------- build


def build_fleet(reg: Registry, fleet: Fleet) -> dict[str, Any]:
    t0 = time.perf_counter()
    for team in sorted({t for _, t in APPROVERS} | {f"team-{i:02d}" for i in range(12)}):
        reg.add_team(team, actor="bench-admin")
    reg.add_team("team-bench", actor="bench-admin")
    for name, team in APPROVERS:
        reg.enroll_actor(name, team, public_key=BENCH_KEYS[name].public_key, actor="bench-admin")
    for d in range(fleet.n_train):
        for v in range(1, fleet.n_versions + 1):
            name = f"train_{d:03d}"
            reg.register_dataset(
                name,
                v,
                f"s3://bench-data/train/{name}/v{v}",
                content_hash=hashlib.sha256(f"{name}@{v}".encode()).hexdigest(),
                actor=ACTOR,
            )
    for d in range(fleet.n_eval):
        for v in (1, 2):
            name = f"eval_{d:02d}"
            reg.register_dataset(
                name,
                v,
                f"s3://bench-data/eval/{name}/v{v}",
                content_hash=hashlib.sha256(f"{name}@{v}".encode()).hexdigest(),
                kind="eval_set",
                actor=ACTOR,
            )
    for ref, feats in fleet.contracts.items():
        name, ver = ref.split("@")
        reg.register_contract(
            FeatureContract(
                name=name,
                version=int(ver),
                features=[Feature(name=f, dtype=DType.FLOAT32) for f in feats],
            ),
            actor=ACTOR,
        )
    log(f"  datasets and contracts: {time.perf_counter() - t0:.1f}s")
    for i, m in enumerate(fleet.model_ids):
        reg.create_model(fleet.spec(m, i), actor=ACTOR)
    log(f"  models: {time.perf_counter() - t0:.1f}s")
    for i, m in enumerate(fleet.model_ids):
        for v in range(1, fleet.n_versions):  # version 10 is registered while measuring
            reg.register_version(m, **fleet.version_args(i, m, v))
            reg.record_gate_result(m, v, passed=True, results={"auc": 0.8 + v / 1000})
        if i % 100 == 99:
            log(
                f"  versions 1-{fleet.n_versions - 1} of {i + 1} models: "
                f"{time.perf_counter() - t0:.1f}s"
            )
    for m in fleet.model_ids:
        tier = fleet.tiers[m]
        for s in SLICES:
            if tier in (Tier.L2, Tier.L3):
                for name, _team in APPROVERS[: 1 if tier is Tier.L2 else 2]:
                    reg.approve(
                        m, 1, actor=name, key=BENCH_KEYS[name], slice=s, target=State.PROMOTED
                    )
            reg.transition(m, 1, State.PROMOTED, actor=ACTOR, slice=s, reason="bootstrap")
    log(f"  first promotions: {time.perf_counter() - t0:.1f}s")
    # A model outside the fleet to warm up the write paths before they are measured.
    reg.create_model(
        ModelSpec(
            model_id=WARMUP_MODEL,
            owner_team="team-bench",
            tier=Tier.L0,
            rollback_class=RollbackClass.STATELESS,
            model_class=ModelClass.dnn,
            framework=Framework.onnx,
            slices=list(SLICES),
            policy=DecisionPolicy(primary_metric="auc"),
        ),
        actor=ACTOR,
    )
    return {"build_api_s": round(time.perf_counter() - t0, 1)}


def audit_count(reg: Registry) -> int:
    with db.read_tx(reg.engine) as conn:
        return int(conn.execute(select(func.count()).select_from(audit_log)).scalar_one())


def topup_audit(reg: Registry, fleet: Fleet) -> int:
    """Append valid hash-chained entries to the fleet's model chains up to the target total.

    Same bookkeeping as `audit.append`: next seq after the head, prev_hash = head hash,
    `entry_hash` over the same fields, and the head moved to the last entry, in one write
    transaction holding the heads' locks.
    """
    need = fleet.audit_total - audit_count(reg)
    if need <= 0:
        return 0
    chains = [audit_mod.chain_for(m) for m in fleet.model_ids]
    per, extra = divmod(need, len(chains))
    ts = datetime.now(UTC).isoformat()
    with db.write_tx(reg.engine) as conn:
        heads = {
            r.chain: (r.seq, r.hash)
            for r in conn.execute(
                select(audit_heads.c.chain, audit_heads.c.seq, audit_heads.c.hash)
                .where(audit_heads.c.chain.in_(chains))
                .with_for_update()
            )
        }
        new_heads = []
        batch: list[dict[str, Any]] = []
        for ci, (chain, model_id) in enumerate(zip(chains, fleet.model_ids, strict=True)):
            seq, prev = heads.get(chain, (0, audit_mod.GENESIS))
            for k in range(per + (1 if ci < extra else 0)):
                seq += 1
                payload = audit_mod.canonical_json(
                    {"synthetic": True, "note": "benchmark audit history", "n": k}
                )
                h = audit_mod.entry_hash(
                    chain, seq, model_id, None, "bench_history", ts, ACTOR, payload, prev
                )
                batch.append(
                    {
                        "chain": chain,
                        "seq": seq,
                        "model_id": model_id,
                        "version": None,
                        "action": "bench_history",
                        "ts": ts,
                        "actor": ACTOR,
                        "payload": payload,
                        "prev_hash": prev,
                        "hash": h,
                    }
                )
                prev = h
                if len(batch) >= 20_000:
                    conn.execute(insert(audit_log), batch)
                    batch = []
            new_heads.append({"b_chain": chain, "b_seq": seq, "b_hash": prev})
        if batch:
            conn.execute(insert(audit_log), batch)
        missing = [h for h in new_heads if h["b_chain"] not in heads]
        present = [h for h in new_heads if h["b_chain"] in heads]
        if present:
            conn.execute(
                update(audit_heads)
                .where(audit_heads.c.chain == bindparam("b_chain"))
                .values(seq=bindparam("b_seq"), hash=bindparam("b_hash")),
                present,
            )
        if missing:
            conn.execute(
                insert(audit_heads),
                [{"chain": h["b_chain"], "seq": h["b_seq"], "hash": h["b_hash"]} for h in missing],
            )
    return need


# ---------------------------------------------------------------------------- measure


def measure_writes(reg: Registry, fleet: Fleet) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Warm-up on the model outside the fleet: register, gate, promote, a short ladder.
    for v in range(1, 6):
        wh = hashlib.sha256(f"warm:{v}".encode()).hexdigest()
        reg.register_version(
            WARMUP_MODEL,
            weights_hash=wh,
            weights_uri=f"s3://bench-weights/{wh}",
            training_run_id=f"warm-{v}",
            training_data="train_000@1",
            eval_set="eval_00@1",
            feature_contract_ref="cf_00@1",
            actor=ACTOR,
        )
        reg.record_gate_result(WARMUP_MODEL, v, passed=True, results={})
    for s in SLICES:
        reg.transition(WARMUP_MODEL, 1, State.PROMOTED, actor=ACTOR, slice=s)
        for target, p in _ladder():
            reg.transition(WARMUP_MODEL, 2, target, actor=ACTOR, slice=s, percent=p)

    # register_version: version 10 of every fleet model (audit entry + two dataset pins).
    gc.collect()
    reg_ns: list[int] = []
    gate_ns: list[int] = []
    v = fleet.n_versions
    for i, m in enumerate(fleet.model_ids):
        args = fleet.version_args(i, m, v)
        dt, mv = timed(lambda m=m, args=args: reg.register_version(m, **args))
        assert mv.version == v, (m, mv.version)
        reg_ns.append(dt)
        dt, _ = timed(lambda m=m: reg.record_gate_result(m, v, passed=True, results={"auc": 0.81}))
        gate_ns.append(dt)
    out.update(summarize("register_version", reg_ns))
    out.update(summarize("gate_result", gate_ns))

    # Transitions: full ladders on version 2 of L0/L1 models, round-robin over the pairs so
    # consecutive transitions hit different (model, slice) rows.
    pairs = [
        (m, s) for m in fleet.model_ids if fleet.tiers[m] in (Tier.L0, Tier.L1) for s in SLICES
    ]
    fleet.rng.shuffle(pairs)
    pairs = pairs[: fleet.ladders]
    ladder = _ladder()
    tr_ns: list[int] = []
    step_ns: list[int] = []
    gc.collect()
    t_run = time.perf_counter_ns()
    for target, p in ladder:
        for m, s in pairs:
            dt, res = timed(
                lambda m=m, s=s, target=target, p=p: reg.transition(
                    m, 2, target, actor=ACTOR, slice=s, percent=p, automated=True
                )
            )
            tr_ns.append(dt)
            if res.from_state is State.CANARY and res.to_state is State.CANARY:
                step_ns.append(dt)
    run_s = (time.perf_counter_ns() - t_run) / 1e9
    out.update(summarize("transition", tr_ns))
    out.update(summarize("canary_step", step_ns))
    out["transition_run_count"] = len(tr_ns)
    out["transition_run_s"] = round(run_s, 3)
    out["transition_per_s"] = round(len(tr_ns) / run_s, 1)
    out["transition_ladder"] = " -> ".join(
        f"{t.value}{'(' + str(p) + ')' if p else ''}" for t, p in ladder
    )
    # Every ladder ended with version 2 promoted and version 1 deprecated: check one.
    m, s = pairs[0]
    ds = reg.desired_state(m, s)
    assert ds.prod_version == 2 and ds.rollback_target == 1, ds
    return out


def _ladder() -> list[tuple[State, int | None]]:
    return [
        (State.APPROVED_SHADOW, None),
        (State.SHADOW, None),
        (State.APPROVED_CANARY, None),
        (State.CANARY, 1),
        (State.CANARY, 5),
        (State.CANARY, 10),
        (State.CANARY, 5),
        (State.CANARY, 10),
        (State.AB_TEST, None),
        (State.PROMOTED, None),
    ]


def measure_reads(reg: Registry, fleet: Fleet) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rng = random.Random(7)

    def run(
        prefix: str, fn: Callable[[Any], Any], args: list[Any], keep: Callable[[Any], Any], warm=50
    ) -> list[Any]:
        """Time fn(a) for each a; keep only a small digest of each result, so the benchmark's
        own heap does not grow (a growing heap makes the collector's pauses part of the p99)."""
        for a in args[:warm]:
            fn(a)
        gc.collect()
        ns, kept = [], []
        for a in args:
            dt, r = timed(lambda a=a: fn(a))
            ns.append(dt)
            kept.append(keep(r))
            del r
        out.update(summarize(prefix, ns))
        return kept

    def median(xs: list[int]) -> int:
        return sorted(xs)[len(xs) // 2]

    pairs = [(m, s) for m in fleet.model_ids for s in SLICES]
    prods = run(
        "resolve",
        lambda p: reg.desired_state(p[0], p[1]),
        [rng.choice(pairs) for _ in range(2000)],
        keep=lambda r: r.prod_version,
    )
    assert all(p is not None for p in prods)

    feats = [rng.choice(fleet.features) for _ in range(500)]
    sizes = run("dependents_of_feature", reg.dependents_of_feature, feats, keep=len)
    out["dependents_of_feature_rows_median"] = median(sizes)
    out["dependents_of_feature_rows_max"] = max(sizes)

    roots = fleet.model_ids[: max(1, fleet.n_models // 10)]
    picks = [rng.choice(roots) for _ in range(500)]
    sizes = run("transitive_dependents", reg.transitive_dependents, picks, keep=len, warm=20)
    out["transitive_dependents_size_median"] = median(sizes)
    out["transitive_dependents_size_max"] = max(sizes)
    full = reg.transitive_dependents(fleet.model_ids[0])
    assert fleet.model_ids[0] not in full  # the cycle back to the root terminated

    picks = [rng.choice(fleet.model_ids) for _ in range(500)]
    reports = run(
        "verify_audit",
        reg.verify_audit,
        picks,
        keep=lambda r: (r.ok, r.entries, r.problems[:1]),
        warm=20,
    )
    assert all(ok for ok, _, _ in reports), next(p for ok, _, p in reports if not ok)
    entries = [n for _, n, _ in reports]
    out["audit_entries_per_model_median"] = median(entries)
    out["audit_entries_per_model_max"] = max(entries)

    dt, rep = timed(reg.verify_audit)
    assert rep.ok, rep.problems[:3]
    out["verify_audit_all_s"] = round(dt / 1e9, 2)
    out["verify_audit_all_entries"] = rep.entries
    out["verify_audit_all_chains"] = rep.chains
    return out


def bench_backend(name: str, url: str, fleet: Fleet) -> dict[str, Any]:
    t0 = time.perf_counter()
    reg = Registry(url, auto_upgrade=name == "sqlite")
    try:
        out: dict[str, Any] = {}
        log(f"{name}: building the fleet through the API")
        out.update(build_fleet(reg, fleet))
        t = time.perf_counter()
        out["audit_topup_bulk_inserted"] = topup_audit(reg, fleet)
        out["audit_topup_s"] = round(time.perf_counter() - t, 1)
        out["audit_entries_at_measure_start"] = audit_count(reg)
        log(
            f"{name}: audit topped up by {out['audit_topup_bulk_inserted']} entries "
            f"to {out['audit_entries_at_measure_start']}; measuring writes"
        )
        # A long-lived service (gateway, sensor, daemon) freezes its start-up heap so full
        # collections do not rescan it; the fleet built above stands in for that heap.
        gc.collect()
        gc.freeze()
        out["gc_frozen_objects"] = gc.get_freeze_count()
        out.update(measure_writes(reg, fleet))
        log(f"{name}: measuring reads")
        out.update(measure_reads(reg, fleet))
        out["audit_entries_at_end"] = audit_count(reg)
        gc.unfreeze()
        out["total_s"] = round(time.perf_counter() - t0, 1)
        out["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
        log(f"{name}: done in {out['total_s']}s")
        return out
    finally:
        reg.close()


# ---------------------------------------------------------------------------- report


def evaluate_targets(res: dict[str, Any], backends: list[str]) -> dict[str, bool]:
    met: dict[str, bool] = {}
    for b in backends:
        for key, (_op, limit) in TARGETS.items():
            met[f"{b}.{key}"] = res[f"{b}.{key}"] <= limit
    if "sqlite" in backends:
        met["sqlite.transition_per_s"] = res["sqlite.transition_per_s"] >= SQLITE_TRANSITIONS_PER_S
    return met


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="sqlite,postgres", help="comma list: sqlite,postgres")
    ap.add_argument("--quick", action="store_true", help="a 50-model fleet for a smoke run")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = ap.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in backends if b not in ("sqlite", "postgres")]
    if bad or not backends:
        ap.error(f"unknown backend(s) {bad}; allowed: sqlite, postgres")

    t0 = time.perf_counter()
    fleet = Fleet(quick=args.quick)
    res: dict[str, Any] = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": machine_info(backends),
        "fleet": fleet.describe(),
        "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()}
        | {"sqlite.transition_per_s": f">= {SQLITE_TRANSITIONS_PER_S}"},
    }
    topups: dict[str, int] = {}
    for b in backends:
        with _backend(b) as url:
            out = bench_backend(b, url, fleet)
        topups[b] = out["audit_topup_bulk_inserted"]
        res.update({f"{b}.{k}": v for k, v in out.items()})
    same = len(set(topups.values())) == 1
    res["fleet"]["audit_topup_bulk_inserted"] = next(iter(topups.values())) if same else topups
    res["targets_met"] = evaluate_targets(res, backends)
    res["runtime_s"] = round(time.perf_counter() - t0, 1)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, sort_keys=False) + "\n")
    print(render_registry(res))  # the README's table (bench/report.py)
    log(f"wrote {args.out} in {res['runtime_s']}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
