"""Layer capacity under real concurrency: OS processes, each with its own Registry, enter
AB_TEST for four different models in one layer at once, on SQLite and on PostgreSQL.

Each entry locks only its own (model, slice), so without the layer row's lock two entries
could both read the layer as having room. With shares of 40% in a 100% layer exactly two
must win, the others get LayerFull, and the audit log holds exactly the winners' entries.
"""

from __future__ import annotations

import multiprocessing
import traceback
from typing import Any

from test_registry_ab_contract import candidate_at_canary

from modelops.errors import LayerFull
from modelops.registry import Registry
from modelops.spec import State

MODELS = ("m0", "m1", "m2", "m3")
LAYER = "shared"


def _enter(url: str, barrier: Any, queue: Any, model_id: str) -> None:
    try:
        reg = Registry(url, auto_upgrade=False)
        barrier.wait()
        try:
            res = reg.transition(
                model_id, 2, State.AB_TEST, actor=f"racer-{model_id}", percent=20, layer=LAYER
            )
            queue.put(("won", model_id, res.audit_id))
        except LayerFull as exc:
            queue.put(("full", model_id, str(exc)))
        reg.close()
    except BaseException:  # noqa: BLE001 - the parent fails the test with it
        queue.put(("crash", model_id, traceback.format_exc()))


def test_entries_racing_for_one_layer_never_over_allocate_it(registry: Registry) -> None:
    for m in MODELS:
        assert candidate_at_canary(registry, m, layer_share=40) == 2
    audit_before = registry.row_counts()["audit_log"]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(MODELS))
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_enter, args=(registry.url, barrier, queue, m), daemon=True)
        for m in MODELS
    ]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=600) for _ in MODELS]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    crashes = [r[2] for r in results if r[0] == "crash"]
    assert not crashes, "\n".join(crashes)
    won = sorted(m for kind, m, _ in results if kind == "won")
    full = [msg for kind, _, msg in results if kind == "full"]
    assert len(won) == 2 and len(full) == 2, results
    for msg in full:  # each refusal names the two experiments holding the layer
        assert all(f"{m}@2 slice global (40%)" in msg for m in won), msg
    usage = registry.layer_usage(LAYER)
    assert usage.used == 80 and sorted(h.model_id for h in usage.holders) == won
    assert registry.row_counts()["audit_log"] == audit_before + 2
    states = {m: registry.state_of(m, 2) for m in MODELS}
    assert sorted(m for m, s in states.items() if s is State.AB_TEST) == won
