"""Invariant 1 at request time: a version is reachable only while its feature contract holds.

Checking a contract means a registry read and a schema parse, far too slow for the request
path, and the answer only changes when the feature store's schema does. So verdicts are
cached per (contract ref, schema version); a background task polls the cheap
`current_version()` and recomputes every known verdict when it moves. The request path does
one dict lookup.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from modelops.contracts import (
    ContractStatus,
    FeatureContract,
    FeatureSchema,
    FeatureSchemaSource,
    validate_contract,
)
from modelops.errors import NotFoundError, SpecError

__all__ = ["ContractResolver", "RegistryContracts", "ContractVerdict", "ContractGuard"]

log = logging.getLogger("modelops.gateway")


@runtime_checkable
class ContractResolver(Protocol):
    """Turns a `NAME@VERSION` reference into the contract it names."""

    def get(self, ref: str) -> FeatureContract: ...


class RegistryContracts:
    """A ContractResolver backed by the registry (any object with `get_contract(ref)`)."""

    def __init__(self, registry: object) -> None:
        self._registry = registry

    def get(self, ref: str) -> FeatureContract:
        return self._registry.get_contract(ref)  # type: ignore[attr-defined,no-any-return]


@dataclass(frozen=True)
class ContractVerdict:
    """Whether a contract is satisfiable right now, with the reasons a client should see."""

    ok: bool
    ref: str
    schema_version: int | None
    # OK | COMPATIBLE_EXTENSION | BREAKING_CHANGE | UNRESOLVED (no such contract), or, when
    # the answer is unknown for now, SCHEMA_UNAVAILABLE | RESOLVER_ERROR
    status: str
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def known(self) -> bool:
        """False while the schema or the registry cannot answer: neither holds nor broken."""
        return self.status not in ("SCHEMA_UNAVAILABLE", "RESOLVER_ERROR")


class ContractGuard:
    """Cached verdicts for the current schema version, refreshed by polling, not per request."""

    def __init__(
        self,
        schema_source: FeatureSchemaSource,
        resolver: ContractResolver,
        *,
        poll_s: float,
        on_change: Callable[[int | None, int], None] | None = None,
    ) -> None:
        self._source = schema_source
        self._resolver = resolver
        self.poll_s = poll_s
        self._on_change = on_change
        self._schema: FeatureSchema | None = None
        self._verdicts: dict[str, ContractVerdict] = {}  # for self._schema only; swapped whole
        self._known_refs: set[str] = set()
        self._lock = threading.Lock()  # serializes recomputation (threads)
        self.polls = 0  # how many times the source was asked for its version
        self._task: asyncio.Task[None] | None = None

    @property
    def schema_version(self) -> int | None:
        return self._schema.version if self._schema is not None else None

    def cached(self, ref: str) -> ContractVerdict | None:
        """The request path's lookup: O(1), never touches the source or the registry."""
        return self._verdicts.get(ref)

    async def verdict(self, ref: str) -> ContractVerdict:
        """Cached verdict, or compute it once in a thread for a ref seen for the first time."""
        v = self._verdicts.get(ref)
        if v is not None:
            return v
        return await asyncio.to_thread(self._compute_one, ref)

    def watch(self, refs: Iterable[str]) -> None:
        """Remember refs that routing tables name, so a schema change re-checks them all."""
        self._known_refs.update(refs)

    def _compute_one(self, ref: str) -> ContractVerdict:
        with self._lock:
            v = self._verdicts.get(ref)
            if v is not None:
                return v
            self._known_refs.add(ref)
            v = self._check(ref, self._schema)
            if v.known:
                self._verdicts = {**self._verdicts, ref: v}
            return v

    def _check(self, ref: str, schema: FeatureSchema | None) -> ContractVerdict:
        if schema is None:
            return ContractVerdict(
                False, ref, None, "SCHEMA_UNAVAILABLE", ("feature schema unavailable",)
            )
        try:
            contract = self._resolver.get(ref)
        except (NotFoundError, SpecError) as exc:
            return ContractVerdict(False, ref, schema.version, "UNRESOLVED", (str(exc),))
        except Exception as exc:  # noqa: BLE001 - e.g. the registry is down: ask again later
            log.warning("contract %s could not be resolved: %s", ref, exc)
            return ContractVerdict(False, ref, schema.version, "RESOLVER_ERROR", (str(exc),))
        check = validate_contract(contract, schema)
        reasons = tuple(r.detail for r in check.reasons if r.breaking)
        ok = check.status is not ContractStatus.BREAKING_CHANGE
        return ContractVerdict(ok, ref, schema.version, check.status.value, reasons)

    def poll_once(self) -> bool:
        """Ask the source for its version; on a change, recompute every known verdict.

        Returns True when the schema version changed. Runs in a thread (it does I/O). Any
        failure keeps the previous schema and verdicts: the last known answer stands.
        """
        self.polls += 1
        try:
            version = self._source.current_version()
            if self._schema is not None and version == self._schema.version:
                return False
            schema = self._source.get(version)
        except Exception as exc:  # noqa: BLE001 - a flaky source must not stop serving
            log.warning("feature schema poll failed, keeping the last schema: %s", exc)
            return False
        with self._lock:
            old = self.schema_version
            verdicts = {}
            for ref in sorted(self._known_refs):
                v = self._check(ref, schema)
                if v.known:  # an unknown answer is recomputed on first use instead
                    verdicts[ref] = v
            self._schema = schema
            self._verdicts = verdicts
        if self._on_change is not None:
            self._on_change(old, schema.version)
        return True

    async def run(self) -> None:
        """The background poll; the first poll happens at once so startup has a schema."""
        while True:
            await asyncio.to_thread(self.poll_once)
            await asyncio.sleep(self.poll_s)
