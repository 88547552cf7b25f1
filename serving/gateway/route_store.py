"""The gateway's routing tables: applied by generation, persisted, pulled.

The controller pushes snapshots (`PUT /admin/routes`) and the gateway also pulls them, so a
lost push heals on the next pull. Each (model, slice) only ever moves to a newer
(epoch, generation), which makes both paths idempotent and order-free. The epoch is how the
controller supersedes a table whose generation it never issued (a stale state file, another
registry, a foreign push): it reads what the gateway holds, and pushes its own table one
epoch higher with a compare-and-set on what it read. The last applied snapshot is
written to a state file, so a restarted gateway serves its last tables before the
controller answers, and so sibling worker processes sharing one port pick up a push that
only one of them received.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from modelops.errors import SpecError
from serving.routing import ApplyResult, Endpoint, RouteTable, RoutingSnapshot, TableRef, route_key

__all__ = ["RouteStore", "endpoints_of", "validate_endpoint_url"]

log = logging.getLogger("modelops.gateway")


def endpoints_of(table: RouteTable) -> list[Endpoint]:
    """Every endpoint a table can send traffic to."""
    out: list[Endpoint] = []
    if table.prod is not None:
        out.append(table.prod)
    if table.canary is not None:
        out.append(table.canary.endpoint)
    if table.ab_test is not None:
        out.extend(a.endpoint for a in table.ab_test.arms)
    if table.shadow is not None:
        out.append(table.shadow.endpoint)
    if table.fallback is not None:
        out.append(table.fallback)
    return out


def validate_endpoint_url(url: str) -> str | None:
    """A reason the URL cannot be used as a backend base URL, or None if it can."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except Exception as exc:  # noqa: BLE001 - httpx raises several types for bad URLs
        return f"{url!r} is not a URL ({exc})"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return f"{url!r} is not an http(s) URL with a host; allowed: http(s)://HOST[:PORT][/PATH]"
    return None


def _order(order: tuple[int, int] | list[int] | None) -> str:
    return "no table" if order is None else f"epoch {order[0]} generation {order[1]}"


def _check_snapshot(snapshot: RoutingSnapshot) -> None:
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for t in snapshot.tables:
        if t.key in seen:
            problems.append(f"{route_key(*t.key)} appears twice")
        seen.add(t.key)
        for ep in endpoints_of(t):
            why = validate_endpoint_url(ep.url)
            if why is not None:
                problems.append(f"{route_key(*t.key)} v{ep.version}: {why}")
    if problems:
        raise SpecError("invalid routing snapshot: " + "; ".join(problems))


class RouteStore:
    """Tables by (model, slice). Reads are dict lookups; an apply swaps the whole dict."""

    def __init__(
        self,
        state_file: Path | None = None,
        *,
        on_applied: Callable[[RouteTable, RouteTable | None], None] | None = None,
    ) -> None:
        self.state_file = state_file
        self._tables: dict[tuple[str, str], RouteTable] = {}
        self._models: frozenset[str] = frozenset()
        self._on_applied = on_applied
        self._state_mtime: int | None = None

    # ------------------------------------------------------------------ reads

    def lookup(self, model_id: str, slice_: str) -> RouteTable | None:
        """The table for (model, slice); a slice without its own table uses the global one."""
        t = self._tables.get((model_id, slice_))
        if t is None and slice_ != "global":
            t = self._tables.get((model_id, "global"))
        return t

    def has_model(self, model_id: str) -> bool:
        return model_id in self._models

    def tables(self) -> list[RouteTable]:
        return [self._tables[k] for k in sorted(self._tables)]

    def generations(self) -> dict[str, int]:
        return {route_key(*k): t.generation for k, t in sorted(self._tables.items())}

    def orders(self) -> dict[str, tuple[int, int]]:
        """(epoch, generation) per route key: what a pull tells the controller we hold."""
        return {route_key(*k): t.order for k, t in sorted(self._tables.items())}

    def snapshot(self) -> RoutingSnapshot:
        return RoutingSnapshot(tables=self.tables())

    def __len__(self) -> int:
        return len(self._tables)

    # ------------------------------------------------------------------ writes

    def apply(self, snapshot: RoutingSnapshot) -> ApplyResult:
        """Take each table newer (by epoch, then generation) than ours; ignore the rest.

        A table whose key the snapshot's `expect` names is taken only if we still hold
        exactly the (epoch, generation) expected. Tables missing from the snapshot are kept:
        a controller omits a table it cannot currently serve, and the gateway keeps serving
        the last good one. A snapshot with an unusable endpoint URL is refused whole
        (SpecError), so it never half-applies.
        """
        _check_snapshot(snapshot)
        result = ApplyResult()
        new = dict(self._tables)
        changed: list[tuple[RouteTable, RouteTable | None]] = []
        for t in snapshot.tables:
            cur = new.get(t.key)
            k = route_key(*t.key)
            reason = None
            if k in snapshot.expect:
                want = snapshot.expect[k]
                held = cur.order if cur is not None else None
                if (tuple(want) if want is not None else None) != held:
                    reason = f"expected {_order(want)}, holds {_order(held)}"
            if reason is None and cur is not None and t.order <= cur.order:
                reason = "not newer"
            if reason is not None:
                result.ignored.append(
                    TableRef(
                        model_id=t.model_id,
                        slice=t.slice,
                        generation=t.generation,
                        epoch=t.epoch,
                        current=cur.generation if cur is not None else None,
                        current_epoch=cur.epoch if cur is not None else None,
                        reason=reason,
                    )
                )
                continue
            new[t.key] = t
            changed.append((t, cur))
            result.applied.append(
                TableRef(model_id=t.model_id, slice=t.slice, generation=t.generation, epoch=t.epoch)
            )
        if changed:
            self._tables = new
            self._models = frozenset(m for m, _ in new)
            if self._on_applied is not None:
                for t, old in changed:
                    self._on_applied(t, old)
        return result

    # ------------------------------------------------------------------ persistence

    def read_state(self) -> RoutingSnapshot | None:
        """Read the state file (I/O: call it off the event loop); None if absent or corrupt."""
        if self.state_file is None:
            return None
        try:
            mtime = self.state_file.stat().st_mtime_ns
            raw = self.state_file.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read gateway state file %s: %s", self.state_file, exc)
            return None
        self._state_mtime = mtime
        try:
            return RoutingSnapshot.model_validate_json(raw)
        except (ValidationError, ValueError) as exc:
            log.warning("ignoring unreadable gateway state file %s: %s", self.state_file, exc)
            return None

    def newer_than(self, snapshot: RoutingSnapshot) -> bool:
        """Do we hold a table newer than (or missing from) this snapshot?

        Worker processes sharing a port all read and write the one state file; rewriting it
        when it lacks a newer table we hold makes their views converge whatever the order.
        """
        in_file = {t.key: t.order for t in snapshot.tables}
        return any(in_file.get(k, (-1, -1)) < t.order for k, t in self._tables.items())

    def load_state(self) -> ApplyResult | None:
        """Startup: apply the state file if there is one; a corrupt file is logged and ignored."""
        snap = self.read_state()
        if snap is None:
            return None
        try:
            result = self.apply(snap)
        except SpecError as exc:
            log.warning("ignoring unusable gateway state file %s: %s", self.state_file, exc)
            return None
        if self.newer_than(snap):
            self.save_state()
        return result

    def state_changed(self) -> bool:
        """Has another process rewritten the state file since we last read or wrote it?"""
        if self.state_file is None:
            return False
        try:
            return self.state_file.stat().st_mtime_ns != self._state_mtime
        except OSError:
            return False

    def save_state(self) -> None:
        """Write the current snapshot atomically: a crash leaves the old file or the new."""
        if self.state_file is None:
            return
        path = self.state_file
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self.snapshot().model_dump(mode="json"), sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        try:
            self._state_mtime = path.stat().st_mtime_ns
        except OSError:
            self._state_mtime = None
