"""Objects under an S3 prefix as rollback-able state.

Each object's bytes go to the artifact store under their sha256; the listing records key,
sha256, size, content type and user metadata. ETags are kept beside the listing only as
hints (an object whose ETag and size match a known one is not downloaded again to hash it);
they are not part of the content hash, because a restored object may get a different ETag
for the same bytes (multipart versus single-part upload).

A restore uploads changed and deleted objects back from verified blobs (with Content-MD5,
so S3 itself rejects a corrupted upload) and deletes objects added since the snapshot.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from modelops.artifacts import CHUNK_SIZE, ArtifactStore
from modelops.errors import IntegrityError, SpecError, StateStoreUnavailable
from modelops.state_stores.base import (
    ChangeSummary,
    PreparedRestore,
    StateStore,
    StoreManifestEntry,
    StoreRestoreReport,
    canonical_json_bytes,
    timer,
    unavailable,
)
from modelops.state_stores.config import S3PrefixStoreSpec

__all__ = ["S3PrefixStore"]

LISTING_FORMAT = "modelops-s3-prefix-v1"
_SINGLE_PUT_LIMIT = 5 * 1024**3

# rel key -> (sha256, size, content_type, metadata)
Objects = dict[str, tuple[str, int, str, dict[str, str]]]


def _content_bytes(objs: Objects) -> bytes:
    return canonical_json_bytes(
        {
            "format": LISTING_FORMAT,
            "objects": [[k, objs[k][0], objs[k][1], objs[k][2], objs[k][3]] for k in sorted(objs)],
        }
    )


class S3PrefixStore(StateStore):
    kind = "s3_prefix"
    spec: S3PrefixStoreSpec

    def __init__(self, spec: S3PrefixStoreSpec, client: Any = None) -> None:
        super().__init__(spec)
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=spec.resolved_endpoint(),
                config=Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 2}),
            )
        self.client = client
        self.bucket = spec.bucket
        self.prefix = spec.prefix + "/"

    @contextmanager
    def _reachable(self, what: str, consequence: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except StateStoreUnavailable:
            raise
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            raise unavailable(self, what, f"{code}: {exc}", consequence) from None
        except BotoCoreError as exc:
            raise unavailable(self, what, exc, consequence) from None

    def probe(self) -> None:
        with self._reachable("connecting", "the snapshot was not taken"):
            self.client.head_bucket(Bucket=self.bucket)

    def _list(self) -> dict[str, tuple[str, int]]:
        out: dict[str, tuple[str, int]] = {}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            for obj in page.get("Contents", []):
                out[obj["Key"][len(self.prefix) :]] = (obj["ETag"], int(obj["Size"]))
        return out

    def _hash_object(self, key: str, sink: Any = None) -> tuple[str, int, str]:
        resp = self.client.get_object(Bucket=self.bucket, Key=key)
        digest = hashlib.sha256()
        size = 0
        body = resp["Body"]
        try:
            for chunk in body.iter_chunks(CHUNK_SIZE):
                digest.update(chunk)
                size += len(chunk)
                if sink is not None:
                    sink.write(chunk)
        finally:
            body.close()
        return digest.hexdigest(), size, resp["ETag"]

    def _current(self, hints: dict[str, tuple[str, str]]) -> Objects:
        """The prefix as it is now. `hints` maps ETag -> (sha256, key it was seen at)."""
        objs: Objects = {}
        for rel, (_etag, _size) in sorted(self._list().items()):
            key = self.prefix + rel
            head = self.client.head_object(Bucket=self.bucket, Key=key)
            etag = head["ETag"]
            hint = hints.get(etag)
            sha = hint[0] if hint else self._hash_object(key)[0]
            objs[rel] = (
                sha,
                int(head["ContentLength"]),
                head.get("ContentType", ""),
                dict(head.get("Metadata", {})),
            )
        return objs

    def content_sha256(self) -> str:
        with self._reachable("hashing the prefix", "nothing was changed"):
            return hashlib.sha256(_content_bytes(self._current({}))).hexdigest()

    def snapshot(self, artifacts: ArtifactStore) -> StoreManifestEntry:
        objs: Objects = {}
        etags: dict[str, str] = {}
        with self._reachable("taking the snapshot", "the snapshot was not taken"):
            self.client.head_bucket(Bucket=self.bucket)
            with tempfile.TemporaryDirectory(prefix="modelops-s3snap-") as d:
                for rel in sorted(self._list()):
                    key = self.prefix + rel
                    tmp = Path(d) / "obj"
                    try:
                        with open(tmp, "wb") as fh:
                            sha, size, etag = self._hash_object(key, fh)
                        head = self.client.head_object(Bucket=self.bucket, Key=key)
                    except self.client.exceptions.NoSuchKey:
                        continue  # deleted between listing and reading: not in the snapshot
                    if head["ETag"] != etag:
                        raise IntegrityError(
                            f"state store {self.name!r}: {key} changed while it was "
                            "snapshotted; take the snapshot again"
                        )
                    ref = artifacts.put_file(tmp)
                    if ref.sha256 != sha:
                        raise IntegrityError(f"state store {self.name!r}: {key} changed on disk")
                    objs[rel] = (
                        sha,
                        size,
                        head.get("ContentType", ""),
                        dict(head.get("Metadata", {})),
                    )
                    etags[rel] = etag
        content = _content_bytes(objs)
        listing = artifacts.put_bytes(
            canonical_json_bytes({"content": json.loads(content), "etags": etags})
        )
        return StoreManifestEntry(
            name=self.name,
            kind=self.kind,
            location=self.location(),
            content_sha256=hashlib.sha256(content).hexdigest(),
            blobs=[listing.sha256, *sorted({o[0] for o in objs.values()})],
            items=len(objs),
            bytes=sum(o[1] for o in objs.values()),
            details={"format": LISTING_FORMAT, "listing": listing.sha256},
        )

    def _load(self, entry: StoreManifestEntry, artifacts: ArtifactStore) -> tuple[Objects, dict]:
        doc = json.loads(artifacts.read_bytes(entry.details["listing"]))
        content = doc["content"]
        if content.get("format") != LISTING_FORMAT:
            raise SpecError(f"state store {self.name!r}: the snapshot is not an S3 listing")
        objs: Objects = {
            k: (sha, int(size), ct, dict(md)) for k, sha, size, ct, md in content["objects"]
        }
        if hashlib.sha256(_content_bytes(objs)).hexdigest() != entry.content_sha256:
            raise IntegrityError(
                f"state store {self.name!r}: the snapshot listing does not hash to the "
                "manifest's content hash; refusing to restore from it"
            )
        hints = {etag: (objs[k][0], k) for k, etag in doc["etags"].items() if k in objs}
        return objs, hints

    def _diff(self, want: Objects, hints: dict) -> tuple[list[str], list[str], list[str]]:
        have = self._current(hints)
        added = sorted(set(have) - set(want))
        deleted = sorted(set(want) - set(have))
        changed = sorted(k for k in set(want) & set(have) if want[k] != have[k])
        return added, changed, deleted

    def changes_since(self, entry: StoreManifestEntry, artifacts: ArtifactStore) -> ChangeSummary:
        want, hints = self._load(entry, artifacts)
        with self._reachable("listing the prefix", "nothing was changed"):
            added, changed, deleted = self._diff(want, hints)
        return ChangeSummary(
            store=self.name,
            kind=self.kind,
            exact_writes=False,
            writes=len(added) + len(changed) + len(deleted),
            keys=sorted(added + changed + deleted),
            by_op={"added": len(added), "changed": len(changed), "deleted": len(deleted)},
        )

    def prepare_restore(
        self,
        entry: StoreManifestEntry,
        artifacts: ArtifactStore,
        staging: Path,
        *,
        mode: str,
        tag: str | None = None,
    ) -> PreparedRestore:
        want, hints = self._load(entry, artifacts)
        with self._reachable("preparing the restore", "the prefix was not changed"):
            added, changed, deleted = self._diff(want, hints)
        if mode == "full":
            changed = sorted(set(want) - set(deleted))
        stage = Path(tempfile.mkdtemp(prefix=f"{self.name}.", dir=staging))
        try:
            blobs: dict[str, Path] = {}
            for rel in changed + deleted:
                sha = want[rel][0]
                if sha not in blobs:
                    blobs[sha] = artifacts.fetch(sha, stage / sha)  # verified, or refused
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        return _S3Prepared(self, entry, want, hints, stage, blobs, added, changed, deleted)


class _S3Prepared(PreparedRestore):
    def __init__(
        self,
        store: S3PrefixStore,
        entry: StoreManifestEntry,
        want: Objects,
        hints: dict[str, tuple[str, str]],
        stage: Path,
        blobs: dict[str, Path],
        added: list[str],
        changed: list[str],
        deleted: list[str],
    ) -> None:
        self.store, self.entry, self.want, self.hints = store, entry, want, hints
        self.stage, self.blobs = stage, blobs
        self.added, self.changed, self.deleted = added, changed, deleted

    def apply(self) -> StoreRestoreReport:
        clock = timer()
        s = self.store
        hints = dict(self.hints)
        consequence = "the prefix may be partly restored; run the restore again"
        with s._reachable("restoring", consequence):
            for rel in self.changed + self.deleted:
                sha, size, ctype, meta = self.want[rel]
                path = self.blobs[sha]
                extra: dict[str, Any] = {"Metadata": meta}
                if ctype:
                    extra["ContentType"] = ctype
                if size <= _SINGLE_PUT_LIMIT:
                    md5 = hashlib.md5(usedforsecurity=False)
                    with open(path, "rb") as fh:
                        for chunk in iter(lambda: fh.read(CHUNK_SIZE), b""):
                            md5.update(chunk)
                    with open(path, "rb") as fh:
                        resp = s.client.put_object(
                            Bucket=s.bucket,
                            Key=s.prefix + rel,
                            Body=fh,
                            ContentMD5=base64.b64encode(md5.digest()).decode(),
                            **extra,
                        )
                    hints[resp["ETag"]] = (sha, rel)
                else:
                    s.client.upload_file(str(path), s.bucket, s.prefix + rel, ExtraArgs=extra)
            for i in range(0, len(self.added), 1000):
                batch = self.added[i : i + 1000]
                s.client.delete_objects(
                    Bucket=s.bucket,
                    Delete={"Objects": [{"Key": s.prefix + k} for k in batch], "Quiet": True},
                )
            got = hashlib.sha256(_content_bytes(s._current(hints))).hexdigest()
        if got != self.entry.content_sha256:
            raise IntegrityError(
                f"state store {s.name!r}: after the restore {s.location()} hashes to "
                f"{got[:16]}, not the snapshot's {self.entry.content_sha256[:16]}; it changed "
                "during the restore, run it again"
            )
        touched = sorted(self.added + self.changed + self.deleted)
        return StoreRestoreReport(
            store=s.name,
            kind="s3_prefix",
            mode="diff" if touched else "noop",
            content_sha256=got,
            keys_after_cursor=touched,
            rewritten=touched,
            rows_or_files_restored=len(self.changed) + len(self.deleted),
            elapsed_s=clock(),
            note=(
                f"{len(self.added)} added since the snapshot removed, {len(self.changed)} "
                f"changed and {len(self.deleted)} deleted written back"
            ),
        )

    def discard(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)
