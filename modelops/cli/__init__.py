"""The `modelops` command line: a thin shell over Registry.

A user mistake exits 1 with one line starting `error:`; usage errors exit 2 (argparse);
nothing a user types produces a traceback.

Layout: `args` (argument types and CliParser, which plugins use too), one `*_cmds` module per
topic (each holds its commands and a `register(sub)` that adds them), `parser` (the top-level
parser, the topic list and the plugin entry points), `errors_out` (how main reports a
failure) and `entry` (main).
"""

from __future__ import annotations

from modelops.cli.args import CliParser, bounded_int, database_url, json_object, port, seconds
from modelops.cli.entry import main
from modelops.cli.parser import build_parser

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
