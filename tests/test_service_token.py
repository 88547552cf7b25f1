"""The one service-token helper: environment first, else a private file under the home."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from modelops.errors import SpecError
from modelops.service_token import (
    TOKEN_ENV,
    auth_header,
    bearer_ok,
    service_token,
    token_path,
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    return tmp_path / "home"


def test_zero_config_creates_a_private_random_token_once(home: Path) -> None:
    assert not token_path().exists()
    token = service_token()
    path = token_path()
    assert path == home / "gateway.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) >= 32 and service_token() == token
    assert path.read_text().strip() == token
    assert [p.name for p in home.iterdir()] == ["gateway.token"]  # no temporary left behind


def test_processes_racing_on_first_use_agree_on_one_token(home: Path) -> None:
    code = "from modelops.service_token import service_token; print(service_token())"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    tokens = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(tokens) == 1 and tokens == {service_token()}


def test_the_environment_wins_and_is_validated(home: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(TOKEN_ENV, "a-shared-production-token-0123")
    assert service_token() == "a-shared-production-token-0123"
    assert not token_path().exists()
    monkeypatch.setenv(TOKEN_ENV, "short")
    with pytest.raises(SpecError, match="at least 16 characters"):
        service_token()
    monkeypatch.setenv(TOKEN_ENV, "")  # empty is unset: the private file, never "open"
    assert len(service_token()) >= 32


def test_a_token_file_others_can_read_is_refused(home: Path) -> None:
    service_token()
    token_path().chmod(0o644)
    with pytest.raises(SpecError, match="readable by other users"):
        service_token()


def test_bearer_check() -> None:
    token = "t" * 20
    assert bearer_ok(auth_header(token)["authorization"], token)
    assert bearer_ok(b"bearer " + token.encode(), token)
    for bad in (None, "", token, f"Basic {token}", f"Bearer {token}x", "Bearer ", "Bearer  "):
        assert not bearer_ok(bad, token), bad
