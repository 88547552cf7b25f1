"""The action jobs: one op and one job per lifecycle action, plus the reconcile job.

An action run does three things in order, and the run page shows each:
1. it moves the version through the registry (each transition is one transaction: state,
   audit entry and desired state together, compare-and-set against what the sensor saw);
2. it runs one controller pass, so traffic moves in the same run, not on some later tick;
3. it logs an `AssetObservation` on ["models", model_id] with the model's state per slice,
   so the asset page shows where each version stands.

A registry refusal (illegal transition, lost compare-and-set, missing approval) fails the
run with the registry's one-line message and changes nothing, because the refused
transaction rolled back. Multi-step actions (start_shadow, canary_step from SHADOW) commit
step by step; a re-run resumes from the approved intermediate state.
"""

from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster import OpExecutionContext
from pydantic import ValidationError

from jobs.rollback_job import rollback_extra, rollback_run_events
from modelops.actions import (
    ACTION_TAG,
    JOB_NAMES,
    KIND_TAG,
    OP_NAMES,
    RECONCILE_JOB,
    RECONCILE_OP,
    ActionKind,
    ActionRequest,
)
from modelops.errors import ModelopsError
from modelops.fleet import CANARY_LADDER
from modelops.lifecycle import CANARY_RANGE, SHADOW_RANGE
from modelops.spec import State
from resources import ArtifactStoreResource, ControllerResource, RegistryResource

if TYPE_CHECKING:
    from modelops.registry import Registry, TransitionResult

__all__ = [
    "ActionConfig",
    "ACTION_JOBS",
    "action_job",
    "action_op",
    "reconcile_job",
    "reconcile_op",
    "perform",
    "slice_observation",
]

_NAME_SEP = "__v"  # how the controller names a version on a backend: <model_id>__v<version>


class ActionConfig(dg.Config):
    """The op config of every action job; the same fields as `modelops.actions.ActionRequest`."""

    model_id: str
    slice: str = "global"
    version: int
    target: str | None = None
    expected: str | None = None
    expected_percent: int | None = None
    percent: int | None = None
    actor: str = "system:dagster"
    reason: str = ""
    automated: bool = True
    cascade: bool = False  # rollback only: roll approved dependents back too
    approvals: list[str] = []  # rollback only: signed cascade approvals (statement JSON)

    def request(self) -> ActionRequest:
        return ActionRequest.model_validate(self.model_dump())


# ---------------------------------------------------------------------- registry steps


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _state_on(registry: "Registry", req: ActionRequest) -> tuple[State, int | None]:
    v = registry.get_version(req.model_id, req.version)
    if req.slice not in v.state:
        from modelops.errors import NotFoundError

        raise NotFoundError(
            f"{req.model_id}@{req.version} has no state on slice {req.slice!r}; "
            f"allowed: {', '.join(sorted(v.state))}"
        )
    return v.state[req.slice], v.canary_percent.get(req.slice)


def _next_percent(current: int | None) -> int:
    for p in CANARY_LADDER:
        if current is None or p > current:
            return p
    from modelops.errors import IllegalTransition

    raise IllegalTransition(
        f"canary is at {current}%, the top of the ladder {list(CANARY_LADDER)}; "
        "allowed next: promote or start_ab"
    )


def _check_range(action: ActionKind, percent: int | None) -> None:
    """Refuse a bad percent before the first step commits, not at the second."""
    lo, hi = SHADOW_RANGE if action is ActionKind.start_shadow else CANARY_RANGE
    if percent is not None and not lo <= percent <= hi:
        from modelops.errors import SpecError

        raise SpecError(f"{action.value} percent {percent} is out of range; allowed {lo}..{hi}")


def perform(
    action: ActionKind,
    req: ActionRequest,
    registry: "Registry",
    done: list["TransitionResult"] | None = None,
    artifacts: Any = None,
) -> list["TransitionResult"]:
    """The registry side of an action: the transitions it makes, in order.

    Only the first step carries the caller's compare-and-set (`expected`); later steps
    expect the state the previous step just wrote, so nothing slips in between unnoticed.
    Each committed step is also appended to `done`, so a caller whose later step is refused
    can say what was already committed. With `artifacts`, a step into CANARY or AB_TEST takes
    the state snapshot first (`modelops.rollback.enter_with_snapshots`); a failed snapshot
    refuses that step.
    """
    done = done if done is not None else []
    common: dict[str, Any] = {
        "actor": req.actor,
        "slice": req.slice,
        "reason": req.reason,
        "automated": req.automated,
    }
    mid, ver = req.model_id, req.version

    def step(target: State | str, **kw: Any) -> "TransitionResult":
        if artifacts is not None and str(target) in (State.CANARY.value, State.AB_TEST.value):
            from modelops.rollback import enter_with_snapshots

            result = enter_with_snapshots(registry, artifacts, mid, ver, target, **common, **kw)
        else:
            result = registry.transition(mid, ver, target, **common, **kw)
        done.append(result)
        return result

    if action is ActionKind.transition:
        if not req.target:
            from modelops.errors import SpecError

            raise SpecError(
                "the transition job needs config.target; allowed: "
                + ", ".join(s.value for s in State)
            )
        return [
            step(
                req.target,
                expected=req.expected,
                expected_percent=req.expected_percent,
                percent=req.percent,
            )
        ]
    if action is ActionKind.promote:
        return [step(State.PROMOTED, expected=req.expected)]
    if action is ActionKind.rollback:
        return [step(State.ROLLED_BACK, expected=req.expected)]
    if action is ActionKind.start_ab:
        return [step(State.AB_TEST, expected=req.expected, percent=req.percent or 50)]

    _check_range(action, req.percent)
    current, current_pct = _state_on(registry, req)
    out: list[TransitionResult] = []
    if action is ActionKind.start_shadow:
        if current is not State.APPROVED_SHADOW:
            out.append(step(State.APPROVED_SHADOW, expected=req.expected))
            expected: str | None = State.APPROVED_SHADOW
        else:
            expected = req.expected or State.APPROVED_SHADOW
        out.append(step(State.SHADOW, expected=expected, percent=req.percent or 100, mode="live"))
        return out
    if action is ActionKind.canary_step:
        if current is State.CANARY:
            pct = req.percent if req.percent is not None else _next_percent(current_pct)
            out.append(
                step(
                    State.CANARY,
                    expected=req.expected or State.CANARY,
                    expected_percent=req.expected_percent,
                    percent=pct,
                )
            )
            return out
        if current is not State.APPROVED_CANARY:
            out.append(step(State.APPROVED_CANARY, expected=req.expected))
            expected = State.APPROVED_CANARY
        else:
            expected = req.expected or State.APPROVED_CANARY
        pct = req.percent if req.percent is not None else CANARY_LADDER[0]
        out.append(step(State.CANARY, expected=expected, percent=pct))
        return out
    raise AssertionError(f"unhandled action {action}")  # pragma: no cover - enum is closed


# ---------------------------------------------------------------------- observation


def _label(state: State | None, version: int, ds: Any) -> str:
    """ "CANARY 5%": the version's state, with the share of traffic it sees there."""
    if state is None:
        return "-"
    percent = None
    if state is State.CANARY and ds.canary and ds.canary.version == version:
        percent = ds.canary.percent
    elif state is State.SHADOW and ds.shadow and ds.shadow.version == version:
        percent = ds.shadow.percent
    elif state is State.AB_TEST and ds.ab_test:
        percent = next((a.percent for a in ds.ab_test.arms if a.version == version), None)
    return f"{state.value} {percent}%" if percent is not None else state.value


def _routing(ds: Any) -> str:
    parts = [f"prod v{ds.prod_version}" if ds.prod_version is not None else "no prod"]
    if ds.canary:
        parts.append(f"canary v{ds.canary.version} {ds.canary.percent}%")
    if ds.ab_test:
        parts.append("A/B " + " / ".join(f"v{a.version} {a.percent}%" for a in ds.ab_test.arms))
    if ds.shadow:
        parts.append(f"shadow v{ds.shadow.version} {ds.shadow.percent}%")
    if ds.rollback_target is not None:
        parts.append(f"rollback target v{ds.rollback_target}")
    return ", ".join(parts)


def slice_observation(
    registry: "Registry",
    model_id: str,
    version: int,
    *,
    action: str,
    extra: dict[str, Any] | None = None,
) -> dg.AssetObservation:
    """The model's state on every slice, as the asset page shows it after an action."""
    spec = registry.get_model(model_id)
    mv = registry.get_version(model_id, version)
    meta: dict[str, Any] = {"version": version, "action": action}
    for s in spec.slices:
        ds = registry.desired_state(model_id, s)
        meta[f"state/{s}"] = _label(mv.state.get(s), version, ds)
        meta[f"routing/{s}"] = _routing(ds)
        meta[f"generation/{s}"] = ds.generation
    meta.update(extra or {})
    return dg.AssetObservation(asset_key=dg.AssetKey(["models", model_id]), metadata=meta)


# ---------------------------------------------------------------------- controller pass


def _controller_pass(
    context: OpExecutionContext,
    registry: "Registry",
    store: Any,
    controller: ControllerResource,
    *,
    model_id: str | None,
) -> list[Any]:
    """One pass; fail the run when it could not serve what the registry now wants."""
    prefix = (
        "controller pass failed"
        if model_id is None
        else "the registry changed but the serving plane did not follow (the reconcile "
        "sensor retries)"
    )
    try:
        acts = controller.reconcile(registry, store)
    except ModelopsError as exc:
        raise dg.Failure(description=_one_line(f"{prefix}: {exc}"), allow_retries=False) from None
    if not acts:
        context.log.info("controller: the serving plane already matched the desired state")
    for a in acts:
        secs = f" in {a.seconds}s" if a.seconds is not None else ""
        msg = f"controller: {a.kind} {a.target}{secs}" + (f": {a.detail}" if a.detail else "")
        (context.log.error if a.kind == "error" else context.log.info)(msg)
    errors = [
        a
        for a in acts
        if a.kind == "error"
        and (
            model_id is None
            or a.target.rpartition(_NAME_SEP)[0] == model_id
            or a.detail.startswith("push:")
        )
    ]
    if errors:
        what = "; ".join(_one_line(f"{a.target}: {a.detail}") for a in errors)
        raise dg.Failure(
            description=f"{prefix}: {what}",
            metadata={"errors": len(errors)},
            allow_retries=False,
        )
    return acts


# ---------------------------------------------------------------------- ops and jobs


def action_op(action: ActionKind) -> dg.OpDefinition:
    """The op of one action: registry -> controller pass -> observation."""

    @dg.op(
        name=OP_NAMES[action],
        description=f"{action.value}: registry transition(s), one controller pass, and an "
        "observation of the model's per-slice state",
        tags={ACTION_TAG: action.value},
    )
    def _op(
        context: OpExecutionContext,
        config: ActionConfig,
        registry: RegistryResource,
        artifacts: ArtifactStoreResource,
        controller: ControllerResource,
    ) -> None:
        try:
            req = config.request()
        except ValidationError as exc:
            bad = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise dg.Failure(
                description=f"invalid {action.value} config: {bad}", allow_retries=False
            ) from None
        reg = registry.get()
        if action is ActionKind.rollback:
            store = artifacts.get()
            report, events = rollback_run_events(
                context,
                req,
                reg,
                store,
                lambda: _controller_pass(context, reg, store, controller, model_id=req.model_id),
                cascade=req.cascade,
                approvals=req.approvals,
            )
            for ev in events:
                context.log_event(ev)
            context.log_event(
                slice_observation(
                    reg,
                    req.model_id,
                    req.version,
                    action=action.value,
                    extra=rollback_extra(report),
                )
            )
            return
        where = f"{action.value} {req.model_id}@{req.version} on slice {req.slice!r}"
        done: list[Any] = []
        try:
            results = perform(action, req, reg, done, artifacts=artifacts.get())
        except ModelopsError as exc:
            context.log.error(f"{where} refused: {_one_line(str(exc))}")
            committed = ", ".join(f"{r.from_state.value} -> {r.to_state.value}" for r in done)
            if committed:
                context.log.warning(f"{where}: committed before the refusal: {committed}")
            raise dg.Failure(
                description=_one_line(str(exc))
                + (f" (already committed: {committed}; a re-run resumes)" if committed else ""),
                metadata={
                    "model_id": req.model_id,
                    "slice": req.slice,
                    "version": req.version,
                    "error": type(exc).__name__,
                },
                allow_retries=False,
            ) from None
        extra: dict[str, Any] = {}
        for r in results:
            pct = f" at {r.percent}%" if r.percent is not None else ""
            context.log.info(
                f"registry: {r.model_id}@{r.version} {r.from_state.value} -> "
                f"{r.to_state.value}{pct} on {r.slice!r} (generation {r.generation}, "
                f"audit {r.audit_id})"
            )
            if r.deprecated_version is not None:
                context.log.info(f"registry: v{r.deprecated_version} is now DEPRECATED")
                extra["deprecated_version"] = r.deprecated_version
            if r.restored_version is not None:
                context.log.info(f"registry: v{r.restored_version} restored to PROMOTED")
                extra["restored_version"] = r.restored_version
            for c in r.caveats:
                context.log.warning(f"registry caveat: {c}")
        if results:
            extra["generation"] = results[-1].generation
        _controller_pass(context, reg, artifacts.get(), controller, model_id=req.model_id)
        context.log_event(
            slice_observation(reg, req.model_id, req.version, action=action.value, extra=extra)
        )

    return _op


def action_job(action: ActionKind) -> dg.JobDefinition:
    """A job around the action's op. Runs launched by sensors carry the lock tag
    (`modelops.actions.action_run_tags`), which the instance's tag concurrency limit holds
    to one run per (model, slice)."""
    op = action_op(action)

    @dg.job(
        name=JOB_NAMES[action],
        description=f"modelops action: {action.value}",
        tags={KIND_TAG: "action", ACTION_TAG: action.value},
        executor_def=dg.in_process_executor,
    )
    def _job() -> None:
        op()

    return _job


@dg.op(
    name=RECONCILE_OP,
    description="one controller pass: load what the desired state needs, push routes, unload",
)
def reconcile_op(
    context: OpExecutionContext,
    registry: RegistryResource,
    artifacts: ArtifactStoreResource,
    controller: ControllerResource,
) -> None:
    _controller_pass(context, registry.get(), artifacts.get(), controller, model_id=None)


@dg.job(
    name=RECONCILE_JOB,
    description="make the serving plane match the registry's desired state (one pass)",
    tags={KIND_TAG: "reconcile"},
    executor_def=dg.in_process_executor,
)
def reconcile_job() -> None:
    reconcile_op()


ACTION_JOBS: dict[ActionKind, dg.JobDefinition] = {a: action_job(a) for a in ActionKind}
