"""The production instance config (deploy/dagster-postgres.yaml) runs a job against the CI
PostgreSQL server, and the run lands in PostgreSQL's run storage."""

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get(
    "MODELOPS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def dagster_pg_db() -> Iterator[str]:
    """A fresh database for Dagster's storage; dropped afterwards."""
    import psycopg

    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server"
        if os.environ.get("MODELOPS_REQUIRE_PG"):
            pytest.fail(f"PostgreSQL is required (MODELOPS_REQUIRE_PG) but unreachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    name = f"modelops_dagster_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@dg.op
def _double(context: dg.OpExecutionContext) -> int:
    context.log.info("running on the PostgreSQL instance")
    return 21 * 2


@dg.job(tags={"modelops/lock": "m/global"})
def _pg_smoke() -> None:
    _double()


def test_postgres_instance_runs_a_job(
    dagster_pg_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    info = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_URL)
    monkeypatch.setenv("DAGSTER_PG_USERNAME", str(info.get("user", "postgres")))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", str(info.get("password", "")))
    monkeypatch.setenv("DAGSTER_PG_HOST", str(info.get("host", "127.0.0.1")))
    monkeypatch.setenv("DAGSTER_PG_PORT", str(info.get("port", "5432")))
    monkeypatch.setenv("DAGSTER_PG_DB", dagster_pg_db)
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
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{dagster_pg_db}"
    with psycopg.connect(url) as conn:
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
