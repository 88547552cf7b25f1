"""Prediction-log benchmark: sustained batched writes, with and without a reader process.

Run: `.venv/bin/python bench/predlog.py [--backends sqlite,postgres] [--rows N]`. For each
backend it writes N realistic records through `PredictionLog` (the gateway's sink) and
measures, in one run on one machine:

1. sustained write rate: from the first `submit` to `flush` returning, with the default
   bounded queue; the producer backs off when the queue is nearly full, as a gateway would
   by dropping, so nothing is dropped and the figure is what the writer sustains;
2. the same while another OS process polls windowed aggregates (the Dagster sensor's
   query) as fast as it can: the write rate and that reader's query latency;
3. the caller's cost of one `submit` (p50/p99), which is what the user's request pays;
4. `window()` over the hot model's whole history and `records()` for replay;
5. what `kill -9` costs: a separate process takes KILL_RATE rows/s with the default flush
   interval while a busy thread stands for the gateway's event loop, and is killed at an
   arbitrary moment, KILL_TRIALS times. After each kill the log is reopened (a restart) and
   counted against the rows `submit` accepted (their times survive in a shared memory map):
   rows lost, and the loss window (how long before the kill the oldest lost row was
   accepted) against the configured interval, which is the promise.

Every run checks exactly-once delivery (row count equals rows submitted, nothing dropped
or failed). The target is 10,000 rows/s on SQLite. The JSON goes to
bench/results/predlog.json; a Markdown table goes to stdout.

PostgreSQL: a fresh database modelops_predlog_bench_<pid> is created, migrated and dropped.
SQLite: a file in a temporary directory (WAL, synchronous=NORMAL, as in production).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib import machine_info, postgres_backend, sqlite_backend

# Keep this folder off the path once benchlib is in: no script beside this one may stand in
# for a package of ours.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from serving.predlog import PredictionLog, PredictionLogReader, upgrade  # noqa: E402
from serving.records import PredictionRecord  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "predlog.json"
TARGET_ROWS_PER_S = 10_000.0
T0 = 1_800_000_000.0
RATE = 10_000  # simulated requests per second of ts: windows in seconds map to row counts
MODELS = 20
HOT = "model-00"  # half of all traffic, as one busy model would get


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def make_records(n: int, start: int, seed: int) -> list[PredictionRecord]:
    """Gateway-shaped records: mostly prod, some canary and shadow; 10% carry replay payloads."""
    rng = random.Random(seed)
    out = []
    for i in range(start, start + n):
        model = HOT if rng.random() < 0.5 else f"model-{rng.randrange(1, MODELS):02d}"
        r = rng.random()
        arm, version = ("prod", 3) if r < 0.85 else ("canary", 4) if r < 0.95 else ("shadow", 5)
        replay = rng.random() < 0.1
        p = rng.random()
        out.append(
            PredictionRecord(
                request_id=uuid.UUID(int=rng.getrandbits(128)).hex,
                ts=T0 + i / RATE,
                model_id=model,
                version=version,
                arm=arm,
                slice="eu" if rng.random() < 0.3 else "global",
                user_bucket=rng.randrange(10_000),
                latency_ms=rng.lognormvariate(1.0, 0.5),
                error=None if rng.random() > 0.01 else rng.choice(["timeout", "backend_5xx"]),
                outputs={"probabilities": [p, 1 - p], "label": int(p > 0.5)},
                inputs={"x": [rng.random() for _ in range(8)]} if replay else None,
                features={f"f{j}": rng.random() for j in range(8)} if replay else None,
                prompt_tokens=rng.randrange(20, 2000) if model == "model-19" else None,
            )
        )
    return out


def write_run(pl: PredictionLog, records: list[PredictionRecord]) -> dict[str, Any]:
    """Submit everything as fast as the queue takes it; time until it is all committed."""
    before = (pl.written, pl.batches)
    submit_ns: list[int] = []
    backoffs = 0
    high_water = int(pl.max_queue * 0.9)
    t0 = time.perf_counter()
    for i, r in enumerate(records):
        while pl.queue_depth >= high_water:
            backoffs += 1
            time.sleep(0.001)
        if i % 10 == 0:
            s = time.perf_counter_ns()
            ok = pl.submit(r)
            submit_ns.append(time.perf_counter_ns() - s)
        else:
            ok = pl.submit(r)
        assert ok, "bench producer must never be dropped"
    submitted = time.perf_counter() - t0
    assert pl.flush(600), "flush timed out"
    elapsed = time.perf_counter() - t0
    rows = pl.written - before[0]
    batches = pl.batches - before[1]
    assert rows == len(records), f"wrote {rows} of {len(records)}"
    return {
        "rows": rows,
        "elapsed_s": round(elapsed, 3),
        "rows_per_s": round(rows / elapsed),
        "submit_phase_s": round(submitted, 3),
        "batches": batches,
        "mean_batch_rows": round(rows / max(batches, 1), 1),
        "producer_backoffs_ms": backoffs,
        "submit_p50_us": round(pct([x / 1000 for x in submit_ns], 0.5), 2),
        "submit_p99_us": round(pct([x / 1000 for x in submit_ns], 0.99), 2),
    }


_READER = textwrap.dedent(
    """
    import json, os, sys, time
    from serving.predlog import PredictionLogReader

    url, model, stop = sys.argv[1], sys.argv[2], sys.argv[3]
    lat, rows = [], []
    with PredictionLogReader(url) as r:
        print("ready", flush=True)
        while not os.path.exists(stop):
            latest = r.latest_ts(model)
            if latest is None:
                time.sleep(0.01)
                continue
            t = time.perf_counter()
            w = r.window(model, since_ts=latest - 1.0)  # the sensor's short window
            lat.append((time.perf_counter() - t) * 1000)
            rows.append(sum(x.requests for x in w))
    print(json.dumps({"ms": lat, "rows": rows}))
    """
)


def write_with_reader(url: str, pl: PredictionLog, records: list[PredictionRecord]) -> dict:
    stop = Path(tempfile.mkdtemp(prefix="predlog-bench-stop-")) / "stop"
    child = subprocess.Popen(
        [sys.executable, "-c", _READER, url, HOT, str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        out = write_run(pl, records)
        stop.touch()
        stdout, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if child.returncode != 0:
        raise RuntimeError(f"reader process failed: {stderr}")
    got = json.loads(stdout.strip().splitlines()[-1])
    ms = got["ms"]
    out.update(
        {
            "reader_queries": len(ms),
            "reader_window_rows_median": int(statistics.median(got["rows"])) if ms else 0,
            "reader_window_p50_ms": round(pct(ms, 0.5), 2) if ms else None,
            "reader_window_p99_ms": round(pct(ms, 0.99), 2) if ms else None,
        }
    )
    return out


def query_run(url: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with PredictionLogReader(url) as r:
        total = r.count()
        hot_rows = r.count(HOT)
        latest = r.latest_ts(HOT)
        assert latest is not None
        for label, since in (("window_1s", latest - 1.0), ("window_all", 0.0)):
            ms = []
            for _ in range(7):
                t = time.perf_counter()
                w = r.window(HOT, since_ts=since)
                ms.append((time.perf_counter() - t) * 1000)
            out[f"{label}_rows"] = sum(x.requests for x in w)
            out[f"{label}_groups"] = len(w)
            out[f"{label}_p50_ms"] = round(pct(ms, 0.5), 2)
            out[f"{label}_max_ms"] = round(max(ms), 2)
        ms = []
        for _ in range(7):
            t = time.perf_counter()
            recs = r.records(HOT, 3, since_ts=T0, limit=1000)
            ms.append((time.perf_counter() - t) * 1000)
        assert len(recs) == 1000
        out["records_1000_p50_ms"] = round(pct(ms, 0.5), 2)
        out["rows_total"] = total
        out["rows_hot_model"] = hot_rows
    return out


def bench_backend(name: str, url: str, rows: int) -> dict[str, Any]:
    log(f"{name}: building {2 * rows:,} records")
    first = make_records(rows, 0, seed=1)
    second = make_records(rows, rows, seed=2)
    res: dict[str, Any] = {}
    with PredictionLog(url) as pl:
        # Warm the engine and page cache with a small run that is not measured.
        warm = make_records(2_000, -10_000_000, seed=3)
        write_run(pl, warm)
        log(f"{name}: write run, {rows:,} rows")
        res.update({f"write.{k}": v for k, v in write_run(pl, first).items()})
        log(f"{name}: write run with a reader process, {rows:,} rows")
        shared = write_with_reader(url, pl, second)
        res.update({f"write_with_reader.{k}": v for k, v in shared.items()})
        res["dropped"] = pl.dropped
        res["failed"] = pl.failed
        written = pl.written
    log(f"{name}: queries")
    res.update({f"query.{k}": v for k, v in query_run(url).items()})
    assert res["query.rows_total"] == written == 2 * rows + len(warm), "not exactly once"
    res["exactly_once"] = True
    return res


KILL_TRIALS = 5
KILL_RATE = 2_000.0  # rows/s: a busy gateway process
KILL_SLOTS = 100_000

_KILL_CHILD = textwrap.dedent(
    """
    import mmap, os, struct, sys, threading, time
    from serving.predlog import PredictionLog
    from serving.records import PredictionRecord

    url, acks, model, rate = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    n = int(sys.argv[5])
    with open(acks, "r+b") as fh:
        mm = mmap.mmap(fh.fileno(), 8 * n)  # shared pages outlive this process
    cpus = sorted(os.sched_getaffinity(0))

    def event_loop():  # the gateway's loop under load, on its own core
        os.sched_setaffinity(0, cpus[:1])
        x = 0
        while True:
            x += 1

    threading.Thread(target=event_loop, daemon=True).start()
    os.sched_setaffinity(0, cpus[1:] or cpus)  # the writer thread inherits this core
    pl = PredictionLog(url)  # the default flush interval, as a gateway runs it
    print(pl.flush_interval_s, flush=True)
    t0 = time.monotonic()
    for i in range(n):
        pause = t0 + i / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        accepted = time.monotonic()
        if pl.submit(PredictionRecord(request_id=f"{model}-{i}", ts=time.time(),
                                      model_id=model, version=1, arm="prod", slice="global",
                                      latency_ms=1.0, outputs={"score": [0.25, 0.75]})):
            struct.pack_into("d", mm, 8 * i, accepted)
    time.sleep(600)
    """
)


def kill_trial(url: str, trial: int, rng: random.Random) -> dict[str, Any]:
    """One SIGKILL mid-stream; what a restarted log holds against what was accepted."""
    import signal
    import struct

    model = f"kill-{trial}"
    with tempfile.TemporaryDirectory(prefix="predlog-kill-") as d:
        acks = Path(d) / "acks"
        acks.write_bytes(b"\0" * 8 * KILL_SLOTS)
        child = subprocess.Popen(
            [sys.executable, "-c", _KILL_CHILD, url, str(acks), model, str(KILL_RATE)]
            + [str(KILL_SLOTS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stderr is not None
            line = child.stdout.readline().strip()
            assert line, child.stderr.read()
            interval = float(line)
            time.sleep(2.0 + rng.random())
            killed = time.monotonic()
            os.kill(child.pid, signal.SIGKILL)
            child.wait(30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        data = acks.read_bytes()
    accepted = {
        f"{model}-{i}": t
        for i in range(KILL_SLOTS)
        if (t := struct.unpack_from("d", data, 8 * i)[0]) > 0
    }
    PredictionLog(url).close()  # the restart: the log opens cleanly after the crash
    with PredictionLogReader(url) as r:
        found = {x.request_id for x in r.records(model, 1, limit=KILL_SLOTS)}
    lost = [killed - t for rid, t in accepted.items() if rid not in found]
    return {
        "accepted": len(accepted),
        "found": len(found & accepted.keys()),
        "lost": len(lost),
        "window_ms": round(max(lost, default=0.0) * 1000, 1),
        "interval_ms": round(interval * 1000, 1),
    }


def kill_run(url: str) -> dict[str, Any]:
    rng = random.Random(7)
    trials = [kill_trial(url, t, rng) for t in range(KILL_TRIALS)]
    accepted = sum(t["accepted"] for t in trials)
    lost = sum(t["lost"] for t in trials)
    window = max(t["window_ms"] for t in trials)
    interval = trials[0]["interval_ms"]
    return {
        "trials": KILL_TRIALS,
        "rate_rows_per_s": KILL_RATE,
        "flush_interval_ms": interval,
        "accepted": accepted,
        "found_after_restart": accepted - lost,
        "lost": lost,
        "lost_pct": round(100 * lost / max(accepted, 1), 3),
        "loss_window_ms_max": window,
        "loss_window_ms_per_trial": [t["window_ms"] for t in trials],
        "promise_held": window <= interval,
    }


def _v(res: dict[str, Any], b: str, k: str) -> Any:
    return res.get(f"{b}.{k}")


def markdown(res: dict[str, Any], backends: list[str]) -> str:
    names = {"sqlite": "SQLite (WAL)", "postgres": "PostgreSQL"}
    lines = [
        "| measure | target | " + " | ".join(names[b] for b in backends) + " |",
        "|---|---|" + "---|" * len(backends),
    ]

    def row(label: str, target: str, fmt: Any) -> None:
        lines.append(f"| {label} | {target} | " + " | ".join(fmt(b) for b in backends) + " |")

    def rate(key: str) -> Any:
        def f(b: str) -> str:
            v = _v(res, b, key)
            ok = res["targets_met"].get(f"{b}.{key}")
            return f"{v:,.0f} rows/s" + ("" if ok is None else (" ✅" if ok else " ❌"))

        return f

    row("sustained batched writes", ">= 10,000 rows/s (SQLite)", rate("write.rows_per_s"))
    row(
        "… while another process polls windows",
        "",
        rate("write_with_reader.rows_per_s"),
    )
    row(
        "reader's 1 s window during writes, p50 / p99",
        "",
        lambda b: (
            f"{_v(res, b, 'write_with_reader.reader_window_p50_ms')} / "
            f"{_v(res, b, 'write_with_reader.reader_window_p99_ms')} ms "
            f"({_v(res, b, 'write_with_reader.reader_queries')} queries)"
        ),
    )
    row(
        "submit() on the caller's path, p50 / p99",
        "",
        lambda b: f"{_v(res, b, 'write.submit_p50_us')} / {_v(res, b, 'write.submit_p99_us')} µs",
    )
    row("mean rows per transaction", "", lambda b: f"{_v(res, b, 'write.mean_batch_rows')}")
    row(
        "window(), 1 s of the hot model",
        "",
        lambda b: (
            f"{_v(res, b, 'query.window_1s_p50_ms')} ms "
            f"({_v(res, b, 'query.window_1s_rows'):,} rows)"
        ),
    )
    row(
        "window(), the hot model's whole history",
        "",
        lambda b: (
            f"{_v(res, b, 'query.window_all_p50_ms')} ms "
            f"({_v(res, b, 'query.window_all_rows'):,} rows)"
        ),
    )
    row(
        "records(), 1,000 for replay",
        "",
        lambda b: f"{_v(res, b, 'query.records_1000_p50_ms')} ms",
    )
    row(
        f"kill -9 under load ({KILL_TRIALS} trials): lost / accepted",
        "",
        lambda b: (
            f"{_v(res, b, 'kill9.lost'):,} / {_v(res, b, 'kill9.accepted'):,} "
            f"({_v(res, b, 'kill9.lost_pct')}%)"
        ),
    )
    row(
        "… loss window, worst trial",
        "<= flush interval",
        lambda b: (
            f"{_v(res, b, 'kill9.loss_window_ms_max')} ms "
            f"(interval {_v(res, b, 'kill9.flush_interval_ms')} ms)"
            + (" ✅" if _v(res, b, "kill9.promise_held") else " ❌")
        ),
    )
    m = res["machine"]
    lines.append("")
    lines.append(
        f"{res['rows_per_run']:,} records per run, half on one hot model; every run checked "
        f"exactly once. Machine: {m['nproc']} CPUs ({m['cpu'] or 'unknown CPU'}), "
        f"Python {m['python']}, SQLite {m['sqlite']}"
        + (f", PostgreSQL {m['postgres']}" if "postgres" in m else "")
        + f"; load average {m['loadavg_1m_at_start']} at start, {m['loadavg_1m_at_end']} at end"
        + f"; {res['timestamp']}."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="sqlite,postgres", help="comma list: sqlite,postgres")
    ap.add_argument("--rows", type=int, default=200_000, help="records per measured run")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = ap.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in backends if b not in ("sqlite", "postgres")]
    if bad or not backends:
        ap.error(f"unknown backend(s) {bad}; allowed: sqlite, postgres")

    t0 = time.perf_counter()
    res: dict[str, Any] = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(backends),
        "rows_per_run": args.rows,
        "targets": {"sqlite.write.rows_per_s": f">= {TARGET_ROWS_PER_S:.0f}"},
    }
    for b in backends:
        backend = (
            sqlite_backend("modelops-predlog-bench-", "predictions.db")
            if b == "sqlite"
            else postgres_backend("modelops_predlog_bench", upgrade)
        )
        with backend as url:
            out = bench_backend(b, url, args.rows)
            log(f"{b}: kill -9 trials")
            out.update({f"kill9.{k}": v for k, v in kill_run(url).items()})
        res.update({f"{b}.{k}": v for k, v in out.items()})
    met = {}
    if "sqlite" in backends:
        met["sqlite.write.rows_per_s"] = res["sqlite.write.rows_per_s"] >= TARGET_ROWS_PER_S
        met["sqlite.write_with_reader.rows_per_s"] = (
            res["sqlite.write_with_reader.rows_per_s"] >= TARGET_ROWS_PER_S
        )
    for b in backends:
        # The crash promise: nothing accepted more than the flush interval before a kill lost.
        res["targets"][f"{b}.kill9.loss_window_ms_max"] = "<= flush interval"
        met[f"{b}.kill9.loss_window_ms_max"] = bool(res[f"{b}.kill9.promise_held"])
    res["targets_met"] = met
    # Other work on this shared machine moves these figures; the load says how much.
    res["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    res["runtime_s"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(markdown(res, backends))
    log(f"wrote {args.out} in {res['runtime_s']}s")
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
