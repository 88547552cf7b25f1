"""Ed25519 keys: an actor is a key, not a name. Key ids, PEM files (private ones 0600),
and the registered keys that verification is handed."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from modelops.errors import SpecError
from modelops.identity.wording import _first_line

__all__ = [
    "PublicKey",
    "SigningKey",
    "ActorKey",
    "generate_signing_key",
    "write_keypair",
    "load_signing_key",
    "load_public_key",
]


def _key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()


class PublicKey:
    """An Ed25519 public key; its key id is the sha256 of the 32 raw key bytes."""

    __slots__ = ("_key", "raw", "key_id")

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self.raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = _key_id(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey({self.key_id[:16]}…)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    @classmethod
    def from_pem(cls, data: bytes | str, *, source: str = "public key") -> PublicKey:
        if isinstance(data, str):
            data = data.encode()
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise SpecError(
                f"{source} is not a PEM public key ({_first_line(exc)}); "
                "allowed: an Ed25519 SubjectPublicKeyInfo PEM from `modelops keygen`"
            ) from None
        if not isinstance(key, Ed25519PublicKey):
            raise SpecError(
                f"{source} is a {type(key).__name__}, not an Ed25519 key; allowed: Ed25519 only"
            )
        return cls(key)

    @classmethod
    def from_raw(cls, raw: bytes) -> PublicKey:
        return cls(Ed25519PublicKey.from_public_bytes(raw))

    def to_pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


class SigningKey:
    """An Ed25519 private key. It never leaves this object except as PEM to a 0600 file."""

    __slots__ = ("_key", "public_key")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = PublicKey(key.public_key())

    def __repr__(self) -> str:
        return f"SigningKey({self.public_key.key_id[:16]}…)"

    @property
    def key_id(self) -> str:
        return self.public_key.key_id

    @classmethod
    def from_pem(
        cls, data: bytes | str, *, passphrase: bytes | None = None, source: str = "private key"
    ) -> SigningKey:
        """Also the way a service key arrives through an environment variable."""
        if isinstance(data, str):
            data = data.encode()
        try:
            key = serialization.load_pem_private_key(data, password=passphrase)
        except (ValueError, TypeError) as exc:
            raise SpecError(
                f"{source} is not a readable PEM private key ({_first_line(exc)}); "
                "allowed: an Ed25519 PKCS8 PEM from `modelops keygen`, with its passphrase "
                "if it has one"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SpecError(
                f"{source} is a {type(key).__name__}, not an Ed25519 key; allowed: Ed25519 only"
            )
        return cls(key)

    def to_pem(self, passphrase: bytes | None = None) -> bytes:
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
        )

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


@dataclass(frozen=True, slots=True)
class ActorKey:
    """One registered key of an actor, as the registry hands it to verification."""

    actor: str
    key: PublicKey
    revoked_at: datetime | None = None

    def revoked_by(self, at: datetime) -> bool:
        return self.revoked_at is not None and self.revoked_at <= at


def generate_signing_key() -> SigningKey:
    return SigningKey(Ed25519PrivateKey.generate())


def write_keypair(
    key: SigningKey,
    private_path: str | os.PathLike[str],
    public_path: str | os.PathLike[str] | None = None,
    *,
    passphrase: bytes | None = None,
) -> tuple[Path, Path]:
    """Private key 0600 from the first byte (created with that mode, never chmod-ed later);
    refuses to overwrite, because a silently replaced key orphans every registration of it."""
    private_path = Path(private_path)
    public_path = (
        Path(public_path) if public_path else private_path.with_name(private_path.name + ".pub")
    )
    for p in (private_path, public_path):
        if p.exists():
            raise SpecError(f"key file {p} already exists; refusing to overwrite a key")
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.to_pem(passphrase))
        os.chmod(private_path, 0o600)  # in case a umask-less filesystem widened it
        fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.public_key.to_pem())
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    return private_path, public_path


def load_signing_key(
    path: str | os.PathLike[str], *, passphrase: bytes | None = None
) -> SigningKey:
    """Refuses a private key others can read: it may already be someone else's key too."""
    path = Path(path)
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read private key {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise SpecError(
            f"private key {path} is readable or writable by others (mode "
            f"{st.st_mode & 0o777:04o}); allowed: 0600 (chmod 600 {path})"
        )
    return SigningKey.from_pem(data, passphrase=passphrase, source=f"private key {path}")


def load_public_key(path_or_pem: str | os.PathLike[str] | bytes) -> PublicKey:
    if isinstance(path_or_pem, bytes):
        return PublicKey.from_pem(path_or_pem)
    text = os.fspath(path_or_pem)
    if text.lstrip().startswith("-----BEGIN"):
        return PublicKey.from_pem(text)
    path = Path(text)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read public key {path}: {exc.strerror}") from None
    return PublicKey.from_pem(data, source=f"public key {path}")
