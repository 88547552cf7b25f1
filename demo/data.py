"""The synthetic CTR data the demo fleet trains and evaluates on.

Clicks follow a nonlinear score of eight features (interactions and thresholds, so trees and
MLPs have something to learn beyond a line) plus a per-country base rate, so the per-slice
eval metrics and the fairness gate see real differences between us, de, br, in and jp.

Snapshots are written as `<home>/data/<name>/v<N>.npz` with X float32 [n, 8], y int64 [n],
country <U2 [n] and seed. The bytes are deterministic for the same arguments (fixed zip
times, no compression), so a rewritten snapshot has the same sha256 and the registry's
"dataset versions are immutable" rule holds across reruns of the demo.

    python -m demo.data --home "$MODELOPS_HOME" --name ctr_clicks --version 2 --drift 0.3
"""

from __future__ import annotations

import argparse
import io
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "N_FEATURES",
    "COUNTRIES",
    "COUNTRY_SHARE",
    "COUNTRY_OFFSET",
    "ctr_score",
    "make_ctr_snapshot",
    "snapshot_path",
    "write_snapshot",
    "main",
]

N_FEATURES = 8
COUNTRIES = ("us", "de", "br", "in", "jp")
COUNTRY_SHARE = (0.35, 0.2, 0.2, 0.15, 0.1)
# Added to the logit: different base click rates per country.
COUNTRY_OFFSET = {"us": 0.0, "de": -0.4, "br": 0.35, "in": -0.7, "jp": 0.5}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def ctr_score(x: np.ndarray) -> np.ndarray:
    """The click logit before the country offset (the serving tests' demo task)."""
    return (
        1.2 * x[:, 0]
        - 0.8 * x[:, 1]
        + 0.9 * x[:, 2] * x[:, 3]
        + 1.5 * (x[:, 4] > 0.5)
        - 0.6 * np.abs(x[:, 5])
        - 1.0
    )


def make_ctr_snapshot(
    n: int, *, seed: int, drift: float = 0.0, label_shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, country). `drift` shifts two features and weakens the interaction term, so a
    model trained on drifted data is measurably worse on undrifted eval data. `label_shift`
    adds to every row's click logit (a logging bug that counts clicks twice, say): the ranking
    is the same, so a model trained on it keeps its AUC but predicts too high."""
    if n < 1:
        raise ValueError(f"n={n} is not allowed; a snapshot needs at least one row")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    country = rng.choice(np.array(COUNTRIES), size=n, p=COUNTRY_SHARE).astype("<U2")
    score = ctr_score(x)
    if drift:
        x[:, 0] += np.float32(drift)
        x[:, 1] -= np.float32(drift)
        score = score - 0.9 * drift * x[:, 2] * x[:, 3]
    offset = np.vectorize(COUNTRY_OFFSET.__getitem__, otypes=[np.float64])(country)
    p = 1.0 / (1.0 + np.exp(-(score + offset + label_shift)))
    y = (rng.random(n) < p).astype(np.int64)
    return x, y, country


def snapshot_path(home_or_dir: str | Path, name: str, version: int) -> Path:
    """`home/data/NAME/vN.npz`, or `DIR/vN.npz` when given the dataset directory itself
    (a directory named after the dataset)."""
    base = Path(home_or_dir)
    directory = base if base.name == name else base / "data" / name
    return directory / f"v{version}.npz"


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz np.load reads, with fixed member times: equal arrays give equal bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arrays[key]), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME), member.getvalue())
    return buf.getvalue()


def default_seed(name: str, version: int) -> int:
    """Different datasets and versions draw different rows unless a seed is given."""
    return (zlib.crc32(name.encode()) + 7919 * version) % (2**31)


def write_snapshot(
    home_or_dir: str | Path,
    name: str,
    version: int,
    *,
    seed: int | None = None,
    n: int = 4000,
    drift: float = 0.0,
    label_shift: float = 0.0,
) -> Path:
    """Write one snapshot atomically (readers never see half a file); returns its path."""
    if version < 1:
        raise ValueError(f"version {version} is not allowed; snapshot versions start at 1")
    seed = default_seed(name, version) if seed is None else seed
    x, y, country = make_ctr_snapshot(n, seed=seed, drift=drift, label_shift=label_shift)
    path = snapshot_path(home_or_dir, name, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _npz_bytes(
        {
            "X": x,
            "y": y,
            "country": country,
            "seed": np.int64(seed),
            "drift": np.float64(drift),
            **({"label_shift": np.float64(label_shift)} if label_shift else {}),
        }
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.data", description=__doc__.split("\n")[0])
    parser.add_argument("--home", default=os.environ.get("MODELOPS_HOME", ".modelops"))
    parser.add_argument("--name", required=True, help="dataset name, e.g. ctr_clicks")
    parser.add_argument("--version", type=int, required=True, help="snapshot version, >= 1")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--n", type=int, default=4000, help="rows")
    parser.add_argument("--drift", type=float, default=0.0, help="distribution shift, 0 = none")
    args = parser.parse_args(argv)
    path = write_snapshot(
        args.home, args.name, args.version, seed=args.seed, n=args.n, drift=args.drift
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
