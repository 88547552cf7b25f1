"""Gated spec changes (`model amend`) and the reason every L3 transition carries.

SQLite and PostgreSQL; each refusal is one line and leaves no row behind.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from test_registry_kit import add_people, approve_l3, key_of, new_model, refused, spec, version

from modelops.errors import ApprovalRequired, SpecError
from modelops.identity import ReplayedSignature, SelfApproval, WrongEpoch, WrongSubject
from modelops.registry import Registry
from modelops.registry.amendments import spec_sha256
from modelops.registry.signatures import UnsignedStatement
from modelops.spec import RollbackClass, State, Tier

S = State
M = "ranker"


@pytest.fixture
def l1(registry: Registry) -> Registry:
    new_model(registry, tier=Tier.L1)
    add_people(registry)
    return registry


def sign(reg: Registry, who: str, new: Any, reason: str = "fraud losses moved it up") -> Any:
    return reg.sign_amendment(new, key_of(who), signer=who, reason=reason)


def one_line(info: pytest.ExceptionInfo[Any]) -> str:
    line = str(info.value)
    assert line and "\n" not in line
    return line


def test_an_unsigned_amendment_is_refused(l1: Registry) -> None:
    new = spec(M, tier=Tier.L3)
    info = refused(l1, UnsignedStatement, lambda: l1.amend_model(new))
    assert one_line(info).startswith(f"the amendment of {M} is unsigned")


def test_tier_escalation_needs_the_stricter_tiers_signed_approvals(l1: Registry) -> None:
    new = spec(M, tier=Tier.L3)
    request = sign(l1, "rank-eng", new)
    info = refused(l1, ApprovalRequired, lambda: l1.amend_model(new, statement=request))
    line = one_line(info)
    assert "(tier L1 -> L3) needs the stricter tier L3's approvals" in line
    assert "2 signed approvals" in line and "outside team 'ranking'" in line
    assert "have: none" in line
    # One approval inside the owning team is not enough at L3.
    inside = sign(l1, "rank-lead", new)
    info = refused(
        l1, ApprovalRequired, lambda: l1.amend_model(new, statement=request, approvals=[inside])
    )
    assert "have: rank-lead (ranking)" in one_line(info)
    # The requester cannot approve its own amendment.
    own = sign(l1, "rank-eng", new, reason="me too")
    info = refused(
        l1, SelfApproval, lambda: l1.amend_model(new, statement=request, approvals=[own])
    )
    assert "an approval must come from someone else" in one_line(info)
    # An approval of another spec does not count for this one.
    other = sign(l1, "safety-lead", spec(M, tier=Tier.L2))
    refused(l1, WrongSubject, lambda: l1.amend_model(new, statement=request, approvals=[other]))

    outside = sign(l1, "safety-lead", new)
    res = l1.amend_model(new, statement=request, approvals=[inside, outside])
    assert (res.changed, res.approvers, res.epoch) == (["tier"], ["rank-lead", "safety-lead"], 1)
    assert l1.get_model(M).tier is Tier.L3
    entry = l1.audit_entries(M)[-1]
    assert (entry.action, entry.actor) == ("amend_model", "rank-eng")
    assert entry.payload["reason"] == "fraud losses moved it up"
    assert entry.payload["spec"]["tier"] == "L3"
    assert l1.verify_audit().ok
    # The same request again is a replay; signatures bind to the spec epoch, now 1.
    refused(l1, ReplayedSignature, lambda: l1.amend_model(new, statement=request))
    # Lowering the tier is ruled by the stricter (old) tier too.
    down = spec(M, tier=Tier.L2)
    info = refused(
        l1, ApprovalRequired, lambda: l1.amend_model(down, statement=sign(l1, "rank-eng", down))
    )
    assert "(tier L3 -> L2) needs the stricter tier L3's approvals" in one_line(info)


def test_a_stale_epoch_is_refused(l1: Registry) -> None:
    first = spec(M, slices=["global", "eu"])
    l1.amend_model(first, statement=sign(l1, "rank-eng", first))  # epoch 0 -> 1
    again = spec(M, slices=["global", "eu", "us"])
    old_request = l1.sign_as(
        key_of("rank-eng"),
        kind="spec_amendment",
        signer="rank-eng",
        epoch=0,
        model=M,
        spec_sha256=spec_sha256(again),
        reason="late",
    )
    info = refused(l1, WrongEpoch, lambda: l1.amend_model(again, statement=old_request))
    assert "signed at state epoch 0" in one_line(info)


def test_a_rollback_class_change_needs_approval_and_the_new_tier_applies_everywhere(
    l1: Registry, registry_url: str, clock: Any
) -> None:
    other = Registry(registry_url, clock=clock)  # another process's registry, spec cached
    try:
        assert other.get_model(M).rollback_class is RollbackClass.STATELESS
        new = spec(M, tier=Tier.L1, rollback_class=RollbackClass.IRREVERSIBLE)
        request = sign(l1, "rank-eng", new)
        info = refused(l1, ApprovalRequired, lambda: l1.amend_model(new, statement=request))
        assert "rollback class STATELESS -> IRREVERSIBLE" in one_line(info)
        assert "stricter tier L1's approvals: 1 signed approval" in one_line(info)
        l1.amend_model(new, statement=request, approvals=[sign(l1, "rank-lead", new)])
        assert other.get_model(M).rollback_class is RollbackClass.IRREVERSIBLE
        up = spec(M, tier=Tier.L3, rollback_class=RollbackClass.IRREVERSIBLE)
        l1.amend_model(
            up,
            statement=sign(l1, "rank-eng", up),
            approvals=[sign(l1, "rank-lead", up), sign(l1, "safety-lead", up)],
        )
        # The other registry now enforces L3: two approvals, and a reason.
        v = version(other).version
        approve_l3(other, M, v, S.PROMOTED)
        other.override(M, v, actor="safety-eng", key=key_of("safety-eng"), reason="reviewed")
        info = refused(other, SpecError, lambda: other.transition(M, v, S.PROMOTED, actor="ops"))
        assert "is L3: every transition needs a reason" in one_line(info)
        res = other.transition(M, v, S.PROMOTED, actor="ops", reason="credit launch REF-1")
        assert res.to_state is S.PROMOTED
        assert other.verify_audit().ok
    finally:
        other.close()


def test_slices_policy_and_dependents_need_a_signature_and_a_reason(l1: Registry) -> None:
    v1 = version(l1).version
    v2 = version(l1, passed=None).version
    new = spec(M, slices=["global", "eu"], downstream=["dashboard"])
    res = l1.amend_model(new, statement=sign(l1, "rank-eng", new, reason="EU launch"))
    assert sorted(res.changed) == ["downstream_dependents", "slices"]
    assert l1.state_of(M, v1, "eu") is S.OFFLINE_PASSED
    assert l1.state_of(M, v2, "eu") is S.REGISTERED
    with l1.engine.connect() as conn:
        edges = conn.execute(text("SELECT downstream_model FROM dependencies")).scalars()
        assert list(edges) == ["dashboard"]
    assert l1.verify_audit().ok  # the replay knows the added slice
    # Removing a slice, or changing a field outside the five, is refused whole.
    back = spec(M, slices=["eu"], downstream=["dashboard"])
    info = refused(
        l1, SpecError, lambda: l1.amend_model(back, statement=sign(l1, "rank-eng", back))
    )
    assert "slices global would be removed" in one_line(info)
    moved = spec(M, slices=["global", "eu"], downstream=["dashboard"], owner_team="safety")
    info = refused(
        l1, SpecError, lambda: l1.amend_model(moved, statement=sign(l1, "rank-eng", moved))
    )
    assert "owner_team cannot be amended" in one_line(info)
    refused(
        l1,
        SpecError,
        lambda: l1.amend_model(new, statement=sign(l1, "rank-eng", new, reason="again")),
        match="unchanged",
    )


# ---------------------------------------------------------------------------- the command line


def test_the_command_line_signs_amends_and_anchors(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelops.cli import main

    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELOPS_KEY", raising=False)
    reg_url = f"sqlite:///{tmp_path / 'registry.db'}"
    arts = str(tmp_path / "artifacts")

    def run(cmd: list[str], expect: int = 0) -> str:
        code = main(["--registry", reg_url, *cmd])
        out, err = capsys.readouterr()
        assert code == expect, (cmd, out, err)
        if expect:
            assert err.startswith("error: ") and err.count("\n") == 1, err
            return err
        return out

    for team in ("ranking", "safety"):
        run(["team", "add", team])
    people = {"ops": "ranking", "rank-lead": "ranking", "safety-lead": "safety"}
    for name, team in {**people, "service:anchors": "ranking"}.items():
        out = run(["keygen", "--out", str(tmp_path / f"{name}.key")])
        assert "key id:" in out and (tmp_path / f"{name}.key").stat().st_mode & 0o777 == 0o600
        role = "service" if name.startswith("service:") else "engineer"
        out = run(["actor", "add", name, "--team", team, "--role", role,
                   "--public-key", str(tmp_path / f"{name}.key.pub")])  # fmt: skip
        assert f"as {role}, key " in out
    (tmp_path / "ranker.yaml").write_text(
        "model_id: ranker\nowner_team: ranking\ntier: L1\nrollback_class: STATELESS\n"
        "model_class: dnn\nframework: pytorch\npolicy: {primary_metric: auc}\n"
    )
    run(["model", "create", str(tmp_path / "ranker.yaml")])
    (tmp_path / "l3.yaml").write_text(
        (tmp_path / "ranker.yaml").read_text().replace("tier: L1", "tier: L3")
    )
    key = str(tmp_path / "ops.key")
    amend = ["model", "amend", str(tmp_path / "l3.yaml"), "--actor", "ops", "--key", key]
    err = run([*amend, "--reason", "handles credit now"], expect=1)
    assert "needs the stricter tier L3's approvals" in err
    assert "error: " in run(["model", "amend", str(tmp_path / "l3.yaml"), "--actor", "ops",
                             "--reason", "x"], expect=1)  # fmt: skip
    for who in ("rank-lead", "safety-lead"):
        run(["model", "sign-amendment", str(tmp_path / "l3.yaml"), "--actor", who,
             "--key", str(tmp_path / f"{who}.key"), "--reason", "reviewed",
             "--out", str(tmp_path / f"{who}.sig")])  # fmt: skip
    out = run([*amend, "--reason", "handles credit now",
               "--approval", str(tmp_path / "rank-lead.sig"),
               "--approval", str(tmp_path / "safety-lead.sig")])  # fmt: skip
    assert "amended (tier): spec epoch 1" in out and "rank-lead, safety-lead" in out
    assert "audit ok" in run(["audit", "verify"])
    run(["anchor", "--actor", "service:anchors", "--key", str(tmp_path / "service:anchors.key"),
         "--artifacts", arts])  # fmt: skip
    out = run(["audit", "verify", "--anchors", "--artifacts", arts])
    assert "signatures and anchors verify" in out
    run(["actor", "revoke-key", "0000000000", "--reason", "x"], expect=1)
    kid = run(["actor", "keys", "ops"]).split()[1]
    assert "revoked" in run(["actor", "revoke-key", kid[:12], "--reason", "left"])
    assert "was revoked" in run(["model", "amend", str(tmp_path / "ranker.yaml"), "--actor",
                                 "ops", "--key", key, "--reason", "back"], expect=1)  # fmt: skip
