"""Reconcile trigger: compare what the serving plane has against what the registry wants,
and launch one `modelops_reconcile` run when they differ.

The check only reads. Desired states come from one registry query; what the backend has
loaded is one call per backend; each gateway answers `GET /admin/routes` once. A backend or
gateway that does not answer is drift too (the reconcile run will say why it cannot heal
it), never an error of the tick. Only versions that take traffic count (prod, canary, A/B
arms, shadow): the warm rollback target follows the controller's retention window, which a
read-only check cannot judge without each version's history.

Run keys hash the drift list and the tick on which that drift was first seen, both kept in
the JSON cursor. The same drift on many ticks is one run; the same drift after a clean tick,
or still there after `retry_after_s`, is a new episode and a new run.
"""

import json
import time
from typing import Any

import dagster as dg
from pydantic import BaseModel

from modelops.actions import RECONCILE_JOB, reconcile_run_fields
from modelops.fleet import Fleet
from resources import ArtifactStoreResource, ControllerResource, RegistryResource

__all__ = [
    "RECONCILE_SENSOR",
    "DriftCursor",
    "find_drift",
    "build_reconcile_sensor",
]

RECONCILE_SENSOR = "modelops_reconcile_sensor"
PROBE_TIMEOUT_S = 3.0


class DriftCursor(BaseModel):
    """The sensor's JSON cursor: the last drift seen, when its episode began, the last tick."""

    last_drift: list[str] = []
    since: float | None = None
    checked_at: float | None = None

    @classmethod
    def parse(cls, raw: str | None) -> "DriftCursor":
        if not raw:
            return cls()
        try:
            return cls.model_validate(json.loads(raw))
        except (ValueError, TypeError):
            return cls()  # an unreadable cursor starts afresh rather than stopping the sensor

    def dump(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


def _routed_versions(d: Any) -> dict[int, str]:
    out: dict[int, str] = {}
    if d.prod_version is not None:
        out[d.prod_version] = "prod"
    if d.canary:
        out.setdefault(d.canary.version, "canary")
    for arm in d.ab_test.arms if d.ab_test else []:
        out.setdefault(arm.version, "A/B arm")
    if d.shadow:
        out.setdefault(d.shadow.version, "shadow")
    return out


def _gateway_tables(gw: str, timeout_s: float, token: str) -> dict[tuple[str, str], int]:
    import httpx

    from modelops.service_token import auth_header

    r = httpx.get(f"{gw}/admin/routes", timeout=timeout_s, headers=auth_header(token))
    payload = r.raise_for_status().json()
    tables = payload.get("tables", []) if isinstance(payload, dict) else []
    return {(t["model_id"], t["slice"]): int(t["generation"]) for t in tables}


def find_drift(
    registry: Any,
    store: Any,
    controller: ControllerResource,
    *,
    timeout_s: float = PROBE_TIMEOUT_S,
    log: Any = None,
) -> list[str]:
    """Sorted, stable descriptions of every difference between desired and actual state."""
    ctl = controller.build(registry, store)
    drift: set[str] = set()
    present: dict[Any, set[str] | None] = {}
    for kind, backend in ctl.backends.items():
        client = getattr(backend, "client", None)
        if client is not None and hasattr(client, "timeout_s"):
            client.timeout_s = timeout_s  # a hung backend must not stall the tick
        try:
            present[kind] = set(backend.present())
        except Exception as exc:  # noqa: BLE001 - any failure to answer is drift, not a crash
            present[kind] = None
            drift.add(f"backend {backend.kind.value} for {kind.value} models is unreachable")
            if log is not None:
                log.warning(f"backend {backend.kind.value} did not answer: {exc}")
    gateways: dict[str, dict[tuple[str, str], int] | None] = {}
    for gw in ctl.gateways:
        try:
            gateways[gw] = _gateway_tables(gw, timeout_s, ctl.token)
        except Exception as exc:  # noqa: BLE001
            gateways[gw] = None
            drift.add(f"gateway {gw} is unreachable")
            if log is not None:
                log.warning(f"gateway {gw} did not answer: {exc}")

    for d in registry.all_desired_states():
        kind = registry.get_model(d.model_id).model_class
        backend = ctl.backends.get(kind)
        if backend is None:
            continue  # the controller serves no such model class; nothing it could heal
        where = f"{d.model_id}/{d.slice}"
        have = present.get(kind)
        if have is not None:
            for v, role in sorted(_routed_versions(d).items()):
                name = backend.name_for(d.model_id, v)
                if name not in have:
                    drift.add(f"{where}: v{v} ({role}) is not loaded ({name})")
        for gw, tables in gateways.items():
            if tables is None:
                continue
            gen = tables.get((d.model_id, d.slice))
            if gen is None and d.generation == 0:
                continue  # nothing was ever desired here; no table is the right table
            if gen != d.generation:
                got = "no table" if gen is None else f"generation {gen}"
                drift.add(f"{where}: gateway {gw} has {got}, desired generation {d.generation}")
    return sorted(drift)


def build_reconcile_sensor(
    fleet: Fleet, *, retry_after_s: float | None = None, grace_s: float | None = None
) -> dg.SensorDefinition:
    """`modelops_reconcile_sensor`: drift -> one `modelops_reconcile` run per drift episode.

    Drift must outlast `grace_s` first: every action run makes its own controller pass right
    after its transition, so drift seen for a moment is usually that pass still loading, and a
    reconcile run launched for it would only compete for the same CPU.
    """
    interval = fleet.durations.sensor_interval_s
    retry = retry_after_s if retry_after_s is not None else max(60.0, 10.0 * interval)
    grace = grace_s if grace_s is not None else max(10.0, 2.0 * interval)

    @dg.sensor(
        name=RECONCILE_SENSOR,
        job_name=RECONCILE_JOB,
        minimum_interval_seconds=interval,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="compares the registry's desired state with what the backends have loaded "
        "and what each gateway routes; launches a reconcile run when they differ",
    )
    def modelops_reconcile_sensor(
        context: dg.SensorEvaluationContext,
        registry: RegistryResource,
        artifacts: ArtifactStoreResource,
        controller: ControllerResource,
    ) -> dg.SensorResult | dg.SkipReason:
        now = time.time()
        prev = DriftCursor.parse(context.cursor)
        try:
            drift = find_drift(registry.get(), artifacts.get(), controller, log=context.log)
        except Exception as exc:  # noqa: BLE001 - the registry itself failed; say so, retry
            context.log.error(f"drift check failed: {exc}")
            return dg.SkipReason(f"drift check failed: {' '.join(str(exc).split())}")
        if not drift:
            context.update_cursor(DriftCursor(last_drift=[], since=None, checked_at=now).dump())
            return dg.SkipReason("actual serving state matches the desired state")
        since = prev.since
        if drift != prev.last_drift or since is None or now - since >= retry + grace:
            since = now
        cursor = DriftCursor(last_drift=drift, since=since, checked_at=now)
        if now - since < grace:
            context.update_cursor(cursor.dump())
            return dg.SkipReason(
                f"{len(drift)} drift item(s) seen for {now - since:.0f}s; waiting {grace:.0f}s "
                "for the action run's own controller pass"
            )
        for item in drift:
            context.log.info(f"drift: {item}")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(**reconcile_run_fields(drift, since))],
            cursor=cursor.dump(),
        )

    return modelops_reconcile_sensor
