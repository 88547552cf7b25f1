"""The README's performance tables, generated from bench/results/*.json.

    .venv/bin/python bench/report.py            # rewrite every marked block of README.md
    .venv/bin/python bench/report.py --check    # exit 1 naming each block that differs

A block sits between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` anywhere in the README;
NAME is one of `BLOCKS` and says which results file and which renderer fill it. Figures are
never copied by hand: `make bench` reruns this after the benchmarks, and
tests/test_bench_report.py fails when the README and the results files disagree.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["BLOCKS", "MACHINE_FIELDS", "blocks_in", "load", "render", "rewrite", "stale_blocks"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
MACHINE_FIELDS = ("nproc", "cpu", "python", "platform")
"""What every results file must record about the machine it ran on."""

_BLOCK = re.compile(
    r"(?P<open><!-- bench:(?P<name>[a-z0-9-]+) -->)\n"
    r"(?P<body>.*?)"
    r"(?P<close><!-- /bench:(?P=name) -->)",
    re.S,
)


def load(name: str, results: Path = RESULTS) -> dict[str, Any]:
    return json.loads((results / f"{name}.json").read_text())


def _flag(ok: bool | None) -> str:
    return "" if ok is None else (" ✅" if ok else " ❌")


def _machine(res: dict[str, Any], *, backends: bool = True) -> str:
    m = res["machine"]
    text = f"{m['nproc']} CPUs ({m.get('cpu') or 'unknown CPU'}), Python {m['python']}"
    if backends and "sqlite" in m:
        text += f", SQLite {m['sqlite']}"
    if backends and "postgres" in m:
        text += f", PostgreSQL {m['postgres']}"
    return text


def _load_avg(res: dict[str, Any]) -> str:
    m = res["machine"]
    start, end = m.get("loadavg_1m_at_start"), m.get("loadavg_1m_at_end")
    if start is None:
        return ""
    return f"; load average {start} at start" + (f", {end} at end" if end is not None else "")


# ---------------------------------------------------------------------- registry

_REGISTRY_ROWS = [
    ("register version (audit + pins) p50 / p99", "register_version", "ms", "p99 <= 10 ms"),
    ("offline gate result p50 / p99", "gate_result", "ms", ""),
    ("transition (audit + desired state) p50 / p99", "transition", "ms", ""),
    ("canary percent step p50 / p99", "canary_step", "ms", ""),
    ("sustained transitions", "transition_per_s", "rate", ">= 300/s (SQLite)"),
    ("resolve desired state p50 / p99", "resolve", "ms", "p99 <= 1 ms"),
    ("dependents of a feature p50 / p99", "dependents_of_feature", "ms", "p99 <= 10 ms"),
    ("transitive dependents closure p50 / p99", "transitive_dependents", "ms", "p99 <= 10 ms"),
    ("verify one model's audit chain p50 / p99", "verify_audit", "ms", ""),
    ("verify the whole audit log", "verify_audit_all_s", "s", ""),
]
_BACKEND_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def _backends(res: dict[str, Any]) -> list[str]:
    return [b for b in ("sqlite", "postgres") if any(k.startswith(f"{b}.") for k in res)]


def render_registry(res: dict[str, Any]) -> str:
    met = res["targets_met"]
    backends = _backends(res)

    def cell(b: str, key: str, kind: str) -> str:
        if kind == "ms":
            txt = f"{res[f'{b}.{key}_p50_ms']:.2f} / {res[f'{b}.{key}_p99_ms']:.2f} ms"
            return txt + _flag(met.get(f"{b}.{key}_p99_ms"))
        if kind == "rate":
            return f"{res[f'{b}.{key}']:.0f}/s" + _flag(met.get(f"{b}.{key}"))
        return f"{res[f'{b}.{key}']:.2f} s"

    lines = [
        "| measure | target | " + " | ".join(_BACKEND_NAMES[b] for b in backends) + " |",
        "|---|---|" + "---|" * len(backends),
    ]
    for label, key, kind, target in _REGISTRY_ROWS:
        cells = " | ".join(cell(b, key, kind) for b in backends)
        lines.append(f"| {label} | {target} | {cells} |")
    b0, f = backends[0], res["fleet"]
    lines += [
        "",
        f"Fleet: {f['models']} models x {f['versions_per_model']} versions x "
        f"{len(f['slices'])} slices, {f['features']} features in {f['feature_contracts']} "
        f"contracts, {f['dependency_edges']} dependency edges (with cycles), "
        f"{res[f'{b0}.audit_entries_at_measure_start']:,} audit entries "
        f"({res[f'{b0}.audit_topup_bulk_inserted']:,} bulk-inserted, hash-chained); "
        f"{res[f'{b0}.audit_entries_per_model_median']} audit entries per model, "
        f"{res[f'{b0}.dependents_of_feature_rows_median']} versions per feature, "
        f"closure of {res[f'{b0}.transitive_dependents_size_median']} models; "
        f"{res[f'{b0}.transition_run_count']} transitions in the sustained run.",
        f"Machine: {_machine(res)}. In process, through the Registry API; {res['timestamp']}.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------- serving


def render_serving(res: dict[str, Any]) -> str:
    met = res["targets_met"]
    rounds = f"; {res['rounds']} interleaved rounds" if "rounds" in res else ""
    gw, gw2 = "gateway", "gateway_2proc"
    added_ok = met["added_p50_ms"] and met["added_p99_ms"]
    rows = [
        (
            "direct Triton, serial p50 / p99",
            "baseline",
            f"{res['direct.serial_p50_ms']:.3f} / {res['direct.serial_p99_ms']:.3f} ms",
        ),
        (
            "gateway (1 process), added p50 / p99",
            "≤ 1 ms / ≤ 3 ms",
            f"{res[f'{gw}.added_p50_ms']:.3f} / {res[f'{gw}.added_p99_ms']:.3f} ms"
            + _flag(added_ok),
        ),
        (
            "gateway (2 processes, SO_REUSEPORT + TCP_NODELAY), added p50 / p99",
            "",
            f"{res[f'{gw2}.added_p50_ms']:.3f} / {res[f'{gw2}.added_p99_ms']:.3f} ms",
        ),
        (
            "throughput at concurrency 16, gateway / direct (median of per-round ratios)",
            "≥ 50%",
            f"1 process {res[f'{gw}.throughput_ratio_c16']:.1%}"
            + _flag(met["throughput_ratio_c16"])
            + f", 2 processes {res[f'{gw2}.throughput_ratio_c16']:.1%}",
        ),
        (
            "shadow mirroring 100% vs none, user path p50 / p99 inflation",
            "≤ 5% at p99",
            f"{res['shadow_p50_inflation']:.0%} / {res['shadow_p99_inflation']:.0%}"
            + _flag(met["shadow_p99_inflation"]),
        ),
        (
            f"route flip: registry rollback → controller pass → {res['route_flip_gateways']} "
            f"gateways all on the target, max of {res['route_flip_samples']}",
            "≤ 1 s",
            f"{res['route_flip_s_max'] * 1000:.0f} ms" + _flag(met["route_flip_s"]),
        ),
        (
            "Triton load time, ONNX / TorchScript / SavedModel (portable rendering)",
            "",
            " / ".join(f"{res[f'triton_load_s.{k}']:.3f}" for k in ("onnx", "torch", "tf")) + " s",
        ),
    ]
    lines = [
        "| figure (same run, same ONNX model, tritonclient over HTTP"
        f"{rounds}) | target | measured |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "",
        f"{res['serial_samples']:,} serial requests per path. Machine: "
        f"{_machine(res, backends=False)}{_load_avg(res)}; {res['timestamp']}.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------- prediction log


def render_predlog(res: dict[str, Any]) -> str:
    backends = _backends(res)
    names = {"sqlite": "SQLite (WAL)", "postgres": "PostgreSQL"}
    met = res["targets_met"]
    lines = [
        "| measure | target | " + " | ".join(names[b] for b in backends) + " |",
        "|---|---|" + "---|" * len(backends),
    ]

    def v(b: str, k: str) -> Any:
        return res[f"{b}.{k}"]

    def row(label: str, target: str, fmt: Callable[[str], str]) -> None:
        lines.append(f"| {label} | {target} | " + " | ".join(fmt(b) for b in backends) + " |")

    def rate(key: str) -> Callable[[str], str]:
        return lambda b: f"{v(b, key):,.0f} rows/s" + _flag(met.get(f"{b}.{key}"))

    row("sustained batched writes", ">= 10,000 rows/s (SQLite)", rate("write.rows_per_s"))
    row("… while another process polls windows", "", rate("write_with_reader.rows_per_s"))
    row(
        "reader's 1 s window during writes, p50 / p99",
        "",
        lambda b: (
            f"{v(b, 'write_with_reader.reader_window_p50_ms')} / "
            f"{v(b, 'write_with_reader.reader_window_p99_ms')} ms "
            f"({v(b, 'write_with_reader.reader_queries')} queries)"
        ),
    )
    row(
        "submit() on the caller's path, p50 / p99",
        "",
        lambda b: f"{v(b, 'write.submit_p50_us')} / {v(b, 'write.submit_p99_us')} µs",
    )
    row("mean rows per transaction", "", lambda b: f"{v(b, 'write.mean_batch_rows')}")
    row(
        "window(), 1 s of the hot model",
        "",
        lambda b: f"{v(b, 'query.window_1s_p50_ms')} ms ({v(b, 'query.window_1s_rows'):,} rows)",
    )
    row(
        "window(), the hot model's whole history",
        "",
        lambda b: f"{v(b, 'query.window_all_p50_ms')} ms ({v(b, 'query.window_all_rows'):,} rows)",
    )
    row("records(), 1,000 for replay", "", lambda b: f"{v(b, 'query.records_1000_p50_ms')} ms")
    if all(f"{b}.kill9.trials" in res for b in backends):
        trials = res[f"{backends[0]}.kill9.trials"]
        row(
            f"kill -9 under load ({trials} trials): lost / accepted",
            "",
            lambda b: (
                f"{v(b, 'kill9.lost'):,} / {v(b, 'kill9.accepted'):,} ({v(b, 'kill9.lost_pct')}%)"
            ),
        )
        row(
            "… loss window, worst trial",
            "<= flush interval",
            lambda b: (
                f"{v(b, 'kill9.loss_window_ms_max')} ms "
                f"(interval {v(b, 'kill9.flush_interval_ms')} ms)"
                + _flag(bool(v(b, "kill9.promise_held")))
            ),
        )
    lines += [
        "",
        f"{res['rows_per_run']:,} records per run, half on one hot model; every run checked "
        f"exactly once. Machine: {_machine(res)}{_load_avg(res)}; {res['timestamp']}.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------- Dagster plugin


def render_plugin(res: dict[str, Any]) -> str:
    met = res["met"]
    f, tick = res["fleet"], res["online_metrics_tick"]
    rows = [
        (
            "rollback time to recover",
            "`ctr_gbdt` in canary with its users' clicks collapsed: from the first response of "
            "the regressed version to the first response after which all traffic is on the "
            "last good version, through the real daemon, online-metrics sensor, rollback job "
            "and controller pass",
            f"≤ {res['targets']['rollback_time_to_recover_s']:g} s",
            f"{res['rollback_time_to_recover_s']:.1f} s"
            + _flag(met.get("rollback_time_to_recover_s")),
        ),
        (
            "recovery from a crashing canary",
            f"canary at 10% of {res['breaker.rate_per_s']:g} req/s, unloaded from Triton behind "
            "the controller's back: from the first failed response until every answer is "
            "prod's, through the gateway's breaker alone",
            f"≤ {res['targets']['breaker_recovery_s']:g} s",
            f"{res['breaker_recovery_s']:.3f} s"
            + _flag(met.get("breaker_recovery_s"))
            + f" ({res['breaker.failed_responses']} failed responses)",
        ),
        (
            "sensor tick",
            f"one online-metrics tick over {f['models']} models, {f['live_candidates']} "
            f"versions in canary or shadow, {f['rows_per_series']} predictions and outcomes "
            f"per series (median of {tick['n']}; p95 {tick['p95_s']:.2f} s); the candidate "
            f"sensor's tick is {res['candidate_tick']['median_s']:.2f} s",
            f"≤ {res['targets']['sensor_tick_s']:g} s",
            f"{res['sensor_tick_s']:.2f} s" + _flag(met.get("sensor_tick_s")),
        ),
    ]
    lines = [
        "| figure | how it is measured | target | measured |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
        "",
        f"Machine: {_machine(res, backends=False)}{_load_avg(res)}; {res['timestamp']}.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------- state-store rollback


def render_rollback(res: dict[str, Any]) -> str:
    met = res["targets_met"]
    labels = {"sqlite": "SQLite table", "postgres": "PostgreSQL table", "directory": "directory"}
    lines = [
        "| store | size | snapshot | rollback restore | full reload | 10 GB rollback restore "
        "(extrapolated) | 10 GB full reload (extrapolated) |",
        "|---|---|---|---|---|---|---|",
    ]
    for part in ("sqlite", "postgres", "directory"):
        r = {k.split(".", 1)[1]: v for k, v in res.items() if k.startswith(f"{part}.")}
        if not r:
            continue
        if part == "directory":
            size = f"{r['mb']:,.0f} MB, {r['files']} files"
            restore = f"{r['restore_diff_s']:.1f} s ({r['restore_diff_files']} files differ)"
            ten_key = "extrapolated_10gb_restore_diff_s"
        else:
            size = f"{r['rows']:,} rows ({r['dump_mb']:.0f} MB dump)"
            restore = (
                f"{r['restore_incremental_s']:.1f} s ({r['restore_incremental_writes']:,} "
                "writes reverted)"
            )
            ten_key = "extrapolated_10gb_restore_incremental_s"
        lines.append(
            f"| {labels[part]} | {size} | {r['snapshot_s']:.1f} s | {restore} | "
            f"{r['restore_full_s']:.1f} s | {r[ten_key] / 60:.1f} min"
            + _flag(met.get(f"{part}.{ten_key}"))
            + f" | {r['extrapolated_10gb_restore_full_s'] / 60:.1f} min |"
        )
    lines += [
        "",
        f"TTR SLO {res['ttr_slo_s'] // 60} min. Machine: {_machine(res)}{_load_avg(res)}; "
        f"{res['timestamp']}.",
    ]
    lines += _rollback_job_rows(res)
    return "\n".join(lines)


def _rollback_job_rows(res: dict[str, Any]) -> list[str]:
    """The rollback job's own figures (`--only plan|ttr|signatures`), when the run has them."""
    rows: list[str] = []
    if "plan.registry_plan_p50_ms" in res:
        rows.append(
            f"| rollback plan over a {res['plan.models']}-model DAG ({res['plan.edges']:,} "
            f"edges, closure {res['plan.closure']}), end to end | <= 50 ms | "
            f"p50 {res['plan.registry_plan_p50_ms']:.1f} ms, p95 "
            f"{res['plan.registry_plan_p95_ms']:.1f} ms (CPU p50 "
            f"{res['plan.registry_plan_cpu_p50_ms']:.1f} ms) |"
        )
    for cls in ("stateless", "state_snapshot", "irreversible"):
        key = f"ttr.{cls}.ttr_s"
        if key in res:
            rows.append(
                f"| rollback TTR, {cls.upper()} ({res['ttr.rows']:,} rows, "
                f"{res[f'ttr.{cls}.writes_reverted']:,} writes reverted), through the job's body "
                f"| <= {res['ttr_slo_s'] // 60} min | {res[key]:.2f} s (restore "
                f"{res[f'ttr.{cls}.restore_s']:.2f} s) |"
            )
    if "signatures.verify_per_approval_p50_us" in res:
        rows.append(
            "| signature verification per approval (parse, key, verify, subject, nonce, "
            f"epoch) | (reported) | p50 {res['signatures.verify_per_approval_p50_us']:.0f} us, "
            f"{res['signatures.overhead_ratio_vs_raw']:.2f}x a bare Ed25519 verify "
            f"({res['signatures.raw_ed25519_verify_p50_us']:.0f} us) |"
        )
    if not rows:
        return []
    return ["", "| rollback job | target | measured |", "|---|---|---|", *rows]


# ---------------------------------------------------------------------- recovery


def render_recovery(res: dict[str, Any]) -> str:
    n = len(res["rounds"])

    def mm(key: str) -> str:
        return f"{res[key]['median']:.2f} / {res[key]['max']:.2f} s"

    exits = "none" if not res["controller_exited"] else "the controller exited"
    rows = [
        ("Triton restarted → first good answer through the gateway", mm("restart_to_first_good_s")),
        (
            "`kill -9` → first good answer (the outage as clients saw it)",
            mm("kill_to_first_good_s"),
        ),
        (
            "of which: the controller's load of the model into the fresh Triton",
            mm("model_load_s"),
        ),
        (
            "controller exits during the run",
            f"{exits} ({res['controller_error_passes']} failed passes recorded)",
        ),
    ]
    c = res["controller"]
    lines = [
        f"| figure (median / max of {n}) | measured |",
        "|---|---|",
        *(f"| {a} | {b} |" for a, b in rows),
        "",
        f"Controller `--interval {c['interval_s']:g} --max-backoff {c['max_backoff_s']:g}`, "
        f"{res['load']['client_threads']} client threads. Machine: "
        f"{_machine(res, backends=False)}{_load_avg(res)}; {res['timestamp']}.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------- decisions


def render_decisions(res: dict[str, Any]) -> str:
    c, a, s, sh, d = res["canary"], res["ab"], res["srm"], res["shadow"], res["drift"]

    def pct(r: dict[str, Any]) -> str:
        return f"{r['rate']:.2%} (CP95 {r['cp95_low']:.2%}-{r['cp95_high']:.2%})"

    def each(field: str) -> str:
        return " / ".join(f"{c[f'engine.{k}'][field]:.2f}x" for k in ("same", "worse10", "worse30"))

    rows = [
        (
            "false rollbacks, candidate = prod, peeking every tick",
            "<= 1% (CP upper <= 1.5%)",
            pct(c["engine.same"]["rolled_back"]),
            pct(c["old.same"]["rolled_back"]),
        ),
        (
            "10%-worse candidate rolled back before promotion",
            ">= 80%",
            pct(c["engine.worse10"]["rolled_back"]),
            pct(c["old.worse10"]["rolled_back"]),
        ),
        (
            "30%-worse candidate rolled back before promotion",
            ">= 99%",
            pct(c["engine.worse30"]["rolled_back"]),
            pct(c["old.worse30"]["rolled_back"]),
        ),
        (
            "mean candidate users at the test's conclusion / fixed-horizon n",
            "<= 1.3x",
            each("asn_ratio") + " (same / 10% / 30% worse)",
            "",
        ),
        (
            "mean candidate users at the action / fixed-horizon n",
            "(reported)",
            each("action_sample_ratio"),
            "",
        ),
        ("A/B false promotion, candidate = prod", "<= 2.5%", pct(a["same"]["promoted"]), ""),
        (
            "A/B promoted at a lift of the MDE (1%) / 2x the MDE",
            "(reported)",
            f"{a['lift_mde']['promoted']['rate']:.1%} / {a['lift_2mde']['promoted']['rate']:.1%}",
            "",
        ),
        (
            "SRM false alarms, exact split, every tick of the horizon",
            "<= 0.1%",
            pct(s["exact_split"]),
            "",
        ),
        (
            "SRM: an observed 51/49 of 50/50 flagged by 50,000 users",
            "flagged",
            f"at {s['observed_51_49_first_flagged_at_users']:.0f} users",
            "",
        ),
        (
            "SRM: true 51% assignment flagged by 50k / 100k / 200k users",
            "(reported)",
            " / ".join(
                f"{s[f'split_51_49_by_{k}_users']['rate']:.1%}" for k in ("50k", "100k", "200k")
            ),
            "",
        ),
        (
            "divergence pairs per second (1M pairs, 8 slices)",
            ">= 1M",
            f"{sh['pairs_per_s']:.3g} ({sh['pairs_per_s_with_join']:.3g} with the id join)",
            "",
        ),
    ]
    t = res["engine_tick"]
    rows.append(
        (
            f"canary engine over {t['units']} live canaries, one tick",
            "(sensor tick <= 5 s)",
            f"{t['decide_batch_s'] * 1000:.1f} ms batched, {t['decide_each_s']:.2f} s one by one",
            "",
        )
    )
    if "fast_path_s" in d:
        rows.append(
            (
                "drift, 100k x 20: fast path / Evidently / scipy",
                "<= 0.5 s, >= 15x",
                f"{d['fast_path_s']:.3f} s / {d['evidently_s']:.1f} s / {d['scipy_s']:.2f} s "
                f"(Evidently {d['evidently_over_fast']:.0f}x, scipy "
                f"{d['scipy_over_fast']:.1f}x the fast path; verdicts agree: "
                f"{d['verdicts_agree']})",
                "",
            )
        )
    lines = [
        "| figure | target | engine | old rule |",
        "|---|---|---|---|",
        *(f"| {w} | {x} | {y} | {z} |" for w, x, y, z in rows),
        "",
        f"{c['sims_per_scenario']:,} seeded simulated canaries / A/Bs per scenario; produced by "
        f"`{res['command']}`. Machine: {_machine(res, backends=False)}{_load_avg(res)}; "
        f"{res['timestamp']}.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------- the README

BLOCKS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "registry": ("registry", render_registry),
    "serving": ("serving_plane", render_serving),
    "predlog": ("predlog", render_predlog),
    "plugin": ("plugin", render_plugin),
    "rollback": ("rollback", render_rollback),
    "recovery": ("recovery", render_recovery),
    "decisions": ("decisions", render_decisions),
}
"""Block name -> (results file stem, renderer)."""


def render(name: str, results: Path = RESULTS) -> str:
    if name not in BLOCKS:
        raise KeyError(f"unknown bench block {name!r}; known: {', '.join(sorted(BLOCKS))}")
    stem, fn = BLOCKS[name]
    return fn(load(stem, results))


def _body(name: str, results: Path) -> str:
    return f"\n{render(name, results)}\n\n"


def rewrite(text: str, results: Path = RESULTS) -> str:
    """`text` with every marked block's body regenerated; text outside blocks is untouched."""
    return _BLOCK.sub(lambda m: f"{m['open']}\n{_body(m['name'], results)}{m['close']}", text)


def stale_blocks(text: str, results: Path = RESULTS) -> list[str]:
    """Names of the marked blocks whose body differs from what the results files give."""
    return [m["name"] for m in _BLOCK.finditer(text) if m["body"] != _body(m["name"], results)]


def blocks_in(text: str) -> list[str]:
    return [m["name"] for m in _BLOCK.finditer(text)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report blocks that differ")
    ap.add_argument("--readme", type=Path, default=README)
    args = ap.parse_args(argv)
    text = args.readme.read_text()
    stale = stale_blocks(text)
    if args.check:
        for name in stale:
            print(f"error: README block {name!r} differs from bench/results; run bench/report.py")
        return 1 if stale else 0
    if stale:
        args.readme.write_text(rewrite(text))
    print(f"{args.readme.name}: {len(blocks_in(text))} block(s), {len(stale)} regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
