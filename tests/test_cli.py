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
    assert run("team add ads")[0] == 0
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
    refused("approve ctr 1 --actor ghost", "is unsigned", "--key FILE")


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
    assert [e["action"] for e in json.loads(out)] == [
        "register_dataset",
        "register_dataset",
        "add_team",
    ]


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


# ------------------------------------------------------- bad values: one line, never exit 70

HUGE = "9" * 30  # no database integer holds it (OverflowError on SQLite)
INT4 = str(2**31)  # fits SQLite's 64-bit INTEGER, not PostgreSQL's int4 version columns


def cli(
    *argv: str, env: dict[str, str] | None = None, prelude: str = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, with the serving plane's commands from its entry point."""
    code = f"{prelude}\nimport sys\nfrom modelops.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def one_error_line(p: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_out_of_range_integers_are_refused_in_one_line(env: dict[str, Path]) -> None:
    d = env["dir"]
    reg = f"version register ctr --weights {d}/w1.onnx --training-data clicks@1 --eval-set ev@1"
    assert run(reg)[0] == 0
    for big in (HUGE, INT4):
        refused(f"show ctr@{big}", big, "1..2147483647")
        refused(f"gate ctr {big} --passed --actor gates", "VERSION", big, "1..2147483647")
        refused(f"transition ctr {big} OFFLINE_PASSED --actor a", "VERSION", "1..2147483647")
        refused(f"approve ctr {big} --actor a", "VERSION", "1..2147483647")
        refused(f"{reg} --parent {big}", "--parent", "1..2147483647")
        refused(f"dataset register d --version {big} --uri u", "--version", "1..2147483647")
        refused(f"dataset delete clicks --version {big}", "--version", "1..2147483647")
        refused(f"dependents --model ctr@{big}", big, "1..2147483647")
        refused(f"dependents --dataset clicks@{big}", big, "1..2147483647")
        refused(
            f"version register ctr --weights {d}/w2.onnx --training-data clicks@{big} "
            "--eval-set ev@1",
            big,
            "1..2147483647",
        )
    # Not a number at all is still a usage error, as it always was.
    code, _, err = run("gate ctr one --passed")
    assert code == 2 and "usage:" in err


def test_gate_results_must_be_a_json_object(env: dict[str, Path]) -> None:
    d = env["dir"]
    reg = f"version register ctr --weights {d}/w1.onnx --training-data clicks@1 --eval-set ev@1"
    assert run(reg)[0] == 0
    refused("gate ctr 1 --passed --results '{bad'", "--results", "not JSON")
    refused("gate ctr 1 --passed --results '[0.8]'", "--results", "JSON object")
    refused("""gate ctr 1 --passed --results '{"auc": NaN}'""", "--results", "NaN")
    assert run("""gate ctr 1 --passed --results '{"auc": 0.8}' --actor gates""")[0] == 0


def test_blank_names_are_refused(env: dict[str, Path]) -> None:
    refused("dataset register '' --version 1 --uri u", "NAME", "blank")
    refused("dataset register ' ' --version 1 --uri u", "NAME", "blank")
    refused("dataset register d --version 1 --uri ''", "--uri", "blank")
    refused("actor add '' --team ads", "NAME", "blank")
    refused("actor add bob --team '  '", "--team", "blank")
    refused("actor add bob --team ads --actor ''", "--actor", "blank")
    refused("transition ctr 1 OFFLINE_PASSED --slice '' --actor a", "--slice", "blank")
    refused("show ''", "MODEL", "blank")


def test_desired_state_export_of_an_unknown_model_is_refused(env: dict[str, Path]) -> None:
    refused("desired-state export --model nope", "unknown model 'nope'")


def test_registry_url_mistakes_are_one_line(tmp_path: Path) -> None:
    env = {"MODELOPS_HOME": str(tmp_path)}
    one_error_line(cli("--registry", "sqlite:///", "show", "a", env=env), "sqlite:///PATH")
    (tmp_path / "a-file").write_text("")
    one_error_line(
        cli("--registry", f"sqlite:///{tmp_path}/a-file/r.db", "show", "a", env=env),
        "registry database",
        f"{tmp_path}/a-file",
    )
    p = cli("show", "a", env={**env, "MODELOPS_REGISTRY_URL": "sqlite:///"})
    one_error_line(p, "registry URL", "sqlite:///PATH")


def test_broken_pipe_exits_quietly(tmp_path: Path) -> None:
    """`modelops … | head -1`: the reader is gone; no traceback, no noise at exit."""
    exe = Path(sys.executable).with_name("modelops")
    env = {**os.environ, "MODELOPS_HOME": str(tmp_path)}
    env.pop("MODELOPS_REGISTRY_URL", None)
    for argv in (["db", "current"], ["audit", "-", "--json"], ["desired-state", "export"]):
        r, w = os.pipe()
        os.close(r)  # nobody will ever read: the first write (or the exit flush) gets EPIPE
        try:
            p = subprocess.run(
                [str(exe), *argv], stdout=w, stderr=subprocess.PIPE, text=True, env=env, timeout=60
            )
        finally:
            os.close(w)
        assert p.stderr == "", p.stderr
        assert p.returncode == 141, p.returncode  # 128 + SIGPIPE, as a killed writer reports


def test_serve_and_controller_argument_mistakes_are_one_line(tmp_path: Path) -> None:
    env = {"MODELOPS_HOME": str(tmp_path)}
    one_error_line(cli("serve", "gateway", "--port", "99999", env=env), "--port", "0..65535")
    one_error_line(cli("serve", "gateway", "--port", HUGE, env=env), "--port", "0..65535")
    one_error_line(
        cli("serve", "gateway", "--host", "bad host", "--port", "0", env=env), "--host", "bad host"
    )
    one_error_line(
        cli("serve", "gateway", "--port", "0", "--pull-interval", "nan", env=env),
        "--pull-interval",
    )
    one_error_line(
        cli("serve", "gateway", "--port", "0", "--workers", "0", env=env), "--workers", "1"
    )
    line = one_error_line(
        cli("serve", "gateway", "--port", "0", "--predlog", "foo://bar", env=env),
        "prediction log URL 'foo://bar'",
    )
    assert "registry" not in line
    line = one_error_line(
        cli(
            "serve", "gateway", "--port", "0", "--predlog",
            "postgresql://nobody@127.0.0.1:1/x", env=env,
        ),  # fmt: skip
        "prediction log",
    )
    assert "registry" not in line
    one_error_line(
        cli("serve", "triton", "--repository", str(tmp_path), "--http-port", "70000", env=env),
        "--http-port",
        "0..65535",
    )
    one_error_line(
        cli(
            "controller", "run", "--triton", "127.0.0.1:1", "--repository", str(tmp_path),
            "--port", "-1", env=env,
        ),  # fmt: skip
        "--port",
        "0..65535",
    )


_NO_SERVING_EXTRA = """
import importlib.abc, sys
class _Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("httpx", "tritonclient", "fastapi", "uvicorn"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Missing())
"""


def test_controller_without_the_serving_extra_names_it(tmp_path: Path) -> None:
    p = cli(
        "controller", "reconcile", "--once", "--triton", "127.0.0.1:1",
        "--repository", str(tmp_path / "repo"),
        env={"MODELOPS_HOME": str(tmp_path)}, prelude=_NO_SERVING_EXTRA,
    )  # fmt: skip
    one_error_line(p, "pip install 'modelops[serving]'")
    p = cli("serve", "gateway", env={"MODELOPS_HOME": str(tmp_path)}, prelude=_NO_SERVING_EXTRA)
    one_error_line(p, "pip install 'modelops[serving]'")


# ---------------------------------------------------------------------------- teams, rollback


def test_teams_and_actors_have_one_spelling(env: dict[str, Path]) -> None:
    code, out, _ = run("team add ' Risk '")
    assert (code, out) == (0, "team risk\n")
    code, out, _ = run("team list")
    assert (code, out) == (0, "ads\nrisk\n")
    code, out, _ = run("actor add ' ALICE ' --team ADS")
    assert (code, out) == (0, "actor alice in team ads as engineer, no key yet (it cannot sign)\n")
    refused(
        "actor add bob --team adz",
        "unknown team 'adz'",
        "known teams: ads, risk",
        "modelops team add adz",
    )
    refused("actor add 'al ice' --team ads", "actor 'al ice' is not allowed")
    refused("team add 'a team'", "team 'a team' is not allowed")
    other = SPEC.replace("model_id: ctr", "model_id: other").replace("ads", "growth")
    (env["dir"] / "other.yaml").write_text(other)
    refused(
        f"model create {env['dir']}/other.yaml",
        "model 'other': unknown owner_team 'growth'",
        "known teams: ads, risk",
    )


def _promoted_twice(d: Path) -> None:
    """ctr@1 deprecated and ctr@2 prod on global (L1: the first version bootstraps; the second
    walks the canary ladder)."""
    for w in ("w1", "w2"):
        code = run(
            f"version register ctr --weights {d}/{w}.onnx --training-data clicks@1 "
            "--eval-set ev@1"
        )[0]
        assert code == 0
    assert run("gate ctr 1 --passed --actor gates")[0] == 0
    assert run("gate ctr 2 --passed --actor gates")[0] == 0
    assert run("transition ctr 1 PROMOTED --actor a")[0] == 0
    for st in ("APPROVED_SHADOW", "SHADOW", "APPROVED_CANARY", "CANARY"):
        assert run(f"transition ctr 2 {st} --actor a")[0] == 0


def test_canary_steps_compare_on_the_percent(env: dict[str, Path]) -> None:
    _promoted_twice(env["dir"])
    code, out, _ = run(
        "transition ctr 2 CANARY --percent 5 --expect CANARY --expect-percent 1 --actor a"
    )
    assert code == 0 and "CANARY -> CANARY at 5%" in out, out
    # A step decided on the stale read of 1% is refused, naming the percent now.
    refused(
        "transition ctr 2 CANARY --percent 3 --expect CANARY --expect-percent 1 --actor b",
        "conflict: ctr@2 on slice 'global' is CANARY (5%), not CANARY (1%) as expected",
    )


def test_rollback_is_a_compare_and_set_and_idempotent(env: dict[str, Path]) -> None:
    _promoted_twice(env["dir"])
    refused(
        "rollback ctr --version 2 --expect SHADOW --actor oncall",
        "conflict: ctr@2 on slice 'global' is CANARY (1%), not SHADOW as expected",
    )
    code, out, err = run("rollback ctr --version 2 --expect CANARY --actor oncall")
    assert (code, err) == (0, ""), err
    assert out.startswith("ctr@2 [global] CANARY -> ROLLED_BACK"), out
    # The same rollback again: the answer names the first, exit 0, nothing written.
    before = counts()
    code, out, err = run("rollback ctr --version 2 --actor oncall-b")
    assert (code, err) == (0, "")
    assert out.startswith("ctr@2 [global] already rolled back by oncall at "), out
    assert "to roll back prod version 1 as well, name it: --version 1" in out
    code, out, _ = run("rollback ctr --actor oncall-c")  # bare: the latest change is that one
    assert code == 0 and out.startswith("ctr@2 [global] already rolled back by oncall"), out
    assert counts() == before
    # A strict compare-and-set that no longer holds is a conflict naming the state now.
    refused(
        "rollback ctr --version 2 --expect CANARY --actor oncall",
        "is ROLLED_BACK, not CANARY as expected",
    )
    refused("rollback ctr --version 7 --actor oncall", "unknown version ctr@7")
    code, out, _ = run("rollback ctr --version 1 --expect PROMOTED --actor oncall")
    assert code == 0 and "ctr@1 [global] PROMOTED -> ROLLED_BACK" in out
    assert "caveat: no earlier version was promoted" in out


def test_a_gate_result_is_recorded_once(env: dict[str, Path]) -> None:
    d = env["dir"]
    reg = f"version register ctr --weights {d}/w1.onnx --training-data clicks@1 --eval-set ev@1"
    assert run(reg)[0] == 0
    gate = "gate ctr 1 --passed --actor gates --results "
    assert run(gate + """'{"auc": 0.8, "slo": {"p99_ms": 12.5}}'""")[:2] == (
        0,
        "ctr@1 -> OFFLINE_PASSED\n",
    )
    code, out, err = run(gate + """'{"slo": {"p99_ms": 12.5}, "auc": 0.8}'""")
    assert (code, out, err) == (0, "ctr@1 -> OFFLINE_PASSED (already recorded)\n", "")
    refused(
        gate + """'{"auc": 0.7}'""",
        "conflict: ctr@1 already has a gate result, passed",
        '"auc":0.8',
        'this one is passed {"auc":0.7}',
    )
    refused(
        """gate ctr 1 --failed --actor gates --results '{"auc": 0.8}'""",
        'this one is failed {"auc":0.8}',
    )
    for bad, where in (
        ('{"auc": NaN}', "--results: auc is NaN"),
        ('{"slo": {"p99_ms": Infinity}}', "--results: slo.p99_ms is Infinity"),
        ('{"gates": [1, -Infinity]}', "--results: gates[1] is -Infinity"),
        ('{"auc": 1e400}', "--results: auc is Infinity"),
    ):
        refused(f"{gate}'{bad}'", where, "not a finite number")

