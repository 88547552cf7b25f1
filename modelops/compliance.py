"""Technical documentation of one model version, from registry records alone.

EU AI Act Article 11 asks a provider of a high-risk system to keep technical documentation
whose contents Annex IV lists. The registry already holds the records those contents come
from (the spec, the version record, dataset versions with their hashes, gate results, the
signed approvals, the policy and the append-only audit log), so the document is generated,
never written by hand: `build_document` reads the registry and `TechnicalDocument` renders
markdown and JSON. Nothing here invents content: a section the records cannot fill lists a
**gap** naming the missing record and how to fill it.

Required sections, and why (the L3 promotion gate, `require_documentation`):

1. general description and intended purpose: Annex IV 1(a); a purpose is what a reviewer
   approves against, and only a human can state it (`intended_purpose`, `description`).
3. data provenance: Annex IV 2(d); without content hashes a dataset version cannot be shown
   to be the data the model was trained and evaluated on.
4. per-slice evaluation and fairness: Annex IV 2(g) and 3; an L3 version must have its
   offline gate results on record, and results for every protected slice.
5. human oversight: Annex IV 2(e) and 3; at least one approval, and every approval's
   signature re-verified (a failed signature is a gap, not a footnote).
7. the change log: Annex IV 6; the model's audit chain must verify, or the log proves nothing.

Advisory sections (their gaps are listed, never block): 2, development (the registry always
holds the training run id; code references are optional parts of what a trainer reports, so
requiring them would gate on the trainer, not on the registry), and 6, monitoring (the plan
is the registered policy, always present; events accrue only after deployment).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field

from modelops.errors import IllegalTransition, NotFoundError
from modelops.spec import DatasetRef, ModelSpec, ModelVersion

__all__ = [
    "DocumentationGap",
    "Gap",
    "Section",
    "SignatureCheck",
    "TechnicalDocument",
    "RecordReader",
    "REQUIRED_SECTIONS",
    "SECTION_TITLES",
    "build_document",
    "require_documentation",
    "write_document",
]

SECTION_TITLES = {
    1: "General description and intended purpose",
    2: "Development process and training methodology",
    3: "Data provenance",
    4: "Per-slice evaluation and fairness results",
    5: "Human oversight records",
    6: "Post-deployment monitoring plan and events",
    7: "Change log",
}
REQUIRED_SECTIONS = frozenset({1, 3, 4, 5, 7})
_SIGNED = ("approval", "override", "break_glass")
_SIG_KINDS = ("SIGNATURE", "UNSIGNED")


class DocumentationGap(IllegalTransition):
    """An L3 version's required documentation sections have gaps: it may not be PROMOTED."""


class Gap(BaseModel):
    section: int
    record: str = Field(description="the record that is missing")
    fill: str = Field(description="how to fill it")
    required: bool


class SignatureCheck(BaseModel):
    """One signed statement on the version's record, re-verified by `audit verify`."""

    action: str
    signer: str
    team: str | None = None
    target: str | None = None
    slice: str | None = None
    ts: str
    audit_seq: int
    key_id: str | None = None
    verified: bool
    detail: str = ""


class Section(BaseModel):
    number: int
    title: str
    required: bool
    content: dict[str, Any] = Field(default_factory=dict)
    gaps: list[Gap] = Field(default_factory=list)


class TechnicalDocument(BaseModel):
    model_id: str
    version: int
    tier: str
    as_of: dict[str, Any] = Field(description="the audit chain head the document was read at")
    sections: list[Section]

    @property
    def gaps(self) -> list[Gap]:
        return [g for s in self.sections for g in s.gaps]

    @property
    def required_gaps(self) -> list[Gap]:
        return [g for g in self.gaps if g.required]

    def summary(self) -> str:
        """A short markdown summary with the gap table (under 1,000 characters when the
        gaps are few, so a UI can show it inline)."""
        lines = [
            f"**{self.model_id}@{self.version}** ({self.tier}), as of audit seq "
            f"{self.as_of.get('seq')}: {len(self.gaps)} gap(s), "
            f"{len(self.required_gaps)} required",
        ]
        if self.gaps:
            lines += ["", "| § | missing record | required |", "|---|---|---|"]
            lines += [
                f"| {g.section} | {g.record} | {'yes' if g.required else 'no'} |" for g in self.gaps
            ]
        return "\n".join(lines)

    def to_markdown(self) -> str:
        out = [
            f"# Technical documentation: {self.model_id}@{self.version}",
            "",
            "Generated from registry records alone (EU AI Act Article 11, Annex IV). "
            f"Tier {self.tier}; as of audit chain `{self.as_of.get('chain')}` seq "
            f"{self.as_of.get('seq')} (hash `{str(self.as_of.get('hash'))[:16]}`).",
            "",
            "## Gaps",
            "",
        ]
        if not self.gaps:
            out.append("None: every section is filled from the records.")
        for g in self.gaps:
            req = "required" if g.required else "advisory"
            out.append(f"- §{g.section} ({req}): missing {g.record}. Fill: {g.fill}")
        for s in self.sections:
            req = "required" if s.required else "advisory"
            out += ["", f"## {s.number}. {s.title} ({req})", ""]
            for key, value in s.content.items():
                out.extend(_md_item(key, value))
            for g in s.gaps:
                out.append(f"- **GAP**: {g.record}. Fill: {g.fill}")
        return "\n".join(out) + "\n"


def _md_item(key: str, value: Any) -> list[str]:
    label = key.replace("_", " ")
    if isinstance(value, list):
        if not value:
            return [f"- {label}: none recorded"]
        lines = [f"- {label}:"]
        for item in value:
            text = _flat(item) if isinstance(item, dict) else str(item)
            lines.append(f"  - {text}")
        return lines
    if isinstance(value, dict):
        return [f"- {label}: {_flat(value) if value else 'none recorded'}"]
    return [f"- {label}: {value if value not in (None, '') else 'none recorded'}"]


def _flat(d: dict[str, Any]) -> str:
    return "; ".join(
        f"{k}={json.dumps(v, sort_keys=True, default=str) if isinstance(v, dict | list) else v}"
        for k, v in d.items()
        if v not in (None, "", [], {})
    )


class RecordReader(Protocol):
    """The registry reads the generator uses (the `Registry` facade provides them)."""

    def get_model(self, model_id: str) -> ModelSpec: ...
    def get_version(self, model_id: str, version: int) -> ModelVersion: ...
    def get_dataset(self, name: str, version: int) -> Any: ...
    def audit_entries(self, model_id: str | None = None) -> list[Any]: ...
    def verify_audit(self, model_id: str | None = None) -> Any: ...


def build_document(reader: RecordReader, model_id: str, version: int) -> TechnicalDocument:
    """Read the registry and assemble the seven Annex IV sections for MODEL@VERSION."""
    spec = reader.get_model(model_id)
    v = reader.get_version(model_id, version)
    entries = reader.audit_entries(model_id)
    report = reader.verify_audit(model_id)
    problems = list(report.problems)
    mine = [e for e in entries if e.version in (None, version)]
    head = entries[-1] if entries else None
    sections = [
        _general(spec, v),
        _development(v),
        _data(reader, v),
        _evaluation(spec, v, mine),
        _oversight(mine, version, problems),
        _monitoring(spec, version, entries),
        _changelog(mine, problems, model_id),
    ]
    return TechnicalDocument(
        model_id=model_id,
        version=version,
        tier=spec.tier.value,
        as_of={
            "chain": head.chain if head else f"model:{model_id}",
            "seq": head.seq if head else None,
            "hash": head.hash if head else None,
        },
        sections=sections,
    )


def require_documentation(reader: RecordReader, model_id: str, version: int) -> None:
    """Refuse (DocumentationGap, one line) when a required section has a gap."""
    doc = build_document(reader, model_id, version)
    gaps = doc.required_gaps
    if gaps:
        named = "; ".join(f"§{g.section} {g.record} ({g.fill})" for g in gaps)
        raise DocumentationGap(
            f"{model_id}@{version} is L3: PROMOTED needs its technical documentation "
            f"(sections {', '.join(str(n) for n in sorted(REQUIRED_SECTIONS))}) without gaps; "
            f"missing: {named}; see `modelops docs {model_id}@{version}`"
        )


def _section(n: int, content: dict[str, Any], gaps: list[tuple[str, str]]) -> Section:
    req = n in REQUIRED_SECTIONS
    return Section(
        number=n,
        title=SECTION_TITLES[n],
        required=req,
        content=content,
        gaps=[Gap(section=n, record=r, fill=f, required=req) for r, f in gaps],
    )


def _amend(model_id: str, field: str) -> str:
    return (
        f"set {field} in {model_id}'s spec YAML and run "
        "`modelops model amend SPEC.yaml --reason WHY`"
    )


def _general(spec: ModelSpec, v: ModelVersion) -> Section:
    content = {
        "model": f"{v.model_id}@{v.version}",
        "owner_team": spec.owner_team,
        "tier": spec.tier.value,
        "description": spec.description,
        "intended_purpose": spec.intended_purpose,
        "model_class": f"{spec.model_class.value} ({spec.framework.value})",
        "rollback_class": spec.rollback_class.value,
        "slices": list(spec.slices),
        "downstream_dependents": sorted(
            set(spec.downstream_dependents) | set(v.downstream_dependents)
        ),
        "weights": f"{v.weights_uri} (sha256 {v.weights_hash})",
        "feature_contract": v.feature_contract_ref,
        "runtime_requirements": v.runtime_requirements.model_dump(mode="json", exclude_none=True),
        "registered_at": v.created_at.isoformat(),
        "states": {s: st.value for s, st in sorted(v.state.items())},
    }
    gaps = []
    if not spec.intended_purpose.strip():
        gaps.append(("spec.intended_purpose", _amend(spec.model_id, "intended_purpose")))
    if not spec.description.strip():
        gaps.append(("spec.description", _amend(spec.model_id, "description")))
    return _section(1, content, gaps)


def _code(ref: Any) -> str | None:
    if ref is None:
        return None
    return f"{ref.repo}@{ref.commit_sha}" + (f":{ref.path}" if ref.path else "")


def _development(v: ModelVersion) -> Section:
    registered = next((h for h in v.state_history if h.state.value == "REGISTERED"), None)
    content = {
        "training_run_id": v.training_run_id,
        "registered_by": registered.actor if registered else None,
        "training_code": _code(v.training_code_version),
        "preprocess": _code(v.preprocess),
        "postprocess": _code(v.postprocess),
        "parent_model_version": v.parent_model_version,
        "signature": v.signature,
    }
    gaps = []
    if v.training_code_version is None:
        gaps.append(
            (
                "version.training_code_version (repo and commit of the training code)",
                "have the trainer report training_code_version in the version meta "
                "(`modelops version register ... --meta META.yaml`) of a new version",
            )
        )
    return _section(2, content, gaps)


def _data(reader: RecordReader, v: ModelVersion) -> Section:
    content: dict[str, Any] = {}
    gaps: list[tuple[str, str]] = []
    for role, ref in (("training_data", v.training_data_version), ("eval_set", v.eval_set_version)):
        rec = _dataset(reader, ref)
        if rec is None:
            content[role] = {"ref": str(ref)}
            gaps.append(
                (f"dataset record {ref}", f"register {ref} with `modelops dataset register`")
            )
            continue
        content[role] = {
            "ref": str(ref),
            "kind": rec.kind,
            "uri": rec.uri,
            "sha256": rec.content_hash,
            "registered_at": rec.created_at,
        }
        if not rec.content_hash:
            gaps.append(
                (
                    f"content hash of {role.replace('_', ' ')} {ref}",
                    "dataset versions are immutable: register the data as a new version with "
                    "--hash SHA256 (or a local file, hashed on registration) and retrain",
                )
            )
    return _section(3, content, gaps)


def _dataset(reader: RecordReader, ref: DatasetRef) -> Any:
    try:
        return reader.get_dataset(ref.name, ref.version)
    except NotFoundError:
        return None


def _evaluation(spec: ModelSpec, v: ModelVersion, mine: list[Any]) -> Section:
    gates = [e for e in mine if e.action == "gate_result"]
    per_slice = []
    for s in spec.slices:
        entered = [h for h in v.state_history if h.slice == s and h.gate_results]
        per_slice.append(
            {
                "slice": s,
                "verdict": entered[-1].state.value if entered else None,
                "gate_results": entered[-1].gate_results if entered else None,
                "eval_metrics": v.eval_slice_metrics.get(s),
            }
        )
    protected = list(spec.policy.protected_slices)
    results = gates[-1].payload.get("results", {}) if gates else {}
    covered = [p for p in protected if p in v.eval_slice_metrics or _mentions(results, p)]
    content = {
        "gate_results": [
            {
                "seq": e.seq,
                "ts": e.ts,
                "by": e.actor,
                "passed": e.payload.get("passed"),
                "results": e.payload.get("results"),
            }
            for e in gates
        ],
        "eval_set": str(v.eval_set_version),
        "eval_metrics": v.eval_metrics,
        "per_slice": per_slice,
        "protected_slices": {p: v.eval_slice_metrics.get(p) for p in protected},
        "fairness": results.get("gate_fairness") if isinstance(results, dict) else None,
    }
    gaps = []
    if not gates:
        gaps.append(
            (
                "offline gate results",
                f"run the offline gates (`modelops gate {spec.model_id} {v.version} ...`)",
            )
        )
    missing = [p for p in protected if p not in covered]
    if gates and missing:
        gaps.append(
            (
                f"evaluation results for protected slice(s) {', '.join(missing)}",
                "report eval_slice_metrics for them in the version meta, or gate with "
                "results that name them (the fairness gate)",
            )
        )
    return _section(4, content, gaps)


def _mentions(obj: Any, key: str) -> bool:
    if isinstance(obj, dict):
        return key in obj or any(_mentions(x, key) for x in obj.values())
    if isinstance(obj, list):
        return any(_mentions(x, key) for x in obj)
    return False


def _oversight(mine: list[Any], version: int, problems: list[Any]) -> Section:
    by_entry: dict[int, list[str]] = {}
    for p in problems:
        if p.entry_id is not None and p.kind.startswith(_SIG_KINDS):
            by_entry.setdefault(p.entry_id, []).append(f"{p.kind}: {p.detail}")
    checks = []
    for e in mine:
        if e.action not in _SIGNED or e.version != version:
            continue
        stmt = e.payload.get("statement") or {}
        bad = by_entry.get(e.id, [])
        if not stmt and not bad:
            bad = ["UNSIGNED: the entry carries no signed statement"]
        checks.append(
            SignatureCheck(
                action=e.action,
                signer=e.actor,
                team=e.payload.get("team"),
                target=e.payload.get("to"),
                slice=e.payload.get("slice"),
                ts=e.ts,
                audit_seq=e.seq,
                key_id=stmt.get("key_id") if isinstance(stmt, dict) else None,
                verified=not bad,
                detail="; ".join(bad) if bad else "signature re-verified",
            )
        )
    reasons = [
        {"seq": e.seq, "by": e.actor, "to": e.payload.get("to"), "reason": e.payload.get("reason")}
        for e in mine
        if e.action == "transition" and e.version == version and e.payload.get("reason")
    ]
    content = {
        "signatures": [c.model_dump(exclude_none=True) for c in checks],
        "transition_reasons": reasons,
    }
    gaps = []
    if not any(c.action == "approval" for c in checks):
        gaps.append(
            (
                "signed human approval of this version",
                f"approve it (`modelops approve MODEL {version} --actor NAME --key KEY`)",
            )
        )
    for c in checks:
        if not c.verified:
            gaps.append(
                (
                    f"a verifying signature on the {c.action} by {c.signer} (seq {c.audit_seq})",
                    "run `modelops audit verify`, revoke what it names, and approve again",
                )
            )
    return _section(5, content, gaps)


def _monitoring(spec: ModelSpec, version: int, entries: list[Any]) -> Section:
    pol = spec.policy

    def for_me(e: Any) -> bool:
        if e.version == version:
            return True
        pv = e.payload.get("version")
        return e.version is None and pv in (None, version)

    rollbacks = [
        {
            "seq": e.seq,
            "ts": e.ts,
            "by": e.actor,
            "slice": e.payload.get("slice"),
            "restored": e.payload.get("restored"),
            "reason": e.payload.get("reason"),
            "automated": e.payload.get("automated"),
        }
        for e in entries
        if e.action == "rollback" and (e.version == version or e.payload.get("restored") == version)
    ]
    alerts = [e for e in entries if e.action == "alert" and for_me(e)]
    drift = [a for a in alerts if a.payload.get("kind") == "feature_drift"]
    online = [a for a in alerts if a.payload.get("kind") != "feature_drift"]
    glass = [e for e in entries if e.action == "break_glass" and e.version == version]
    ladder = sorted(
        {
            int(e.payload["percent"])
            for e in entries
            if e.action == "transition"
            and e.version == version
            and e.payload.get("to") == "CANARY"
            and e.payload.get("percent") is not None
        }
    )
    content = {
        "primary_metric": f"{pol.primary_metric} "
        f"({'higher' if pol.higher_is_better else 'lower'} is better), "
        f"min samples {pol.min_samples}",
        "guardrails": [g.model_dump() for g in pol.guardrails],
        "canary_ladder_taken": ladder,
        "drift_thresholds": pol.drift.model_dump(),
        "shadow_thresholds": pol.shadow.model_dump(mode="json"),
        "ab_contract": pol.ab.model_dump(),
        "rollback": f"{spec.rollback_class.value}; decay window {spec.decay_window_days} days"
        + (
            f"; state stores {', '.join(s.name for s in spec.state_stores)}"
            if spec.state_stores
            else ""
        ),
        "rollbacks": rollbacks,
        "drift_alerts": [_alert(a) for a in drift],
        "online_alerts": [_alert(a) for a in online],
        "break_glass": [
            {
                "seq": e.seq,
                "ts": e.ts,
                "by": e.actor,
                "reason": e.payload.get("reason"),
                "ticket": e.payload.get("ticket"),
            }
            for e in glass
        ],
    }
    gaps = []
    if not pol.guardrails:
        gaps.append(
            (
                "guardrail metrics in the policy",
                _amend(spec.model_id, "policy.guardrails"),
            )
        )
    return _section(6, content, gaps)


def _alert(e: Any) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "ts": e.ts,
        "kind": e.payload.get("kind"),
        "detail": e.payload.get("detail"),
    }


def _changelog(mine: list[Any], problems: list[Any], model_id: str) -> Section:
    chain = f"model:{model_id}"
    broken = [p for p in problems if p.chain == chain and not p.kind.startswith(_SIG_KINDS)]
    log = []
    for e in mine:
        p = e.payload
        what = f"{p['from']} -> {p['to']}" if "from" in p and "to" in p else p.get("kind", "")
        log.append(
            {
                "seq": e.seq,
                "ts": e.ts,
                "actor": e.actor,
                "action": e.action,
                "what": what,
                "hash": e.hash[:16],
            }
        )
    content = {
        "chain": chain,
        "chain_verified": not broken,
        "entries": log,
    }
    gaps = [
        (
            f"an intact audit chain ({p.kind} at seq {p.seq}: {p.detail})",
            "investigate with `modelops audit verify`; a tampered log cannot be repaired",
        )
        for p in broken
    ]
    return _section(7, content, gaps)


def write_document(doc: TechnicalDocument, out_dir: str | Path) -> tuple[Path, Path]:
    """Write DOC.md and DOC.json into `out_dir` (created if absent); return both paths.

    Each file is written whole to a temporary name and renamed, so a reader never sees
    half a document."""
    from modelops.errors import SpecError

    out = Path(out_dir)
    md, js = out / "DOC.md", out / "DOC.json"
    try:
        out.mkdir(parents=True, exist_ok=True)
        for path, text in (
            (md, doc.to_markdown()),
            (js, doc.model_dump_json(indent=2) + "\n"),
        ):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
    except OSError as exc:
        raise SpecError(
            f"cannot write the documentation to {out}: {exc.strerror}; "
            "allowed: a writable directory (--out DIR)"
        ) from None
    return md, js
