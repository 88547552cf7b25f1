"""The scenario's moving parts beside the sensors: the simulated truth of each candidate, and
what the model owners do (the humans of the story).

`Scenario` keeps, per model, the candidate under way and its truth from demo/scenario.yaml
(`world.refresh`): it sets the truth on the simulator before the candidate serves, and a
finished candidate may be followed by the next one (`then`: a new snapshot and a refresh).
The owners act on what the registry shows, as people would:
- an SRM alert on a canary they hold: the data cannot decide, so they roll it back;
- a candidate they want measured against prod (`ab: PERCENT`): once it is in canary, they
  start its A/B test; the sensor decides the test and, at L2, the registry's A/B contract
  decides whether it may be promoted before its minimum days.
Every action is an ordinary action run through the webserver, the same queue and lock as the
sensors' runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from demo.report import check_outcome
from demo.traffic import TrafficSim
from demo.watch import Timeline, Watcher

__all__ = ["OPERATOR", "SETTLED", "Scenario"]

OPERATOR = ("platform-operator", "ml-platform")
SETTLED = ("PROMOTED", "FAILED", "ROLLED_BACK")


class Scenario:
    """The candidates under way, their truth, and the owners' reactions (a watcher hook)."""

    def __init__(
        self,
        home: Path,
        fleet: Any,
        world: dict[str, Any],
        sim: TrafficSim,
        watcher: Watcher,
        launch: Callable[..., str],
        tl: Timeline,
    ) -> None:
        self.home = home
        self.fleet = fleet
        self.world = world
        self.sim = sim
        self.watcher = watcher
        self.launch = launch
        self.tl = tl
        self.plan: dict[str, dict[str, Any]] = {}  # model -> the candidate under way
        self.finished: list[dict[str, Any]] = []  # candidates a `then` followed
        self.data_versions: dict[str, int] = {d.name: 1 for d in fleet.datasets}
        self._acted: set[tuple[str, int, str]] = set()

    # -- truth ------------------------------------------------------------------------

    def set_truth(self, m: str, truth: dict[str, Any]) -> dict[str, Any]:
        """Record the candidate's truth on the simulator and print it; returns the entry."""
        truth = dict(truth)
        truth.setdefault("expect", "PROMOTED")
        truth.setdefault("effect", 0.0)
        truth["model"] = m
        v = max(self.watcher.versions(m)) + 1
        truth["version"] = v
        sim = self.sim
        sim.set_effect(m, v, float(truth["effect"]))
        lost = float(truth.get("lost_canary_users", 0.0))
        if lost:
            sim.lose_canary_users(m, v, lost)
        prod = self.watcher.prod_version(m) or 1
        extra = ""
        if lost:
            extra += f", {lost:.0%} of its canary users lost"
        if truth.get("label_shift"):
            extra += f", trained on labels shifted by {truth['label_shift']:+g} logit"
        if truth.get("ab"):
            extra += f", its owners will A/B test it ({truth['ab']}% of users)"
        self.tl(
            f"world     {m} v{v}: true click rate {sim.true_rate(m, v):.3f} vs prod "
            f"{sim.true_rate(m, prod):.3f} ({float(truth['effect']):+.0%}){extra}; expected: "
            f"{truth['expect']} - {truth.get('story', '')}"
        )
        self.plan[m] = truth
        return truth

    def write_data(self, models: list[str]) -> None:
        """The next snapshot of each of these models' datasets, with each truth's labels."""
        from demo.data import write_snapshot

        names = {self.fleet.model(m).dataset: m for m in models}
        for name, m in names.items():
            self.data_versions[name] = self.data_versions.get(name, 1) + 1
            shift = float(self.plan.get(m, {}).get("label_shift", 0.0))
            write_snapshot(self.home, name, self.data_versions[name], label_shift=shift)

    # -- the owners --------------------------------------------------------------------

    def hook(self) -> None:
        """Called on every watcher poll."""
        for m, truth in list(self.plan.items()):
            v = truth["version"]
            st = self.watcher.state(m, v)
            if st == "CANARY" and truth.get("ab") and (m, v, "ab") not in self._acted:
                self._acted.add((m, v, "ab"))
                self._start_ab(m, v, int(truth["ab"]))
            if st == "CANARY" and truth["expect"] == "SRM" and (m, v, "srm") not in self._acted:
                alert = self.watcher.alert(m, v, "online_srm")
                if alert is not None:
                    self._acted.add((m, v, "srm"))
                    self._rollback(m, v)
            if st in SETTLED and truth.get("then") and (m, v, "then") not in self._acted:
                self._acted.add((m, v, "then"))
                check_outcome(self.watcher, m, truth, "refresh")
                self.finished.append(truth)
                self.set_truth(m, truth["then"])
                self.write_data([m])
                self.launch(f"refresh_{m}")

    def _action(self, kind: Any, m: str, v: int, reason: str, **fields: Any) -> None:
        from modelops.actions import ActionRequest, action_run_fields

        req = ActionRequest(
            model_id=m,
            version=v,
            actor=OPERATOR[0],
            reason=reason,
            automated=False,
            **fields,
        )
        rr = action_run_fields(kind, req)
        self.launch(rr["job_name"], run_config=rr["run_config"], tags=rr["tags"])

    def _rollback(self, m: str, v: int) -> None:
        from modelops.actions import ActionKind

        self.tl(f"owners    {OPERATOR[0]} read the SRM alert on {m} v{v}; rolls it back")
        self._action(
            ActionKind.rollback,
            m,
            v,
            "owner: sample-ratio mismatch alert, the canary's data cannot decide; rolled back "
            "until the client is fixed",
            expected="CANARY",
        )

    def _start_ab(self, m: str, v: int, percent: int) -> None:
        from modelops.actions import ActionKind

        self.tl(f"owners    {OPERATOR[0]} moves {m} v{v} from canary into a {percent}% A/B test")
        self._action(
            ActionKind.start_ab,
            m,
            v,
            "owner: the refresh claims a lift; measure it against prod in an A/B test",
            expected="CANARY",
            percent=percent,
        )

    # -- outcomes ----------------------------------------------------------------------

    def open_models(self) -> list[str]:
        """Models whose candidate has not settled, or will be followed by another."""
        out = []
        for m, truth in self.plan.items():
            st = self.watcher.state(m, truth["version"])
            if st not in SETTLED or truth.get("then"):
                out.append(m)
        return out

    def entries(self) -> list[dict[str, Any]]:
        return [*self.finished, *self.plan.values()]
