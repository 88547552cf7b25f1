"""What both dialects of the SQL table store share: dump formats, the log's operations,
the table's shape, log statistics, the hashing sink, quoting and the restore-mismatch error."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import IO

from modelops.errors import IntegrityError
from modelops.state_stores.base import StateStore

_DUMP_FORMATS = {"sqlite": "modelops-sqlite-rows-v1", "postgresql": "modelops-pg-copy-text-v1"}
WRITE_OPS = ("I", "U", "D")
# Log operations: I insert, U update (old row), D delete (old row), K a key an update moved
# a row to (absent before), R reset marker (log not continuous across it: full restore).


@dataclass(frozen=True)
class _TableInfo:
    columns: list[str]  # ordinary (stored, non-generated) columns in table order
    key: list[str]
    all_columns: list[str]  # what the dump contains


@dataclass
class _LogStats:
    resets: int
    app_writes: int
    by_op: dict[str, int]
    keys: list[str]


class _Sink:
    """Hash and count bytes; optionally keep them in a file."""

    def __init__(self, fh: IO[bytes] | None = None) -> None:
        self.digest = hashlib.sha256()
        self.size = 0
        self.fh = fh

    def write(self, data: bytes | memoryview) -> None:
        self.digest.update(data)
        self.size += len(data)
        if self.fh is not None:
            self.fh.write(data)


def _q(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


class _Fallback(Exception):
    """Leave the incremental transaction (rolled back) for a full reload."""


def _mismatch(store: StateStore, expected: str, got: str) -> IntegrityError:
    return IntegrityError(
        f"restore of state store {store.name!r} ({store.location()}) would give sha256 "
        f"{got[:16]}, not the snapshot's {expected[:16]}; rolled back, the table is untouched"
    )
