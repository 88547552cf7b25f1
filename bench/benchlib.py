"""What every benchmark needs: a throwaway database per backend and the machine's facts.

Imports nothing of the project, so any benchmark can take it before its own imports.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["PG_ADMIN_URL", "sqlite_backend", "postgres_backend", "machine_info"]

PG_ADMIN_URL = os.environ.get(
    "MODELOPS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@contextmanager
def sqlite_backend(prefix: str, filename: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield f"sqlite:///{Path(d) / filename}"


@contextmanager
def postgres_backend(name_prefix: str, migrate: Callable[[str], None]) -> Iterator[str]:
    """A fresh database for this run, migrated by `migrate(url)`, dropped afterwards."""
    import psycopg

    name = f"{name_prefix}_{os.getpid()}"
    admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    try:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
        url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
        migrate(url)
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def machine_info(backends: list[str]) -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
    }
    if "postgres" in backends:
        try:
            import psycopg

            with psycopg.connect(PG_ADMIN_URL, connect_timeout=5) as c:
                info["postgres"] = c.execute("SHOW server_version").fetchone()[0]
        except Exception as exc:  # noqa: BLE001 - informational only
            info["postgres"] = f"unknown ({exc.__class__.__name__})"
    return info
