"""The demo's timeline and its watcher: what the registry and Dagster did, as it happens.

`Watcher.poll` prints each new registry audit entry and each Dagster run status change, and
calls its hooks (the canary observer, the simulator's view of the gateway); `wait_for` polls
it until a phase's goal holds, and fails with the phase's name otherwise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from modelops.errors import ModelopsError

__all__ = ["PhaseFailed", "PhaseTimeout", "Timeline", "Watcher", "wait_for"]


class PhaseTimeout(ModelopsError):
    """A scenario phase did not reach its goal in time."""


class PhaseFailed(ModelopsError):
    """A scenario phase ended otherwise than its goal (a good model rolled back, say)."""


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
        self.hooks: list[Callable[[], None]] = []  # called on every poll (observer, sim sync)
        self.failures: list[tuple[str, str | None, str]] = []  # (job, model tag, message)

    def close(self) -> None:
        self.registry.close()
        self.instance.dispose()

    def poll(self) -> None:
        self._poll_audit()
        self._poll_runs()
        for hook in self.hooks:
            hook()

    def entries(self, model_id: str) -> list[Any]:
        from modelops.errors import NotFoundError

        try:
            return list(self.registry.audit_entries(model_id))
        except NotFoundError:
            return []

    def alert(self, model_id: str, version: int, kind: str) -> Any | None:
        """The first alert of `kind` on record for this version, if any."""
        for e in self.entries(model_id):
            p = e.payload
            if e.action == "alert" and p.get("kind") == kind and p.get("version") == version:
                return e
        return None

    def moved(self, model_id: str, version: int, to: str) -> Any | None:
        """The last audit entry that moved this version to state `to`."""
        found = None
        for e in self.entries(model_id):
            if e.version == version and e.payload.get("to") == to:
                found = e
        return found

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
                    v = e.version if e.version is not None else e.payload.get("version")
                    at = f" v{v}" if v is not None else ""
                    self.tl(f"registry  {m}{at}: {line}  ({e.actor})")

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
            if status == "FAILURE":
                why = self._run_error(run.run_id)
                self.failures.append((run.job_name, run.tags.get("modelops/model"), why))
                self.tl(f"dagster   run {run.job_name} [{run.run_id[:8]}] failed: {why}"[:400])

    def _run_error(self, run_id: str) -> str:
        """The first failure message of a run (what a person would read in the UI)."""
        try:
            for ev in self.instance.all_logs(run_id):
                de = ev.dagster_event
                if de is not None and de.is_failure:
                    err = getattr(de.event_specific_data, "error", None)
                    return (getattr(err, "message", None) or str(de.event_specific_data)).strip()
        except Exception as exc:  # noqa: BLE001 - informational
            return f"(could not read the run's logs: {exc})"
        return "(no failure event)"

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
        return f"ALERT {p.get('kind')}: {p.get('detail', p)}"[:300]
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
