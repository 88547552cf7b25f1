"""How main reports a failure: one `error:` line, the exit code, and a quiet exit when the
reader of stdout has gone."""

from __future__ import annotations

import os
import re
import sys


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
