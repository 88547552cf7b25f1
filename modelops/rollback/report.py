"""The rollback report: what a rollback did, step by step, in JSON and in markdown.

For an IRREVERSIBLE model it is the five-step report (cutover; features its outputs fed,
contaminated since promotion; downstream models trained on its outputs, NEEDS_RETRAIN and
not rolled back; downstream snapshotted state restored; the decay window), ending with
"what rollback delivered". Every class gets the cutover, the state restored (with exactly
how many writes after the snapshot's cursor were reverted, and which keys) and the plan.
A store whose snapshot did not verify is listed as refused, untouched, with its one line.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel, Field

from modelops.rollback.plan import RollbackPlan

__all__ = ["Cutover", "StoreRefused", "StoreRestored", "RollbackReport", "report_id"]


def report_id(model_id: str, version: int, slice_: str, run_id: int) -> str:
    """The asset-key-safe id: rollback_reports/<id>."""
    raw = f"{model_id}__v{version}__{slice_}__run{run_id}"
    return re.sub(r"[^A-Za-z0-9_]", "_", raw)


class Cutover(BaseModel):
    from_state: str
    restored_version: int | None
    serving_version: int | None = None  # what serves the slice after the cutover
    registry_s: float
    serving_s: float | None = None

    @property
    def total_s(self) -> float:
        return round(self.registry_s + (self.serving_s or 0.0), 3)


class StoreRestored(BaseModel):
    owner_model: str
    store: str
    kind: str
    snapshot_sha256: str
    content_sha256: str
    mode: str
    writes_after_cursor: int | None
    keys_after_cursor: list[str] = Field(default_factory=list)
    elapsed_s: float = 0.0
    note: str = ""


class StoreRefused(BaseModel):
    """A store left untouched because its snapshot did not verify (the traffic cutover
    happened regardless: rollbacks are never gated by state)."""

    owner_model: str
    store: str
    snapshot_sha256: str
    expected_sha256: str
    found_sha256: str | None = None
    line: str


class RollbackReport(BaseModel):
    id: str
    run_id: int
    model_id: str
    version: int
    slice: str
    rollback_class: str
    actor: str
    reason: str
    started_at: str
    finished_at: str
    cutover: Cutover
    state: list[StoreRestored] = Field(default_factory=list)
    contaminated_features: list[dict[str, Any]] = Field(default_factory=list)
    needs_retrain: list[dict[str, Any]] = Field(default_factory=list)
    downstream_state: list[StoreRestored] = Field(default_factory=list)
    refused: list[StoreRefused] = Field(default_factory=list)
    cascaded: list[dict[str, Any]] = Field(default_factory=list)
    warned: list[str] = Field(default_factory=list)
    decay_window: dict[str, Any] | None = None
    plan: RollbackPlan
    delivered: list[str] = Field(default_factory=list)
    caveats: list[str] = Field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Traffic is back, but some state is not: the run ends failed, loudly."""
        return bool(self.refused)

    def failure_line(self) -> str:
        """The one line a failed run and its alert carry."""
        c = self.cutover
        v = c.restored_version if c.restored_version is not None else c.serving_version
        serving = f"v{v}" if v is not None else "the prod version"
        return (
            f"rollback of {self.model_id}@{self.version} on slice {self.slice!r}: traffic is "
            f"back on {serving}, but " + "; ".join(r.line for r in self.refused)
        )

    @property
    def writes_reverted(self) -> int:
        return sum(s.writes_after_cursor or 0 for s in (*self.state, *self.downstream_state))

    def document(self) -> dict[str, Any]:
        """The JSON form, with the sha256 of its canonical bytes (recorded in the audit)."""
        body = self.model_dump(mode="json")
        sha = hashlib.sha256(
            json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        return {**body, "sha256": sha, "writes_reverted": self.writes_reverted}

    def markdown(self) -> str:
        c = self.cutover
        lines = [
            f"# Rollback of {self.model_id} v{self.version} on slice `{self.slice}`",
            "",
            f"- rollback class: **{self.rollback_class}**; actor: {self.actor}; "
            f"reason: {self.reason or '-'}",
            f"- run {self.run_id}, {self.started_at} -> {self.finished_at}",
            "",
            "## 1. Traffic cutover",
            "",
            f"{c.from_state} v{self.version} -> ROLLED_BACK; serving "
            + (f"v{c.restored_version}" if c.restored_version is not None else "the prod version")
            + f". Measured: registry {c.registry_s:.3f} s"
            + (f", serving plane {c.serving_s:.3f} s" if c.serving_s is not None else "")
            + f", total {c.total_s:.3f} s.",
            "",
        ]
        if self.refused:
            lines += ["## Restore refused (store left untouched)", ""]
            lines += [f"- {r.line}" for r in self.refused]
            lines.append("")
        if self.state:
            lines += ["## State restored", ""]
            lines += [_store_line(s) for s in self.state]
            lines.append("")
        irreversible = self.rollback_class == "IRREVERSIBLE"
        if irreversible or self.contaminated_features:
            lines += ["## 2. Features this model's outputs feed", ""]
            if self.contaminated_features:
                for f in self.contaminated_features:
                    lines.append(
                        f"- `{f['feature']}`: contaminated since {f.get('since') or 'entry'}. "
                        f"No action: v{c.restored_version or '?'} is running on a shifted "
                        "input distribution."
                    )
            else:
                lines.append("- none declared (`feeds_features` is empty)")
            lines.append("")
        if irreversible or self.needs_retrain:
            lines += ["## 3. Downstream models trained on its outputs", ""]
            lines += [
                f"- {d['model_id']}: **NEEDS_RETRAIN**, not rolled back ({d['note']})"
                for d in self.needs_retrain
            ] or ["- none"]
            lines.append("")
        if irreversible or self.downstream_state:
            lines += ["## 4. Downstream snapshotted state", ""]
            lines += [_store_line(s) for s in self.downstream_state] or ["- none snapshotted"]
            lines.append("")
        if irreversible or self.decay_window:
            lines += ["## 5. Post-rollback monitoring", ""]
            w = self.decay_window
            lines.append(
                f"- alert thresholds relaxed x{w['relax_factor']} until {w['ends_at']} "
                f"({w['days']} days): {w['reason']}"
                if w
                else "- no decay window"
            )
            lines.append("")
        if self.cascaded or self.warned:
            lines += ["## Dependents", ""]
            lines += [f"- {d['model_id']}: cascaded ({d['note']})" for d in self.cascaded]
            lines += [f"- {m}: warned" for m in self.warned]
            lines.append("")
        lines += ["## Plan", "", "```", self.plan.table(), "```", ""]
        if self.caveats:
            lines += ["## Caveats", ""] + [f"- {x}" for x in self.caveats] + [""]
        lines += ["## What rollback delivered", ""] + [f"- {x}" for x in self.delivered]
        return "\n".join(lines) + "\n"


def _store_line(s: StoreRestored) -> str:
    keys = ", ".join(s.keys_after_cursor[:20])
    more = f" (+{len(s.keys_after_cursor) - 20} more)" if len(s.keys_after_cursor) > 20 else ""
    writes = (
        f"{s.writes_after_cursor} writes after the snapshot's cursor reverted"
        + (f" (keys: {keys}{more})" if keys else "")
        if s.writes_after_cursor is not None
        else f"no change log: the {len(s.keys_after_cursor)} items that differed were rewritten"
        + (f" ({keys}{more})" if keys else "")
    )
    return (
        f"- {s.owner_model}/{s.store} ({s.kind}): {s.mode} restore to snapshot "
        f"{s.snapshot_sha256[:12]}, verified content {s.content_sha256[:12]}; {writes}; "
        f"{s.elapsed_s:.3f} s" + (f"; {s.note}" if s.note else "")
    )
