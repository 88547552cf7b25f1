"""The `modelops` command line: a thin shell over Registry.

A user mistake exits 1 with one line starting `error:`; usage errors exit 2 (argparse);
nothing a user types produces a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from modelops.errors import ModelopsError, SpecError
from modelops.spec import MAX_VERSION

__all__ = [
    "main",
    "build_parser",
    "CliParser",
    "bounded_int",
    "port",
    "seconds",
    "json_object",
    "database_url",
]


def _registry(args: argparse.Namespace) -> Any:
    from modelops.registry import Registry

    return Registry(args.registry)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _artifact_store(uri: str | None) -> Any:
    from modelops.artifacts import LocalArtifactStore, open_store

    uri = uri or os.environ.get("MODELOPS_ARTIFACTS")
    return open_store(uri) if uri else LocalArtifactStore.default()


# ---------------------------------------------------------------------- argument types
#
# A well-formed value that is not allowed (a version no column can hold, a port past 65535,
# a blank name, JSON that does not parse) is a user mistake: these types raise SpecError,
# which argparse does not catch, so main() prints one `error:` line and exits 1. Input that
# is not even of the right kind (`--version one`) stays argparse's usage error, exit 2.


def bounded_int(label: str, lo: int = 0, hi: int = MAX_VERSION) -> Callable[[str], int]:
    """An int in lo..hi; the default is what a database integer column holds."""

    def parse(text: str) -> int:
        value = int(text)  # ValueError: argparse's "invalid int value", a usage error
        if not lo <= value <= hi:
            raise SpecError(f"{label} {text}: out of range; allowed: {lo}..{hi}")
        return value

    parse.__name__ = "int"  # argparse names the type in its usage error
    return parse


def port(label: str) -> Callable[[str], int]:
    """A TCP port to listen on; 0 asks the OS for a free one."""
    return bounded_int(label, 0, 65535)


def _finite(label: str, text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise SpecError(f"{label} {text}: not a finite number")
    return value


def seconds(label: str, *, zero: bool = False) -> Callable[[str], float]:
    """A duration: finite, and positive (or zero where `zero` allows it)."""

    def parse(text: str) -> float:
        value = _finite(label, text)
        if value < 0 or (value == 0 and not zero):
            raise SpecError(f"{label} {text}: allowed: {'0 or more' if zero else 'more than 0'}")
        return value

    parse.__name__ = "float"
    return parse


def json_object(label: str) -> Callable[[str], dict[str, Any]]:
    """A JSON object of finite numbers (NaN, Infinity and 1e400 are not measurements)."""
    example = "e.g. '{\"auc\": 0.81}'"

    def parse(text: str) -> dict[str, Any]:
        from modelops.registry import non_finite

        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(
                f"{label} is not JSON ({exc.msg} at character {exc.pos}); "
                f"allowed: a JSON object, {example}"
            ) from None
        if not isinstance(value, dict):
            raise SpecError(f"{label} must be a JSON object, {example}")
        if found := non_finite(value):  # NaN, Infinity, or a number too large, like 1e400
            path, number = found
            spelled = "NaN" if math.isnan(number) else ("-" if number < 0 else "") + "Infinity"
            raise SpecError(
                f"{label}: {path} is {spelled}, not a finite number; allowed: finite numbers"
            )
        return value

    return parse


def database_url(what: str) -> Callable[[str], str]:
    """A registry or prediction-log URL, checked for its form when parsed; errors say which."""

    def parse(text: str) -> str:
        from modelops.store.db import resolve_url

        resolve_url(text, what=what)
        return text

    return parse


def _nonblank(label: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text.strip():
            raise SpecError(f"{label} is blank; allowed: a non-empty value")
        return text

    parse.__name__ = "str"
    return parse


class CliParser(argparse.ArgumentParser):
    """ArgumentParser whose arguments validate by default, in every subcommand (plugins too).

    A string argument may not be blank, and an int must fit a database integer (a version
    or --parent counts from 1) unless the argument declares its own type.
    """

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        if kwargs.get("action") in (None, "store", "append") and not kwargs.get("choices"):
            label = _arg_label(args, kwargs)
            kind = kwargs.get("type")
            if kind is None:
                kwargs["type"] = _nonblank(label)
            elif kind is int:
                dest = kwargs.get("dest") or label.lstrip("-").replace("-", "_").lower()
                versionish = dest in ("version", "parent") or dest.endswith("_version")
                kwargs["type"] = bounded_int(label, 1 if versionish else 0)
            elif kind is float:
                kwargs["type"] = _finite_type(label)
        return super().add_argument(*args, **kwargs)


def _finite_type(label: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        return _finite(label, text)

    parse.__name__ = "float"
    return parse


def _arg_label(args: Sequence[str], kwargs: dict[str, Any]) -> str:
    """How a user spelled the argument: its long option, or a positional's metavar."""
    longs = [a for a in args if a.startswith("--")]
    if longs:
        return longs[0]
    if args and args[0].startswith("-"):
        return args[0]
    meta = kwargs.get("metavar")
    return meta if isinstance(meta, str) else str(args[0] if args else "value").upper()


# ---------------------------------------------------------------------- commands


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from modelops.store import db

    engine = db.make_engine(db.resolve_url(args.registry))
    try:
        before = db.current_revision(engine)
        db.upgrade(engine)
        print(f"registry schema: {before or 'empty'} -> {db.current_revision(engine)}")
    finally:
        engine.dispose()
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    from modelops.store import db

    engine = db.make_engine(db.resolve_url(args.registry))
    try:
        rev = db.current_revision(engine)
    finally:
        engine.dispose()
    print(f"{rev or 'empty'} (code expects {db.HEAD_REVISION})")
    return 0


def cmd_db_grant_app(args: argparse.Namespace) -> int:
    from modelops.store import db
    from modelops.store.roles import grant_app_role

    engine = db.make_engine(db.resolve_url(args.registry))
    try:
        for statement in grant_app_role(engine, args.role):
            print(f"{statement};")
    finally:
        engine.dispose()
    return 0


def cmd_actor_add(args: argparse.Namespace) -> int:
    from modelops.registry import actor_name, team_name

    with _registry(args) as reg:
        reg.add_actor(args.name, args.team, actor=args.actor)
    print(f"actor {actor_name(args.name)} in team {team_name(args.team)}")
    return 0


def cmd_team_add(args: argparse.Namespace) -> int:
    with _registry(args) as reg:
        name = reg.add_team(args.name, actor=args.actor)
    print(f"team {name}")
    return 0


def cmd_team_list(args: argparse.Namespace) -> int:
    with _registry(args) as reg:
        for name in reg.list_teams():
            print(name)
    return 0


def cmd_dataset_register(args: argparse.Namespace) -> int:
    with _registry(args) as reg:
        rec = reg.register_dataset(
            args.name,
            args.version,
            args.uri,
            content_hash=args.hash,
            kind=args.kind,
            actor=args.actor,
        )
    print(f"{rec.kind} {rec.name}@{rec.version} {rec.uri} sha256={rec.content_hash or '-'}")
    return 0


def cmd_dataset_delete(args: argparse.Namespace) -> int:
    with _registry(args) as reg:
        reg.delete_dataset(args.name, args.version, actor=args.actor)
    print(f"deleted {args.name}@{args.version}")
    return 0


def cmd_contract_register(args: argparse.Namespace) -> int:
    from modelops.contracts import load_contract_file

    contract = load_contract_file(args.file)
    with _registry(args) as reg:
        ref = reg.register_contract(contract, actor=args.actor)
    print(f"feature contract {ref} ({len(contract.features)} features)")
    return 0


def cmd_contract_check(args: argparse.Namespace) -> int:
    from modelops.contracts import FileSchemaSource

    model_id, version = _split_model_ref(args.target)
    if version is None:
        raise SpecError(f"{args.target!r} needs a version; allowed: MODEL@VERSION")
    schema = FileSchemaSource(Path(args.schemas)).current()
    with _registry(args) as reg:
        check = reg.contract_check(model_id, version, schema)
    if args.json:
        _print_json(check.model_dump(mode="json"))
    else:
        print(
            f"{check.contract_ref} against feature schema v{check.schema_version}: "
            f"{check.status.value}"
        )
        for r in check.reasons:
            print(f"  {'BREAKING' if r.breaking else 'ok'}  {r.kind.value:<17} {r.detail}")
    if check.status.value == "BREAKING_CHANGE":
        print(
            f"error: {args.target} cannot be served on feature schema v{check.schema_version}: "
            f"{len([r for r in check.reasons if r.breaking])} breaking change(s)",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_model_create(args: argparse.Namespace) -> int:
    from modelops.spec import load_spec_file

    spec = load_spec_file(args.spec)
    with _registry(args) as reg:
        reg.create_model(spec, actor=args.actor)
    print(
        f"model {spec.model_id}: tier {spec.tier.value}, {spec.rollback_class.value}, "
        f"{spec.framework.value}, slices {', '.join(spec.slices)}"
    )
    if spec.rollback_class.value == "IRREVERSIBLE":
        print(
            "warning: This model cannot be cleanly rolled back. "
            "Promotion is an approximately one-way decision."
        )
    return 0


def cmd_version_register(args: argparse.Namespace) -> int:
    from modelops.artifacts import sha256_file
    from modelops.spec import load_version_meta_file

    meta = load_version_meta_file(args.meta) if args.meta else None
    weights = Path(args.weights)
    if not weights.is_file():
        raise SpecError(f"--weights {weights} is not a file")
    run_id = args.run_id or f"cli:{sha256_file(weights)[:16]}"
    with _registry(args) as reg:
        v = reg.register_weights(
            args.model,
            weights,
            store=_artifact_store(args.artifacts),
            expected_hash=args.hash,
            training_run_id=run_id,
            training_data=args.training_data,
            eval_set=args.eval_set,
            feature_contract_ref=args.contract,
            parent=args.parent,
            meta=meta,
            actor=args.actor,
        )
    print(f"{v.model_id}@{v.version} registered, weights sha256={v.weights_hash}")
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    results = args.results if args.results is not None else {}  # parsed by json_object
    with _registry(args) as reg:
        out = reg.record_gate_result(
            args.model, args.version, passed=args.passed, results=results, actor=args.actor
        )
    verdict = "OFFLINE_PASSED" if args.passed else "FAILED"
    print(f"{args.model}@{args.version} -> {verdict}" + ("" if out else " (already recorded)"))
    return 0


def _print_result(r: Any) -> None:
    if not r.changed:
        print(f"{r.model_id}@{r.version} [{r.slice}] {r.note}; nothing changed")
        return
    pct = f" at {r.percent}%" if r.percent is not None else ""
    line = f"{r.model_id}@{r.version} [{r.slice}] {r.from_state.value} -> {r.to_state.value}{pct}"
    line += f" (desired generation {r.generation})"
    print(line)
    if r.deprecated_version is not None:
        print(f"  version {r.deprecated_version} -> DEPRECATED (kept warm as rollback target)")
    if r.restored_version is not None:
        print(f"  version {r.restored_version} restored to PROMOTED")
    for c in r.caveats:
        print(f"  caveat: {c}")


def cmd_transition(args: argparse.Namespace) -> int:
    with _registry(args) as reg:
        r = reg.transition(
            args.model,
            args.version,
            args.state,
            actor=args.actor,
            slice=args.slice,
            expected=args.expect,
            expected_percent=args.expect_percent,
            percent=args.percent,
            reason=args.reason or "",
            mode=args.mode,
            layer=args.layer,
        )
    _print_result(r)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    with _registry(args) as reg:
        r = reg.rollback(
            args.model,
            actor=args.actor,
            slice=args.slice,
            reason=args.reason or "",
            expected_version=args.version,
            expected=args.expect,
        )
    _print_result(r)
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    with _registry(args) as reg:
        a = reg.approve(
            args.model, args.version, actor=args.actor, slice=args.slice, target=args.to
        )
    print(
        f"{a.approver} ({a.team}) approved {a.model_id}@{a.version} -> {a.target.value} "
        f"on slice {a.slice}"
    )
    return 0


def cmd_override(args: argparse.Namespace) -> int:
    with _registry(args) as reg:
        reg.override(
            args.model,
            args.version,
            actor=args.actor,
            reason=args.reason,
            slice=args.slice,
            kind=args.kind,
        )
    what = {
        "promote_irreversible": "promoting",
        "slo_not_measured": "passing the unmeasured latency/memory SLO of",
    }.get(args.kind, args.kind)
    print(
        f"override recorded: {args.actor} takes responsibility for {what} "
        f"{args.model}@{args.version} on slice {args.slice}: {args.reason}"
    )
    return 0


def _split_model_ref(text: str) -> tuple[str, int | None]:
    name, sep, ver = text.partition("@")
    if not sep:
        return text, None
    if not ver.isdigit():
        raise SpecError(f"{text!r} is malformed; allowed: MODEL or MODEL@VERSION")
    if not 1 <= int(ver) <= MAX_VERSION:
        raise SpecError(f"{text!r}: version out of range; allowed: 1..{MAX_VERSION}")
    return name, int(ver)


def cmd_show(args: argparse.Namespace) -> int:
    model_id, version = _split_model_ref(args.target)
    with _registry(args) as reg:
        spec = reg.get_model(model_id)
        if version is not None:
            v = reg.get_version(model_id, version)
            if args.json:
                _print_json(v.model_dump(mode="json"))
                return 0
            print(f"{v.model_id}@{v.version}  tier {v.tier.value}  {v.rollback_class.value}")
            print(f"  weights   {v.weights_uri}")
            print(f"  sha256    {v.weights_hash}")
            print(f"  data      {v.training_data_version}   eval {v.eval_set_version}")
            print(f"  contract  {v.feature_contract_ref or '-'}   parent {v.parent_model_version}")
            print(f"  run       {v.training_run_id}")
            for s, st in sorted(v.state.items()):
                pct = f" {v.canary_percent[s]}%" if s in v.canary_percent else ""
                print(f"  slice {s}: {st.value}{pct}")
            print("  history:")
            for h in v.state_history:
                pct = f" {h.percent}%" if h.percent is not None else ""
                print(
                    f"    {h.ts.isoformat()}  {h.slice:<10} {h.state.value}{pct}  by {h.actor}"
                    + (f"  ({h.reason})" if h.reason else "")
                )
            return 0
        versions = reg.list_versions(model_id)
        desired = [reg.desired_state(model_id, s) for s in spec.slices]
    if args.json:
        _print_json(
            {
                "model": spec.model_dump(mode="json"),
                "versions": {
                    v.version: {s: st.value for s, st in v.state.items()} for v in versions
                },
                "desired_state": [d.model_dump(mode="json") for d in desired],
            }
        )
        return 0
    print(
        f"{spec.model_id}  owner {spec.owner_team}  tier {spec.tier.value}  "
        f"{spec.rollback_class.value}  {spec.model_class.value}/{spec.framework.value}"
    )
    if spec.rollback_class.value == "IRREVERSIBLE":
        print(
            "  warning: This model cannot be cleanly rolled back. "
            "Promotion is an approximately one-way decision."
        )
    header = "  version  " + "  ".join(f"{s:<16}" for s in spec.slices)
    print(header)
    for v in versions:
        cells = []
        for s in spec.slices:
            st = v.state.get(s)
            pct = f" {v.canary_percent[s]}%" if s in v.canary_percent else ""
            cells.append(f"{(st.value if st else '-') + pct:<16}")
        print(f"  {v.version:<7}  " + "  ".join(cells))
    for d in desired:
        print(
            f"  desired[{d.slice}] gen {d.generation}: prod={d.prod_version} "
            f"canary={d.canary.model_dump() if d.canary else None} "
            f"shadow={d.shadow.model_dump(mode='json') if d.shadow else None} "
            f"ab={d.ab_test.model_dump() if d.ab_test else None} "
            f"rollback_target={d.rollback_target}"
        )
    return 0


def cmd_dependents(args: argparse.Namespace) -> int:
    from modelops.spec import parse_name_version

    with _registry(args) as reg:
        if args.feature:
            out: Any = [str(k) for k in reg.dependents_of_feature(args.feature)]
            title = f"non-archived versions using feature {args.feature}"
        elif args.dataset:
            name, ver = parse_name_version(args.dataset, "--dataset")
            out = [str(k) for k in reg.dependents_of_dataset(name, ver)]
            title = f"non-archived versions pinning {args.dataset}"
        else:
            model_id, ver = _split_model_ref(args.model)
            if ver is None:
                raise SpecError(f"--model {args.model!r} needs a version; allowed: MODEL@VERSION")
            d = reg.dependents_of_model(model_id, ver)
            out = {
                "child_versions": [str(k) for k in d.child_versions],
                "downstream_models": d.downstream_models,
                "transitive_downstream_models": reg.transitive_dependents(model_id),
            }
            title = f"dependents of {args.model}"
    if args.json:
        _print_json(out)
        return 0
    print(title + ":")
    if isinstance(out, dict):
        for k, vals in out.items():
            print(f"  {k}: {', '.join(vals) or '-'}")
    else:
        for item in out or ["-"]:
            print(f"  {item}")
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    with _registry(args) as reg:
        _print_json(reg.lineage(args.model))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    if args.target == "verify":
        with _registry(args) as reg:
            report = reg.verify_audit(args.model)
        if report.ok:
            print(f"audit ok: {report.entries} entries in {report.chains} chains verify")
            return 0
        for p in report.problems:
            print(f"error: audit {p.kind}: {p.detail}")
        return 1
    model_id = args.target if args.target != "-" else None
    with _registry(args) as reg:
        entries = reg.audit_entries(model_id)
    if args.json:
        _print_json([e.model_dump() for e in entries])
        return 0
    for e in entries:
        ver = f"@{e.version}" if e.version is not None else ""
        print(
            f"{e.seq:>5}  {e.ts}  {e.action:<17} {e.model_id or ''}{ver}  by {e.actor}  "
            f"{json.dumps(e.payload, sort_keys=True)}"
        )
    return 0


def cmd_desired_export(args: argparse.Namespace) -> int:
    import yaml

    with _registry(args) as reg:
        if args.model:
            reg.get_model(args.model)  # an unknown model is a mistake, not an empty export
        states = reg.all_desired_states()
    docs = [s.model_dump(mode="json") for s in states if not args.model or s.model_id == args.model]
    print(yaml.safe_dump({"desired_states": docs}, sort_keys=False), end="")
    return 0


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="modelops", description="model registry and control plane")
    p.add_argument(
        "--registry",
        metavar="URL",
        default=None,
        type=database_url("registry"),
        help="sqlite:///PATH or postgresql://... (default: MODELOPS_REGISTRY_URL, "
        "else $MODELOPS_HOME/registry.db)",
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def actor_opt(sp: argparse.ArgumentParser, required: bool = False) -> None:
        sp.add_argument(
            "--actor",
            required=required,
            default=None if required else os.environ.get("USER", "cli"),
            help="who is doing this",
        )

    dbp = sub.add_parser("db", help="registry schema").add_subparsers(dest="sub", required=True)
    dbp.add_parser("upgrade", help="apply migrations").set_defaults(fn=cmd_db_upgrade)
    dbp.add_parser("current", help="show the schema revision").set_defaults(fn=cmd_db_current)
    g = dbp.add_parser(
        "grant-app",
        help="PostgreSQL, run as the owner: give ROLE (which owns nothing) the registry's row "
        "rights and no more; rerun after every upgrade",
    )
    g.add_argument("role")
    g.set_defaults(fn=cmd_db_grant_app)

    ap = sub.add_parser("actor", help="people and their teams").add_subparsers(
        dest="sub", required=True
    )
    a = ap.add_parser("add")
    a.add_argument("name")
    a.add_argument("--team", required=True, help="a known team (`modelops team add NAME`)")
    actor_opt(a)
    a.set_defaults(fn=cmd_actor_add)

    tp = sub.add_parser("team", help="the known teams").add_subparsers(dest="sub", required=True)
    a = tp.add_parser("add", help="make a team known (owners and approvers name known teams)")
    a.add_argument("name")
    actor_opt(a)
    a.set_defaults(fn=cmd_team_add)
    tp.add_parser("list", help="the known teams").set_defaults(fn=cmd_team_list)

    ds = sub.add_parser("dataset", help="datasets and eval sets").add_subparsers(
        dest="sub", required=True
    )
    d = ds.add_parser("register")
    d.add_argument("name")
    d.add_argument("--version", type=int, required=True)
    d.add_argument("--uri", required=True)
    d.add_argument("--hash", default=None, metavar="SHA256")
    d.add_argument("--kind", choices=["dataset", "eval_set"], default="dataset")
    actor_opt(d)
    d.set_defaults(fn=cmd_dataset_register)
    d = ds.add_parser("delete")
    d.add_argument("name")
    d.add_argument("--version", type=int, required=True)
    actor_opt(d)
    d.set_defaults(fn=cmd_dataset_delete)

    cp = sub.add_parser("contract", help="feature contracts").add_subparsers(
        dest="sub", required=True
    )
    c = cp.add_parser("register")
    c.add_argument("file", metavar="CONTRACT.yaml")
    actor_opt(c)
    c.set_defaults(fn=cmd_contract_register)

    c = cp.add_parser("check", help="can the current feature schema serve this version?")
    c.add_argument("target", metavar="MODEL@VERSION")
    c.add_argument(
        "--schemas", required=True, metavar="DIR", help="versioned schema files v{N}.yaml"
    )
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_contract_check)

    mp = sub.add_parser("model", help="logical models").add_subparsers(dest="sub", required=True)
    m = mp.add_parser("create")
    m.add_argument("spec", metavar="SPEC.yaml")
    actor_opt(m)
    m.set_defaults(fn=cmd_model_create)

    vp = sub.add_parser("version", help="model versions").add_subparsers(dest="sub", required=True)
    v = vp.add_parser("register")
    v.add_argument("model")
    v.add_argument("--weights", required=True, metavar="FILE")
    v.add_argument("--training-data", required=True, metavar="NAME@V")
    v.add_argument("--eval-set", required=True, metavar="NAME@V")
    v.add_argument("--contract", default=None, metavar="REF")
    v.add_argument("--parent", type=int, default=None, metavar="N")
    v.add_argument("--run-id", default=None, metavar="ID")
    v.add_argument("--hash", default=None, metavar="SHA256", help="expected sha256 of --weights")
    v.add_argument(
        "--meta",
        default=None,
        metavar="META.yaml",
        help="runtime requirements, code refs, eval metrics",
    )
    v.add_argument(
        "--artifacts",
        default=None,
        metavar="URI",
        help="artifact store (default $MODELOPS_ARTIFACTS or $MODELOPS_HOME/artifacts)",
    )
    actor_opt(v)
    v.set_defaults(fn=cmd_version_register)

    g = sub.add_parser("gate", help="record an offline gate result")
    g.add_argument("model")
    g.add_argument("version", type=int)
    verdict = g.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--passed", dest="passed", action="store_true")
    verdict.add_argument("--failed", dest="passed", action="store_false")
    g.add_argument("--results", default=None, metavar="JSON", type=json_object("--results"))
    actor_opt(g)
    g.set_defaults(fn=cmd_gate)

    t = sub.add_parser("transition", help="move a version on a slice")
    t.add_argument("model")
    t.add_argument("version", type=int)
    t.add_argument("state")
    t.add_argument("--slice", default="global")
    t.add_argument("--percent", type=int, default=None)
    t.add_argument(
        "--expect",
        default=None,
        metavar="STATE",
        help="compare-and-set: refuse unless the version is in this state",
    )
    t.add_argument(
        "--expect-percent",
        type=int,
        default=None,
        metavar="P",
        help="compare-and-set on the current percent too (a canary step from a stale read "
        "is refused)",
    )
    t.add_argument("--mode", default=None, choices=["live", "replay"], help="SHADOW mode")
    t.add_argument("--layer", default=None, help="AB_TEST experiment layer")
    actor_opt(t, required=True)
    t.add_argument("--reason", default=None)
    t.set_defaults(fn=cmd_transition)

    r = sub.add_parser(
        "rollback",
        help="roll back a version on a slice (bare: undo the latest serving change, once)",
    )
    r.add_argument("model")
    r.add_argument("--slice", default="global")
    r.add_argument(
        "--version",
        type=int,
        default=None,
        metavar="N",
        help="the version to roll back; already rolled back is an idempotent answer",
    )
    r.add_argument(
        "--expect",
        default=None,
        metavar="STATE",
        help="compare-and-set: refuse unless the version is in this state",
    )
    actor_opt(r, required=True)
    r.add_argument("--reason", default=None)
    r.set_defaults(fn=cmd_rollback)

    a = sub.add_parser("approve", help="approve the next gated move of a version")
    a.add_argument("model")
    a.add_argument("version", type=int)
    a.add_argument("--slice", default="global")
    a.add_argument("--to", default=None, metavar="STATE")
    actor_opt(a, required=True)
    a.set_defaults(fn=cmd_approve)

    o = sub.add_parser(
        "override",
        help="take responsibility for promoting an IRREVERSIBLE model, or for an L2/L3 "
        "version whose latency/memory SLO could not be measured",
    )
    o.add_argument("model")
    o.add_argument("version", type=int)
    o.add_argument("--slice", default="global")
    o.add_argument("--reason", required=True)
    o.add_argument(
        "--kind",
        default="promote_irreversible",
        metavar="KIND",
        help="promote_irreversible (default) or slo_not_measured",
    )
    actor_opt(o, required=True)
    o.set_defaults(fn=cmd_override)

    s = sub.add_parser("show", help="a model, or one version")
    s.add_argument("target", metavar="MODEL[@VERSION]")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_show)

    dp = sub.add_parser("dependents", help="reverse lineage lookups")
    grp = dp.add_mutually_exclusive_group(required=True)
    grp.add_argument("--feature", metavar="F")
    grp.add_argument("--dataset", metavar="NAME@V")
    grp.add_argument("--model", metavar="MODEL@V")
    dp.add_argument("--json", action="store_true")
    dp.set_defaults(fn=cmd_dependents)

    lp = sub.add_parser("lineage", help="a model's lineage as JSON")
    lp.add_argument("model")
    lp.set_defaults(fn=cmd_lineage)

    au = sub.add_parser("audit", help="`audit MODEL` lists entries; `audit verify` checks chains")
    au.add_argument(
        "target",
        metavar="MODEL|verify",
        help="a model id, '-' for registry-wide events, or 'verify'",
    )
    au.add_argument("--model", default=None, help="with verify: check only this model's chain")
    au.add_argument("--json", action="store_true")
    au.set_defaults(fn=cmd_audit)

    dsp = sub.add_parser("desired-state", help="desired deployment state").add_subparsers(
        dest="sub", required=True
    )
    e = dsp.add_parser("export", help="print every (model, slice) desired state as YAML")
    e.add_argument("--model", default=None)
    e.set_defaults(fn=cmd_desired_export)
    _plugin_commands(sub)
    return p


def _plugin_commands(sub: Any) -> None:
    """Planes installed beside the core (serving, …) add commands through entry points, so
    the core never imports them."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="modelops.cli"):
        ep.load()(sub)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        code = int(args.fn(args))
        sys.stdout.flush()  # a closed pipe is noticed here, not in interpreter shutdown
        return code
    except ModelopsError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except BrokenPipeError as exc:
        if not _stdout_gone():  # some other pipe or socket broke: that is an error
            return _unexpected(exc)
        # `modelops show … | head -1`: the reader has what it wanted. Exit as a writer killed
        # by SIGPIPE would, without a word, and without a second failure flushing at exit.
        _silence_stdout()
        return 141
    except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into one line
        return _unexpected(exc)


def _unexpected(exc: Exception) -> int:
    from sqlalchemy.exc import OperationalError

    if isinstance(exc, OperationalError):
        _error(f"cannot use the registry database: {exc.orig}")
        return 1
    if isinstance(exc, ModuleNotFoundError) and (hint := _missing_extra(exc.name)):
        _error(hint)
        return 1
    if os.environ.get("MODELOPS_DEBUG"):
        raise exc
    _error(
        f"internal error ({type(exc).__name__}: {exc}); rerun with MODELOPS_DEBUG=1 for a traceback"
    )
    return 70


def _stdout_gone() -> bool:
    """Whether stdout is a pipe nobody reads any more (poll reports an error on its end)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # not a real file (captured in tests)
        return False


def _error(message: str) -> None:
    """The one `error:` line: a multi-line message (a driver's, a validator's) is joined."""
    text = "; ".join(line.strip() for line in message.splitlines() if line.strip())
    print(f"error: {text}", file=sys.stderr)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file descriptor (captured in tests)
        pass


def _missing_extra(module: str | None) -> str | None:
    """Which optional extra of ours provides a module that failed to import, if any.

    Read from the installed package's own metadata, so the core names the serving (or any
    other) extra without importing or knowing the planes installed beside it.
    """
    from importlib.metadata import PackageNotFoundError, packages_distributions, requires

    if not module:
        return None
    top = module.split(".")[0]
    wanted = {_norm(d) for d in packages_distributions().get(top, [])} | {_norm(top)}
    try:
        reqs = requires("modelops") or []
    except PackageNotFoundError:
        return None
    for req in reqs:
        name = re.match(r"[A-Za-z0-9._-]+", req)
        extra = re.search(r"extra\s*==\s*[\"']([^\"']+)", req)
        if name and extra and _norm(name.group(0)) in wanted:
            return (
                f"this command needs {name.group(0)} (module {top!r} is not installed); "
                f"install it with: pip install 'modelops[{extra.group(1)}]'"
            )
    return None


def _norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


if __name__ == "__main__":
    sys.exit(main())
