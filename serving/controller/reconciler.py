"""The deployment controller: make the serving plane match the registry's desired state.

It follows the operator pattern. Each pass reads every (model, slice) desired state, makes
the backends hold exactly the versions those states need (plus the last good version for a
retention window), builds one RouteTable per (model, slice) from what is actually loaded,
and pushes the tables to every gateway that is behind. A pass that finds nothing to do does
nothing, so running it twice is safe; drift (a model unloaded behind our back, a backend
restarted empty, a gateway that lost its table) shows up as work for the next pass.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from modelops.desired import DesiredState
from modelops.errors import BackendUnavailable, ModelopsError
from modelops.registry import Registry
from modelops.service_token import auth_header, service_token
from modelops.spec import ModelClass, ModelSpec, ModelVersion
from serving.controller.adapters import BACKEND_ERRORS, ServingBackend, TritonAdapter, one_line
from serving.routing import (
    ABRoute,
    ApplyResult,
    BreakerPolicy,
    Endpoint,
    RouteTable,
    RoutingSnapshot,
    ShadowRoute,
    WeightedEndpoint,
    route_key,
)
from serving.triton.backend import RetentionPolicy, promoted_at

__all__ = [
    "Controller",
    "ControllerStatus",
    "PassBackoff",
    "ReconcileStep",
    "SliceStatus",
    "triton_controller",
]


class ReconcileStep(BaseModel):
    """One thing a pass did (or failed to do): a load, an unload, a push or an error."""

    ts: float
    kind: str  # load | unload | push | error
    target: str
    detail: str = ""
    seconds: float | None = None


class SliceStatus(BaseModel):
    model_id: str
    slice: str
    desired_generation: int
    routed_generation: int | None = None
    versions: list[int] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)


class ControllerStatus(BaseModel):
    passes: int = 0
    last_pass_ts: float | None = None
    last_actions: list[ReconcileStep] = Field(default_factory=list)
    slices: list[SliceStatus] = Field(default_factory=list)
    gateways: dict[str, dict[str, int]] = Field(default_factory=dict)
    backends: dict[str, str] = Field(
        default_factory=dict,
        description="per model class: 'ok', or why its backend could not be asked this pass",
    )
    error_passes: int = Field(default=0, description="passes that recorded an error, ever")
    consecutive_error_passes: int = Field(
        default=0, description="error passes since the last clean one; drives the backoff"
    )
    last_clean_pass_ts: float | None = None
    next_pass_in_s: float | None = Field(
        default=None, description="set by the loop: its wait before the next pass"
    )


@dataclass
class PassBackoff:
    """How long the loop waits after a pass: `base_s` after a clean one; after failures,
    bounded exponential backoff with equal jitter (a uniform draw in [d/2, d] for
    d = min(cap_s, base_s * 2**(failures-1))), so controllers that failed together do not
    retry in lockstep, and none waits longer than `cap_s`. A clean pass resets it."""

    base_s: float
    cap_s: float
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self, failed: bool) -> float:
        if not failed:
            self.failures = 0
            return self.base_s
        self.failures += 1
        d = min(self.cap_s, self.base_s * 2.0 ** min(self.failures - 1, 30))
        return d / 2 + self.rng.uniform(0.0, d / 2)


class Controller:
    """Reconciles desired state (registry) against actual state (backends and gateways)."""

    def __init__(
        self,
        registry: Registry,
        backends: dict[ModelClass, ServingBackend],
        *,
        gateways: Iterable[str] = (),
        retention: RetentionPolicy | None = None,
        clock: Callable[[], float] = time.time,
        http_timeout_s: float = 5.0,
        token: str | None = None,
    ) -> None:
        self.registry = registry
        self._token = token  # None: resolved by service_token() on first use
        self._epochs: dict[str, int] = {}  # route key -> the epoch our tables carry
        self.backends = backends
        self.gateways = list(gateways)
        self.clock = clock
        self.retention = retention or RetentionPolicy(window_s=3600.0)
        self._promoted_at: dict[tuple[str, str, int], datetime | None] = {}
        self.http_timeout_s = http_timeout_s
        self.snapshot = RoutingSnapshot()
        self.status = ControllerStatus()
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, int], ModelVersion] = {}
        self._specs: dict[str, ModelSpec] = {}

    # ------------------------------------------------------------------ pass

    def reconcile_once(self) -> list[ReconcileStep]:
        """One pass. Returns what it did; an empty list means actual already matched.

        A backend that fails (unreachable, or failing a load, an unload or a listing) is an
        `error` action on the pass, never an exception: the other backends are still
        reconciled, and the next pass retries. A pass that cannot read the desired state
        raises, after recording the failure in `status`.
        """
        with self._lock:
            try:
                return self._reconcile()
            except Exception as exc:
                now = self.clock()
                detail = f"{type(exc).__name__}: {one_line(exc)}"
                err = ReconcileStep(ts=now, kind="error", target="pass", detail=detail)
                self._record_pass(now, [err], self.status.slices, self.status.backends)
                raise

    def _spec(self, model_id: str) -> ModelSpec:
        if model_id not in self._specs:
            self._specs[model_id] = self.registry.get_model(model_id)
        return self._specs[model_id]

    def _version(self, model_id: str, version: int) -> ModelVersion:
        key = (model_id, version)
        if key not in self._versions:
            self._versions[key] = self.registry.get_version(model_id, version)
        return self._versions[key]

    def _prod_since(self, d: DesiredState) -> datetime | None:
        """When the current prod was promoted: the start of its predecessor's retention."""
        if d.prod_version is None:
            return None
        key = (d.model_id, d.slice, d.generation)
        if key not in self._promoted_at:
            fresh = self.registry.get_version(d.model_id, d.prod_version)
            self._promoted_at[key] = promoted_at(fresh, d.slice)
        return self._promoted_at[key]

    def _reconcile(self) -> list[ReconcileStep]:
        now = self.clock()
        actions: list[ReconcileStep] = []
        desired = self.registry.all_desired_states()
        previous = {t.key: t for t in self.snapshot.tables}
        # A backend that cannot say what it holds is "down" for this pass: nothing is loaded
        # onto it or unloaded from it, and the slices it serves keep the table they had.
        present: dict[ModelClass, set[str]] = {}
        down: dict[ModelClass, str] = {}
        for kind, b in self.backends.items():
            try:
                present[kind] = set(b.present())
            except BACKEND_ERRORS as exc:
                present[kind], down[kind] = set(), one_line(exc)
        reported: set[ModelClass] = set()
        needed: dict[ModelClass, set[str]] = {kind: set() for kind in self.backends}
        tables: list[RouteTable] = []
        slices: list[SliceStatus] = []
        for d in desired:
            spec = self._spec(d.model_id)
            kind = spec.model_class
            backend = self.backends.get(kind)
            st = SliceStatus(model_id=d.model_id, slice=d.slice, desired_generation=d.generation)
            slices.append(st)
            if backend is None:
                if d.prod_version is not None:
                    st.errors.append(f"no backend configured for model class {kind}")
                continue
            decision = self.retention.decide(d, promoted_at=self._prod_since(d))
            ready: dict[int, Endpoint] = {}
            for v in sorted(decision.keep):
                name = backend.name_for(d.model_id, v)
                needed[kind].add(name)
                if kind in down:
                    reported.add(kind)
                    st.errors.append(f"{name}: {down[kind]}")
                    actions.append(
                        ReconcileStep(ts=now, kind="error", target=name, detail=down[kind])
                    )
                    continue
                try:
                    mv = self._version(d.model_id, v)
                    if name not in present[kind]:
                        secs = backend.ensure(mv)
                        present[kind].add(name)
                        actions.append(
                            ReconcileStep(ts=now, kind="load", target=name, seconds=round(secs, 3))
                        )
                    ready[v] = backend.endpoint(mv)
                except BACKEND_ERRORS as exc:
                    detail = one_line(exc)
                    if isinstance(exc, BackendUnavailable):
                        down[kind] = detail  # gone mid-pass: spare the rest of it the wait
                        reported.add(kind)
                    st.errors.append(f"{name}: {detail}")
                    actions.append(ReconcileStep(ts=now, kind="error", target=name, detail=detail))
            st.versions = sorted(ready)
            table = _table(d, spec, ready)
            if table is None and kind in down and (d.model_id, d.slice) in previous:
                table = previous[(d.model_id, d.slice)]  # what gateways hold: keep publishing
            if table is not None:
                tables.append(table)
                st.routed_generation = table.generation
        for kind in down.keys() - reported:  # down, and no slice of it said so
            target = f"{kind.value} backend"
            actions.append(ReconcileStep(ts=now, kind="error", target=target, detail=down[kind]))
        # Make before break: gateways get the new tables first, and a version leaves its
        # backend only once every gateway has stopped routing to it. A failed push defers
        # every unload to a later pass, since that gateway may still send traffic there.
        self.snapshot = RoutingSnapshot(tables=tables)
        pushes = self._push_gateways(now)
        actions.extend(pushes)
        if not any(a.kind == "error" for a in pushes):
            actions.extend(self._unload_unneeded(now, present, needed, down))
        backends = {k.value: down.get(k, "ok") for k in self.backends}
        self._record_pass(now, actions, slices, backends)
        return actions

    def _unload_unneeded(
        self,
        now: float,
        present: dict[ModelClass, set[str]],
        needed: dict[ModelClass, set[str]],
        down: dict[ModelClass, str],
    ) -> list[ReconcileStep]:
        """Unload what no desired state needs, only names we manage, and only from a backend
        that answered: an empty listing from a dead one proves nothing."""
        actions: list[ReconcileStep] = []
        for kind, backend in self.backends.items():
            if kind in down:
                continue
            for name in sorted(present[kind] - needed[kind]):
                if not _managed(name):
                    continue
                try:
                    backend.remove(name)
                    actions.append(ReconcileStep(ts=now, kind="unload", target=name))
                except BACKEND_ERRORS as exc:
                    detail = one_line(exc)
                    actions.append(ReconcileStep(ts=now, kind="error", target=name, detail=detail))
        return actions

    def _record_pass(
        self,
        now: float,
        actions: list[ReconcileStep],
        slices: list[SliceStatus],
        backends: dict[str, str],
    ) -> None:
        failed = any(a.kind == "error" for a in actions)
        prev = self.status
        self.status = ControllerStatus(
            passes=prev.passes + 1,
            last_pass_ts=now,
            last_actions=actions,
            slices=slices,
            gateways=prev.gateways,
            backends=backends,
            error_passes=prev.error_passes + failed,
            consecutive_error_passes=prev.consecutive_error_passes + 1 if failed else 0,
            last_clean_pass_ts=prev.last_clean_pass_ts if failed else now,
            next_pass_in_s=prev.next_pass_in_s,
        )

    # ------------------------------------------------------------------ gateways

    @property
    def token(self) -> str:
        """The service token sent to gateways and demanded by ControllerServer."""
        if self._token is None:
            self._token = service_token()
        return self._token

    def _push_gateways(self, now: float) -> list[ReconcileStep]:
        """Bring every gateway to our tables, and check what each one actually applied.

        Each gateway is read first; only tables whose routing differs from ours are pushed,
        each with a compare-and-set on the (epoch, generation) read, so a push decided on a
        stale read never overwrites a newer table. A gateway table at or above our order
        that is not ours (a stale state file, another registry, a foreign push) is
        superseded one epoch higher once the registry confirms our generation is still its
        newest; if the registry has moved on, this pass is stale and the next one pushes.
        A table the gateway did not apply is an error on this pass, never a push.
        """
        import httpx

        actions: list[ReconcileStep] = []
        ours = {route_key(*t.key): t for t in self.snapshot.tables}
        if not self.gateways:  # pull-only: publish with the epochs we know, ask nobody
            self.snapshot = RoutingSnapshot(
                tables=[
                    t.model_copy(update={"epoch": self._epochs.get(k, 0)}) for k, t in ours.items()
                ]
            )
            return actions
        views: dict[str, dict[str, RouteTable]] = {}
        with httpx.Client(timeout=self.http_timeout_s, headers=auth_header(self.token)) as client:
            for gw in self.gateways:
                try:
                    views[gw] = _read_gateway(client, gw)
                except (httpx.HTTPError, ValueError, ValidationError, KeyError, TypeError) as exc:
                    actions.append(
                        ReconcileStep(
                            ts=now,
                            kind="error",
                            target=gw,
                            detail=f"push: cannot read its routes: {exc}",
                        )
                    )
            # Never publish below an epoch some gateway holds: our tables must compare newer.
            epoch = {
                k: max([self._epochs.get(k, 0), *(v[k].epoch for v in views.values() if k in v)])
                for k in ours
            }
            contested = sorted(
                k
                for v in views.values()
                for k, t in ours.items()
                if k in v and not v[k].same_route(t) and (epoch[k], t.generation) <= v[k].order
            )
            held_back: set[str] = set()
            for k in dict.fromkeys(contested):
                t = ours[k]
                try:
                    newest = self.registry.desired_state(t.model_id, t.slice).generation
                except ModelopsError as exc:
                    held_back.add(k)
                    actions.append(ReconcileStep(ts=now, kind="error", target=k, detail=str(exc)))
                    continue
                if newest > t.generation:
                    held_back.add(k)  # our view is stale; the next pass has the newer table
                else:
                    epoch[k] += 1
            self._epochs.update(epoch)
            self.snapshot = RoutingSnapshot(
                tables=[t.model_copy(update={"epoch": epoch[k]}) for k, t in ours.items()]
            )
            published = {route_key(*t.key): t for t in self.snapshot.tables}
            for gw, have in views.items():
                actions.extend(self._push_one(client, gw, have, published, held_back, now))
        return actions

    def _push_one(
        self,
        client: Any,
        gw: str,
        have: dict[str, RouteTable],
        published: dict[str, RouteTable],
        held_back: set[str],
        now: float,
    ) -> list[ReconcileStep]:
        import httpx

        gens = {k: t.generation for k, t in have.items()}
        # Only tables we publish count: a (model, slice) whose prod cannot load is left out
        # on purpose, and the gateway keeps serving its last table.
        stale = sorted(
            k
            for k, t in published.items()
            if k not in held_back and (k not in have or not have[k].same_route(t))
        )
        if not stale:
            self.status.gateways[gw] = gens
            return []
        body = RoutingSnapshot(
            tables=[published[k] for k in stale],
            expect={k: have[k].order if k in have else None for k in stale},
        )
        try:
            r = client.put(
                f"{gw}/admin/routes",
                content=body.model_dump_json(),
                headers={"content-type": "application/json"},
            )
            r.raise_for_status()
            result = ApplyResult.model_validate_json(r.content)
        except (httpx.HTTPError, ValidationError, ValueError) as exc:
            self.status.gateways[gw] = gens
            return [ReconcileStep(ts=now, kind="error", target=gw, detail=f"push: {exc}")]
        got = {route_key(a.model_id, a.slice): (a.epoch, a.generation) for a in result.applied}
        kept = {route_key(i.model_id, i.slice): i for i in result.ignored}
        done = [k for k in stale if got.get(k) == published[k].order]
        missed = [k for k in stale if got.get(k) != published[k].order]
        for k in done:
            gens[k] = published[k].generation
        for k in missed:
            if k in kept and kept[k].current is not None:
                gens[k] = kept[k].current
        self.status.gateways[gw] = gens
        actions = []
        if done:
            detail = ", ".join(_pushed(k, have.get(k), published[k]) for k in done)
            actions.append(ReconcileStep(ts=now, kind="push", target=gw, detail=detail))
        if missed:
            detail = "push: not applied: " + "; ".join(
                f"{k} generation {published[k].generation} "
                f"({kept[k].reason if k in kept else 'not in the reply'})"
                for k in missed
            )
            actions.append(ReconcileStep(ts=now, kind="error", target=gw, detail=detail))
        return actions

    # ------------------------------------------------------------------ drift

    def drift(self, log: Any = None) -> list[str]:
        """Sorted, stable descriptions of every difference between desired and actual state.

        Read-only: nothing is loaded, pushed or recorded. A routed version (prod, canary, A/B
        arm, shadow) missing from its backend, a gateway whose table is not at the desired
        generation, and a backend or gateway that does not answer are drift (the reconcile
        pass will say why it cannot heal it). The warm rollback target is not checked: it
        follows the retention window, which needs each version's history. How long a backend
        or gateway may take to answer is this controller's own timeouts.
        """
        import httpx

        drift: set[str] = set()
        present: dict[ModelClass, set[str] | None] = {}
        for kind, backend in self.backends.items():
            try:
                present[kind] = set(backend.present())
            except Exception as exc:  # noqa: BLE001 - any failure to answer is drift, not a crash
                present[kind] = None
                drift.add(f"backend {backend.kind.value} for {kind.value} models is unreachable")
                if log is not None:
                    log.warning(f"backend {backend.kind.value} did not answer: {exc}")
        gateways: dict[str, dict[str, RouteTable] | None] = {}
        if self.gateways:
            with httpx.Client(
                timeout=self.http_timeout_s, headers=auth_header(self.token)
            ) as client:
                for gw in self.gateways:
                    try:
                        gateways[gw] = _read_gateway(client, gw)
                    except Exception as exc:  # noqa: BLE001
                        gateways[gw] = None
                        drift.add(f"gateway {gw} is unreachable")
                        if log is not None:
                            log.warning(f"gateway {gw} did not answer: {exc}")

        for d in self.registry.all_desired_states():
            kind = self.registry.get_model(d.model_id).model_class
            backend = self.backends.get(kind)
            if backend is None:
                continue  # no backend serves this model class; nothing a pass could heal
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
                held = tables.get(route_key(d.model_id, d.slice))
                gen = held.generation if held is not None else None
                if gen is None and d.generation == 0:
                    continue  # nothing was ever desired here; no table is the right table
                if gen != d.generation:
                    got = "no table" if gen is None else f"generation {gen}"
                    drift.add(f"{where}: gateway {gw} has {got}, desired generation {d.generation}")
        return sorted(drift)

    def routes_json(self, have: dict[str, tuple[int, int]] | None = None) -> str | None:
        """The tables a gateway holding `have` (route key -> (epoch, generation)) lacks;
        None when it is current. Without `have`, every table."""
        tables = self.snapshot.tables
        if have is None:
            return self.snapshot.model_dump_json()
        newer = [t for t in tables if t.order > have.get(route_key(*t.key), (-1, -1))]
        if not newer:
            return None
        return RoutingSnapshot(tables=newer).model_dump_json()


def _pushed(key: str, held: RouteTable | None, ours: RouteTable) -> str:
    if held is not None and held.generation >= ours.generation:
        return (
            f"{key} (replaced a different table the gateway held at generation {held.generation})"
        )
    return key


def _gateway_tables(payload: Any) -> dict[str, RouteTable]:
    """What `GET /admin/routes` says a gateway holds, by route key."""
    tables = payload.get("tables", []) if isinstance(payload, dict) else []
    out = {}
    for raw in tables:
        t = RouteTable.model_validate(raw)
        out[route_key(*t.key)] = t
    return out


def _read_gateway(client: Any, gw: str) -> dict[str, RouteTable]:
    """One `GET /admin/routes`: the tables a gateway holds, by route key."""
    r = client.get(f"{gw}/admin/routes")
    r.raise_for_status()
    return _gateway_tables(r.json())


def _routed_versions(d: DesiredState) -> dict[int, str]:
    """The versions a desired state sends traffic to, with their role."""
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


def _managed(name: str) -> bool:
    return "__v" in name


def _table(d: DesiredState, spec: ModelSpec, ready: dict[int, Endpoint]) -> RouteTable | None:
    """A route table names only loaded versions; a candidate that failed to load gets none."""
    if d.prod_version is not None and d.prod_version not in ready:
        return None  # never publish a table whose prod cannot serve; gateways keep the last
    prod = ready.get(d.prod_version) if d.prod_version is not None else None
    canary = (
        WeightedEndpoint(endpoint=ready[d.canary.version], percent=d.canary.percent)
        if d.canary and d.canary.version in ready
        else None
    )
    shadow = (
        ShadowRoute(
            endpoint=ready[d.shadow.version], percent=d.shadow.percent, mode=d.shadow.mode.value
        )
        if d.shadow and d.shadow.version in ready
        else None
    )
    ab = None
    if d.ab_test and all(a.version in ready for a in d.ab_test.arms):
        ab = ABRoute(
            layer=d.ab_test.layer,
            arms=[
                WeightedEndpoint(endpoint=ready[a.version], percent=a.percent)
                for a in d.ab_test.arms
            ],
        )
    fallback = ready.get(d.rollback_target) if d.rollback_target is not None else None
    return RouteTable(
        model_id=d.model_id,
        slice=d.slice,
        generation=d.generation,
        model_class=spec.model_class.value,
        prod=prod,
        canary=canary,
        ab_test=ab,
        shadow=shadow,
        fallback=fallback,
        on_breaking_contract="fallback"
        if spec.policy.fallback_on_breaking_contract
        else "fail_closed",
        log_inputs=spec.policy.log_inputs,
        breaker=BreakerPolicy(),
    )


def triton_controller(
    registry: Registry,
    store: Any,
    *,
    triton_url: str,
    repository: Path,
    gateways: Iterable[str] = (),
    rendering: str = "portable",
    retention_s: float = 3600.0,
    token: str | None = None,
    http_timeout_s: float = 5.0,
    backend_timeout_s: float = 300.0,
) -> Controller:
    """The embedded deployment: DNN models on one Triton, tables pushed to these gateways.

    One constructor for every caller (the CLI, the Dagster resource), so they cannot drift.
    """
    triton = TritonAdapter(
        triton_url,
        Path(repository),
        store,
        rendering=rendering,
        contracts=registry.get_contract,
        timeout_s=backend_timeout_s,
    )
    return Controller(
        registry,
        {ModelClass.dnn: triton},
        gateways=[g.rstrip("/") for g in gateways],
        retention=RetentionPolicy(window_s=retention_s),
        token=token,
        http_timeout_s=http_timeout_s,
    )
