"""`modelops why`: the diagnosis tree on a real registry with two versions and a real
prediction log, step by step, and honest where the data is missing."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from test_registry_kit import contract, datasets, teams, version
from test_registry_kit import spec as kit_spec

from modelops.cli import main
from modelops.errors import SpecError
from modelops.registry import Registry
from modelops.spec import State, Tier
from serving.predlog.reader import PredictionLogReader
from serving.predlog.writer import PredictionLog
from serving.records import PredictionRecord
from serving.why_cli import _reference, observations, parse_since

M = "ranker"
ROWS = 2_000


def log_window(
    url: str, start: datetime, end: datetime, *, v: int, shift: float, seed: int
) -> None:
    """ROWS prod requests spread over [start, end): clicks_7d shifts by `shift` on eu only,
    country never; the score follows clicks_7d."""
    rng = np.random.default_rng(seed)
    span = (end - start).total_seconds()
    with PredictionLog(url, auto_upgrade=True) as log:
        for i in range(ROWS):
            seg = "eu" if i % 2 else "us"
            x = float(rng.normal(shift if seg == "eu" else 0.0, 1.0))
            log.submit(
                PredictionRecord(
                    request_id=f"{seed}-{i}",
                    ts=start.timestamp() + span * i / ROWS,
                    model_id=M,
                    version=v,
                    arm="prod",
                    slice="global",
                    segment=seg,
                    latency_ms=3.0,
                    outputs={"score": [1 / (1 + np.exp(-x))]},
                    features={"clicks_7d": x, "country": "de" if i % 3 else "fr"},
                )
            )
        assert log.flush()


@pytest.fixture
def fleet(registry: Registry) -> Registry:
    """ranker (L0) with v1 prod on contract @1 and v2 on contract @2 promoted two days later;
    scorer (L2) and audit (L1) read clicks_7d too."""
    teams(registry)
    datasets(registry)
    c1 = registry.register_contract(contract("ranker.features", 1, "clicks_7d", "country"))
    c2 = registry.register_contract(contract("ranker.features", 2, "clicks_7d", "country", "age"))
    registry.create_model(kit_spec(M, tier=Tier.L0))
    for other, tier in (("scorer", Tier.L2), ("audit", Tier.L1)):
        registry.create_model(kit_spec(other, tier=tier))
        version(registry, other, contract_ref=c1)
    v1 = version(registry, M, contract_ref=c1).version
    registry.transition(M, v1, State.PROMOTED, actor="ops")
    registry.clock.advance(days=2)  # type: ignore[attr-defined]
    v2 = version(registry, M, contract_ref=c2).version
    registry.transition(M, v2, State.PROMOTED, actor="ops", reason="retrained")
    registry.clock.advance(hours=1)  # type: ignore[attr-defined]
    return registry


def test_why_walks_the_tree_on_two_versions(fleet: Registry, tmp_path: Path) -> None:
    now = fleet.clock() + timedelta(seconds=1)
    since = now - timedelta(days=1)
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    log_window(url, since - timedelta(days=1), since, v=1, shift=0.0, seed=1)
    log_window(url, since, now, v=2, shift=1.0, seed=2)
    with PredictionLogReader(url) as reader:
        obs = observations(reader, M, "global", since, now)
    assert (obs.rows_current, obs.rows_before) == (ROWS, ROWS)
    d = fleet.diagnose(M, since=since, observations=obs)
    assert (d.prod_then, d.prod_now) == (1, 2)
    s = {x.step: x for x in d.steps}
    assert [x.step for x in d.steps] == [1, 2, 3, 4, 5, 6]
    # 1. the weights changed with the promotion inside the window.
    assert s[1].changed and s[1].answer.startswith("yes: prod was v1")
    # 2. clicks_7d drifted, on eu only; country did not.
    assert s[2].changed and s[2].details["drifted"] == ["clicks_7d"]
    assert s[2].details["drifted_by_slice"] == {"eu": ["clicks_7d"]}
    assert "the window before since (no training reference stored)" in s[2].answer
    # 3. its dependents through lineage, with the L2+ count.
    assert s[3].details["features"]["clicks_7d"] == {
        "models": ["audit", "ranker", "scorer"],
        "l2_plus": ["scorer"],
    }
    assert "clicks_7d: 3 model(s), 1 at L2 or above (scorer)" in s[3].answer
    # 4. the score moved with it.
    assert s[4].changed and s[4].answer.startswith("yes: PSI")
    assert s[4].details["mean_now"] > s[4].details["mean_before"]
    # 5. the contract changed from @1 to @2.
    assert s[5].answer == "yes: contract ranker.features@1 -> ranker.features@2"
    # 6. the audit log since: the promotion of v2 and what it deprecated.
    assert s[6].changed and "transition@2 by ops (OFFLINE_PASSED -> PROMOTED): retrained" in (
        s[6].answer
    )


def test_why_compares_with_the_training_reference_when_one_is_stored(
    fleet: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from modelops.cli.cmd_support import artifact_store
    from modelops.evaluation.drift import build_reference

    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELOPS_ARTIFACTS", raising=False)
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 1.0, 5_000)
    train = {"clicks_7d": x, "country": np.array(["de", "de", "fr"] * 1666 + ["de"] * 2)}
    ref = build_reference(train, prediction=1 / (1 + np.exp(-x)))
    digest = artifact_store(None).put_bytes(ref.model_dump_json().encode()).sha256
    assert digest == ref.content_hash()
    loaded, note = _reference(SimpleNamespace(version=2, drift_reference_hash=digest))
    assert loaded == ref and note == ""
    gone, note = _reference(SimpleNamespace(version=2, drift_reference_hash="0" * 64))
    assert gone is None and "v2's training reference is unreadable" in note
    _, note = _reference(SimpleNamespace(version=2))
    assert note == "v2 has no training reference"

    now = fleet.clock() + timedelta(seconds=1)
    since = now - timedelta(days=1)
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    log_window(url, since, now, v=2, shift=1.0, seed=5)  # nothing logged before the window
    with PredictionLogReader(url) as reader:
        obs = observations(reader, M, "global", since, now)
    assert obs.rows_before == 0
    d = fleet.diagnose(M, since=since, observations=obs, reference=loaded)
    drift, out = d.steps[1], d.steps[3]
    assert (
        drift.details["baseline"] == out.details["baseline"] == "the version's training reference"
    )
    assert drift.details["drifted_by_slice"] == {"eu": ["clicks_7d"]}
    assert out.changed and "shifted on slices eu" in out.answer
    # Without the reference and with no earlier window there is nothing to compare with.
    d = fleet.diagnose(M, since=since, observations=obs)
    assert d.steps[1].changed is None and "no training reference and no requests before" in (
        d.steps[1].answer
    )


def test_why_says_what_it_cannot_tell(fleet: Registry) -> None:
    now = fleet.clock()
    d = fleet.diagnose(M, since=now - timedelta(hours=1))
    s = {x.step: x for x in d.steps}
    assert (d.prod_then, d.prod_now) == (2, 2)
    assert s[1].changed is False and s[1].answer.startswith("no: v2 was prod then and is now")
    assert s[2].changed is None and s[2].answer.startswith("cannot tell: no requests logged")
    assert s[3].changed is None and s[4].changed is None
    assert s[5].changed is False
    assert s[6].changed is False and s[6].answer == "0 entries"


def test_why_cli_prints_each_step_and_json(
    fleet: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path / "home"))
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    now = datetime.now(UTC)
    log_window(url, now - timedelta(hours=48), now - timedelta(hours=24), v=2, shift=0.0, seed=3)
    log_window(url, now - timedelta(hours=24), now, v=2, shift=1.0, seed=4)
    base = f"--registry {fleet.url} why {M} --predlog {url}"
    code, out, err = run(base)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("why is ranker (slice global) different since")
    questions = [ln for ln in lines if ln[2:4] in {f"{i}." for i in range(1, 7)}]
    assert len(questions) == 6 and questions[1].startswith("! 2. Which features drifted")
    code, out, _ = run(base + " --json --since 24h")
    d = json.loads(out)
    assert d["steps"][1]["details"]["drifted"] == ["clicks_7d"]
    code, _, err = run(base + " --since yesterday")
    assert code == 1 and err.count("\n") == 1 and "allowed: an ISO time" in err
    code, _, err = run(f"--registry {fleet.url} why {M} --slice nowhere --predlog {url}")
    assert code == 1 and "slice" in err and err.count("\n") == 1


def test_parse_since() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_since("24h", now) == now - timedelta(hours=24)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-02-28T12:00", now) == datetime(2026, 2, 28, 12, tzinfo=UTC)
    for bad in ("0h", "tomorrow", "2026-03-02"):
        with pytest.raises(SpecError):
            parse_since(bad, now)


def run(cmd: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(shlex.split(cmd))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()
