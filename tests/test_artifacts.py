"""Artifact store behaviour, run identically against the local and the S3 backend.

S3 runs over real HTTP against a moto server so the client, streaming and error
mapping are exercised as they would be against a real endpoint.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelops.artifacts import (
    CHUNK_SIZE,
    ArtifactRef,
    ArtifactStore,
    LocalArtifactStore,
    S3ArtifactStore,
    open_store,
    sha256_file,
)
from modelops.errors import IntegrityError, NotFoundError, SpecError

PAYLOAD = b"model weights v1\n" * 1000


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto server per test session (per xdist worker); buckets isolate tests."""
    from moto.server import ThreadedMotoServer

    env = pytest.MonkeyPatch()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }.items():
        env.setenv(name, value)
    env.delenv("AWS_PROFILE", raising=False)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        env.undo()


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> tuple[Any, str]:
    """A fresh bucket and a raw client that bypasses the store, for setup and tampering."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto_endpoint)
    bucket = f"modelops-test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


@dataclass
class Backend:
    store: ArtifactStore
    overwrite: Callable[[str, bytes], None]
    """Replace the stored bytes behind the store's back, as corruption or an attacker would."""
    blobs: Callable[[], list[str]]
    """Names of everything stored, so tests can see stray temp files or duplicate objects."""


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        store = LocalArtifactStore(tmp_path / "store")

        def overwrite_local(sha: str, data: bytes) -> None:
            store.path_for(sha).write_bytes(data)

        def blobs_local() -> list[str]:
            return sorted(p.name for p in store.root.rglob("*") if p.is_file())

        return Backend(store, overwrite_local, blobs_local)

    endpoint = request.getfixturevalue("moto_endpoint")
    client, bucket = request.getfixturevalue("s3_bucket")
    s3 = S3ArtifactStore(bucket, endpoint_url=endpoint)

    def overwrite_s3(sha: str, data: bytes) -> None:
        # Keep the metadata claiming the original hash: the store must not trust it.
        client.put_object(Bucket=bucket, Key=s3.key_for(sha), Body=data, Metadata={"sha256": sha})

    def blobs_s3() -> list[str]:
        listing = client.list_objects_v2(Bucket=bucket)
        return sorted(obj["Key"].rsplit("/", 1)[-1] for obj in listing.get("Contents", []))

    return Backend(s3, overwrite_s3, blobs_s3)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- round trip and addressing -------------------------------------------------------


def test_put_bytes_read_fetch_round_trip(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    ref = store.put_bytes(PAYLOAD)

    sha = _sha(PAYLOAD)
    assert ref == ArtifactRef(sha256=sha, uri=store.uri_for(sha), size=len(PAYLOAD))
    assert store.exists(ref.sha256)
    assert store.read_bytes(ref.sha256) == PAYLOAD
    store.verify(ref.sha256)

    dest = tmp_path / "out" / "nested" / "weights.bin"
    assert store.fetch(ref.sha256, dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert sorted(os.listdir(dest.parent)) == ["weights.bin"]


def test_put_file_streams_multi_chunk_content(backend: Backend, tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 12345)
    src = tmp_path / "big.bin"
    src.write_bytes(data)

    ref = backend.store.put_file(src)

    assert ref.sha256 == _sha(data) == sha256_file(src)
    assert ref.size == len(data)
    assert backend.store.read_bytes(ref.sha256) == data
    dest = tmp_path / "fetched.bin"
    backend.store.fetch(ref.sha256, dest)
    assert sha256_file(dest) == ref.sha256


def test_empty_artifact_round_trips(backend: Backend) -> None:
    ref = backend.store.put_bytes(b"")
    assert ref.size == 0
    assert ref.sha256 == _sha(b"")
    assert backend.store.read_bytes(ref.sha256) == b""


def test_put_is_idempotent(backend: Backend, tmp_path: Path) -> None:
    first = backend.store.put_bytes(PAYLOAD)
    second = backend.store.put_bytes(PAYLOAD)
    src = tmp_path / "w.bin"
    src.write_bytes(PAYLOAD)
    third = backend.store.put_file(src)

    assert first == second == third
    assert backend.blobs() == [first.sha256]


def test_same_bytes_same_uri_different_bytes_different_uri(backend: Backend) -> None:
    a = backend.store.put_bytes(b"alpha")
    b = backend.store.put_bytes(b"beta")

    assert a.uri != b.uri
    assert a.sha256 in a.uri
    assert backend.store.put_bytes(b"alpha").uri == a.uri
    assert backend.store.uri_for(a.sha256) == a.uri
    assert backend.blobs() == sorted([a.sha256, b.sha256])


def test_exists_is_false_until_put(backend: Backend) -> None:
    sha = _sha(b"not yet")
    assert not backend.store.exists(sha)
    backend.store.put_bytes(b"not yet")
    assert backend.store.exists(sha)


# --- integrity -----------------------------------------------------------------------


CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "tampered": lambda data: b"X" + data[1:],
    "truncated": lambda data: data[: len(data) // 2],
    "emptied": lambda data: b"",
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_blob_is_never_handed_out(
    backend: Backend, tmp_path: Path, corruption: str
) -> None:
    store = backend.store
    ref = store.put_bytes(PAYLOAD)
    bad = CORRUPTIONS[corruption](PAYLOAD)
    backend.overwrite(ref.sha256, bad)

    expected_message = re.compile(
        rf"(?s)(?=.*{re.escape(ref.sha256)})(?=.*{re.escape(_sha(bad))})"
        rf"(?=.*{re.escape(ref.uri)})"
    )
    with pytest.raises(IntegrityError, match=expected_message):
        store.read_bytes(ref.sha256)
    with pytest.raises(IntegrityError, match=expected_message):
        store.verify(ref.sha256)

    out_dir = tmp_path / "out"
    dest = out_dir / "weights.bin"
    with pytest.raises(IntegrityError, match=expected_message):
        store.fetch(ref.sha256, dest)
    assert not dest.exists()
    assert os.listdir(out_dir) == []

    # Still refused on a second attempt: nothing was cached or "repaired" from metadata.
    with pytest.raises(IntegrityError):
        store.read_bytes(ref.sha256)


def test_failed_fetch_keeps_previous_dest_contents(backend: Backend, tmp_path: Path) -> None:
    ref = backend.store.put_bytes(PAYLOAD)
    backend.overwrite(ref.sha256, b"evil")
    dest = tmp_path / "weights.bin"
    dest.write_bytes(b"previous good weights")

    with pytest.raises(IntegrityError):
        backend.store.fetch(ref.sha256, dest)

    assert dest.read_bytes() == b"previous good weights"
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["weights.bin", *(["store"] if isinstance(backend.store, LocalArtifactStore) else [])]
    )


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize("via", ["put_file", "put_bytes"])
def test_put_over_a_corrupt_blob_repairs_it(
    backend: Backend, tmp_path: Path, corruption: str, via: str
) -> None:
    """A blob that rotted in storage is rewritten by the next put of the right bytes, instead
    of the put returning early because the path or key exists."""
    store = backend.store
    ref = store.put_bytes(PAYLOAD)
    backend.overwrite(ref.sha256, CORRUPTIONS[corruption](PAYLOAD))
    with pytest.raises(IntegrityError):
        store.verify(ref.sha256)

    if via == "put_file":
        src = tmp_path / "weights.bin"
        src.write_bytes(PAYLOAD)
        again = store.put_file(src)
    else:
        again = store.put_bytes(PAYLOAD)

    assert again == ref
    store.verify(ref.sha256)
    assert store.read_bytes(ref.sha256) == PAYLOAD
    assert backend.blobs() == [ref.sha256]  # repaired in place: no temp file or second copy


def test_verify_passes_on_intact_blob(backend: Backend) -> None:
    ref = backend.store.put_bytes(PAYLOAD)
    assert backend.store.verify(ref.sha256) is None


# --- missing and malformed -----------------------------------------------------------


def test_missing_blob_raises_not_found(backend: Backend, tmp_path: Path) -> None:
    sha = _sha(b"never stored")
    with pytest.raises(NotFoundError, match=sha):
        backend.store.read_bytes(sha)
    with pytest.raises(NotFoundError, match=sha):
        backend.store.verify(sha)

    out_dir = tmp_path / "out"
    with pytest.raises(NotFoundError, match=sha):
        backend.store.fetch(sha, out_dir / "weights.bin")
    assert not out_dir.exists() or os.listdir(out_dir) == []


BAD_SHAS = [
    "",
    "abc",
    "a" * 63,
    "a" * 65,
    "A" * 64,
    "g" * 64,
    " " + "a" * 63,
    "a" * 64 + "\n",
    "../" + "a" * 61,
]


@pytest.mark.parametrize("bad", BAD_SHAS)
@pytest.mark.parametrize("method", ["exists", "read_bytes", "verify", "uri_for", "fetch"])
def test_malformed_sha_raises_spec_error(
    backend: Backend, tmp_path: Path, method: str, bad: str
) -> None:
    call: Callable[..., object] = getattr(backend.store, method)
    args: tuple[object, ...] = (bad, tmp_path / "dest") if method == "fetch" else (bad,)
    with pytest.raises(SpecError, match="64 lowercase hex"):
        call(*args)
    assert not (tmp_path / "dest").exists()


# --- backend specifics ---------------------------------------------------------------


def test_local_layout_and_uri(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "root")
    ref = store.put_bytes(PAYLOAD)

    expected = tmp_path / "root" / "sha256" / ref.sha256[:2] / ref.sha256
    assert expected.read_bytes() == PAYLOAD
    assert ref.uri == f"file://{expected}"
    assert os.listdir(expected.parent) == [ref.sha256]


def test_local_default_root_follows_modelops_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path / "home"))
    assert LocalArtifactStore.default().root == tmp_path / "home" / "artifacts"

    monkeypatch.delenv("MODELOPS_HOME")
    monkeypatch.chdir(tmp_path)
    assert LocalArtifactStore.default().root == tmp_path / ".modelops" / "artifacts"


def test_s3_key_layout_and_metadata(s3_bucket: tuple[Any, str], moto_endpoint: str) -> None:
    client, bucket = s3_bucket
    store = S3ArtifactStore(bucket, prefix="team/models", endpoint_url=moto_endpoint)
    ref = store.put_bytes(PAYLOAD)

    key = f"team/models/sha256/{ref.sha256}"
    assert ref.uri == f"s3://{bucket}/{key}"
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["Metadata"]["sha256"] == ref.sha256
    assert head["ContentLength"] == len(PAYLOAD)


def test_s3_accepts_injected_client(s3_bucket: tuple[Any, str]) -> None:
    client, bucket = s3_bucket
    store = S3ArtifactStore(bucket, client=client)
    ref = store.put_bytes(b"via injected client")
    assert store.client is client
    assert ref.uri == f"s3://{bucket}/modelops/sha256/{ref.sha256}"
    assert store.read_bytes(ref.sha256) == b"via injected client"


def test_importing_module_does_not_import_boto3() -> None:
    code = "import sys, modelops.artifacts; sys.exit(1 if 'boto3' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- open_store ----------------------------------------------------------------------


def test_open_store_file_uri_and_plain_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_uri = open_store((tmp_path / "a b").as_uri())
    assert isinstance(from_uri, LocalArtifactStore)
    assert from_uri.root == tmp_path / "a b"

    from_path = open_store(str(tmp_path / "plain"))
    assert isinstance(from_path, LocalArtifactStore)
    assert from_path.root == tmp_path / "plain"

    monkeypatch.chdir(tmp_path)
    relative = open_store("rel/store")
    assert isinstance(relative, LocalArtifactStore)
    assert relative.root == tmp_path / "rel" / "store"

    ref = from_uri.put_bytes(b"x")
    assert open_store(from_uri.root.as_uri()).read_bytes(ref.sha256) == b"x"


def test_open_store_s3_uses_endpoint_from_env(
    s3_bucket: tuple[Any, str], moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, bucket = s3_bucket
    monkeypatch.setenv("MODELOPS_S3_ENDPOINT_URL", moto_endpoint)

    store = open_store(f"s3://{bucket}/some/prefix")
    assert isinstance(store, S3ArtifactStore)
    assert (store.bucket, store.prefix) == (bucket, "some/prefix")
    assert store.endpoint_url == moto_endpoint
    ref = store.put_bytes(b"through open_store")
    assert ref.uri == f"s3://{bucket}/some/prefix/sha256/{ref.sha256}"
    assert store.read_bytes(ref.sha256) == b"through open_store"

    bare = open_store(f"s3://{bucket}")
    assert isinstance(bare, S3ArtifactStore)
    assert bare.prefix == "modelops"


@pytest.mark.parametrize("uri", ["gs://bucket/models", "http://example.invalid/x", "hdfs:///data"])
def test_open_store_rejects_unknown_scheme(uri: str) -> None:
    with pytest.raises(SpecError) as info:
        open_store(uri)
    message = str(info.value)
    assert "file://" in message and "s3://" in message


@pytest.mark.parametrize("uri", ["", "   ", "s3://", "s3:///prefix-only", "file://otherhost/x"])
def test_open_store_rejects_malformed_locations(uri: str) -> None:
    with pytest.raises(SpecError):
        open_store(uri)
