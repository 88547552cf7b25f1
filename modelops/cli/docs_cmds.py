"""`modelops docs MODEL@V [--out DIR]`: the version's technical documentation (EU AI Act
Article 11, Annex IV), generated from registry records alone by `modelops.compliance`.

It writes DOC.md and DOC.json and prints where, then every gap; a gap is a record the
registry does not hold, and the line says how to fill it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelops.cli.cmd_support import open_registry, print_json, split_model_ref
from modelops.errors import SpecError

__all__ = ["register", "cmd_docs"]


def cmd_docs(args: argparse.Namespace) -> int:
    from modelops.compliance import build_document, write_document
    from modelops.store.db import default_home

    model_id, version = split_model_ref(args.target)
    if version is None:
        raise SpecError(
            f"{args.target!r} names no version; allowed: MODEL@VERSION, e.g. credit_limit@2"
        )
    with open_registry(args) as reg:
        doc = build_document(reg, model_id, version)
    out = Path(args.out) if args.out else default_home() / "docs" / model_id / f"v{version}"
    md, js = write_document(doc, out)
    if args.json:
        print_json(
            {"markdown": str(md), "json": str(js), "gaps": [g.model_dump() for g in doc.gaps]}
        )
        return 0
    req = len(doc.required_gaps)
    print(f"{model_id}@{version}: technical documentation written to {md} and {js}")
    print(f"gaps: {len(doc.gaps)} ({req} in required sections)")
    for g in doc.gaps:
        kind = "required" if g.required else "advisory"
        print(f"  §{g.section} {kind}: missing {g.record}; fill: {g.fill}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "docs", help="a version's technical documentation (Annex IV), from records alone"
    )
    p.add_argument("target", metavar="MODEL@VERSION")
    p.add_argument(
        "--out", default=None, metavar="DIR", help="default: $MODELOPS_HOME/docs/MODEL/vN"
    )
    p.add_argument("--json", action="store_true", help="print the paths and gaps as JSON")
    p.set_defaults(fn=cmd_docs)
