"""Recovery benchmark: how long traffic is down when Triton dies under load and comes back.

Run: `.venv/bin/python bench/recovery.py [--rounds N]` (`make bench` runs it). The scenario is
the one its test replays (tests/serving/recovery_scenario.py): real `tritonserver`, a real
`modelops serve gateway`, `modelops controller run` as its own process, and client threads
posting one-row inferences through the gateway the whole time. Each round kills Triton's
process group with SIGKILL, waits until the controller has run a pass that found it dead,
restarts Triton on the same ports and repository, and waits for the first good answer. Every
round uses the same controller process, which never restarts.

Reported per round and summarised (median, max):
- restart_to_first_good_s: Triton restarted -> first 200 through the gateway. What the
  controller adds: the rest of its backoff wait, one pass, and the model's load;
- kill_to_first_good_s: the whole outage as clients saw it, including the time Triton was
  down (here as short as one failed controller pass; a real restart takes what it takes);
- triton_ready_s: restart -> the supervisor (TritonServer.start, polling every 0.1 s) sees
  Triton ready; the controller's pass can begin loading before that poll returns;
- model_load_s: the controller's load of the model into the restarted Triton (its own
  report), the part no controller can shorten. What restart_to_first_good_s holds beyond
  Triton's start and this load is the wait for the controller's next pass.

Writes bench/results/recovery.json with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as bench/recovery.py: keep bench/ off the path, so no script here stands in for a package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "serving"))  # the scenario and the demo models

from demo_models import build_onnx_ctr  # noqa: E402
from recovery_scenario import Scenario  # noqa: E402

from bench.benchlib import machine_info  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "recovery.json"
INTERVAL_S = 0.5
MAX_BACKOFF_S = 5.0


def log(msg: str) -> None:
    print(f"[recovery] {msg}", file=sys.stderr, flush=True)


def summary(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 3), "max": round(max(xs), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    out: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info([]),
        "controller": {"interval_s": INTERVAL_S, "max_backoff_s": MAX_BACKOFF_S},
        "load": {"client_threads": 2, "request": "one-row inference, KServe v2 JSON"},
        "rounds": [],
    }
    with tempfile.TemporaryDirectory(prefix="modelops-bench-recovery-") as tmp:
        work = Path(tmp)
        demo = build_onnx_ctr(work / "model", seed=0)
        sc = Scenario(
            work / "scenario", demo, interval_s=INTERVAL_S, max_backoff_s=MAX_BACKOFF_S
        ).start()
        try:
            for i in range(args.rounds):
                t = sc.outage()
                assert sc.load is not None
                gap = [s for s in sc.load.since(t["killed"]) if s.sent < t["first_good_sent"]]
                ready = sc.triton_ready_s
                row = {
                    "restart_to_first_good_s": round(t["first_good"] - t["restarted"], 3),
                    "kill_to_first_good_s": round(t["first_good"] - t["killed"], 3),
                    "triton_ready_s": round(ready, 3),
                    "model_load_s": sc.load_seconds()[-1],
                    "requests_in_gap": len(gap),
                    "gap_statuses": sorted({s.status for s in gap}),
                }
                out["rounds"].append(row)
                log(f"round {i + 1}: {row}")
                time.sleep(1.0)  # steady traffic again before the next kill
            out["controller_exited"] = not sc.controller_alive()
            out["controller_error_passes"] = sc.status()["error_passes"]
        finally:
            sc.stop()
    rounds = out["rounds"]
    for key in (
        "restart_to_first_good_s",
        "kill_to_first_good_s",
        "triton_ready_s",
        "model_load_s",
    ):
        out[key] = summary([r[key] for r in rounds])
    out["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
