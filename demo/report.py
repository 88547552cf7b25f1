"""What the demo reports: its result record, each scenario's outcome against the simulated
truth, and the final summary. A phase whose model ended otherwise than its truth says fails
the demo, by the phase's name (`check_outcome`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from demo.watch import PhaseFailed, Watcher

__all__ = [
    "DemoResult",
    "check_outcome",
    "drift_alert",
    "live_states",
    "outcome_row",
    "print_summary",
]


@dataclass
class DemoResult:
    home: str
    elapsed_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    states: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    prod: dict[str, int | None] = field(default_factory=dict)
    regressed: dict[str, Any] | None = None
    served: dict[str, dict[str, int]] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    canaries: dict[str, Any] = field(default_factory=dict)
    traffic: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None
    phase: str = "setup"  # the phase running (the one named when the demo fails)
    drift: dict[str, Any] | None = None
    governance: dict[str, Any] | None = None  # phase 5: issue 11's outcomes


def check_outcome(watcher: Watcher, m: str, truth: dict[str, Any], phase: str) -> None:
    """Fail the phase, loudly and by name, when a model ended otherwise than its truth says
    it should (the tests have error rates: a 0.5% false rollback is possible, and shown)."""
    row = outcome_row(watcher, m, truth)
    watcher.tl(
        f"outcome   {m} v{row['version']}: {row['state']} (expected {row['expected']}) - "
        f"{row['reason']}"[:400]
    )
    if not row["ok"]:
        raise PhaseFailed(
            f"phase {phase!r}: {m} v{row['version']} ended {row['state']}, expected "
            f"{row['expected']} ({truth.get('story', '')}); reason: {row['reason']}"[:600]
        )


def outcome_row(watcher: Watcher, m: str, truth: dict[str, Any]) -> dict[str, Any]:
    v = int(truth["version"])
    st = watcher.state(m, v) or "none"
    expect = str(truth.get("expect", "PROMOTED"))
    entry = watcher.moved(m, v, st)
    reason = entry.payload.get("reason", "") if entry is not None else ""
    actor = entry.actor if entry is not None else None
    alert = watcher.alert(m, v, "online_srm")
    if expect == "SRM":
        ok = alert is not None and st in ("CANARY", "ROLLED_BACK")
        if alert is not None:
            reason = f"SRM alert: {alert.payload.get('detail', '')}; then {reason}"
    elif expect == "AB_PROMOTED":
        ok = st == "PROMOTED" and "significant lift" in reason
    elif expect == "ROLLED_BACK":
        ok = st == "ROLLED_BACK" and actor == "system:online-metrics"
    else:
        ok = st == expect
    return {
        "model": m,
        "version": v,
        "effect": truth.get("effect"),
        "expected": expect,
        "state": st,
        "ok": ok,
        "actor": actor,
        "reason": reason,
        "story": truth.get("story", ""),
    }


def drift_alert(watcher: Watcher, model: str, since: float) -> Any | None:
    """The first feature-drift alert on the model's chain since `since` (unix seconds)."""
    for e in watcher.entries(model):
        if e.action != "alert" or e.payload.get("kind") != "feature_drift":
            continue

        try:
            ts = datetime.fromisoformat(str(e.ts)).timestamp()
        except ValueError:
            ts = since
        if ts >= since - 1.0:
            return e
    return None


def live_states(watcher: Watcher, ids: list[str]) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {m: {} for m in ids}
    for ls in watcher.registry.live_states():
        if ls.model_id not in out:
            continue
        pct = f" {ls.percent}%" if ls.percent not in (None, 100) else ""
        out[ls.model_id].setdefault(ls.slice, []).append(f"v{ls.version} {ls.state.value}{pct}")
    return out


def print_summary(result: DemoResult) -> None:
    print("\nfinal state per model and slice:")
    for m, slices in result.states.items():
        for s, states in sorted(slices.items()):
            prod = result.prod.get(m)
            shown = f"v{prod}" if prod is not None else "none"
            note = ""
            if prod is None and any("OFFLINE_PASSED" in x for x in states):
                note = "  (waiting for approvals)"
            print(f"  {m:<14} {s:<8} prod={shown:<5} " + ", ".join(states) + note)
    if result.outcomes:
        print("\nscenario outcomes (expected from the simulated truth; decided by the sensors):")
        for o in result.outcomes:
            mark = "ok  " if o["ok"] else "FAIL"
            print(
                f"  {mark} {o['model']} v{o['version']} ({o['story']}): {o['state']}, "
                f"expected {o['expected']}"
            )
            if o["reason"]:
                print(f"       why: {o['reason'][:300]}")
            c = result.canaries.get(f"{o['model']} v{o['version']}")
            if c:
                print(f"       plan: {str(c['plan'])[:300]}")
                if c.get("old_rule_at_top"):
                    print(
                        f"       old rule on the same windows: {c['old_rule_verdicts']}; at the "
                        f"top of the ladder it would {c['old_rule_at_top']}"
                    )
                for line in c.get("lift_plot") or []:
                    print(f"       {line}")
    if result.regressed:
        r = result.regressed
        print(
            f"\nrollback: {r['model']} v{r['bad_version']} -> v{r['good_version']}, "
            f"time to recover {r['time_to_recover_s']}s (first bad response to 100% on prod)"
        )
        if r.get("reason"):
            print(f"  why: {r['reason'][:300]}")
    if result.drift:
        d = result.drift
        alert = d.get("alert") or {}
        print(
            f"\ndrift: {d['model']} inputs shifted {d['shifts']}: {str(alert.get('detail'))[:400]}"
        )
    if result.traffic:
        t = result.traffic
        print(
            f"\ntraffic: {t['users']} users, {t['requests']} answered requests, "
            f"{t['errors']} errors, lost before the request: {t['lost_requests']}"
        )
    print(f"\nelapsed {result.elapsed_s:.1f}s; phases {result.phases}")
    if result.failure:
        print(f"\nFAILED: {result.failure}")
    print(
        f"\nbrowse it:  DAGSTER_HOME={result.home}/dagster MODELOPS_HOME={result.home} "
        f"MODELOPS_FLEET={result.home}/fleet.yaml dagster dev -w workspace.yaml"
    )
