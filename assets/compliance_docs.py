"""`compliance_docs/<model>`: the technical documentation (EU AI Act Article 11, Annex IV) of
a model's current prod version (else its newest), generated from registry records alone by
`modelops.compliance`.

The full document is written as DOC.md and DOC.json under
$MODELOPS_HOME/docs/<model>/v<N>/ and linked from the metadata by path; the metadata shows
inline only the summary and the gap table, kept under the 1,000 characters the UI renders
inline, with a count of any gap rows it had to leave out.
"""

from pathlib import Path
from typing import Any

import dagster as dg

from modelops.compliance import TechnicalDocument, build_document, write_document
from modelops.fleet import Fleet, ModelDecl
from resources import RegistryResource, modelops_home

__all__ = [
    "INLINE_LIMIT",
    "build_compliance_docs_asset",
    "compliance_docs_key",
    "documented_version",
    "inline_summary",
    "materialize_compliance_docs",
]

INLINE_LIMIT = 1000  # characters of markdown the UI renders inline


def compliance_docs_key(decl: ModelDecl) -> dg.AssetKey:
    return dg.AssetKey(["compliance_docs", decl.model_id])


def documented_version(reg: Any, decl: ModelDecl) -> int | None:
    """The prod version on the first slice that has one; else the newest version."""
    for s in decl.spec.slices:
        v = reg.desired_state(decl.model_id, s).prod_version
        if v is not None:
            return int(v)
    versions = reg.list_versions(decl.model_id)
    return max((v.version for v in versions), default=None)


def inline_summary(doc: TechnicalDocument, limit: int = INLINE_LIMIT) -> str:
    """The summary and gap table, cut row by row to stay under `limit` characters."""
    text = doc.summary()
    if len(text) < limit:
        return text
    lines = text.splitlines()
    for keep in range(len(lines) - 1, 0, -1):
        cut = len(lines) - keep
        out = "\n".join([*lines[:keep], f"\n... {cut} more gap row(s): see the full document"])
        if len(out) < limit:
            return out
    return lines[0][: limit - 1]


def materialize_compliance_docs(
    context: dg.AssetExecutionContext,
    decl: ModelDecl,
    *,
    registry: RegistryResource,
    home: Path | None = None,
) -> dg.MaterializeResult:
    reg = registry.get()
    key = compliance_docs_key(decl)
    try:
        reg.get_model(decl.model_id)
    except Exception as exc:  # noqa: BLE001 - NotFoundError: the model is not created yet
        context.log.info(f"{decl.model_id}: {exc}")
        return dg.MaterializeResult(asset_key=key, metadata={"status": "model not registered"})
    v = documented_version(reg, decl)
    if v is None:
        return dg.MaterializeResult(asset_key=key, metadata={"status": "no version to document"})
    doc = build_document(reg, decl.model_id, v)
    out = (home or modelops_home()) / "docs" / decl.model_id / f"v{v}"
    md, js = write_document(doc, out)
    required = doc.required_gaps
    if required:
        context.log.warning(
            f"{decl.model_id}@{v}: {len(required)} gap(s) in required sections: "
            + "; ".join(g.record for g in required)
        )
    return dg.MaterializeResult(
        asset_key=key,
        metadata={
            "version": v,
            "tier": doc.tier,
            "gaps": len(doc.gaps),
            "required_gaps": len(required),
            "summary": dg.MetadataValue.md(inline_summary(doc)),
            "document": dg.MetadataValue.path(str(md)),
            "document_json": dg.MetadataValue.path(str(js)),
            "document_url": dg.MetadataValue.url(md.as_uri()),
            "as_of_audit_seq": doc.as_of.get("seq") or 0,
        },
    )


def build_compliance_docs_asset(fleet: Fleet, decl: ModelDecl) -> dg.AssetsDefinition:
    """`compliance_docs/<model>`, downstream of the model asset."""
    spec = dg.AssetSpec(
        key=compliance_docs_key(decl),
        deps=[dg.AssetKey(["models", decl.model_id])],
        group_name="compliance_docs",
        description=f"Technical documentation (EU AI Act Article 11, Annex IV) of "
        f"{decl.model_id}'s prod version, else its newest, from registry records alone; "
        "gaps name the missing records.",
        kinds={"markdown"},
    )

    @dg.multi_asset(name=spec.key.to_python_identifier(), specs=[spec])
    def _docs(context: dg.AssetExecutionContext, registry: RegistryResource) -> Any:
        return materialize_compliance_docs(context, decl, registry=registry)

    return _docs
