"""`python -m demo.run`: the whole scenario, headless, on the embedded defaults.

1. Bootstrap: datasets v1, the feature schema, Triton, the gateway, a real `dagster-daemon`
   (and the webserver, whose GraphQL API queues the refresh runs). Each model's refresh job
   trains, registers and gates v1; the candidate sensor promotes it (the L3 model waits
   for its approvals).
2. Refresh: traffic starts, dataset v2 lands, the refresh runs again, and the sensors walk
   each new version through shadow, canary 1/5/10 % and promotion.
3. Regression: the simulator makes the next ctr_gbdt version's users stop clicking; its
   refresh goes to canary, the online-metrics sensor sees the click rate collapse and
   launches the rollback job, and traffic returns to the last good version.

Every step prints on a timeline; the end shows each model's state per slice. The home is
left in place: `dagster dev` on it shows every materialization, check, tick and run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from demo.instance import write_instance_yaml
from demo.procs import REPO_ROOT, Stack
from demo.traffic import TrafficSim
from modelops.errors import ModelopsError

__all__ = ["DemoResult", "PhaseTimeout", "Timeline", "run_demo", "main"]

DEFAULT_HOME = Path(".modelops/demo-dagster")
DEMO_FLEET = REPO_ROOT / "demo" / "fleet.yaml"
LOCATION = "modelops"


_SETTLED = ("PROMOTED", "FAILED", "ROLLED_BACK")


class PhaseTimeout(ModelopsError):
    """A scenario phase did not reach its goal in time."""


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


class Timeline:
    """Timestamped lines, relative to the start, flushed as they happen."""

    def __init__(self, quiet: bool = False) -> None:
        self.t0 = time.time()
        self.quiet = quiet

    def elapsed(self) -> float:
        return time.time() - self.t0

    def __call__(self, msg: str) -> None:
        if self.quiet:
            return
        now = datetime.now().strftime("%H:%M:%S")
        print(f"[{self.elapsed():6.1f}s {now}] {msg}", flush=True)


class Watcher:
    """Prints registry audit entries and Dagster run status changes as they appear."""

    def __init__(self, home: Path, models: list[str], tl: Timeline) -> None:
        import dagster as dg

        from modelops.registry import Registry

        self.registry = Registry(f"sqlite:///{home / 'registry.db'}")
        self.instance = dg.DagsterInstance.from_config(str(home / "dagster"))
        self.models = models
        self.tl = tl
        self._seq: dict[str, int] = {}
        self._runs: dict[str, str] = {}

    def close(self) -> None:
        self.registry.close()
        self.instance.dispose()

    def poll(self) -> None:
        self._poll_audit()
        self._poll_runs()

    def _poll_audit(self) -> None:
        from modelops.errors import NotFoundError

        for m in self.models:
            try:
                entries = self.registry.audit_entries(m)
            except NotFoundError:
                continue
            last = self._seq.get(m, -1)
            for e in entries:
                if e.seq <= last:
                    continue
                self._seq[m] = e.seq
                line = _describe(e.action, e.payload)
                if line:
                    self.tl(f"registry  {m} v{e.version}: {line}  ({e.actor})")

    def _poll_runs(self) -> None:
        for rec in self.instance.get_run_records(limit=100):
            run = rec.dagster_run
            status = run.status.value
            if self._runs.get(run.run_id) == status:
                continue
            first = run.run_id not in self._runs
            self._runs[run.run_id] = status
            if status in ("NOT_STARTED", "STARTING") and not first:
                continue
            who = run.tags.get("dagster/sensor_name") or run.tags.get("dagster/schedule_name")
            via = f" by {who}" if who else ""
            self.tl(f"dagster   run {run.job_name} [{run.run_id[:8]}] {status}{via}")

    def idle(self) -> bool:
        """No run is queued or running: stopping the daemon now interrupts nothing."""
        import dagster as dg

        busy = [
            dg.DagsterRunStatus.QUEUED,
            dg.DagsterRunStatus.NOT_STARTED,
            dg.DagsterRunStatus.STARTING,
            dg.DagsterRunStatus.STARTED,
        ]
        return not self.instance.get_run_records(dg.RunsFilter(statuses=busy), limit=1)

    def run_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rec in self.instance.get_run_records(limit=1000):
            key = f"{rec.dagster_run.job_name}:{rec.dagster_run.status.value}"
            out[key] = out.get(key, 0) + 1
        return out

    def prod_version(self, model_id: str, slice_: str = "global") -> int | None:
        from modelops.errors import NotFoundError

        try:
            return self.registry.desired_state(model_id, slice_).prod_version
        except NotFoundError:
            return None

    def state(self, model_id: str, version: int, slice_: str = "global") -> str | None:
        from modelops.errors import NotFoundError

        try:
            return self.registry.state_of(model_id, version, slice_).value
        except NotFoundError:
            return None

    def versions(self, model_id: str) -> list[int]:
        from modelops.errors import NotFoundError

        try:
            return [v.version for v in self.registry.list_versions(model_id)]
        except NotFoundError:
            return []


def _describe(action: str, p: dict[str, Any]) -> str:
    if action in ("transition", "rollback"):
        pct = f" {p['percent']}%" if p.get("percent") not in (None, 100) else ""
        why = f" - {p['reason']}" if p.get("reason") else ""
        extra = f" (restored v{p['restored']})" if p.get("restored") else ""
        return f"{p.get('from')} -> {p.get('to')}{pct} on {p.get('slice')}{extra}{why}"[:220]
    if action == "gate_result":
        return f"gates: {json.dumps(p, sort_keys=True)[:160]}"
    if action == "register_version":
        return "registered"
    if action == "alert":
        return f"ALERT {p}"[:200]
    if action in ("approval", "override"):
        return f"{action}: {p}"[:200]
    return ""


def wait_for(
    phase: str,
    goal: Callable[[], bool],
    timeout_s: float,
    watcher: Watcher,
    interval: float = 1.0,
) -> float:
    """Poll (printing the timeline) until `goal` holds; PhaseTimeout otherwise."""
    t0 = time.monotonic()
    while True:
        watcher.poll()
        if goal():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            raise PhaseTimeout(f"phase {phase!r} timed out after {timeout_s:.0f}s")
        time.sleep(interval)


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
    if models:
        known = [m["spec"]["model_id"] for m in raw["models"]]
        unknown = sorted(set(models) - set(known))
        if unknown:
            raise ModelopsError(f"--models: unknown {unknown}; allowed: {known}")
        raw["models"] = [m for m in raw["models"] if m["spec"]["model_id"] in models]
    fleet_file = home / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    fleet = load_fleet(fleet_file)

    for c in fleet.feature_contracts:
        write_schema(home / "schemas", FeatureSchema(version=1, features=c.features))
    for d in fleet.datasets:
        write_snapshot(home, d.name, 1)
    return fleet_file


def launch(
    client: Any,
    job: str,
    tl: Timeline,
    *,
    run_config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """Queue a run through the webserver's GraphQL API (the daemon dequeues it)."""
    run_id = client.submit_job_execution(
        job,
        repository_location_name=LOCATION,
        run_config=run_config or {},
        tags={"modelops/launched_by": "demo", **(tags or {})},
    )
    tl(f"demo      queued {job} [{run_id[:8]}]")
    return str(run_id)


REVIEWER = ("platform-reviewer", "ml-platform")
_REVIEWER_KEY: dict[str, Any] = {}
OPERATOR = ("platform-operator", "ml-platform")


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
    traffic_rate: float = 300.0,
) -> DemoResult:
    from dagster_graphql import DagsterGraphQLClient

    from modelops.fleet import load_fleet
    from modelops.spec import Tier

    # Guards against a stuck phase, not the target: a quiet machine finishes in about 4 min.
    limits = {"start": 120.0, "bootstrap": 240.0, "refresh": 420.0, "rollback": 180.0}
    limits.update(timeouts or {})
    tl = Timeline(quiet)
    home = Path(home).resolve()
    result = DemoResult(home=str(home))
    fleet_file = prepare_home(home, models)
    fleet = load_fleet(fleet_file)
    ids = [m.model_id for m in fleet.models]
    auto = [m.model_id for m in fleet.models if m.spec.tier is not Tier.L3]
    gated = {m.model_id for m in fleet.models if m.spec.tier is Tier.L2}
    waiting = [m.model_id for m in fleet.models if m.spec.tier is Tier.L3]
    tl(f"demo      home {home}; models {', '.join(ids)}")

    stack = Stack(home, fleet_file=fleet_file)
    watcher: Watcher | None = None
    sim: TrafficSim | None = None
    try:
        # -- processes --------------------------------------------------------------
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
        tl("phase 1   bootstrap: train -> register -> gates -> promote (L3 waits)")
        for m in ids:
            launch(client, f"refresh_{m}", tl)

        approved: set[str] = set()

        def bootstrapped() -> bool:
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

        sim = TrafficSim(stack.gateway_url, auto, rate_per_s=traffic_rate, token=stack.token)
        sim.start()
        tl(f"traffic   started: {len(sim.users)} sticky users, ~{traffic_rate:.0f} req/s")

        # -- 2. refresh -------------------------------------------------------------
        from demo.data import write_snapshot

        data_version = 1
        before = {m: watcher.prod_version(m) for m in auto}

        def settled(m: str) -> bool:
            # Promoted, or stopped (gates failed, rolled back): the demo reports either.
            newer = [v for v in watcher.versions(m) if v > (before[m] or 0)]  # type: ignore[union-attr]
            return bool(newer) and watcher.state(m, max(newer)) in _SETTLED  # type: ignore[union-attr]

        refresh_t0 = time.monotonic()
        if refresh_phase:
            data_version = 2
            tl("phase 2   dataset v2 lands; weight refresh -> shadow -> canary -> promote")
            for d in fleet.datasets:
                if d.kind == "dataset":
                    write_snapshot(home, d.name, data_version)
            for m in auto:
                launch(client, f"refresh_{m}", tl)
            if regression_model in auto:
                # Phase 3 starts once its model is settled; the others keep going meanwhile.
                wait_for(
                    f"refresh of {regression_model}",
                    lambda: settled(regression_model),
                    limits["refresh"],
                    watcher,
                )

        # -- 3. regression ----------------------------------------------------------
        if regression_model in auto:
            m = regression_model
            good = watcher.prod_version(m)
            bad = max(watcher.versions(m)) + 1
            tl(f"phase 3   regression: {m} v{bad} will collapse clicks; prod is v{good}")
            sim.regress(m, bad, rate=0.03)
            if len(auto) > 1:
                sim.set_mix({x: (3.0 if x == m else 1.0) for x in auto})
                tl(f"traffic   mix: {m} now gets 3x the requests of each other model")
            data_version += 1
            for d in fleet.datasets:
                if d.kind == "dataset":
                    write_snapshot(home, d.name, data_version)
            launch(client, f"refresh_{m}", tl)

            def rolled_back() -> bool:
                return watcher.state(m, bad) == "ROLLED_BACK"  # type: ignore[union-attr]

            result.phases["regression_s"] = round(
                wait_for("rollback", rolled_back, limits["rollback"], watcher), 1
            )
            rollback_seen = time.time()

            def all_back() -> bool:
                # The gateway routes nobody to the regressed version any more: at a 1% canary,
                # ten clean responses alone do not show it.
                t = _gateway_table(stack.gateway_url, m)
                if t is None or bad in _user_versions(t):
                    return False
                return sim.all_on(m, good, rollback_seen, min_requests=10)  # type: ignore[union-attr,arg-type]

            wait_for("traffic back on prod", all_back, 30.0, watcher)
            routes = _gateway_table(stack.gateway_url, m)
            recovery = _recovery(sim, m, good, bad)
            result.regressed = {
                "model": m,
                "bad_version": bad,
                "good_version": good,
                "first_bad_ts": sim.first_bad_ts.get((m, bad)),
                "time_to_recover_s": recovery,
                "gateway_table": routes,
            }
            shown = f"{recovery:.1f}s" if recovery is not None else "n/a (never served)"
            tl(
                f"demo      {m}: 100% of traffic back on v{good}; "
                f"first bad response -> recovered in {shown}"
            )
        if refresh_phase:
            left = max(1.0, limits["refresh"] - (time.monotonic() - refresh_t0))
            wait_for("refresh", lambda: all(settled(m) for m in auto), left, watcher)
            result.phases["refresh_s"] = round(time.monotonic() - refresh_t0, 1)
            for m in auto:
                tl(f"demo      {m}: prod is v{watcher.prod_version(m)}")
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
        if watcher is not None:
            watcher.poll()
            result.runs = watcher.run_counts()
            result.states = _states(watcher, ids)
            result.prod = {m: watcher.prod_version(m) for m in ids}
            watcher.close()
        if keep and sys.stdin.isatty():
            tl("demo      --keep: services stay up; press Ctrl-C to stop them")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        stack.stop()
    result.elapsed_s = round(tl.elapsed(), 1)
    (home / "demo-result.json").write_text(json.dumps(asdict(result), indent=2, default=str))
    return result


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


def _gateway_table(gateway_url: str, model: str) -> dict[str, Any] | None:
    import httpx

    try:
        from modelops.service_token import auth_header, service_token

        headers = auth_header(service_token())  # the stack's token, after Stack.apply_env
        tables = httpx.get(f"{gateway_url}/admin/routes", timeout=5, headers=headers).json()
        tables = tables["tables"]
    except Exception:  # noqa: BLE001 - informational
        return None
    return next((t for t in tables if t.get("model_id") == model), None)


def _states(watcher: Watcher, ids: list[str]) -> dict[str, dict[str, list[str]]]:
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
    if result.regressed:
        r = result.regressed
        print(
            f"\nrollback: {r['model']} v{r['bad_version']} -> v{r['good_version']}, "
            f"time to recover {r['time_to_recover_s']}s (first bad response to 100% on prod)"
        )
    print(f"\nelapsed {result.elapsed_s:.1f}s; phases {result.phases}")
    print(
        f"\nbrowse it:  DAGSTER_HOME={result.home}/dagster MODELOPS_HOME={result.home} "
        f"MODELOPS_FLEET={result.home}/fleet.yaml dagster dev -w workspace.yaml"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m demo.run", description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=DEFAULT_HOME, help="demo home (wiped first)")
    ap.add_argument("--models", default=None, help="comma list of model ids (default: all)")
    ap.add_argument("--keep", action="store_true", help="keep services up until Ctrl-C")
    ap.add_argument("--no-refresh", action="store_true", help="skip phase 2 (refresh)")
    ap.add_argument("--rate", type=float, default=300.0, help="traffic, requests per second")
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
    except ModelopsError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    print_summary(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
