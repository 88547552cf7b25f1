"""Break-glass: two signed senior approvals, never past the offline gates, rate-limited per
team with a signed admin unlock, and a postmortem ticket that survives a receiver outage.

SQLite and PostgreSQL; each refusal is one line and leaves no row behind.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from test_registry_kit import add_people, approve, key_of, new_model, refused, version

from modelops.errors import ApprovalRequired, IllegalTransition
from modelops.identity import SelfApproval
from modelops.registry import Registry
from modelops.registry.signatures import UnsignedStatement
from modelops.spec import RollbackClass, State, Tier

S = State
M = "ranker"
SENIORS = {"sre-a": "ranking", "sre-b": "safety"}


def people(reg: Registry) -> None:
    add_people(reg)
    for name, team in SENIORS.items():
        reg.enroll_actor(name, team, role="senior", public_key=key_of(name).public_key)
    reg.enroll_actor("boss", "safety", role="admin", public_key=key_of("boss").public_key)


@pytest.fixture
def prod(registry: Registry) -> Registry:
    """An L2 model with version 1 in prod and version 2 past its offline gates."""
    new_model(registry, tier=Tier.L2)
    people(registry)
    v1 = version(registry).version
    approve(registry, M, v1, "rank-lead", target=S.PROMOTED)
    registry.transition(M, v1, S.PROMOTED, actor="ops")
    assert version(registry).version == 2
    return registry


def sign(reg: Registry, who: str, v: int, reason: str = "checkout is down") -> Any:
    return reg.sign_break_glass(M, v, key_of(who), signer=who, reason=reason)


def glass(reg: Registry, v: int, approvers: tuple[str, ...] = ("sre-a", "sre-b")) -> Any:
    return reg.break_glass(
        M, v, statement=sign(reg, "rank-eng", v), approvals=[sign(reg, a, v) for a in approvers]
    )


def one_line(info: pytest.ExceptionInfo[Any]) -> str:
    line = str(info.value)
    assert line and "\n" not in line
    return line


def test_break_glass_promotes_past_the_durations_with_two_senior_signatures(
    prod: Registry, clock: Any
) -> None:
    res = glass(prod, 2)
    assert (res.from_state, res.deprecated_version) == (S.OFFLINE_PASSED, 1)
    assert res.approvers == ["sre-a", "sre-b"]
    assert prod.state_of(M, 2) is S.PROMOTED and prod.state_of(M, 1) is S.DEPRECATED
    assert prod.heightened_until(M) == res.heightened_until
    entry = prod.audit_entries(M)[-1]
    assert (entry.action, entry.actor, entry.payload["ticket"]) == (
        "break_glass",
        "rank-eng",
        res.ticket_id,
    )
    assert prod.verify_audit().ok
    clock.advance(hours=24)
    assert prod.heightened_until(M) is None


def test_break_glass_refusals(prod: Registry) -> None:
    req = sign(prod, "rank-eng", 2)
    info = refused(prod, UnsignedStatement, lambda: prod.break_glass(M, 2))
    assert "is unsigned" in one_line(info)
    info = refused(
        prod,
        ApprovalRequired,
        lambda: prod.break_glass(M, 2, statement=req, approvals=[sign(prod, "sre-a", 2)]),
    )
    assert "needs 2 signed approvals from distinct senior actors" in one_line(info)
    info = refused(
        prod,
        ApprovalRequired,
        lambda: prod.break_glass(
            M, 2, statement=req, approvals=[sign(prod, "sre-a", 2), sign(prod, "rank-lead", 2)]
        ),
    )
    assert "'rank-lead' is engineer" in one_line(info)
    info = refused(
        prod,
        SelfApproval,
        lambda: prod.break_glass(
            M, 2, statement=req, approvals=[sign(prod, "sre-a", 2), sign(prod, "rank-eng", 2)]
        ),
    )
    assert "the two approvers must be others" in one_line(info)
    ungated = version(prod, passed=None).version
    info = refused(prod, IllegalTransition, lambda: glass(prod, ungated))
    assert "never the offline gates" in one_line(info)


def test_an_irreversible_model_needs_its_override_as_well(registry: Registry) -> None:
    new_model(registry, tier=Tier.L1, rollback_class=RollbackClass.IRREVERSIBLE)
    people(registry)
    v = version(registry).version
    info = refused(registry, IllegalTransition, lambda: glass(registry, v))
    assert "IRREVERSIBLE; break-glass never promotes it without the override" in one_line(info)
    registry.override(M, v, actor="safety-eng", key=key_of("safety-eng"), reason="accepted")
    assert glass(registry, v).from_state is S.OFFLINE_PASSED


def test_a_teams_third_break_glass_in_30_days_is_refused_until_an_admin_unlocks(
    prod: Registry, clock: Any
) -> None:
    glass(prod, 2)
    clock.advance(days=10)
    glass(prod, version(prod).version)
    clock.advance(days=10)
    v = version(prod).version
    info = refused(prod, IllegalTransition, lambda: glass(prod, v))
    assert "team 'ranking' has used break-glass 2 times in 30 days" in one_line(info)
    assert "locked out until an admin's signed unlock" in one_line(info)
    info = refused(
        prod,
        ApprovalRequired,
        lambda: prod.unlock_team("ranking", actor="sre-a", key=key_of("sre-a"), reason="x"),
    )
    assert "only an admin unlocks" in one_line(info)
    refused(prod, UnsignedStatement, lambda: prod.unlock_team("ranking"))
    prod.unlock_team("ranking", actor="boss", key=key_of("boss"), reason="postmortems done")
    assert prod.audit_entries(None)[-1].action == "unlock_team"
    assert glass(prod, v).from_state is S.OFFLINE_PASSED
    assert prod.verify_audit().ok


class _Receiver(BaseHTTPRequestHandler):
    got: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.got.append(json.loads(body))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_postmortem_ticket_survives_a_receiver_outage(prod: Registry, clock: Any) -> None:
    with socket.socket() as s:  # a port nobody listens on yet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/tickets"
    res = glass(prod, 2)
    assert prod.deliver_outbox(url, timeout_s=2) == (0, 1)  # the receiver is down
    assert prod.deliver_outbox(url, timeout_s=2) == (0, 1)  # backing off: not due yet
    _Receiver.got = []
    server = HTTPServer(("127.0.0.1", port), _Receiver)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        clock.advance(seconds=3)
        assert prod.deliver_outbox(url, timeout_s=5) == (1, 0)
        assert prod.deliver_outbox(url, timeout_s=5) == (0, 0)  # delivered once
    finally:
        server.shutdown()
        server.server_close()
    (ticket,) = _Receiver.got
    assert ticket["outbox_id"] == res.ticket_id and ticket["kind"] == "postmortem"
    assert (ticket["model_id"], ticket["version"], ticket["requester"]) == (M, 2, "rank-eng")
    assert ticket["approvers"] == ["sre-a", "sre-b"]


def test_the_command_line_breaks_glass(
    prod: Registry, registry_url: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelops.cli import main
    from modelops.identity import write_keypair

    files = {
        n: write_keypair(key_of(n), tmp_path / f"{n}.key")[0]
        for n in ("rank-eng", "sre-a", "sre-b")
    }

    def run(*cmd: str, expect: int = 0) -> str:
        code = main(["--registry", registry_url, *cmd])
        out, err = capsys.readouterr()
        assert code == expect, (cmd, out, err)
        return err if expect else out

    err = run("break-glass", M, "2", "--reason", "checkout down", "--actor", "rank-eng", expect=1)
    assert err.startswith("error: the break-glass of ranker@2") and err.count("\n") == 1
    for who in ("sre-a", "sre-b"):
        run(
            "sign-break-glass",
            M,
            "2",
            "--actor",
            who,
            "--key",
            str(files[who]),
            "--reason",
            "seen the outage",
            "--out",
            str(tmp_path / f"{who}.sig"),
        )
    out = run(
        "break-glass",
        M,
        "2",
        "--reason",
        "checkout down",
        "--actor",
        "rank-eng",
        "--key",
        str(files["rank-eng"]),
        "--approval",
        str(tmp_path / "sre-a.sig"),
        "--approval",
        str(tmp_path / "sre-b.sig"),
    )
    assert out.startswith("BREAK-GLASS ranker@2 PROMOTED on slice global from OFFLINE_PASSED")
    assert "approved by sre-a, sre-b" in out and "postmortem ticket #1 queued" in out
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = run("outbox", "deliver", "--url", f"http://127.0.0.1:{port}/t", "--timeout", "2")
    assert out == "outbox: 0 delivered, 1 pending\n"
