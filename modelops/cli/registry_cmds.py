"""`modelops dataset …`, `contract …`, `model create`, `version register` and `gate`: what
the registry records before anything is served."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from modelops.cli import governance_cmds
from modelops.cli.args import json_object
from modelops.cli.cmd_support import (
    actor_opt,
    artifact_store,
    open_registry,
    print_json,
    split_model_ref,
)
from modelops.errors import SpecError


def cmd_dataset_register(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
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
    with open_registry(args) as reg:
        reg.delete_dataset(args.name, args.version, actor=args.actor)
    print(f"deleted {args.name}@{args.version}")
    return 0


def cmd_contract_register(args: argparse.Namespace) -> int:
    from modelops.contracts import load_contract_file

    contract = load_contract_file(args.file)
    with open_registry(args) as reg:
        ref = reg.register_contract(contract, actor=args.actor)
    print(f"feature contract {ref} ({len(contract.features)} features)")
    return 0


def cmd_contract_check(args: argparse.Namespace) -> int:
    from modelops.contracts import FileSchemaSource

    model_id, version = split_model_ref(args.target)
    if version is None:
        raise SpecError(f"{args.target!r} needs a version; allowed: MODEL@VERSION")
    schema = FileSchemaSource(Path(args.schemas)).current()
    with open_registry(args) as reg:
        check = reg.contract_check(model_id, version, schema)
    if args.json:
        print_json(check.model_dump(mode="json"))
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
    with open_registry(args) as reg:
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
    with open_registry(args) as reg:
        v = reg.register_weights(
            args.model,
            weights,
            store=artifact_store(args.artifacts),
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
    with open_registry(args) as reg:
        out = reg.record_gate_result(
            args.model, args.version, passed=args.passed, results=results, actor=args.actor
        )
    verdict = "OFFLINE_PASSED" if args.passed else "FAILED"
    print(f"{args.model}@{args.version} -> {verdict}" + ("" if out else " (already recorded)"))
    return 0


def register(sub: Any) -> None:
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
    governance_cmds.register_model(mp)  # amend, sign-amendment

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
