"""The request's segment (`x-modelops-segment`) reaches the prediction log, so the
protected-slice harm tests see live traffic: over real HTTP (uvicorn on a socket, a KServe
stand-in backend on another), each logged record carries its request's segment, and the
window's per-segment per-user sums equal a direct computation from what was sent.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from gateway_fixtures import TOKEN, ServerThread, json_server, make_app, table

from serving.predlog import PredictionLog, PredictionLogReader
from serving.routing import BackendKind, Endpoint


def _kserve_standin(method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """Answers any KServe v2 infer with OUTPUT0 = the input doubled."""
    req = json.loads(body)
    data = [2 * x for x in req["inputs"][0]["data"]]
    out = {
        "model_name": path.split("/")[3],
        "outputs": [{"name": "OUTPUT0", "shape": [len(data)], "datatype": "FP32", "data": data}],
    }
    return 200, {"content-type": "application/json"}, json.dumps(out).encode()


def _ep(url: str, version: int) -> Endpoint:
    return Endpoint(
        version=version, backend=BackendKind.triton, url=url, backend_model=f"double_v{version}"
    )


def _direct(clicks: dict[tuple[str, str], list[int]]) -> dict[str, float]:
    """The six per-user sums of clicks per request, from the raw per-user lists."""
    x = [float(sum(v)) for v in clicks.values()]
    y = [float(len(v)) for v in clicks.values()]
    return {
        "users": len(x),
        "sum_x": sum(x),
        "sum_y": sum(y),
        "sum_xx": sum(a * a for a in x),
        "sum_yy": sum(b * b for b in y),
        "sum_xy": sum(a * b for a, b in zip(x, y, strict=True)),
    }


@pytest.mark.timeout(120)
def test_the_logged_record_carries_the_segment_and_the_window_sums_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELOPS_USER_SALT", "segment-test-salt")
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    log = PredictionLog(url)
    # (arm, segment) -> per user -> clicks of each of the user's requests
    sent: dict[tuple[str, str], dict[tuple[str, str], list[int]]] = defaultdict(dict)
    arm_of: dict[str, str] = {}
    unsegmented = 0
    try:
        with json_server(_kserve_standin) as backend:
            t = table("ctr", _ep(backend, 1), canary=(_ep(backend, 2), 50.0))
            with ServerThread(make_app(sink=log, tables=[t])) as gw:
                with httpx.Client(
                    base_url=gw.http_url, headers={"authorization": f"Bearer {TOKEN}"}
                ) as c:
                    body = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32",
                                        "data": [1.0]}]}  # fmt: skip
                    for i in range(120):
                        user = f"u{i % 30}"
                        seg = ("de", "us", "")[i % 3]  # "" sends no segment at all
                        headers = {"x-user-id": user, "x-request-id": f"r{i}"}
                        if seg:
                            headers["x-modelops-segment"] = seg
                        r = c.post("/v2/models/ctr/infer", json=body, headers=headers)
                        assert r.status_code == 200, r.text
                        arm = r.headers["x-modelops-arm"]
                        assert arm_of.setdefault(user, arm) == arm  # sticky per user
                        click = (i * 7) % 5 == 0
                        o = c.post(
                            "/v1/outcomes",
                            json={"request_id": f"r{i}", "name": "click", "value": int(click)},
                        )
                        assert o.status_code == 202, o.text
                        if seg:
                            sent[(arm, seg)].setdefault((user, seg), []).append(int(click))
                        else:
                            unsegmented += 1
                    # A segment that is not a short token is refused, naming the rule, and
                    # nothing is logged for it.
                    for bad in ("x" * 65, "de us", "ü".encode()):
                        r = c.post(
                            "/v2/models/ctr/infer",
                            json=body,
                            headers={"x-user-id": "u1", "x-modelops-segment": bad},
                        )
                        assert r.status_code == 400
                        err = r.json()["error"]
                        assert "x-modelops-segment must be 1-64 characters" in err, err
        assert log.flush(30)
    finally:
        log.close()
    assert {a for a in arm_of.values()} == {"prod", "canary"}
    with PredictionLogReader(url) as reader:
        rows = reader.records("ctr", None)
        windows = {w.arm: w for w in reader.window("ctr", since_ts=0, by_segment=True)}
    segs = {r.request_id: r.segment for r in rows}
    assert segs == {f"r{i}": ("de", "us", None)[i % 3] for i in range(120)}
    assert all(r.user_hash is not None for r in rows)
    assert sum(w.requests for w in windows.values()) == 120  # the refusals logged nothing
    for arm, w in windows.items():
        assert set(w.segments) == {s for (a, s) in sent if a == arm}
        for seg, sums in w.segments.items():
            assert sums["click"].model_dump() == pytest.approx(_direct(sent[(arm, seg)]))
    assert unsegmented == 40
