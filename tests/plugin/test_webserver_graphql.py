"""The code location through a real `dagster-webserver`: its GraphQL API lists every asset,
check, sensor, schedule and job the fleet declares, and the asset graph renders in a
headless browser (the screenshot is kept under tests/artifacts/)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from demo.instance import write_instance_yaml
from demo.procs import REPO_ROOT, Stack
from modelops.fleet import Fleet, load_fleet
from modelops.spec import Tier

pytestmark = [pytest.mark.xdist_group("dagster_procs"), pytest.mark.timeout(180)]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
GATES = (
    "gate_no_regression",
    "gate_no_slice_regression",
    "gate_fairness",
    "gate_latency_memory_slo",
)
SENSORS = (
    "modelops_candidate_sensor",
    "modelops_online_metrics_sensor",
    "modelops_heightened_monitoring_sensor",
    "modelops_reconcile_sensor",
    "modelops_rollback_failure_sensor",
)
ACTION_JOBS = (
    "modelops_transition",
    "modelops_start_shadow",
    "modelops_canary_step",
    "modelops_start_ab",
    "modelops_promote",
    "modelops_rollback",
    "modelops_reconcile",
)

QUERY = """
{
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        jobs { name }
        sensors { name }
        schedules { name }
        assetNodes {
          assetKey { path }
          assetChecksOrError {
            __typename
            ... on AssetChecks { checks { name } }
          }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A webserver on the real workspace.yaml, with DAGSTER_HOME in a fresh directory."""
    home = tmp_path_factory.mktemp("webserver-home")
    write_instance_yaml(home)
    stack = Stack(home, fleet_file=REPO_ROOT / "demo" / "fleet.yaml")
    try:
        stack.start_webserver(timeout=120)
        yield stack
    finally:
        stack.stop()


def _expected(fleet: Fleet) -> dict[str, set]:  # type: ignore[type-arg]
    assets = {("datasets", d.name) for d in fleet.datasets if d.kind == "dataset"}
    assets |= {("eval_sets", d.name) for d in fleet.datasets if d.kind == "eval_set"}
    assets |= {("features", f.name) for c in fleet.feature_contracts for f in c.features}
    checks = set()
    for m in fleet.models:
        assets |= {("models", m.model_id), ("eval_reports", m.model_id)}
        checks |= {(("models", m.model_id), g) for g in GATES}
    jobs = set(ACTION_JOBS) | {f"refresh_{m.model_id}" for m in fleet.models}
    schedules = {f"refresh_{m.model_id}_schedule" for m in fleet.models if m.refresh_cron}
    return {
        "assets": assets,
        "checks": checks,
        "jobs": jobs,
        "sensors": set(SENSORS),
        "schedules": schedules,
    }


def test_graphql_lists_the_whole_location(webserver: Stack) -> None:
    fleet = load_fleet(REPO_ROOT / "demo" / "fleet.yaml")
    r = httpx.post(
        f"http://127.0.0.1:{webserver.webserver_port}/graphql", json={"query": QUERY}, timeout=60
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert "errors" not in body, body["errors"]
    repos = body["data"]["repositoriesOrError"]
    assert repos["__typename"] == "RepositoryConnection", repos
    (repo,) = [n for n in repos["nodes"] if n["location"]["name"] == "modelops"]

    got_assets = {tuple(a["assetKey"]["path"]) for a in repo["assetNodes"]}
    got_checks = {
        (tuple(a["assetKey"]["path"]), c["name"])
        for a in repo["assetNodes"]
        if a["assetChecksOrError"]["__typename"] == "AssetChecks"
        for c in a["assetChecksOrError"]["checks"]
    }
    got = {
        "assets": got_assets,
        "checks": got_checks,
        "jobs": {j["name"] for j in repo["jobs"]},
        "sensors": {s["name"] for s in repo["sensors"]},
        "schedules": {s["name"] for s in repo["schedules"]},
    }
    for kind, want in _expected(fleet).items():
        missing = want - got[kind]
        assert not missing, f"{kind} missing from the GraphQL API: {sorted(missing)}"
    # The L3 model has no refresh schedule: humans decide when it changes.
    l3 = [m.model_id for m in fleet.models if m.spec.tier is Tier.L3 and not m.refresh_cron]
    assert not {f"refresh_{m}_schedule" for m in l3} & got["schedules"]


GROUPS_QUERY = """
{
  assetNodes {
    assetKey { path }
    groupName
  }
}
"""


def _graphql_assets(stack: Stack) -> dict[str, set[str]]:
    """What the webserver says exists: asset group -> the names its graph nodes carry."""
    r = httpx.post(
        f"http://127.0.0.1:{stack.webserver_port}/graphql",
        json={"query": GROUPS_QUERY},
        timeout=60,
    )
    assert r.status_code == 200 and "errors" not in r.json(), r.text
    groups: dict[str, set[str]] = {}
    for node in r.json()["data"]["assetNodes"]:
        groups.setdefault(node["groupName"], set()).add(node["assetKey"]["path"][-1])
    return groups


class _GraphNodes(HTMLParser):
    """The labels of the nodes an SVG graph drew: the first text inside each foreignObject
    (the UI draws every asset or group node, and only those, as a foreignObject)."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: list[str] = []
        self._depth = 0
        self._need_label = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "foreignobject":
            self._depth += 1
            self._need_label = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "foreignobject":
            self._depth -= 1
            self._need_label = False

    def handle_data(self, data: str) -> None:
        if self._depth and self._need_label and data.strip():
            self.labels.append(data.strip())
            self._need_label = False


def _graph_labels(dom: str) -> list[str]:
    parser = _GraphNodes()
    parser.feed(dom)
    return parser.labels


def _chromium(url: str, profile: Path, window: str, screenshot: Path | None = None) -> str:
    """Load `url` headless, let the app render, and return the DOM it built (the screenshot,
    when asked for, is of the same page load)."""
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.fail(f"chromium is required for the asset-graph screenshot; not found at {CHROMIUM}")
    binary = str(CHROMIUM) if CHROMIUM.exists() else str(shutil.which("chromium"))
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={window}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        *([f"--screenshot={screenshot}"] if screenshot else []),
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"chromium exit {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_asset_graph_screenshot(webserver: Stack, tmp_path: Path) -> None:
    """The global lineage page draws one node per asset group GraphQL reports, and nothing
    else: an error page, an empty graph or a half-loaded app draws none."""
    groups = _graphql_assets(webserver)
    assert {"datasets", "features", "models", "eval_reports"} <= groups.keys(), groups
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "asset_graph.png"
    shot.unlink(missing_ok=True)
    dom = _chromium(
        f"http://127.0.0.1:{webserver.webserver_port}/asset-groups",
        tmp_path / "profile-global",
        "1600,1000",
        screenshot=shot,
    )
    assert shot.exists(), "no screenshot"
    assert _png_size(shot) == (1600, 1000)
    # Painted, not blank: a blank 1600x1000 PNG compresses to a few KB.
    assert shot.stat().st_size > 30_000, (
        f"screenshot is suspiciously small ({shot.stat().st_size} B)"
    )
    labels = _graph_labels(dom)
    assert sorted(labels) == sorted(groups), f"graph nodes {labels}, GraphQL groups {groups}"


def test_asset_group_graph_draws_every_model(webserver: Stack, tmp_path: Path) -> None:
    """One group's lineage draws each of its assets by name (a window tall enough that the
    graph, which only draws what is in view, has every node in view), and its neighbours
    are assets GraphQL knows too."""
    groups = _graphql_assets(webserver)
    known = set().union(*groups.values())
    dom = _chromium(
        f"http://127.0.0.1:{webserver.webserver_port}"
        "/locations/__repository__@modelops/asset-groups/models/lineage",
        tmp_path / "profile-models",
        "1600,4000",
    )
    labels = set(_graph_labels(dom))
    assert groups["models"] <= labels, f"models not drawn: {sorted(groups['models'] - labels)}"
    assert labels <= known, f"nodes GraphQL does not know: {sorted(labels - known)}"
