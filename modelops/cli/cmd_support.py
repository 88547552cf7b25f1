"""What the command modules share: opening the registry and artifact store, printing JSON,
reading MODEL[@VERSION], and the --actor option."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from modelops.errors import SpecError
from modelops.spec import MAX_VERSION


def open_registry(args: argparse.Namespace) -> Any:
    from modelops.registry import Registry

    return Registry(args.registry)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def artifact_store(uri: str | None) -> Any:
    from modelops.artifacts import LocalArtifactStore, open_store

    uri = uri or os.environ.get("MODELOPS_ARTIFACTS")
    return open_store(uri) if uri else LocalArtifactStore.default()


def split_model_ref(text: str) -> tuple[str, int | None]:
    name, sep, ver = text.partition("@")
    if not sep:
        return text, None
    if not ver.isdigit():
        raise SpecError(f"{text!r} is malformed; allowed: MODEL or MODEL@VERSION")
    if not 1 <= int(ver) <= MAX_VERSION:
        raise SpecError(f"{text!r}: version out of range; allowed: 1..{MAX_VERSION}")
    return name, int(ver)


def actor_opt(sp: argparse.ArgumentParser, required: bool = False) -> None:
    sp.add_argument(
        "--actor",
        required=required,
        default=None if required else os.environ.get("USER", "cli"),
        help="who is doing this",
    )
