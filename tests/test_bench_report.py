"""The README's performance tables are generated from bench/results/*.json and agree with them.

Figures copied by hand drift from the runs they came from; `bench/report.py` regenerates every
marked block, and these tests fail when the README was not regenerated after a run.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402

RESULT_FILES = sorted((ROOT / "bench" / "results").glob("*.json"))


def test_readme_tables_agree_with_the_results_files() -> None:
    assert report.stale_blocks(report.README.read_text()) == []


def test_every_results_file_has_a_generated_table_in_the_readme() -> None:
    shown = {report.BLOCKS[name][0] for name in report.blocks_in(report.README.read_text())}
    assert {p.stem for p in RESULT_FILES} <= shown


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.name)
def test_every_results_file_records_its_machine(path: Path) -> None:
    machine = json.loads(path.read_text()).get("machine") or {}
    assert {f: machine.get(f) for f in report.MACHINE_FIELDS if not machine.get(f)} == {}


def test_a_changed_figure_makes_its_block_stale_and_rewrite_fixes_only_that(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results"
    shutil.copytree(ROOT / "bench" / "results", results)
    text = (
        "intro, left alone\n<!-- bench:recovery -->\n<!-- /bench:recovery -->\nmiddle\n"
        "<!-- bench:registry -->\nstale\n<!-- /bench:registry -->\nend\n"
    )
    fresh = report.rewrite(text, results)
    assert report.stale_blocks(fresh, results) == []
    assert fresh.startswith("intro, left alone\n") and "\nmiddle\n" in fresh
    assert fresh.endswith("end\n")
    data = json.loads((results / "recovery.json").read_text())
    data["kill_to_first_good_s"]["median"] = 99.0
    (results / "recovery.json").write_text(json.dumps(data))
    assert report.stale_blocks(fresh, results) == ["recovery"]
    again = report.rewrite(fresh, results)
    assert "99.00 / " in again and report.stale_blocks(again, results) == []
    assert again.split("<!-- bench:registry -->")[1] == fresh.split("<!-- bench:registry -->")[1]


def test_an_unknown_block_name_is_refused() -> None:
    with pytest.raises(KeyError, match="unknown bench block 'nope'"):
        report.render("nope")


def _bench_scripts() -> list[str]:
    make = (ROOT / "Makefile").read_text().split("\nbench:", 1)[1].split("\n\n", 1)[0]
    return [line.split()[-1] for line in make.splitlines() if "bench/" in line]


@pytest.mark.parametrize("script", _bench_scripts())
def test_every_bench_script_make_bench_runs_does_something_when_run(script: str) -> None:
    """`make bench` runs each script as `python bench/X.py`; without a main guard the script
    only defines functions and exits 0, so the run looks green and writes nothing."""
    source = (ROOT / script).read_text()
    assert 'if __name__ == "__main__":' in source, f"{script} has no main guard"
