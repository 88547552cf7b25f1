"""The routing rule of one request: its identity, its table, its arm and its fallbacks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from serving.gateway.asgi import Refusal, RequestView
from serving.gateway.breaker import BreakerBoard
from serving.gateway.config import CANDIDATE_ARMS, H_CONTRACT, H_REQUEST_ID, MAX_ID_LEN, PINNED
from serving.gateway.contracts import ContractGuard, ContractVerdict
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.route_store import RouteStore, endpoints_of
from serving.routing import Endpoint, RouteTable, assign

__all__ = ["RouteChoice", "RouteChooser"]


@dataclass(slots=True)
class RouteChoice:
    """Where one request goes: its table, arm and endpoint, and why it fell back if it did."""

    table: RouteTable
    arm: str
    endpoint: Endpoint
    bucket: int | None
    fallback: str | None


class RouteChooser:
    """Which version a request goes to: identity, table, arm, breakers, contract verdicts.

    A part of `Gateway`, kept apart so the routing rule reads on its own.
    """

    store: RouteStore
    guard: ContractGuard | None
    breakers: BreakerBoard
    metrics: GatewayMetrics
    _retry: dict[str, str]

    if TYPE_CHECKING:  # Gateway's own

        def _event_limited(
            self, kind: str, table: RouteTable, version: int | None, **detail: Any
        ) -> None: ...

    def _identity(self, req: RequestView) -> tuple[str | None, str]:
        h = req.headers
        user = h.get("x-user-id")
        slice_ = h.get("x-slice")
        if (user is None or slice_ is None) and req.query:
            user = user if user is not None else req.param("user_id")
            slice_ = slice_ if slice_ is not None else req.param("slice")
        if user == "":
            user = None  # an empty id is no id: such requests go to prod
        elif user is not None and len(user) > MAX_ID_LEN:
            raise Refusal(400, f"user id must be at most {MAX_ID_LEN} characters")
        if slice_ is None or slice_ == "":
            slice_ = "global"
        elif len(slice_) > MAX_ID_LEN:
            raise Refusal(400, f"slice must be at most {MAX_ID_LEN} characters")
        return user, slice_

    def _request_id(self, req: RequestView) -> str:
        rid = req.headers.get(H_REQUEST_ID)
        if rid is None or rid == "":
            return uuid.uuid4().hex
        if len(rid) > MAX_ID_LEN:
            raise Refusal(400, f"x-request-id must be at most {MAX_ID_LEN} characters")
        return rid

    def _table(self, model: str, slice_: str) -> RouteTable:
        table = self.store.lookup(model, slice_)
        if table is None:
            raise Refusal(404, f"unknown model {model!r}; the gateway has no route for it")
        return table

    async def _verdict(self, ep: Endpoint) -> ContractVerdict | None:
        ref = ep.feature_contract_ref
        if ref is None or self.guard is None:
            return None
        v = self.guard.cached(ref)
        return v if v is not None else await self.guard.verdict(ref)

    async def decide(self, table: RouteTable, user_id: str | None) -> RouteChoice:
        """The version this request goes to, after breakers and the contract check."""
        if table.canary is None and table.ab_test is None and table.prod is not None:
            d = RouteChoice(table, "prod", table.prod, None, None)  # no experiment: skip hashing
            if self.guard is not None:
                await self._check_contract(d)
            return d
        a = assign(table, user_id)
        if a is None:
            raise Refusal(
                503,
                f"no version of {table.model_id!r} is serving slice {table.slice!r}",
                headers=self._retry,
                error="unreachable",
            )
        d = RouteChoice(table, a.arm, a.endpoint, a.bucket, None)
        if d.arm in CANDIDATE_ARMS and not self.breakers.allows(
            (table.model_id, table.slice, d.endpoint.version)
        ):
            self._to_prod(d, "breaker")
        if self.guard is not None:
            await self._check_contract(d)
        return d

    async def decide_pinned(self, table: RouteTable, version: str) -> RouteChoice:
        """A request that names its version is served by exactly that version if this table
        routes to it (so it is loaded), never rerouted to another, and counted outside every
        experiment's arms (arm "pinned"): its users were not assigned at random."""
        m = table.model_id
        if not version.isdigit() or len(version) > 10:
            raise Refusal(400, f"version {version!r} is not a registry version number")
        v = int(version)
        ep = next((e for e in endpoints_of(table) if e.version == v), None)
        if ep is None:
            served = ", ".join(str(x) for x in sorted({e.version for e in endpoints_of(table)}))
            raise Refusal(
                404,
                f"{m!r} v{v} is not loaded for slice {table.slice!r}; loaded versions: "
                f"{served or 'none'}",
            )
        if not self.breakers.allows((m, table.slice, v)):
            raise Refusal(
                503,
                f"{m!r} v{v} is out of rotation (breaker)",
                headers=self._retry,
                endpoint=ep,
                arm=PINNED,
                error="unreachable",
            )
        verdict = await self._verdict(ep)
        if verdict is not None and not verdict.ok:
            if not verdict.known:
                raise Refusal(
                    503,
                    f"cannot check the feature contract of {m!r} v{v}: "
                    + "; ".join(verdict.reasons),
                    headers={**self._retry, H_CONTRACT: "unknown"},
                    endpoint=ep,
                    arm=PINNED,
                    error="contract_unknown",
                )
            raise Refusal(
                409,
                f"{m!r} v{v}: feature contract {verdict.ref} is broken by feature schema "
                f"v{verdict.schema_version}; a request for a named version is not rerouted",
                extra={"contract": verdict.ref, "reasons": list(verdict.reasons)},
                headers={H_CONTRACT: "breaking"},
                endpoint=ep,
                arm=PINNED,
                error="contract_breaking",
            )
        return RouteChoice(table, PINNED, ep, None, None)

    def _to_prod(self, d: RouteChoice, reason: str) -> None:
        table = d.table
        self.metrics.inc(
            self.metrics.fallbacks, table.model_id, str(d.endpoint.version), d.arm, reason
        )
        if table.prod is None:
            raise Refusal(
                503,
                f"{table.model_id!r} v{d.endpoint.version} is out of rotation ({reason}) "
                "and there is no prod version",
                headers=self._retry,
                endpoint=d.endpoint,
                arm=d.arm,
                error="unreachable",
            )
        d.arm, d.endpoint, d.fallback = "prod", table.prod, reason

    async def _check_contract(self, d: RouteChoice) -> None:
        table = d.table
        v = await self._verdict(d.endpoint)
        if v is None or v.ok:
            return
        if not v.known:
            raise Refusal(
                503,
                f"cannot check the feature contract of {table.model_id!r} "
                f"v{d.endpoint.version}: {'; '.join(v.reasons)}",
                headers={**self._retry, H_CONTRACT: "unknown"},
                endpoint=d.endpoint,
                arm=d.arm,
                error="contract_unknown",
            )
        if d.arm in CANDIDATE_ARMS:
            # A candidate is optional: its users get what everyone else gets.
            self._event_limited(
                "contract_breaking", table, d.endpoint.version, contract=v.ref, arm=d.arm
            )
            self._to_prod(d, "contract")
            v = await self._verdict(d.endpoint)
            if v is None or v.ok:
                return
        broken = d.endpoint
        if table.on_breaking_contract == "fallback" and table.fallback is not None:
            fv = await self._verdict(table.fallback)
            if fv is None or fv.ok:
                self.metrics.inc(
                    self.metrics.fallbacks, table.model_id, str(broken.version), d.arm, "contract"
                )
                d.arm, d.endpoint, d.fallback = "fallback", table.fallback, "contract"
                return
        self.metrics.inc(self.metrics.contract_refusals, table.model_id, str(broken.version), d.arm)
        self._event_limited("contract_breaking", table, broken.version, contract=v.ref, arm=d.arm)
        policy = table.on_breaking_contract
        why = "failing closed" if policy == "fail_closed" else "and no usable fallback version"
        raise Refusal(
            409,
            f"{table.model_id!r} v{broken.version}: feature contract {v.ref} is broken by "
            f"feature schema v{v.schema_version}; {why}",
            extra={
                "contract": v.ref,
                "schema_version": v.schema_version,
                "status": v.status,
                "reasons": list(v.reasons),
                "policy": policy,
            },
            headers={H_CONTRACT: "breaking"},
            endpoint=broken,
            arm=d.arm,
            error="contract_breaking",
        )
