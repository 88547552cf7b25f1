"""The service key sensors and jobs sign with arrives through `dg.EnvVar`, never a literal,
and signs the audit chain anchors that `audit verify --anchors` checks."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from modelops.artifacts import LocalArtifactStore
from modelops.identity import generate_signing_key
from modelops.registry import Registry
from resources import RegistryResource, default_resources


def test_the_service_key_arrives_as_an_env_var_and_signs_anchors(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_signing_key()
    pem = key.to_pem().decode()
    monkeypatch.setenv("MODELOPS_SERVICE_KEY", pem)
    res = default_resources()
    assert "PRIVATE KEY" not in repr(res["registry"])  # the name of the variable, not its value
    reg = Registry()
    reg.add_team("platform")
    reg.enroll_actor("service:dagster", "platform", role="service", public_key=key.public_key)
    store = LocalArtifactStore(home / "artifacts")

    @dg.op
    def anchor(registry: RegistryResource) -> int:
        return len(registry.anchor_heads(store).checkpoint.heads)

    @dg.job
    def anchor_job() -> None:
        anchor()

    defs = dg.Definitions(jobs=[anchor_job], resources=res)
    result = defs.get_job_def("anchor_job").execute_in_process()
    assert result.output_for_node("anchor") == 1  # the registry chain
    assert reg.verify_audit(anchors=store).ok
    reg.close()
