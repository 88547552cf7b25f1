"""A local directory as rollback-able state: every file content-addressed, one listing.

The listing (path, sha256, size, mode per regular file, sorted) is itself a blob; its hash
is the directory's content hash. A file is read consistently if it does not change while it
is stored (checked by rehash and by stat before and after, retried otherwise); writers that
replace files by rename are never torn. There is no change log for a directory, so a restore
diffs the current files against the listing: files added since the snapshot are removed,
changed and deleted ones are written back from verified blobs, one atomic rename each.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

from modelops.artifacts import ArtifactStore, sha256_file
from modelops.errors import IntegrityError, SpecError
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
from modelops.state_stores.config import DirectoryStoreSpec

__all__ = ["DirectoryStore", "Listing"]

LISTING_FORMAT = "modelops-directory-v1"
_RETRIES = 5

Listing = dict[str, tuple[str, int, int]]  # relpath -> (sha256, size, mode)


def _listing_bytes(files: Listing) -> bytes:
    return canonical_json_bytes(
        {"format": LISTING_FORMAT, "files": [[p, *files[p]] for p in sorted(files)]}
    )


def _parse_listing(data: bytes) -> Listing:
    import json

    doc = json.loads(data)
    if doc.get("format") != LISTING_FORMAT:
        raise SpecError(f"not a directory listing (format {doc.get('format')!r})")
    return {p: (sha, int(size), int(mode)) for p, sha, size, mode in doc["files"]}


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class DirectoryStore(StateStore):
    kind = "directory"
    spec: DirectoryStoreSpec

    def __init__(self, spec: DirectoryStoreSpec) -> None:
        super().__init__(spec)
        self.root = Path(spec.resolved_path())

    def probe(self) -> None:
        if not self.root.is_dir():
            raise unavailable(
                self, "opening it", f"no directory at {self.root}", "the snapshot was not taken"
            )

    def _walk(self) -> list[tuple[str, Path]]:
        """Every regular file under the root, sorted; anything else is refused by name."""
        out: list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            base = Path(dirpath)
            for d in dirnames:
                if (base / d).is_symlink():
                    raise SpecError(
                        f"state store {self.name!r}: {base / d} is a symlink; allowed: "
                        "regular files and directories only"
                    )
            for f in sorted(filenames):
                p = base / f
                st = p.lstat()
                if not stat.S_ISREG(st.st_mode):
                    raise SpecError(
                        f"state store {self.name!r}: {p} is not a regular file; allowed: "
                        "regular files and directories only"
                    )
                out.append((p.relative_to(self.root).as_posix(), p))
        return out

    def current_listing(self) -> Listing:
        self.probe()
        return {
            rel: (sha256_file(p), p.stat().st_size, stat.S_IMODE(p.stat().st_mode))
            for rel, p in self._walk()
        }

    def content_sha256(self) -> str:
        return hashlib.sha256(_listing_bytes(self.current_listing())).hexdigest()

    def _put_consistent(
        self, artifacts: ArtifactStore, rel: str, path: Path
    ) -> tuple[str, int, int]:
        for _ in range(_RETRIES):
            try:
                before = path.stat()
                ref = artifacts.put_file(path)
                after = path.stat()
            except FileNotFoundError:
                raise  # deleted mid-snapshot: the caller rewalks
            except IntegrityError:
                continue  # changed between hashing and copying
            if _stamp(before) == _stamp(after):
                return ref.sha256, ref.size, stat.S_IMODE(after.st_mode)
        raise IntegrityError(
            f"state store {self.name!r}: {rel} kept changing during {_RETRIES} attempts to "
            "snapshot it; write state files by atomic rename"
        )

    def snapshot(self, artifacts: ArtifactStore) -> StoreManifestEntry:
        self.probe()
        for _ in range(_RETRIES):
            files: Listing = {}
            try:
                for rel, p in self._walk():
                    files[rel] = self._put_consistent(artifacts, rel, p)
            except FileNotFoundError:
                continue  # a file vanished between walk and read: walk again
            break
        else:
            raise IntegrityError(
                f"state store {self.name!r}: files kept disappearing during the snapshot"
            )
        listing = artifacts.put_bytes(_listing_bytes(files))
        return StoreManifestEntry(
            name=self.name,
            kind=self.kind,
            location=self.location(),
            content_sha256=listing.sha256,
            blobs=[listing.sha256, *sorted({f[0] for f in files.values()})],
            items=len(files),
            bytes=sum(f[1] for f in files.values()),
            details={"format": LISTING_FORMAT},
        )

    def _diff(self, want: Listing) -> tuple[Listing, list[str], list[str], list[str]]:
        have = self.current_listing()
        added = sorted(set(have) - set(want))
        deleted = sorted(set(want) - set(have))
        changed = sorted(p for p in set(want) & set(have) if want[p] != have[p])
        return have, added, changed, deleted

    def changes_since(self, entry: StoreManifestEntry, artifacts: ArtifactStore) -> ChangeSummary:
        want = _parse_listing(artifacts.read_bytes(entry.content_sha256))
        _, added, changed, deleted = self._diff(want)
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
        want = _parse_listing(artifacts.read_bytes(entry.content_sha256))
        self.probe()
        # Staged beside the target so each write-back is a same-filesystem rename.
        stage = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.restore-", dir=self.root.parent))
        try:
            _, added, changed, deleted = self._diff(want)
            if mode == "full":
                changed = sorted(set(want) - set(deleted))
            blobs: dict[str, Path] = {}
            for rel in changed + deleted:
                sha = want[rel][0]
                if sha not in blobs:
                    blobs[sha] = artifacts.fetch(sha, stage / sha)  # verified, or refused
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        return _DirPrepared(self, entry, want, stage, blobs, added, changed, deleted)


class _DirPrepared(PreparedRestore):
    def __init__(
        self,
        store: DirectoryStore,
        entry: StoreManifestEntry,
        want: Listing,
        stage: Path,
        blobs: dict[str, Path],
        added: list[str],
        changed: list[str],
        deleted: list[str],
    ) -> None:
        self.store, self.entry, self.want, self.stage = store, entry, want, stage
        self.blobs, self.added, self.changed, self.deleted = blobs, added, changed, deleted

    def apply(self) -> StoreRestoreReport:
        clock = timer()
        root = self.store.root
        for rel in self.added:
            (root / rel).unlink(missing_ok=True)
            self._prune_empty_parents(root / rel)
        uses: dict[str, int] = {}
        for rel in self.changed + self.deleted:
            uses[self.want[rel][0]] = uses.get(self.want[rel][0], 0) + 1
        for rel in self.changed + self.deleted:
            sha, _, mode = self.want[rel]
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            src = self.blobs[sha]
            uses[sha] -= 1
            tmp = self.stage / f"{sha}.{uses[sha]}.w"
            if uses[sha]:
                shutil.copyfile(src, tmp)
            else:
                os.replace(src, tmp)
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        got = self.store.content_sha256()
        if got != self.entry.content_sha256:
            raise IntegrityError(
                f"state store {self.store.name!r}: after the restore {root} hashes to "
                f"{got[:16]}, not the snapshot's {self.entry.content_sha256[:16]}; it changed "
                "during the restore, run it again"
            )
        touched = sorted(self.added + self.changed + self.deleted)
        return StoreRestoreReport(
            store=self.store.name,
            kind="directory",
            mode="diff" if touched else "noop",
            content_sha256=got,
            keys_after_cursor=sorted(self.added + self.changed + self.deleted),
            rewritten=touched,
            rows_or_files_restored=len(self.changed) + len(self.deleted),
            elapsed_s=clock(),
            note=(
                f"{len(self.added)} added since the snapshot removed, {len(self.changed)} "
                f"changed and {len(self.deleted)} deleted written back"
            ),
        )

    def _prune_empty_parents(self, removed: Path) -> None:
        """Only directories this restore emptied go; an empty one the application made stays."""
        p = removed.parent
        while p != self.store.root and p.is_dir() and not any(p.iterdir()):
            p.rmdir()
            p = p.parent

    def discard(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)
