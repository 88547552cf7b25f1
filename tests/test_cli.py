"""The CLI's contract with users: one `error:` line and exit 1 for a mistake, exit 2 for
usage, never a traceback, and nothing half-written after a refusal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modelops.cli import main
from modelops.registry import Registry

SPEC = """\
model_id: ctr
owner_team: ads
tier: L1
rollback_class: STATELESS
model_class: dnn
framework: onnx
slices: [global, eu]
policy: {primary_metric: ctr}
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry_url: str) -> dict[str, Path]:
    """A registry with one model, two datasets and a weights file, on both backends."""
    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODELOPS_REGISTRY_URL", registry_url)
    (tmp_path / "ctr.yaml").write_text(SPEC)
    (tmp_path / "w1.onnx").write_bytes(b"weights-1")
    (tmp_path / "w2.onnx").write_bytes(b"weights-2")
    (tmp_path / "data.bin").write_bytes(b"rows")
    assert run(f"dataset register clicks --version 1 --uri {tmp_path}/data.bin")[0] == 0
    assert run("dataset register ev --version 1 --uri s3://b/ev --kind eval_set")[0] == 0
    assert run(f"model create {tmp_path}/ctr.yaml")[0] == 0
    return {"dir": tmp_path}


def run(cmd: str, capsys: pytest.CaptureFixture[str] | None = None) -> tuple[int, str, str]:
    import contextlib
    import io
    import shlex

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(shlex.split(cmd))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def counts() -> dict[str, int]:
    with Registry(os.environ["MODELOPS_REGISTRY_URL"]) as reg:
        return reg.row_counts()


def refused(cmd: str, *needles: str) -> str:
    """Run a command that must be refused: exit 1, one error line, no rows written."""
    before = counts()
    code, out, err = run(cmd)
    assert code == 1, (cmd, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert counts() == before, "a refused command left rows behind"
    return lines[0]


def test_register_idempotent_and_show_json(env: dict[str, Path]) -> None:
    d = env["dir"]
    reg = f"version register ctr --weights {d}/w1.onnx --training-data clicks@1 --eval-set ev@1"
    assert run(reg)[0] == 0
    before = counts()
    code, out, _ = run(reg)
    assert code == 0 and "ctr@1" in out
    assert counts() == before
    code, out, _ = run("show ctr@1 --json")
    data = json.loads(out)
    assert data["version"] == 1 and data["state"] == {"global": "REGISTERED", "eu": "REGISTERED"}
    assert len(data["weights_hash"]) == 64


def test_user_mistakes_are_one_line(env: dict[str, Path]) -> None:
    d = env["dir"]
    reg = f"version register ctr --weights {d}/w1.onnx --training-data clicks@1 --eval-set ev@1"
    assert run(reg)[0] == 0
    refused("show nope", "unknown model 'nope'")
    refused("show ctr@9", "unknown version ctr@9", "versions 1..1")
    refused("transition ctr 1 FLYING --actor a", "unknown state 'FLYING'", "OFFLINE_PASSED")
    refused("transition ctr 1 PROMOTED --actor a", "REGISTERED -> PROMOTED", "legal next states")
    refused(
        "transition ctr 1 OFFLINE_PASSED --slice mars --actor a",
        "unknown slice 'mars'",
        "global, eu",
    )
    refused("transition ctr 1 ARCHIVED --expect FAILED --actor a", "conflict", "REGISTERED")
    refused("dataset delete clicks --version 1 --actor a", "pinned", "ctr@1")
    refused(
        f"version register ctr --weights {d}/w2.onnx --training-data clicks@7 --eval-set ev@1",
        "unknown dataset clicks@7",
        "known versions: 1",
    )
    refused(
        f"version register ctr --weights {d}/w2.onnx --training-data clicks --eval-set ev@1",
        "NAME@VERSION",
    )
    refused(
        f"version register ctr --weights {d}/w2.onnx --training-data clicks@1 --eval-set ev@1 "
        f"--hash {'0' * 64}",
        "sha256",
        "not the expected",
    )
    refused(
        f"version register ctr --weights {d}/w2.onnx --training-data ev@1 --eval-set ev@1",
        "must be a dataset",
    )
    refused(
        f"dataset register clicks --version 2 --uri {d}/data.bin --hash {'1' * 64}",
        "not the stated",
    )
    (d / "bad.yaml").write_text(SPEC.replace("tier: L1", "tier: L9"))
    refused(f"model create {d}/bad.yaml", "bad.yaml", "tier", "L0, L1, L2, L3")
    (d / "broken.yaml").write_text("model_id: [unclosed\n")
    refused(f"model create {d}/broken.yaml", "broken.yaml", "line")
    (d / "extra.yaml").write_text(SPEC + "colour: blue\n")
    refused(f"model create {d}/extra.yaml", "colour", "unknown field")
    refused("approve ctr 1 --actor ghost", "unknown actor 'ghost'", "actor add")


def test_usage_errors_exit_2(env: dict[str, Path]) -> None:
    code, _, err = run("transition ctr 1")
    assert code == 2 and "usage:" in err
    code, _, err = run("dependents --feature a --model b@1")
    assert code == 2


def test_desired_state_export_is_yaml(env: dict[str, Path]) -> None:
    d = env["dir"]
    assert (
        run(f"version register ctr --weights {d}/w1.onnx --training-data clicks@1 --eval-set ev@1")[
            0
        ]
        == 0
    )
    assert run("gate ctr 1 --passed --actor gates")[0] == 0
    assert run("transition ctr 1 PROMOTED --actor a --slice eu")[0] == 0
    code, out, _ = run("desired-state export")
    assert code == 0
    doc = yaml.safe_load(out)
    by_slice = {s["slice"]: s for s in doc["desired_states"]}
    assert by_slice["eu"]["prod_version"] == 1 and by_slice["eu"]["generation"] == 1
    assert by_slice["global"]["prod_version"] is None


def test_audit_commands(env: dict[str, Path]) -> None:
    code, out, _ = run("audit verify")
    assert code == 0 and "audit ok" in out
    code, out, _ = run("audit ctr --json")
    entries = json.loads(out)
    assert [e["action"] for e in entries] == ["register_model"]
    code, out, _ = run("audit - --json")
    assert [e["action"] for e in json.loads(out)] == ["register_dataset", "register_dataset"]


def test_real_process_has_no_traceback(tmp_path: Path) -> None:
    """The installed console script, in its own process, against a fresh embedded home."""
    exe = Path(sys.executable).with_name("modelops")
    env = {**os.environ, "MODELOPS_HOME": str(tmp_path)}
    env.pop("MODELOPS_REGISTRY_URL", None)
    p = subprocess.run(
        [str(exe), "show", "ghost"], capture_output=True, text=True, env=env, timeout=60
    )
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        "error: unknown model 'ghost'; create it first with `modelops model create SPEC.yaml`"
    ]
    assert (tmp_path / "registry.db").exists()  # the embedded default migrated itself
    p = subprocess.run(
        [str(exe), "--registry", "mysql://x/y", "show", "a"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert p.returncode == 1 and "allowed: sqlite:///PATH" in p.stderr
    p = subprocess.run(
        [str(exe), "--registry", "postgresql://nobody@127.0.0.1:1/x", "show", "a"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert p.returncode == 1 and p.stderr.startswith("error: cannot use the registry database")
    assert "Traceback" not in p.stderr


def test_contract_check(env: dict[str, Path]) -> None:
    d = env["dir"]
    (d / "c.yaml").write_text(
        "name: f\nversion: 1\nfeatures:\n"
        "  - {name: a, dtype: int32}\n  - {name: b, dtype: string}\n"
    )
    assert run(f"contract register {d}/c.yaml")[0] == 0
    assert (
        run(
            f"version register ctr --weights {d}/w1.onnx --training-data clicks@1 "
            "--eval-set ev@1 --contract f@1"
        )[0]
        == 0
    )
    schemas = d / "schemas"
    schemas.mkdir()
    (schemas / "v1.yaml").write_text(
        "features:\n  - {name: a, dtype: int32}\n  - {name: b, dtype: string}\n"
    )
    code, out, _ = run(f"contract check ctr@1 --schemas {schemas} --json")
    assert code == 0 and json.loads(out)["status"] == "OK"
    (schemas / "v2.yaml").write_text("features:\n  - {name: a, dtype: float32}\n")
    code, out, err = run(f"contract check ctr@1 --schemas {schemas}")
    assert code == 1
    assert "DROPPED" in out and "DTYPE_INCOMPATIBLE" in out
    assert err.strip().splitlines() == [
        "error: ctr@1 cannot be served on feature schema v2: 2 breaking change(s)"
    ]
