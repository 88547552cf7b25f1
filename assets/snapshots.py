"""Dataset snapshots produced outside Dagster: find the newest, hash it, read it.

A dataset is a directory of `v1.npz, v2.npz, ...` (see demo/data.py for the format); the
newest is the highest N. Its sha256 is the Dagster data version and the registry's content
hash, so Dagster's lineage and the registry's pins name the same bytes.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelops.artifacts import sha256_file
from modelops.errors import NotFoundError, SpecError
from modelops.fleet import DatasetDecl
from resources import modelops_home

__all__ = ["Snapshot", "SnapshotData", "dataset_dir", "newest_snapshot", "load_snapshot"]

_FILE = re.compile(r"^v([1-9][0-9]*)\.npz$")


@dataclass(frozen=True)
class Snapshot:
    """One snapshot file and its identity."""

    name: str
    kind: str
    version: int
    path: Path
    sha256: str

    @property
    def uri(self) -> str:
        return self.path.resolve().as_uri()


@dataclass
class SnapshotData:
    x: np.ndarray
    y: np.ndarray
    country: np.ndarray
    seed: int
    country_rows: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.y)


def dataset_dir(decl: DatasetDecl, home: Path | None = None) -> Path:
    """The declared directory, else $MODELOPS_HOME/data/NAME."""
    if decl.directory:
        return Path(decl.directory).expanduser()
    return (home or modelops_home()) / "data" / decl.name


def newest_snapshot(decl: DatasetDecl, home: Path | None = None) -> Snapshot:
    """The highest-numbered snapshot; NotFoundError naming the directory when there is none."""
    directory = dataset_dir(decl, home)
    found = []
    if directory.is_dir():
        for p in directory.iterdir():
            m = _FILE.match(p.name)
            if m and p.is_file():
                found.append((int(m.group(1)), p))
    if not found:
        raise NotFoundError(
            f"{decl.kind} {decl.name!r} has no snapshot in {directory}; write one first, "
            f"e.g. python -m demo.data --name {decl.name} --version 1"
        )
    version, path = max(found)
    return Snapshot(decl.name, decl.kind, version, path, sha256_file(path))


def load_snapshot(snapshot: Snapshot | Path) -> SnapshotData:
    """Read X, y, country; a file missing one of them is a SpecError naming what is needed."""
    path = snapshot.path if isinstance(snapshot, Snapshot) else Path(snapshot)
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in ("X", "y", "country") if k not in npz.files]
        if missing:
            raise SpecError(
                f"snapshot {path} lacks {', '.join(missing)}; a snapshot holds X [n, d] "
                "float32, y [n] int64 and country [n] strings"
            )
        x = np.asarray(npz["X"], dtype=np.float32)
        y = np.asarray(npz["y"], dtype=np.int64)
        country = np.asarray(npz["country"]).astype(str)
        seed = int(npz["seed"]) if "seed" in npz.files else 0
    if x.ndim != 2 or len(x) != len(y) or len(y) != len(country):
        raise SpecError(
            f"snapshot {path} has inconsistent shapes X {x.shape}, y {y.shape}, "
            f"country {country.shape}"
        )
    counts = dict(sorted(Counter(country.tolist()).items()))
    return SnapshotData(x=x, y=y, country=country, seed=seed, country_rows=counts)
