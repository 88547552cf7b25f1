"""`modelops show`, `dependents`, `lineage`, `audit` and `desired-state export`: reading
the registry back."""

from __future__ import annotations

import argparse
import json
from typing import Any

from modelops.cli.cmd_support import artifact_store, open_registry, print_json, split_model_ref
from modelops.cli.experiment_cmds import ab_lines
from modelops.errors import SpecError


def cmd_show(args: argparse.Namespace) -> int:
    model_id, version = split_model_ref(args.target)
    with open_registry(args) as reg:
        spec = reg.get_model(model_id)
        if version is not None:
            v = reg.get_version(model_id, version)
            if args.json:
                ab = [e.model_dump(mode="json") for e in reg.ab_experiments(model_id, version)]
                print_json({**v.model_dump(mode="json"), "ab_experiments": ab})
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
            for line in ab_lines(reg, model_id, version):
                print(line)
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
        marks = reg.needs_retrain(model_id)
    if args.json:
        print_json(
            {
                "model": spec.model_dump(mode="json"),
                "versions": {
                    v.version: {s: st.value for s, st in v.state.items()} for v in versions
                },
                "desired_state": [d.model_dump(mode="json") for d in desired],
                "needs_retrain": [m.model_dump(mode="json") for m in marks],
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
    for m in marks:
        print(
            f"  NEEDS_RETRAIN: {m.reason} (marked {m.marked_at}; a version newer than "
            f"v{m.latest_version} clears it)"
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

    with open_registry(args) as reg:
        if args.feature:
            out: Any = [str(k) for k in reg.dependents_of_feature(args.feature)]
            title = f"non-archived versions using feature {args.feature}"
        elif args.dataset:
            name, ver = parse_name_version(args.dataset, "--dataset")
            out = [str(k) for k in reg.dependents_of_dataset(name, ver)]
            title = f"non-archived versions pinning {args.dataset}"
        else:
            model_id, ver = split_model_ref(args.model)
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
        print_json(out)
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
    with open_registry(args) as reg:
        print_json(reg.lineage(args.model))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    if args.target == "verify":
        store = artifact_store(args.artifacts) if args.anchors else None
        with open_registry(args) as reg:
            report = reg.verify_audit(args.model, anchors=store)
        if report.ok:
            anchored = ", signatures and anchors" if store is not None else " and signatures"
            print(f"audit ok: {report.entries} entries in {report.chains} chains{anchored} verify")
            return 0
        for p in report.problems:
            print(f"error: audit {p.kind}: {p.detail}")
        return 1
    model_id = args.target if args.target != "-" else None
    with open_registry(args) as reg:
        entries = reg.audit_entries(model_id)
    if args.json:
        print_json([e.model_dump() for e in entries])
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

    with open_registry(args) as reg:
        if args.model:
            reg.get_model(args.model)  # an unknown model is a mistake, not an empty export
        states = reg.all_desired_states()
    docs = [s.model_dump(mode="json") for s in states if not args.model or s.model_id == args.model]
    print(yaml.safe_dump({"desired_states": docs}, sort_keys=False), end="")
    return 0


def register(sub: Any) -> None:
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
    au.add_argument(
        "--anchors",
        action="store_true",
        help="with verify: also check every chain head anchored in the artifact store",
    )
    au.add_argument("--artifacts", default=None, metavar="URI", help="with --anchors")
    au.add_argument("--json", action="store_true")
    au.set_defaults(fn=cmd_audit)

    dsp = sub.add_parser("desired-state", help="desired deployment state").add_subparsers(
        dest="sub", required=True
    )
    e = dsp.add_parser("export", help="print every (model, slice) desired state as YAML")
    e.add_argument("--model", default=None)
    e.set_defaults(fn=cmd_desired_export)
