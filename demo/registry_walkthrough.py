"""A registry walkthrough on the embedded default, through the real CLI
(`python -m demo.registry_walkthrough [HOME]`; `make demo` runs the whole lifecycle instead).

Every step prints the command and its output; a step that should be refused checks that it
was, so the demo doubles as a smoke test of the user-facing behaviour.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import sqlite3
import sys
import time
from pathlib import Path

from modelops.cli import main as cli

__all__ = ["run"]

SPECS = {
    "ctr.yaml": """\
model_id: ctr
owner_team: ads
tier: L1
rollback_class: STATELESS
model_class: dnn
framework: onnx
slices: [global, eu]
policy:
  primary_metric: ctr
  min_samples: 2000
  guardrails:
    - {metric: error_rate, threshold: 0.01}
    - {metric: p99_latency_ms, threshold: 50}
  protected_slices: [eu]
downstream_dependents: [ranker]
""",
    "ranker.yaml": """\
model_id: ranker
owner_team: ads
tier: L2
rollback_class: STATELESS
model_class: dnn
framework: pytorch
policy: {primary_metric: ndcg}
""",
    "credit.yaml": """\
model_id: credit
owner_team: risk
tier: L3
rollback_class: IRREVERSIBLE
model_class: dnn
framework: tensorflow
description: credit limit decisions that customers act on
intended_purpose: sets credit limits for existing customers; a human reviews every decline
policy:
  primary_metric: auc
  protected_slices: [age_band]
""",
    "bad.yaml": """\
model_id: broken
owner_team: ads
tier: L5
rollback_class: STATELESS
model_class: dnn
framework: onnx
policy: {primary_metric: ctr}
""",
    "ctr-features.yaml": """\
name: ctr-features
version: 1
features:
  - {name: user_age, dtype: int32, definition_ref: "feast://user/age"}
  - {name: country, dtype: string}
  - {name: hour_of_day, dtype: int8}
  - {name: ad_ctr_7d, dtype: float32, nullable: true}
""",
}


class Demo:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"\n[{time.monotonic() - self.t0:6.2f}s] == {text}")

    def run(self, cmd: str, expect: int = 0, quiet: bool = False) -> str:
        argv = shlex.split(cmd)
        print(f"$ modelops {cmd}")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli(argv)
            except SystemExit as exc:  # argparse usage errors
                code = int(exc.code or 0)
        text = out.getvalue() + err.getvalue()
        for line in text.rstrip().splitlines()[: 1 if quiet else None]:
            print(f"  {line}")
        if code != expect:
            raise SystemExit(f"demo step failed: expected exit {expect}, got {code}: {cmd}")
        if expect:
            print(f"  (refused with exit {code}, as it should be)")
        return text


def run(home: Path) -> None:
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    os.environ["MODELOPS_HOME"] = str(home)
    os.environ.pop("MODELOPS_REGISTRY_URL", None)
    files = home / "files"
    files.mkdir()
    for name, body in SPECS.items():
        (files / name).write_text(body)
    for name, size in (("clicks-v1.parquet", 4096), ("clicks-eval-v1.parquet", 1024)):
        (files / name).write_bytes(os.urandom(size))
    for i in (1, 2, 3):
        (files / f"ctr-v{i}.onnx").write_bytes(f"onnx weights {i}".encode() + os.urandom(256))
    (files / "ranker-v1.pt").write_bytes(os.urandom(512))
    (files / "credit-v1.savedmodel").write_bytes(os.urandom(512))

    d = Demo(home)
    f = files
    d.say(f"embedded registry under {home} (SQLite, migrated on first use)")
    d.run("db current")
    d.say("teams are a known set; an actor belongs to one and signs with its own Ed25519 key")
    keys = home / "keys"
    for team in ("ads", "risk", "ml-platform"):
        d.run(f"team add {team}")
    for actor, team, *rest in (
        ("rank-lead", "ads"),
        ("rank-eng", "ads"),
        ("safety-lead", "risk"),
        ("erin", "risk"),
        ("safety-eng", "ml-platform"),
        ("sre-a", "ads", "senior"),
        ("sre-b", "risk", "senior"),
        ("service:anchors", "ml-platform", "service"),
    ):
        role = f" --role {rest[0]}" if rest else ""
        d.run(f"keygen --out {keys}/{actor}.key", quiet=True)
        d.run(f"actor add {actor} --team {team}{role} --public-key {keys}/{actor}.key.pub")
    d.run("actor add mallory --team adz", expect=1)

    d.say("datasets, an eval set and a feature contract, content-hashed")
    d.run(f"dataset register clicks --version 1 --uri {f}/clicks-v1.parquet")
    d.run(
        f"dataset register clicks-eval --version 1 --uri {f}/clicks-eval-v1.parquet --kind eval_set"
    )
    d.run(f"contract register {f}/ctr-features.yaml")

    d.say("model specs are YAML; a bad one names the file, the field and what is allowed")
    d.run(f"model create {f}/bad.yaml", expect=1)
    d.run(f"model create {f}/ranker.yaml")
    d.run(f"model create {f}/ctr.yaml")

    d.say("ctr v1: register, offline gates, first promotion (nothing to canary against yet)")
    common = "--training-data clicks@1 --eval-set clicks-eval@1 --contract ctr-features@1"
    d.run(f"version register ctr --weights {f}/ctr-v1.onnx {common} --run-id train-001")
    d.say("registration is idempotent: a redelivered event returns the same version")
    d.run(f"version register ctr --weights {f}/ctr-v1.onnx {common} --run-id train-001")
    d.run("gate ctr 1 --passed --results '{\"auc\": 0.781}' --actor gates")
    d.run("transition ctr 1 PROMOTED --actor rank-lead --reason 'first version'")

    d.say("ctr v2 (a weight refresh): shadow, canary 1% -> 5% -> 10%, promote (L1 skips A/B)")
    d.run(f"version register ctr --weights {f}/ctr-v2.onnx {common} --run-id train-002 --parent 1")
    d.run("gate ctr 2 --passed --results '{\"auc\": 0.792}' --actor gates")
    for step in (
        "APPROVED_SHADOW",
        "SHADOW --mode live --percent 100",
        "APPROVED_CANARY",
        "CANARY --percent 1",
        "CANARY --percent 5 --expect CANARY",
        "CANARY --percent 10",
    ):
        d.run(f"transition ctr 2 {step} --actor rank-lead")
    d.run("show ctr")
    d.run("transition ctr 2 PROMOTED --actor rank-lead --reason 'canary healthy'")

    d.say("an illegal transition is refused, naming the legal next states")
    d.run("transition ctr 2 SHADOW --actor rank-lead", expect=1)
    d.say("a stale compare-and-set is refused, naming the current state")
    d.run("transition ctr 1 ARCHIVED --expect PROMOTED --actor rank-lead", expect=1)

    d.say("lineage: a pinned dataset cannot be deleted")
    d.run("dataset delete clicks --version 1 --actor rank-lead", expect=1)
    d.run("dependents --feature user_age")
    d.run("dependents --model ctr@1")

    d.say("feature contracts are checked against the feature store's current schema")
    schemas = home / "feature-schemas"
    schemas.mkdir()
    (schemas / "v1.yaml").write_text(
        "features:\n"
        "  - {name: user_age, dtype: int16, definition_ref: 'feast://user/age'}\n"
        "  - {name: country, dtype: string}\n"
        "  - {name: hour_of_day, dtype: int8}\n"
        "  - {name: ad_ctr_7d, dtype: float32, nullable: true}\n"
        "  - {name: device, dtype: string}\n"
    )
    d.run(f"contract check ctr@2 --schemas {schemas}")
    (schemas / "v2.yaml").write_text(
        "features:\n"
        "  - {name: age_years, dtype: int64, definition_ref: 'feast://user/age'}\n"
        "  - {name: country, dtype: string, nullable: true}\n"
        "  - {name: ad_ctr_7d, dtype: float32, nullable: true}\n"
    )
    d.run(f"contract check ctr@2 --schemas {schemas}", expect=1)

    d.say("L3 credit model (IRREVERSIBLE): two approvers, one outside team risk, and an override")
    d.run(f"model create {f}/credit.yaml")
    d.run(
        f"version register credit --weights {f}/credit-v1.savedmodel --training-data clicks@1 "
        "--eval-set clicks-eval@1 --run-id credit-001"
    )
    d.run(
        "gate credit 1 --passed --actor gates "
        '--results \'{"auc": 0.81, "gate_fairness": {"age_band": 0.03}}\''
    )
    d.run("transition credit 1 PROMOTED --actor frank", expect=1)
    d.say("an approval is a signature: one without a key, or with another actor's, is refused")
    d.run("approve credit 1 --to PROMOTED --actor safety-lead", expect=1)
    d.run(f"approve credit 1 --to PROMOTED --actor safety-lead --key {keys}/erin.key", expect=1)
    d.run(f"approve credit 1 --to PROMOTED --actor safety-lead --key {keys}/safety-lead.key")
    d.run(f"approve credit 1 --to PROMOTED --actor erin --key {keys}/erin.key")
    d.run("transition credit 1 PROMOTED --actor frank", expect=1)
    d.run(f"approve credit 1 --to PROMOTED --actor safety-eng --key {keys}/safety-eng.key")
    d.run("transition credit 1 PROMOTED --actor frank", expect=1)
    d.run(
        f"override credit 1 --actor safety-eng --key {keys}/safety-eng.key "
        "--reason 'regulator sign-off REF-2291'"
    )
    d.run("transition credit 1 PROMOTED --actor frank --reason 'launch'")
    d.run("show credit")

    d.say("rollback: ctr v2 -> ROLLED_BACK restores v1, which was kept warm")
    d.run(
        "rollback ctr --version 2 --expect PROMOTED --actor oncall "
        "--reason 'ctr dropped 4% on global'"
    )
    d.say("a second responder's rollback is answered with the first, and rolls back nothing")
    d.run("rollback ctr --actor oncall-2")
    d.run("desired-state export --model ctr")

    d.say("break-glass: ctr v3, a hotfix, skips shadow and canary on two signed senior approvals")
    d.run(f"version register ctr --weights {f}/ctr-v3.onnx {common} --run-id train-003 --parent 1")
    d.run("gate ctr 3 --passed --results '{\"auc\": 0.79}' --actor gates")
    bg = (
        f"break-glass ctr 3 --reason 'v1 breaks checkout' --actor rank-eng "
        f"--key {keys}/rank-eng.key"
    )
    d.run(bg, expect=1)
    for sre in ("sre-a", "sre-b"):
        d.run(
            f"sign-break-glass ctr 3 --actor {sre} --key {keys}/{sre}.key --reason 'seen it' "
            f"--out {keys}/{sre}.sig"
        )
    d.run(f"{bg} --approval {keys}/sre-a.sig --approval {keys}/sre-b.sig")
    d.say("the postmortem ticket waits in the outbox while its receiver is down")
    d.run("outbox deliver --url http://127.0.0.1:9/tickets --timeout 1")

    d.say("the audit log is hash-chained and append-only")
    d.run("audit ctr")
    d.run("audit verify")
    d.say("chain heads are anchored outside the database, signed with the service key")
    d.run(f"anchor --actor service:anchors --key {keys}/service:anchors.key")
    d.run("audit verify --anchors")
    tampered = home / "tampered.db"
    shutil.copy(home / "registry.db", tampered)
    with sqlite3.connect(tampered) as con:
        con.execute("DROP TRIGGER audit_log_no_update")
        con.execute(
            "UPDATE audit_log SET actor = 'intruder' WHERE chain = 'model:credit' AND seq = 3"
        )
    print(f"  (in a copy, {tampered.name}: triggers dropped and one entry's actor rewritten)")
    d.run(f"--registry sqlite:///{tampered} audit verify", expect=1)

    d.say("done")
    d.run("show ctr")
    print(
        f"\nregistry: {home / 'registry.db'}; try: MODELOPS_HOME={home} .venv/bin/modelops "
        "show ctr@2"
    )


if __name__ == "__main__":
    run(Path(sys.argv[1] if len(sys.argv) > 1 else ".modelops/demo").resolve())
