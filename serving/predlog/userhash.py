"""The user key as the prediction log keeps it: a keyed hash, never the raw id.

Assignment is sticky per user, so the user is the unit the sensors' statistics count, and
the log must be able to group a user's requests. It must not be able to name the user: the
log is read by every sensor, replayed and copied into reports. So the gateway stores
HMAC-SHA256(salt, user key) (RFC 2104), truncated to 128 bits (32 hex characters; the
chance that two of a billion users collide is about 1e-21), and the raw id never reaches a
record. Without the salt the hash cannot be recomputed from a guessed id, so a copy of the
log alone does not reveal who is in it.

Where the salt comes from (first that is set):
1. an explicit value (tests, a gateway built in code);
2. the environment variable MODELOPS_USER_SALT (production: every gateway process of one
   log must use the same salt, or one user counts as several);
3. `$MODELOPS_HOME/predlog.salt`, 32 random bytes created on first use with mode 0600
   (the embedded default: every process on the machine shares it).

Keep the salt apart from the log (never in the log's database). Rotating it splits each
user into two for the windows that span the change, so rotate between experiments.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from modelops.store import db

__all__ = ["SALT_ENV", "SALT_FILE", "HASH_HEX_CHARS", "resolve_user_salt", "hash_user"]

SALT_ENV = "MODELOPS_USER_SALT"
SALT_FILE = "predlog.salt"
HASH_HEX_CHARS = 32


def _salt_file(home: Path) -> bytes:
    path = home / SALT_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its salt
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(value)
    return value


def resolve_user_salt(salt: str | bytes | None = None) -> bytes:
    """The salt this process hashes user keys with (see the module docstring)."""
    if salt is None:
        env = os.environ.get(SALT_ENV)
        if env:
            return env.encode()
        return _salt_file(db.default_home())
    value = salt.encode() if isinstance(salt, str) else bytes(salt)
    if not value:
        raise ValueError("the user-hash salt must not be empty")
    return value


def hash_user(user_key: str, salt: bytes) -> str:
    """HMAC-SHA256 of the user key under the salt, as 32 hex characters."""
    mac = hmac.new(salt, user_key.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return mac.hexdigest()[:HASH_HEX_CHARS]
