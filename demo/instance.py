"""The embedded Dagster instance: one `dagster.yaml` under $MODELOPS_HOME/dagster.

Storage is SQLite beside the registry, so one directory holds the whole demo and
`dagster dev` on it afterwards shows every run, tick and materialization. The run queue
carries the same limits production uses (deploy/dagster-postgres.yaml): at most one action
run per (model, slice), through the `modelops/lock` tag. Daemon loops are tuned for
compressed time: the queue is drained every second and sensors tick on threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["LOCK_LIMITS", "instance_config", "write_instance_yaml", "dagster_home"]

LOCK_LIMITS: dict[str, Any] = {
    "max_concurrent_runs": 4,
    "tag_concurrency_limits": [
        {"key": "modelops/lock", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ],
}


def dagster_home(modelops_home: Path) -> Path:
    """DAGSTER_HOME for an embedded home: always `<home>/dagster`."""
    return Path(modelops_home).resolve() / "dagster"


def instance_config(dagster_home_dir: Path) -> dict[str, Any]:
    """The instance config as a dict (validated by Dagster when the instance loads)."""
    # An absolute path: tools that open the instance by directory need no environment.
    base = str(Path(dagster_home_dir).resolve())
    return {
        "storage": {"sqlite": {"base_dir": base}},
        "local_artifact_storage": {
            "module": "dagster._core.storage.root",
            "class": "LocalArtifactStorage",
            "config": {"base_dir": base},
        },
        "concurrency": {"runs": LOCK_LIMITS},
        # The queue is the default coordinator once `concurrency` is set; a one-second
        # dequeue keeps an action run's start well inside the sensor interval.
        "run_queue": {
            "dequeue_interval_seconds": 1,
            "dequeue_use_threads": True,
            "dequeue_num_workers": 2,
        },
        "sensors": {"use_threads": True, "num_workers": 4, "num_submit_workers": 2},
        "schedules": {"use_threads": True, "num_workers": 2},
        "run_monitoring": {"enabled": False},
        "telemetry": {"enabled": False},
        "nux": {"enabled": False},
    }


def write_instance_yaml(modelops_home: Path) -> Path:
    """Write `<home>/dagster/dagster.yaml` and return DAGSTER_HOME."""
    home = dagster_home(modelops_home)
    home.mkdir(parents=True, exist_ok=True)
    text = "# Written by demo.instance: the embedded Dagster instance of this home.\n"
    text += yaml.safe_dump(instance_config(home), sort_keys=False)
    (home / "dagster.yaml").write_text(text)
    return home
