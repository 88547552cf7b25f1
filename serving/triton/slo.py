"""The latency and memory SLO probe: the one offline gate that needs the real Triton.

It is serving-plane work (the repository writer and the Triton client), reached from Dagster
through `TritonResource.measure_slo`; the gate's verdict is a pure function of the
`SloMeasurement` it returns (assets/gates.py).
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np

from modelops.evidence import SloMeasurement

if TYPE_CHECKING:
    from modelops.artifacts import ArtifactStore
    from modelops.contracts import FeatureContract
    from modelops.spec import ModelVersion

__all__ = ["measure_slo", "slo_model_name"]


def slo_model_name(model_id: str, version: int) -> str:
    """A gate-only Triton name: never `model__vN`, so the controller leaves it alone, and
    unique per measurement, so two runs measuring at once never share an entry."""
    safe = re.sub(r"_{2,}", "_", model_id)
    return f"slo-{safe}-{version}-{uuid.uuid4().hex[:8]}"


def _rss_mb_of(name: str) -> float | None:
    """Resident memory of the processes whose command line names this entry (the Python
    backend's stub serves exactly one model instance); None when none is on this host."""
    total_kb, found = 0, False
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    needle = f"/{name}/".encode()
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            if needle not in (d / "cmdline").read_bytes():
                continue
            for line in (d / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
                    found = True
        except (OSError, ValueError):
            continue
    return total_kb / 1024.0 if found else None


def _why_no_rss(triton_url: str, name: str) -> str:
    host = urlsplit(triton_url if "://" in triton_url else f"http://{triton_url}").hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        return (
            f"Triton at {triton_url} is not on this host, so the memory of the process "
            "serving the model cannot be read"
        )
    return (
        f"no process on this host serves {name} alone (a native backend runs inside "
        "tritonserver, whose memory is not the model's)"
    )


def measure_slo(
    version: ModelVersion,
    *,
    store: ArtifactStore,
    triton_url: str,
    repository: Path,
    sample: np.ndarray,
    requests: int,
    contract: FeatureContract | None = None,
    warmup: int = 5,
) -> SloMeasurement:
    """Load the candidate into the real Triton under a gate-only name, time `requests`
    single-row inferences, read the serving process's RSS, then unload and remove it.

    The entry is rendered by the serving plane's RepositoryWriter (so weights are verified
    against their sha256 first) in a private staging root, renamed, and moved into the
    repository whole: Triton never sees a half-written entry.
    """
    from serving.triton.backend import TritonBackend
    from serving.triton.repo import RepositoryWriter

    repository = Path(repository).absolute()
    name = slo_model_name(version.model_id, version.version)
    stage_root = repository.parent / f".{repository.name}.slo-{uuid.uuid4().hex[:8]}"
    writer = RepositoryWriter(repository, store)
    backend = TritonBackend(triton_url)
    dest = repository / name
    try:
        staged = RepositoryWriter(stage_root, store).write(version, contract=contract)
        config = staged / "config.pbtxt"
        text = config.read_text()
        config.write_text(re.sub(r'^name: ".*"$', f'name: "{name}"', text, count=1, flags=re.M))
        repository.mkdir(parents=True, exist_ok=True)
        os.replace(staged, dest)
        load_s = backend.load(name)
        rows = np.asarray(sample, dtype=np.float32)
        input_name = (version.signature.get("inputs") or [{"name": "features"}])[0]["name"]
        for i in range(warmup):
            backend.infer(name, {input_name: rows[i % len(rows) : i % len(rows) + 1]})
        times = []
        for i in range(requests):
            row = rows[i % len(rows) : i % len(rows) + 1]
            t0 = time.perf_counter()
            backend.infer(name, {input_name: row})
            times.append((time.perf_counter() - t0) * 1000.0)
        rss = _rss_mb_of(name)
        return SloMeasurement(
            rss_missing=None if rss is not None else _why_no_rss(triton_url, name),
            p50_ms=float(np.percentile(times, 50)),
            p99_ms=float(np.percentile(times, 99)),
            requests=requests,
            rss_mb=rss,
            load_s=load_s,
            triton_name=name,
        )
    finally:
        try:
            if dest.exists():
                backend.unload(name)
        finally:
            writer.remove(name)
            shutil.rmtree(stage_root, ignore_errors=True)
            backend.close()
