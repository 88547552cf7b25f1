"""The production instance config (deploy/dagster-postgres.yaml) runs a job against the CI
PostgreSQL server, and the run lands in PostgreSQL's run storage."""

import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@dg.op
def _double(context: dg.OpExecutionContext) -> int:
    context.log.info("running on the PostgreSQL instance")
    return 21 * 2


@dg.job(tags={"modelops/lock": "m/global"})
def _pg_smoke() -> None:
    _double()


def test_postgres_instance_runs_a_job(
    empty_pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`empty_pg_url` (tests/conftest.py) is a fresh database; without a server it skips, or
    fails under MODELOPS_REQUIRE_PG as in CI."""
    import psycopg

    info = psycopg.conninfo.conninfo_to_dict(empty_pg_url)
    monkeypatch.setenv("DAGSTER_PG_USERNAME", str(info.get("user", "postgres")))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", str(info.get("password", "")))
    monkeypatch.setenv("DAGSTER_PG_HOST", str(info.get("host", "127.0.0.1")))
    monkeypatch.setenv("DAGSTER_PG_PORT", str(info.get("port", "5432")))
    monkeypatch.setenv("DAGSTER_PG_DB", str(info["dbname"]))
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster-postgres.yaml", home / "dagster.yaml")

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        # The file's queue limits are what Dagster applies.
        limits = instance.get_concurrency_config().run_queue_config
        assert limits is not None
        assert limits.max_concurrent_runs == 4
        assert limits.tag_concurrency_limits == [
            {"key": "modelops/lock", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        ]
        result = _pg_smoke.execute_in_process(instance=instance)
        assert result.success
        assert result.output_for_node("_double") == 42
        run_id = result.run_id
        assert instance.get_run_by_id(run_id) is not None
    finally:
        instance.dispose()

    # The run and its events are rows in PostgreSQL, not in a local file.
    assert not list(home.rglob("*.db"))
    with psycopg.connect(empty_pg_url) as conn:
        row = conn.execute(
            "SELECT pipeline_name, status FROM runs WHERE run_id = %s", (run_id,)
        ).fetchone()
        assert row == ("_pg_smoke", "SUCCESS")
        (events,) = conn.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s", (run_id,)
        ).fetchone()
        assert events > 3
    # The example for Kubernetes parses as the same storage plus a run launcher block.
    k8s = yaml.safe_load((ROOT / "deploy" / "dagster-k8s.yaml").read_text())
    assert k8s["run_launcher"]["class"] == "K8sRunLauncher"
    assert (
        k8s["storage"]
        == yaml.safe_load((ROOT / "deploy" / "dagster-postgres.yaml").read_text())["storage"]
    )
