"""`compliance_docs/<model>`: the prod version's document (not the newest), the summary and
gap table inline under 1,000 characters, the full document by path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg

from assets.compliance_docs import (
    INLINE_LIMIT,
    build_compliance_docs_asset,
    compliance_docs_key,
    inline_summary,
)
from assets.online_reports import build_online_report_defs
from modelops.compliance import Gap, Section, TechnicalDocument, build_document
from modelops.fleet import Fleet
from modelops.registry import Registry
from modelops.spec import State
from resources import RegistryResource

MODEL = "ctr_gbdt"  # L1: promoted without approvals, so its oversight section has a gap


def _version(reg: Registry, label: str) -> int:
    v = reg.register_version(
        MODEL,
        weights_hash=hashlib.sha256(label.encode()).hexdigest(),
        weights_uri=f"file:///w/{label}.onnx",
        training_run_id=f"run-{label}",
        training_data="ctr_clicks@1",
        eval_set="ctr_eval@1",
    ).version
    reg.record_gate_result(MODEL, v, passed=True, results={"auc": 0.8})
    return v


def _materialize(fleet: Fleet) -> dg.MaterializeResult:
    asset = build_compliance_docs_asset(fleet, fleet.model(MODEL))
    result = dg.materialize([asset], resources={"registry": RegistryResource()})
    assert result.success
    mats = result.asset_materializations_for_node(asset.node_def.name)
    assert [m.asset_key for m in mats] == [compliance_docs_key(fleet.model(MODEL))]
    return mats[0]


def test_the_asset_documents_the_prod_version(home: Path, demo_fleet: Fleet) -> None:
    reg = Registry()
    reg.add_team(demo_fleet.model(MODEL).spec.owner_team)
    reg.create_model(demo_fleet.model(MODEL).spec)
    assert _materialize(demo_fleet).metadata["status"].value == "no version to document"
    reg.register_dataset("ctr_clicks", 1, "s3://d/clicks/1", content_hash="c" * 64)
    reg.register_dataset("ctr_eval", 1, "s3://d/eval/1", content_hash="e" * 64, kind="eval_set")
    v1 = _version(reg, "a")
    reg.transition(MODEL, v1, State.PROMOTED, actor="ops")
    _version(reg, "b")  # newer, not prod

    md = _materialize(demo_fleet).metadata
    assert md["version"].value == v1
    path = Path(md["document"].value)
    doc = build_document(reg, MODEL, v1)
    assert path == home / "docs" / MODEL / f"v{v1}" / "DOC.md"
    assert path.read_text() == doc.to_markdown()
    assert Path(md["document_json"].value).read_text().startswith("{")
    summary = md["summary"].value
    assert len(summary) < INLINE_LIMIT and "signed human approval" in summary
    assert (
        md["gaps"].value == len(doc.gaps)
        and md["required_gaps"].value == len(doc.required_gaps) > 0
    )

    keys = {k for a in build_online_report_defs(demo_fleet).assets or [] for k in a.keys}  # type: ignore[union-attr]
    assert compliance_docs_key(demo_fleet.model(MODEL)) in keys


def test_inline_summary_stays_under_the_limit() -> None:
    gaps = [
        Gap(
            section=3,
            record=f"content hash of dataset number {i} " + "x" * 30,
            fill="f",
            required=True,
        )
        for i in range(40)
    ]
    doc = TechnicalDocument(
        model_id="m",
        version=1,
        tier="L3",
        as_of={"seq": 7},
        sections=[Section(number=3, title="Data provenance", required=True, gaps=gaps)],
    )
    assert len(doc.summary()) > INLINE_LIMIT
    text = inline_summary(doc)
    assert len(text) < INLINE_LIMIT
    assert "more gap row(s): see the full document" in text
    shown = text.count("| 3 |")
    assert 0 < shown < 40 and f"{40 - shown} more gap row(s)" in text
