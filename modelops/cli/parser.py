"""The top-level parser: global options, then each topic module's commands, then plugins.

A new topic module holds its commands and a `register(sub)`, and joins TOPICS; the order
of TOPICS is the order of the commands in `modelops --help`.
"""

from __future__ import annotations

import argparse
from typing import Any

from modelops.cli import (
    admin_cmds,
    checkpoint_cmds,
    docs_cmds,
    experiment_cmds,
    governance_cmds,
    inspect_cmds,
    lifecycle_cmds,
    registry_cmds,
    rollback_cmds,
)
from modelops.cli.args import CliParser, database_url

TOPICS = (
    admin_cmds,
    registry_cmds,
    lifecycle_cmds,
    inspect_cmds,
    experiment_cmds,
    governance_cmds,
    rollback_cmds,  # extends `rollback` (from lifecycle_cmds) with `rollback plan MODEL`
    docs_cmds,
    checkpoint_cmds,
)


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

    for topic in TOPICS:
        topic.register(sub)
    _plugin_commands(sub)
    return p


def _plugin_commands(sub: Any) -> None:
    """Planes installed beside the core (serving, …) add commands through entry points, so
    the core never imports them."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="modelops.cli"):
        ep.load()(sub)
