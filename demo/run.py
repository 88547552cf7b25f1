"""`python -m demo.run`: the whole scenario, headless, on the embedded defaults.

1. Bootstrap: datasets v1, the feature schema, Triton, the gateway, a real `dagster-daemon`
   (and the webserver, whose GraphQL API queues the refresh runs). Each model's refresh job
   trains, registers and gates v1; the candidate sensor promotes it (the L3 model waits
   for its approvals).
2. Refresh: traffic starts, dataset v2 lands, the refresh runs again, and the sensors walk
   each new version through shadow and the canary ladder, deciding on the sequential harm
   test (demo/scenario.yaml declares the policy and the simulated truth): a good refresh is
   promoted only once the test has its planned sample; one truly 15% worse is rolled back
   (and the demo shows the old rule passing it on the same windows); one whose canary loses
   a third of its users is held on a sample-ratio mismatch with an alert, and an operator
   rolls it back.
3. Regression: the simulator makes the next ctr_gbdt version's clicks collapse; its
   refresh goes to canary, the online-metrics sensor confirms the harm and launches the
   rollback job, and traffic returns to the last good version.
4. Drift: a campaign shifts one input; the drift sensor alerts, naming the dependent models.
5. Governance (demo/governance_phase.py, beside phase 2 on a registry of its own): a
   STATE_SNAPSHOT rollback with its state restored, an IRREVERSIBLE rollback's five-step
   report and a NEEDS_RETRAIN dependent, a break-glass with its ticket, a forged approval
   refused, and the L3 model's Article 11 document.

Every step prints on a timeline, with each canary's planned sample beside the users it
has; the end shows each model's state per slice and each scenario's outcome. A phase that
does not reach its goal fails the demo with its name. The home is left in place:
`dagster dev` on it shows every materialization, check, tick and run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from demo.instance import write_instance_yaml
from demo.owners import OPERATOR, Scenario
from demo.procs import REPO_ROOT, Stack
from demo.report import (
    DemoResult,
    check_outcome,
    drift_alert,
    live_states,
    outcome_row,
    print_summary,
)
from demo.traffic import TrafficSim
from demo.watch import PhaseFailed, PhaseTimeout, Timeline, Watcher, wait_for
from modelops.errors import ModelopsError

__all__ = [
    "DemoFailed",
    "DemoResult",
    "PhaseFailed",
    "PhaseTimeout",
    "Timeline",
    "run_demo",
    "main",
]

DEFAULT_HOME = Path(".modelops/demo-dagster")
# The sequential tests need their users; the demo gets them by sending more traffic, never by
# relaxing a test. At 300 req/s two quiet runs took 301 s and 343 s, past the 5-minute budget
# (the 15%-worse canary's stopping time is the critical path); at 420 (about 363 answered a
# second, 1.6 cores in all) one took 298 s.
DEFAULT_RATE = 420.0
DEMO_FLEET = REPO_ROOT / "demo" / "fleet.yaml"
DEMO_SCENARIO = REPO_ROOT / "demo" / "scenario.yaml"
LOCATION = "modelops"
LOCATION_WAIT_S = 60.0


class DemoFailed(ModelopsError):
    """The demo stopped on a failed phase; carries what it saw up to then."""

    def __init__(self, message: str, result: DemoResult) -> None:
        super().__init__(message)
        self.result = result


# -- setup -----------------------------------------------------------------------------


def prepare_home(home: Path, models: list[str] | None, fresh: bool = True) -> Path:
    """A clean home with the instance config, the fleet, the schema and datasets v1.

    Returns the fleet file the code location loads (the demo fleet, or its subset).
    """
    from demo.data import write_snapshot
    from modelops.contracts import FeatureSchema, write_schema
    from modelops.fleet import load_fleet

    home = home.resolve()
    if fresh and home.exists():
        looks_like_demo = (home / "dagster").exists() or (home / "registry.db").exists()
        if any(home.iterdir()) and not looks_like_demo:
            raise ModelopsError(f"{home} is not empty and not a demo home; choose another --home")
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    write_instance_yaml(home)

    raw = yaml.safe_load(DEMO_FLEET.read_text())
    apply_policy(raw, load_scenario()["policy"])
    if models:
        known = [m["spec"]["model_id"] for m in raw["models"]]
        unknown = sorted(set(models) - set(known))
        if unknown:
            raise ModelopsError(f"--models: unknown {unknown}; allowed: {known}")
        raw["models"] = [m for m in raw["models"] if m["spec"]["model_id"] in models]
        used = {m[k] for m in raw["models"] for k in ("dataset", "eval_set")}
        raw["datasets"] = [d for d in raw["datasets"] if d["name"] in used]
    fleet_file = home / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    fleet = load_fleet(fleet_file)

    for c in fleet.feature_contracts:
        write_schema(home / "schemas", FeatureSchema(version=1, features=c.features))
    for d in fleet.datasets:
        write_snapshot(home, d.name, 1)
    return fleet_file


def load_scenario(path: Path = DEMO_SCENARIO) -> dict[str, Any]:
    """demo/scenario.yaml: the policy the demo declares and the truth of its world."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or "policy" not in data or "world" not in data:
        raise ModelopsError(f"{path} needs a 'policy' and a 'world' section")
    return data


def apply_policy(raw: dict[str, Any], policy: dict[str, Any]) -> None:
    """Lay the demo's declared policy over the fleet document (before it is validated)."""
    import copy

    if "canary_ladder" in policy:
        raw["canary_ladder"] = list(policy["canary_ladder"])
    if "durations" in policy:
        raw["durations"] = {**raw.get("durations", {}), **policy["durations"]}
    names = {d["name"] for d in raw["datasets"]}
    for d in policy.get("extra_datasets", []):
        if d["name"] not in names:
            raw["datasets"].append(dict(d))
    known = {m["spec"]["model_id"]: m for m in raw["models"]}
    for extra in policy.get("extra_models", []):
        if extra["model_id"] in known:
            continue
        m = copy.deepcopy(known[extra["clone"]])
        m["spec"]["model_id"] = extra["model_id"]
        for k in ("owner_team", "description"):
            if k in extra:
                m["spec"][k] = extra[k]
        if "dataset" in extra:
            m["dataset"] = extra["dataset"]
        m.pop("refresh_cron", None)
        raw["models"].append(m)
    per_model = policy.get("models", {})
    for m in raw["models"]:
        decl = per_model.get(m["spec"]["model_id"])
        if not decl:
            continue
        pol = m["spec"].setdefault("policy", {})
        if "min_samples" in decl:
            pol["min_samples"] = int(decl["min_samples"])
        if "log_inputs" in decl:
            pol["log_inputs"] = bool(decl["log_inputs"])
        if "ab" in decl:
            pol["ab"] = {**pol.get("ab", {}), **decl["ab"]}
        if "shadow" in decl:
            pol["shadow"] = {**pol.get("shadow", {}), **decl["shadow"]}
        if "drift_window_s" in decl:
            pol.setdefault("drift", {})["window_s"] = float(decl["drift_window_s"])
        if "max_primary_drop" in decl:
            m.setdefault("online", {})["max_primary_drop"] = float(decl["max_primary_drop"])


def launch(
    client: Any,
    job: str,
    tl: Timeline,
    *,
    run_config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """Queue a run through the webserver's GraphQL API (the daemon dequeues it). A job the
    location does not have yet is retried for `LOCATION_WAIT_S` (the location may still be
    loading); then the demo fails naming it."""
    from dagster_graphql import DagsterGraphQLClientError

    deadline = time.monotonic() + LOCATION_WAIT_S
    while True:
        try:
            run_id = client.submit_job_execution(
                job,
                repository_location_name=LOCATION,
                run_config=run_config or {},
                tags={"modelops/launched_by": "demo", **(tags or {})},
            )
            break
        except DagsterGraphQLClientError as exc:
            missing = "NotFound" in str(exc) or "LocationError" in str(exc)
            if not missing or time.monotonic() > deadline:
                raise ModelopsError(
                    f"could not queue {job}: {exc}; the code location {LOCATION!r} may not "
                    "have loaded (see logs/dagster-webserver.log in the demo home)"
                ) from exc
            time.sleep(2.0)
    tl(f"demo      queued {job} [{run_id[:8]}]")
    return str(run_id)


REVIEWER = ("platform-reviewer", "ml-platform")
_REVIEWER_KEY: dict[str, Any] = {}


def approve_and_promote(
    client: Any, watcher: Watcher, model_id: str, version: int, tl: Timeline
) -> None:
    """What a human does for a gated first version: approve it, then launch the promote job
    (an ordinary Dagster run, through the same queue and lock as the sensors' runs)."""
    from modelops.actions import ActionKind, ActionRequest, action_run_fields
    from modelops.errors import ConflictError
    from modelops.identity import generate_signing_key

    reg = watcher.registry
    reg.add_team(REVIEWER[1], actor="demo")
    for name, team in (REVIEWER, OPERATOR):
        try:
            reg.add_actor(name, team, actor="demo")
        except ConflictError:
            pass  # already registered
    # The reviewer's approval is a signature; the demo makes the reviewer a key on the spot.
    key = _REVIEWER_KEY.setdefault("key", generate_signing_key())
    reg.add_key(REVIEWER[0], key.public_key, actor="demo")
    reg.approve(model_id, version, actor=REVIEWER[0], key=key, target="PROMOTED")
    tl(f"demo      {REVIEWER[0]} approved {model_id} v{version} -> PROMOTED")
    req = ActionRequest(
        model_id=model_id,
        version=version,
        expected="OFFLINE_PASSED",
        actor=OPERATOR[0],
        reason="first version, approved by a reviewer",
        automated=False,
    )
    rr = action_run_fields(ActionKind.promote, req)
    launch(client, rr["job_name"], tl, run_config=rr["run_config"], tags=rr["tags"])


# -- the scenario ----------------------------------------------------------------------


def run_demo(
    home: Path = DEFAULT_HOME,
    models: list[str] | None = None,
    *,
    refresh_phase: bool = True,
    regression_model: str = "ctr_gbdt",
    keep: bool = False,
    quiet: bool = False,
    timeouts: dict[str, float] | None = None,
    traffic_rate: float = DEFAULT_RATE,
) -> DemoResult:
    """The scenario; DemoFailed (naming the phase) when a phase misses its goal."""
    tl = Timeline(quiet)
    home = Path(home).resolve()
    result = DemoResult(home=str(home))
    try:
        _scenario(
            home, models, result, tl, refresh_phase, regression_model, keep, timeouts, traffic_rate
        )
    except Exception as exc:  # noqa: BLE001 - every failure names its phase, then re-raises
        msg = str(exc)
        if not isinstance(exc, ModelopsError):
            msg = f"phase {result.phase!r}: {type(exc).__name__}: {exc}"[:600]
        result.failure = msg
        result.elapsed_s = round(tl.elapsed(), 1)
        _write_result(home, result)
        raise DemoFailed(msg, result) from exc
    result.elapsed_s = round(tl.elapsed(), 1)
    _write_result(home, result)
    return result


class _Governance:
    """Phase 5 (issue 11's outcomes: state restored, the IRREVERSIBLE report, break-glass,
    a forged approval, Article 11) in a thread, on a registry of its own under
    `<home>/governance`, so it adds no wall time and the controller never sees its versions,
    which are records, not servable models. Its reports go on the demo's Dagster instance."""

    def __init__(self, home: Path, tl: Timeline) -> None:
        from demo.governance_phase import run_governance_phase

        self._out: dict[str, Any] | None = None
        self._exc: BaseException | None = None

        def work() -> None:
            try:
                sub = home / "governance"
                sub.mkdir(parents=True, exist_ok=True)
                self._out = run_governance_phase(sub, tl, dagster_home=home / "dagster")
            except BaseException as exc:  # noqa: BLE001 - re-raised in result()
                self._exc = exc

        self._thread = threading.Thread(target=work, name="demo-governance", daemon=True)
        self._thread.start()

    def result(self, timeout_s: float) -> dict[str, Any]:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise PhaseTimeout(f"phase 'governance' timed out after {timeout_s:.0f}s")
        if self._exc is not None:
            raise self._exc
        assert self._out is not None
        return self._out


def _write_result(home: Path, result: DemoResult) -> None:
    if home.exists():
        (home / "demo-result.json").write_text(json.dumps(asdict(result), indent=2, default=str))


def _scenario(
    home: Path,
    models: list[str] | None,
    result: DemoResult,
    tl: Timeline,
    refresh_phase: bool,
    regression_model: str,
    keep: bool,
    timeouts: dict[str, float] | None,
    traffic_rate: float,
) -> None:
    from dagster_graphql import DagsterGraphQLClient

    from demo.observe import CanaryObserver
    from modelops.fleet import load_fleet
    from modelops.spec import Tier

    # Guards against a stuck phase, not the target: a quiet machine finishes in about 5 min.
    limits = {
        "start": 120.0,
        "bootstrap": 240.0,
        "refresh": 540.0,
        "rollback": 180.0,
        "drift": 90.0,
        "governance": 120.0,
    }
    limits.update(timeouts or {})
    scenario = load_scenario()
    world = scenario["world"]
    fleet_file = prepare_home(home, models)
    fleet = load_fleet(fleet_file)
    ids = [m.model_id for m in fleet.models]
    auto = [m.model_id for m in fleet.models if m.spec.tier is not Tier.L3]
    gated = {m.model_id for m in fleet.models if m.spec.tier is Tier.L2}
    waiting = [m.model_id for m in fleet.models if m.spec.tier is Tier.L3]
    tl(f"demo      home {home}; models {', '.join(ids)}")
    tl(f"demo      canary ladder {fleet.canary_ladder}% (demo/scenario.yaml says why)")

    stack = Stack(home, fleet_file=fleet_file)
    watcher: Watcher | None = None
    sim: TrafficSim | None = None
    observer: CanaryObserver | None = None
    scenario: Scenario | None = None
    try:
        # -- processes --------------------------------------------------------------
        result.phase = "start"
        t = time.monotonic()
        stack.start_triton()
        tl(f"proc      tritonserver ready at {stack.triton.url}")  # type: ignore[union-attr]
        stack.start_gateway()
        tl(f"proc      gateway ready at {stack.gateway_url}")
        stack.start_webserver(timeout=limits["start"])
        tl(f"proc      dagster-webserver ready at http://127.0.0.1:{stack.webserver_port}")
        stack.start_daemon(timeout=limits["start"])
        tl("proc      dagster-daemon running (sensors, schedules, run queue)")
        result.phases["start_s"] = round(time.monotonic() - t, 1)
        stack.apply_env()
        watcher = Watcher(home, ids, tl)
        client = DagsterGraphQLClient("127.0.0.1", port_number=stack.webserver_port)

        # -- 1. bootstrap -----------------------------------------------------------
        result.phase = "bootstrap"
        tl("phase 1   bootstrap: train -> register -> gates -> promote (L3 waits)")
        for m in ids:
            launch(client, f"refresh_{m}", tl)

        approved: set[str] = set()

        def bootstrapped() -> bool:
            for job, model, why in watcher.failures:  # type: ignore[union-attr]
                # A first version's promotion or training that failed will not come back.
                if job == "modelops_promote" or job.startswith("refresh_"):
                    raise PhaseFailed(f"phase 'bootstrap': run {job} ({model}) failed: {why}"[:600])
            for m in gated - approved:  # L2 first versions wait for a human
                if watcher.state(m, 1) == "OFFLINE_PASSED":  # type: ignore[union-attr]
                    approved.add(m)
                    approve_and_promote(client, watcher, m, 1, tl)  # type: ignore[arg-type]
            ok = all(watcher.prod_version(m) is not None for m in auto)  # type: ignore[union-attr]
            return ok and all(
                watcher.state(m, 1) in ("OFFLINE_PASSED", "FAILED")  # type: ignore[union-attr]
                for m in waiting
            )

        result.phases["bootstrap_s"] = round(
            wait_for("bootstrap", bootstrapped, limits["bootstrap"], watcher), 1
        )
        for m in waiting:
            st = watcher.state(m, 1)
            note = "waiting for two approvals (L3)" if st == "OFFLINE_PASSED" else "gates failed"
            tl(f"demo      {m} v1 is {st}: {note}")

        waited = _await_serving(stack.gateway_url, auto, 60.0)
        tl(f"demo      every model answers through the gateway ({waited:.1f}s)")
        sim = TrafficSim(
            stack.gateway_url,
            auto,
            rate_per_s=traffic_rate,
            token=stack.token,
        )
        sim.start()
        tl(
            f"traffic   started: {len(sim.users)} sticky users, each with a click propensity "
            f"of their own, ~{traffic_rate:.0f} req/s"
        )
        from serving.predlog import PredictionLogReader

        observer = CanaryObserver(
            fleet, watcher.registry, PredictionLogReader(stack.predlog_url), tl
        )
        watcher.hooks.append(observer.poll)
        watcher.hooks.append(_canary_sync(stack.gateway_url, sim, auto))

        # -- 2. refresh -------------------------------------------------------------
        result.phase = "refresh"
        scenario = Scenario(
            home, fleet, world, sim, watcher, lambda job, **kw: launch(client, job, tl, **kw), tl
        )
        watcher.hooks.append(scenario.hook)
        watcher.hooks.append(_focus_traffic(watcher, sim, auto))
        plan = scenario.plan
        refresh_t0 = time.monotonic()
        if refresh_phase:
            tl("phase 2   dataset v2 lands; weight refresh -> shadow -> canary -> decision")
            for m in auto:
                scenario.set_truth(m, world.get("refresh", {}).get(m) or {"effect": 0.0})
            scenario.write_data(auto)
            for m in auto:
                launch(client, f"refresh_{m}", tl)
            governance = _Governance(home, tl)  # phase 5 runs beside the refresh

        def refresh_done(models_: list[str]) -> bool:
            open_ = set(scenario.open_models())
            return not any(m in open_ for m in models_)

        if refresh_phase and regression_model in auto:
            # Phase 3 starts once its model is settled; the others keep going meanwhile.
            wait_for(
                f"refresh of {regression_model}",
                lambda: refresh_done([regression_model]),
                limits["refresh"],
                watcher,
            )
            check_outcome(watcher, regression_model, plan[regression_model], "refresh")

        # -- 3. regression ----------------------------------------------------------
        result.phase = "rollback"
        if regression_model in auto:
            m = regression_model
            good = watcher.prod_version(m)
            bad = max(watcher.versions(m)) + 1
            rate = float(world.get("regression_rate", 0.10))
            tl(
                f"phase 3   regression: {m} v{bad} clicks collapse to {rate:.2f} "
                f"(prod v{good} {sim.true_rate(m, good or 1):.2f})"
            )
            sim.regress(m, bad, rate=rate)
            sim.boosted.add(m)
            if len(auto) > 1:
                tl(f"traffic   mix: {m} now gets 3x the requests of each other model")
            scenario.write_data([m])
            launch(client, f"refresh_{m}", tl)
            phase3_t0 = time.monotonic()

            def rolled_back() -> bool:
                st = watcher.state(m, bad)  # type: ignore[union-attr]
                if st in ("PROMOTED", "FAILED"):
                    raise PhaseFailed(
                        f"phase 'rollback': {m} v{bad}, whose clicks collapsed, ended {st}"
                    )
                return st == "ROLLED_BACK"

            wait_for("rollback", rolled_back, limits["rollback"], watcher)
            result.phases["regression_s"] = round(time.monotonic() - phase3_t0, 1)
            rollback_seen = time.time()

            def all_back() -> bool:
                # The gateway routes nobody to the regressed version any more: at a low canary
                # share, ten clean responses alone do not show it.
                t = _gateway_table(stack.gateway_url, m)
                if t is None or bad in _user_versions(t):
                    return False
                return sim.all_on(m, good, rollback_seen, min_requests=10)  # type: ignore[union-attr,arg-type]

            wait_for("traffic back on prod", all_back, 30.0, watcher)
            routes = _gateway_table(stack.gateway_url, m)
            recovery = _recovery(sim, m, good, bad)
            entry = watcher.moved(m, bad, "ROLLED_BACK")
            result.regressed = {
                "model": m,
                "bad_version": bad,
                "good_version": good,
                "first_bad_ts": sim.first_bad_ts.get((m, bad)),
                "time_to_recover_s": recovery,
                "gateway_table": routes,
                "reason": entry.payload.get("reason") if entry is not None else None,
            }
            shown = f"{recovery:.1f}s" if recovery is not None else "n/a (never served)"
            tl(
                f"demo      {m}: 100% of traffic back on v{good}; "
                f"first bad response -> recovered in {shown}"
            )
        if refresh_phase:
            left = max(1.0, limits["refresh"] - (time.monotonic() - refresh_t0))
            rest = [m for m in auto if m in plan]
            wait_for("refresh", lambda: refresh_done(rest), left, watcher)
            result.phases["refresh_s"] = round(time.monotonic() - refresh_t0, 1)
            for m in rest:
                if m != regression_model:
                    check_outcome(watcher, m, plan[m], "refresh")
            for m in auto:
                tl(f"demo      {m}: prod is v{watcher.prod_version(m)}")
        if refresh_phase:
            result.phase = "governance"
            result.governance = governance.result(limits["governance"])
        # -- 4. drift ---------------------------------------------------------------
        result.phase = "drift"
        drift = world.get("drift") or {}
        dm = drift.get("model")
        if refresh_phase and dm in auto:
            shifts = {int(k): float(v) for k, v in (drift.get("shifts") or {}).items()}
            t4 = time.time()
            tl(f"phase 4   drift: {drift.get('story', '')} on {dm}'s traffic; clicks unchanged")
            sim.shift_features(dm, shifts)
            sim.boosted.add(dm)

            def drift_alerted() -> bool:
                return drift_alert(watcher, dm, t4) is not None  # type: ignore[arg-type]

            result.phases["drift_s"] = round(
                wait_for("drift alert", drift_alerted, limits["drift"], watcher), 1
            )
            e = drift_alert(watcher, dm, t4)  # type: ignore[arg-type]
            result.drift = {"model": dm, "shifts": shifts, "alert": e.payload if e else None}
            sim.shift_features(dm, {})
            prod_v = watcher.prod_version(dm)
            tl(f"outcome   {dm}: drift alerted, nothing rolled back (prod is v{prod_v})")
        # The action runs that moved the traffic finish their bookkeeping after the flip:
        # let them end before the daemon stops, instead of interrupting them.
        wait_for("in-flight runs to finish", watcher.idle, 60.0, watcher)
        watcher.poll()
    finally:
        if sim is not None:
            sim.stop()
            result.served = {
                m: {str(v): n for v, n in sorted(sim.counts(m).items())} for m in sim.models
            }
            result.traffic = {
                "users": len(sim.users),
                "requests": sum(sim.served.values()),
                "errors": sum(sim.errors.values()),
                "errors_by_kind": dict(sim.errors),
                "outcome_errors": sim.outcome_errors,
                "lost_requests": {f"{m} v{v}": n for (m, v), n in sim.lost_requests.items()},
            }
        if observer is not None:
            result.canaries = observer.summary()
        if watcher is not None:
            watcher.poll()
            result.runs = watcher.run_counts()
            result.states = live_states(watcher, ids)
            result.prod = {m: watcher.prod_version(m) for m in ids}
            if scenario is not None:
                result.outcomes = [outcome_row(watcher, e["model"], e) for e in scenario.entries()]
            watcher.close()
        if keep and sys.stdin.isatty():
            tl("demo      --keep: services stay up; press Ctrl-C to stop them")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        stack.stop()


def _focus_traffic(watcher: Watcher, sim: TrafficSim, models: list[str]) -> Callable[[], None]:
    """Send the simulated users where a decision is pending: a model with a version in
    shadow or canary gets full weight, one that is only serving prod a tenth (it still
    answers, and its prod arm is what a canary is compared with only while one runs). The
    regression model, once its phase starts, gets 3x (`sim.boosted`). Time is compressed,
    not the tests."""
    last = [0.0]

    def focus() -> None:
        now = time.monotonic()
        if now - last[0] < 2.0:
            return
        last[0] = now
        pending = {
            ls.model_id
            for ls in watcher.registry.live_states()
            if ls.state.value in ("SHADOW", "CANARY", "AB_TEST")
        }
        sim.set_mix(
            {m: (1.0 if m in pending else 0.1) * (3.0 if m in sim.boosted else 1.0) for m in models}
        )

    return focus


def _canary_sync(gateway_url: str, sim: TrafficSim, models: list[str]) -> Callable[[], None]:
    """Keep the simulator's view of each canary (version, percent) on the gateway's table, so
    users it loses are those the gateway routes to the canary."""
    last = [0.0]

    def sync() -> None:
        now = time.monotonic()
        if now - last[0] < 1.0:
            return
        last[0] = now
        tables = {t.get("model_id"): t for t in _gateway_tables(gateway_url) or []}
        for m in models:
            c = (tables.get(m) or {}).get("canary") or {}
            ep = c.get("endpoint") or {}
            sim.set_canary(m, ep.get("version"), c.get("percent"))

    return sync


def _recovery(sim: TrafficSim, model: str, good: int, bad: int) -> float | None:
    """First bad response -> the first good response after the last bad one."""
    first = sim.first_bad_ts.get((model, bad))
    if first is None:
        return None
    log = [s for s in list(sim.log) if s.model == model and s.ok]
    last_bad = max((s.ts for s in log if s.version == bad), default=first)
    after = [s.ts for s in log if s.ts > last_bad and s.version == good]
    return round((min(after) if after else last_bad) - first, 2)


def _user_versions(table: dict[str, Any]) -> set[int]:
    """The versions a gateway table sends users to (prod, canary, A/B arms)."""
    eps = [table.get("prod"), (table.get("canary") or {}).get("endpoint")]
    eps += [a.get("endpoint") for a in (table.get("ab_test") or {}).get("arms", [])]
    return {int(e["version"]) for e in eps if e}


def _await_serving(gateway_url: str, models: list[str], timeout: float) -> float:
    """Wait until each model answers one inference with 200 (a just-promoted version may
    still be loading in Triton): traffic should not start on 503s. Returns the wait."""
    import httpx

    from demo.data import N_FEATURES

    zeros = [0.0] * N_FEATURES
    tensor = {"name": "features", "shape": [1, N_FEATURES], "datatype": "FP32", "data": zeros}
    body = {"inputs": [tensor]}
    t0 = time.monotonic()
    left = list(models)
    while left and time.monotonic() - t0 < timeout:
        m = left[0]
        try:
            r = httpx.post(f"{gateway_url}/v2/models/{m}/infer", json=body, timeout=5)
            if r.status_code == 200:
                left.pop(0)
                continue
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    if left:
        raise ModelopsError(
            f"{', '.join(left)} did not answer through the gateway in {timeout:.0f}s"
        )
    return time.monotonic() - t0


def _gateway_tables(gateway_url: str) -> list[dict[str, Any]] | None:
    import httpx

    try:
        from modelops.service_token import auth_header, service_token

        headers = auth_header(service_token())  # the stack's token, after Stack.apply_env
        tables = httpx.get(f"{gateway_url}/admin/routes", timeout=5, headers=headers).json()
        return list(tables["tables"])
    except Exception:  # noqa: BLE001 - informational
        return None


def _gateway_table(gateway_url: str, model: str) -> dict[str, Any] | None:
    tables = _gateway_tables(gateway_url) or []
    return next((t for t in tables if t.get("model_id") == model), None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m demo.run", description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=DEFAULT_HOME, help="demo home (wiped first)")
    ap.add_argument("--models", default=None, help="comma list of model ids (default: all)")
    ap.add_argument("--keep", action="store_true", help="keep services up until Ctrl-C")
    ap.add_argument("--no-refresh", action="store_true", help="skip phase 2 (refresh)")
    ap.add_argument("--rate", type=float, default=DEFAULT_RATE, help="traffic, requests per second")
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    try:
        result = run_demo(
            args.home,
            models,
            refresh_phase=not args.no_refresh,
            keep=args.keep,
            traffic_rate=args.rate,
        )
    except DemoFailed as exc:
        print_summary(exc.result)
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    except ModelopsError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    print_summary(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
