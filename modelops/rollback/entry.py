"""Snapshot on the way in: entering CANARY or AB_TEST takes the state's snapshot first.

The snapshot reads external stores, so it is taken before the registry transaction opens;
the transition then records it under the slice lock with the move itself. A snapshot that
fails refuses the transition before it starts, so nothing moves. A snapshot taken for a
move the registry then refuses is an unreferenced, content-addressed blob: harmless.

Snapshotted: the model's own declared stores, and those of every STATE_SNAPSHOT model
downstream of it (their state is built from its outputs, so an IRREVERSIBLE rollback puts
it back to before this version's entry).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelops.errors import ModelopsError, NotFoundError, SpecError
from modelops.spec import DEFAULT_SLICE, ModelSpec, RollbackClass, ShadowMode, State
from modelops.state_stores import snapshot_stores

if TYPE_CHECKING:
    from modelops.artifacts import ArtifactStore
    from modelops.registry import Registry, TransitionResult
    from modelops.registry.rollback_state import TakenSnapshot

__all__ = ["snapshot_owners", "take_entry_snapshots", "enter_with_snapshots", "is_entry"]


def is_entry(current: State, target: State) -> bool:
    """A move into CANARY or AB_TEST from another state (a canary step is not an entry)."""
    return target in (State.CANARY, State.AB_TEST) and current is not target


def snapshot_owners(registry: Registry, model_id: str) -> list[ModelSpec]:
    """The model (if it declares stores) and its STATE_SNAPSHOT dependents with stores."""
    spec = registry.get_model(model_id)
    if spec.rollback_class is RollbackClass.STATE_SNAPSHOT and not spec.state_stores:
        raise SpecError(
            f"{model_id} is STATE_SNAPSHOT but declares no state_stores, so no snapshot can be "
            "taken and a rollback could not restore its state; declare state_stores in its spec"
        )
    owners = [spec] if spec.state_stores else []
    for dep in registry.transitive_dependents(model_id):
        try:
            d = registry.get_model(dep)
        except NotFoundError:
            continue  # declared but not created: it has no state yet
        if d.rollback_class is RollbackClass.STATE_SNAPSHOT and d.state_stores:
            owners.append(d)
    return owners


def take_entry_snapshots(
    registry: Registry,
    artifacts: ArtifactStore,
    model_id: str,
    version: int,
    *,
    slice: str,  # noqa: A002 - the domain's word
    target: State,
    s3_client: Any = None,
) -> list[TakenSnapshot]:
    """One manifest per snapshotted model; any failure raises before the transition."""
    from modelops.registry.rollback_state import TakenSnapshot

    taken: list[TakenSnapshot] = []
    for owner in snapshot_owners(registry, model_id):
        ref = snapshot_stores(
            owner.state_stores,
            artifacts,
            label={
                "model_id": model_id,
                "version": version,
                "slice": slice,
                "target": target.value,
                "owner_model": owner.model_id,
            },
            s3_client=s3_client,
        )
        taken.append(
            TakenSnapshot(
                owner_model=owner.model_id,
                sha256=ref.sha256,
                uri=ref.uri,
                stores={e.name: e.content_sha256 for e in ref.manifest.stores},
            )
        )
    return taken


def enter_with_snapshots(
    registry: Registry,
    artifacts: ArtifactStore,
    model_id: str,
    version: int,
    target: State | str,
    *,
    actor: str,
    slice: str = DEFAULT_SLICE,  # noqa: A002
    expected: State | str | None = None,
    percent: int | None = None,
    reason: str = "",
    automated: bool = False,
    mode: ShadowMode | str | None = None,
    layer: str | None = None,
    expected_percent: int | None = None,
    s3_client: Any = None,
) -> TransitionResult:
    """`registry.transition`, with the entry snapshot taken first when the move enters
    CANARY or AB_TEST. A failed snapshot raises its own typed error, prefixed with the
    refused move, and nothing moves."""
    from modelops.registry.checks import parse_state

    target_s = parse_state(target)
    current = registry.state_of(model_id, version, slice)
    common: dict[str, Any] = {
        "actor": actor,
        "slice": slice,
        "expected": expected,
        "percent": percent,
        "reason": reason,
        "automated": automated,
        "mode": mode,
        "layer": layer,
        "expected_percent": expected_percent,
    }
    if not is_entry(current, target_s):
        return registry.transition(model_id, version, target_s, **common)
    try:
        taken = take_entry_snapshots(
            registry,
            artifacts,
            model_id,
            version,
            slice=slice,
            target=target_s,
            s3_client=s3_client,
        )
    except ModelopsError as exc:
        raise type(exc)(
            f"{model_id}@{version} -> {target_s.value} on slice {slice!r} refused, nothing "
            f"moved: the entry snapshot failed: {exc}"
        ) from None
    if not taken:
        return registry.transition(model_id, version, target_s, **common)
    return registry.transition_with_snapshots(
        model_id, version, target_s, snapshots=taken, **common
    )
