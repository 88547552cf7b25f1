"""Content-addressed artifact store for model weights, keyed by sha256.

The address is the hash, so a blob can only be "the right one" if its bytes hash
to its name. Storage is not trusted to keep that true: every read rehashes the
bytes and a mismatch raises IntegrityError instead of handing the bytes out.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from modelops.errors import IntegrityError, NotFoundError, SpecError

__all__ = [
    "CHUNK_SIZE",
    "ArtifactRef",
    "ArtifactStore",
    "LocalArtifactStore",
    "S3ArtifactStore",
    "open_store",
    "sha256_file",
]

CHUNK_SIZE = 1024 * 1024
"""Hash and copy in 1 MiB chunks so multi-gigabyte weights never sit in memory."""

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_ALLOWED_SCHEMES = ("file", "s3")

PathLike = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """What a registry records about a stored blob; the sha256 is the identity."""

    sha256: str
    uri: str
    size: int


def sha256_file(path: PathLike) -> str:
    """Hash a file in chunks so large weights are never loaded whole."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha256(sha256: object) -> str:
    """Reject anything that is not a canonical digest before it becomes a path or key."""
    if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
        raise SpecError(f"invalid sha256 {sha256!r}: expected 64 lowercase hex characters")
    return sha256


def _iter_fileobj(fh: IO[bytes]) -> Iterator[bytes]:
    yield from iter(lambda: fh.read(CHUNK_SIZE), b"")


class ArtifactStore(ABC):
    """One interface over local and object storage.

    Reads live here, not in the subclasses, so no backend can skip verification.
    """

    @abstractmethod
    def uri_for(self, sha256: str) -> str:
        """Where the blob with this hash lives (or would live)."""

    @abstractmethod
    def exists(self, sha256: str) -> bool:
        """Whether a blob is stored under this hash; says nothing about its integrity."""

    @abstractmethod
    def put_file(self, path: PathLike) -> ArtifactRef:
        """Store a file under its hash; a no-op if an intact blob is already stored."""

    @abstractmethod
    def put_bytes(self, data: bytes) -> ArtifactRef:
        """Store bytes under their hash; a no-op if an intact blob is already stored."""

    @abstractmethod
    def _open(self, sha256: str) -> AbstractContextManager[Iterable[bytes]]:
        """Open the raw, unverified blob; raise NotFoundError before yielding if absent."""

    def read_bytes(self, sha256: str) -> bytes:
        """Return the blob's bytes, but only once they hash to the name they were asked by."""
        sha256 = _check_sha256(sha256)
        digest = hashlib.sha256()
        parts: list[bytes] = []
        with self._open(sha256) as chunks:
            for chunk in chunks:
                digest.update(chunk)
                parts.append(chunk)
        self._require_match(sha256, digest.hexdigest())
        return b"".join(parts)

    def fetch(self, sha256: str, dest: PathLike) -> Path:
        """Download to dest via a sibling temp file so dest never holds unverified bytes."""
        sha256 = _check_sha256(sha256)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self._open(sha256) as chunks:
            fd, tmp_name = tempfile.mkstemp(
                dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial"
            )
            tmp = Path(tmp_name)
            try:
                digest = hashlib.sha256()
                with os.fdopen(fd, "wb") as out:
                    for chunk in chunks:
                        digest.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                self._require_match(sha256, digest.hexdigest())
                os.chmod(tmp, 0o644)
                os.replace(tmp, dest)
            except BaseException:
                with suppress(FileNotFoundError):
                    tmp.unlink()
                raise
        return dest

    def verify(self, sha256: str) -> None:
        """Rehash the stored bytes; raises IntegrityError if storage has drifted."""
        sha256 = _check_sha256(sha256)
        digest = hashlib.sha256()
        with self._open(sha256) as chunks:
            for chunk in chunks:
                digest.update(chunk)
        self._require_match(sha256, digest.hexdigest())

    def intact(self, sha256: str) -> bool:
        """Stored and still hashing to its name. A put checks this rather than `exists`, so
        a blob that rotted in storage is rewritten by the next put of the right bytes."""
        if not self.exists(sha256):
            return False
        try:
            self.verify(sha256)
        except IntegrityError:
            return False
        return True

    def _require_match(self, expected: str, actual: str) -> None:
        if actual != expected:
            raise IntegrityError(
                f"artifact {self.uri_for(expected)} is corrupt: expected sha256 {expected}, "
                f"got sha256 {actual}; refusing to hand it out"
            )


class LocalArtifactStore(ArtifactStore):
    """Blobs under root/sha256/ab/<hex>; the two-char fan-out keeps directories small."""

    def __init__(self, root: PathLike) -> None:
        # Absolute now, so a later chdir cannot silently move the store.
        self.root = Path(root).expanduser().absolute()

    @classmethod
    def default(cls) -> LocalArtifactStore:
        """The store under $MODELOPS_HOME (./.modelops if unset), shared by every command."""
        home = os.environ.get("MODELOPS_HOME") or ".modelops"
        return cls(Path(home) / "artifacts")

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def path_for(self, sha256: str) -> Path:
        """Filesystem location of a blob, for callers that need to mmap or stat it."""
        sha256 = _check_sha256(sha256)
        return self.root / "sha256" / sha256[:2] / sha256

    def uri_for(self, sha256: str) -> str:
        return self.path_for(sha256).as_uri()

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def put_file(self, path: PathLike) -> ArtifactRef:
        path = Path(path)
        sha256 = sha256_file(path)
        size = path.stat().st_size
        if self.intact(sha256):
            return ArtifactRef(sha256=sha256, uri=self.uri_for(sha256), size=size)
        with open(path, "rb") as fh:
            return self._store(sha256, _iter_fileobj(fh), source=str(path))

    def put_bytes(self, data: bytes) -> ArtifactRef:
        sha256 = hashlib.sha256(data).hexdigest()
        if self.intact(sha256):
            return ArtifactRef(sha256=sha256, uri=self.uri_for(sha256), size=len(data))
        return self._store(sha256, [data], source="<bytes>")

    def _store(self, sha256: str, chunks: Iterable[bytes], source: str) -> ArtifactRef:
        """Write to a temp file beside the target and rename, so readers never see a partial blob.

        The copy is rehashed because a source file can change between hashing and copying.
        """
        target = self.path_for(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{sha256}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != sha256:
                raise IntegrityError(
                    f"{source} changed while being stored: expected sha256 {sha256}, "
                    f"got sha256 {digest.hexdigest()}; nothing was stored at {target.as_uri()}"
                )
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            with suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return ArtifactRef(sha256=sha256, uri=target.as_uri(), size=size)

    @contextmanager
    def _open(self, sha256: str) -> Iterator[Iterable[bytes]]:
        path = self.path_for(sha256)
        try:
            fh = open(path, "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise NotFoundError(f"no artifact with sha256 {sha256} at {path.as_uri()}") from None
        with fh:
            yield _iter_fileobj(fh)


class S3ArtifactStore(ArtifactStore):
    """Blobs at s3://bucket/prefix/sha256/<hex>.

    The sha256 is also written as object metadata for humans and tooling, but reads
    always rehash the bytes: metadata is as writable as the body it describes.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "modelops",
        client: Any = None,
        endpoint_url: str | None = None,
    ) -> None:
        """A passed client wins over endpoint_url; otherwise one is built from the environment."""
        if not bucket or "/" in bucket:
            raise SpecError(f"invalid S3 bucket {bucket!r}: expected a non-empty name without '/'")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        if client is None:
            import boto3  # lazy: importing boto3 costs time every CLI call that never touches S3

            client = boto3.client("s3", endpoint_url=endpoint_url)
        self.client = client

    def __repr__(self) -> str:
        return f"S3ArtifactStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def key_for(self, sha256: str) -> str:
        """Object key of a blob, for callers that need to presign or copy it."""
        sha256 = _check_sha256(sha256)
        return f"{self.prefix}/sha256/{sha256}" if self.prefix else f"sha256/{sha256}"

    def uri_for(self, sha256: str) -> str:
        return f"s3://{self.bucket}/{self.key_for(sha256)}"

    def exists(self, sha256: str) -> bool:
        from botocore.exceptions import ClientError

        key = self.key_for(sha256)
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def put_file(self, path: PathLike) -> ArtifactRef:
        path = Path(path)
        sha256 = sha256_file(path)
        size = path.stat().st_size
        if not self.intact(sha256):
            with open(path, "rb") as fh:
                self._upload(sha256, fh)
        return ArtifactRef(sha256=sha256, uri=self.uri_for(sha256), size=size)

    def put_bytes(self, data: bytes) -> ArtifactRef:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.intact(sha256):
            self._upload(sha256, io.BytesIO(data))
        return ArtifactRef(sha256=sha256, uri=self.uri_for(sha256), size=len(data))

    def _upload(self, sha256: str, fh: IO[bytes]) -> None:
        """A PUT or a completed multipart upload is atomic: readers never see a partial object.

        Replacing a corrupt object is read back before the put returns, so a repair is never
        reported that storage did not keep.
        """
        repair = self.exists(sha256)
        self.client.upload_fileobj(
            fh,
            self.bucket,
            self.key_for(sha256),
            ExtraArgs={
                "Metadata": {"sha256": sha256},
                "ContentType": "application/octet-stream",
            },
        )
        if repair:
            self.verify(sha256)

    @contextmanager
    def _open(self, sha256: str) -> Iterator[Iterable[bytes]]:
        from botocore.exceptions import ClientError

        key = self.key_for(sha256)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            code = _error_code(exc)
            if code in {"404", "NoSuchKey", "NotFound"}:
                raise NotFoundError(
                    f"no artifact with sha256 {sha256} at {self.uri_for(sha256)}"
                ) from None
            if code == "NoSuchBucket":
                raise SpecError(
                    f"S3 bucket {self.bucket!r} does not exist (artifact store {self!r})"
                ) from None
            raise
        body = response["Body"]
        try:
            yield body.iter_chunks(CHUNK_SIZE)
        finally:
            body.close()


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def open_store(uri: str) -> ArtifactStore:
    """Build a store from one config string, so every command accepts the same location syntax.

    ``file:///abs/path`` or a plain path gives a local store; ``s3://bucket[/prefix]`` gives
    an S3 store (prefix defaults to ``modelops``; endpoint from MODELOPS_S3_ENDPOINT_URL).
    """
    if not isinstance(uri, str) or not uri.strip():
        raise SpecError(f"invalid artifact store location {uri!r}: expected a path or URI")
    match = _SCHEME_RE.match(uri)
    if match is None:
        return LocalArtifactStore(Path(uri))
    scheme = match.group(1).lower()
    parts = urlsplit(uri)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise SpecError(
                f"invalid file URI {uri!r}: remote host {parts.netloc!r} is not supported; "
                "use file:///absolute/path"
            )
        if not parts.path:
            raise SpecError(f"invalid file URI {uri!r}: no path; use file:///absolute/path")
        return LocalArtifactStore(Path(unquote(parts.path)))
    if scheme == "s3":
        if not parts.netloc:
            raise SpecError(f"invalid S3 URI {uri!r}: no bucket; use s3://bucket/prefix")
        prefix = parts.path.strip("/")
        endpoint_url = os.environ.get("MODELOPS_S3_ENDPOINT_URL") or None
        if prefix:
            return S3ArtifactStore(parts.netloc, prefix=prefix, endpoint_url=endpoint_url)
        return S3ArtifactStore(parts.netloc, endpoint_url=endpoint_url)
    allowed = ", ".join(f"{s}://" for s in _ALLOWED_SCHEMES)
    raise SpecError(
        f"unsupported artifact store scheme {scheme!r} in {uri!r}; allowed: {allowed} "
        "or a plain filesystem path"
    )
