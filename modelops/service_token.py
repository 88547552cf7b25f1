"""The shared secret that authenticates the serving plane's HTTP writes and admin reads.

Route pushes, outcome posts, the gateway's admin routes and the controller's routes all
carry `Authorization: Bearer <token>`. Every process (gateway, controller, Dagster
resources, demo) resolves the token through `service_token()`, so they cannot disagree
about where it comes from:

1. `MODELOPS_GATEWAY_TOKEN`, when set (production: from a secret store);
2. otherwise `$MODELOPS_HOME/gateway.token`, created on first use with a random value and
   mode 0600, so the zero-config embedded default is authenticated too. There is no
   "no token means open".

It lives in the core because the serving plane and the Dagster resources both need it.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import stat
import tempfile
from pathlib import Path

from modelops.errors import SpecError

__all__ = [
    "TOKEN_ENV",
    "TOKEN_FILE",
    "MIN_TOKEN_CHARS",
    "service_token",
    "token_path",
    "check_token",
    "bearer_ok",
    "auth_header",
]

TOKEN_ENV = "MODELOPS_GATEWAY_TOKEN"
TOKEN_FILE = "gateway.token"
MIN_TOKEN_CHARS = 16
# Header-safe and unambiguous: what can travel in a Bearer header and a file line as is.
_TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/=-]+")


def _home() -> Path:
    return Path(os.environ.get("MODELOPS_HOME") or ".modelops").resolve()


def token_path(home: Path | None = None) -> Path:
    """Where the embedded default keeps its token."""
    return (home if home is not None else _home()) / TOKEN_FILE


def check_token(token: str, where: str) -> str:
    """The token itself, if it is strong and header-safe; SpecError naming `where` if not."""
    if len(token) < MIN_TOKEN_CHARS or not _TOKEN_RE.fullmatch(token):
        raise SpecError(
            f"{where}: the service token must be at least {MIN_TOKEN_CHARS} characters of "
            "A-Z a-z 0-9 . _ ~ + / = -"
        )
    return token


def _read(path: Path) -> str:
    st = path.stat()
    if st.st_mode & 0o077:
        raise SpecError(
            f"{path} is readable by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"allowed: 0600 (chmod 600 {path})"
        )
    return check_token(path.read_text().strip(), str(path))


def _create(path: Path) -> None:
    """Write a fresh random token without ever exposing a partial or world-readable file.

    The token is written to a private temporary file and hard-linked into place, which
    fails if another process got there first: exactly one token wins a creation race.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        Path(tmp).unlink(missing_ok=True)


def service_token(home: Path | None = None) -> str:
    """The token from the environment, else the home's token file (created if missing)."""
    env = os.environ.get(TOKEN_ENV)
    if env:
        return check_token(env.strip(), TOKEN_ENV)
    path = token_path(home)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    try:
        _create(path)
    except OSError as exc:
        raise SpecError(
            f"cannot create the service token file {path}: {exc}; "
            f"set {TOKEN_ENV} or make {path.parent} writable"
        ) from None
    return _read(path)


def bearer_ok(authorization: str | bytes | None, token: str) -> bool:
    """Whether an Authorization header carries this token; constant time in its content."""
    if authorization is None:
        return False
    if isinstance(authorization, str):
        authorization = authorization.encode("latin-1", "replace")
    scheme, _, value = authorization.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(value.strip(), token.encode())


def auth_header(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
