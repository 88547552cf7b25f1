"""main: parse, run the command, and map every failure to an exit code and one line."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from modelops.cli.errors_out import _error, _silence_stdout, _stdout_gone, _unexpected
from modelops.cli.parser import build_parser
from modelops.errors import ModelopsError


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
