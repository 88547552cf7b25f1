"""The run queue, as the embedded instance configures it: at most one action run per
(model, slice) at a time, while different (model, slice) pairs run side by side.

It asks the daemon's own dequeue selection, on a real instance built from the same
`dagster.yaml` that `make demo` writes.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

from demo.instance import write_instance_yaml
from modelops.actions import LOCK_TAG


def _run(instance: dg.DagsterInstance, run_id: str, lock: str, status: DagsterRunStatus) -> None:
    job = "modelops_canary_step"
    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("modelops"), "__repository__"), job
    )
    instance.add_run(
        DagsterRun(
            job_name=job,
            run_id=run_id,
            status=status,
            tags={LOCK_TAG: lock},
            remote_job_origin=origin,
        )
    )


def _dequeued(instance: dg.DagsterInstance) -> list[str]:
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    runs = daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)  # noqa: SLF001
    return [r.run_id for r in runs]


def test_one_action_run_per_model_slice(tmp_path: Path) -> None:
    home = write_instance_yaml(tmp_path / "home")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        _run(instance, "a1", "ctr/global", DagsterRunStatus.QUEUED)
        _run(instance, "a2", "ctr/global", DagsterRunStatus.QUEUED)
        _run(instance, "b1", "other/global", DagsterRunStatus.QUEUED)
        _run(instance, "c1", "ctr/us", DagsterRunStatus.QUEUED)
        # one per lock value, oldest first; other models and slices are not held back
        assert _dequeued(instance) == ["a1", "b1", "c1"]

    with dg.DagsterInstance.from_config(str(write_instance_yaml(tmp_path / "h2"))) as instance:
        _run(instance, "x1", "m/global", DagsterRunStatus.STARTED)
        _run(instance, "x2", "m/global", DagsterRunStatus.QUEUED)
        _run(instance, "y1", "n/global", DagsterRunStatus.QUEUED)
        # while x1 runs, its (model, slice) waits
        assert _dequeued(instance) == ["y1"]
