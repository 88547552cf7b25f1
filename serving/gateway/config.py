"""What a gateway process is configured with, and the names its answers carry."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from modelops.service_token import TOKEN_ENV
from serving.records import GatewayEvent, Outcome, PredictionRecord

__all__ = [
    "CANDIDATE_ARMS",
    "H_ARM",
    "H_CONTRACT",
    "H_FALLBACK",
    "H_REQUEST_ID",
    "H_VERSION",
    "MAX_ID_LEN",
    "PINNED",
    "GatewayConfig",
    "NullSink",
]

H_VERSION = "x-modelops-version"
H_ARM = "x-modelops-arm"
H_REQUEST_ID = "x-request-id"
H_FALLBACK = "x-modelops-fallback"
H_CONTRACT = "x-modelops-contract"
CANDIDATE_ARMS = ("canary", "ab")
PINNED = "pinned"  # the arm of a request for /v2/models/{model}/versions/{version}
MAX_ID_LEN = 256


class GatewayConfig(BaseModel):
    """Everything a gateway process is configured with; routes come from the controller."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="interface `modelops serve gateway` binds")
    port: int = Field(8080, ge=0, le=65535, description="port; 0 picks a free one")
    controller_url: str | None = Field(
        None, description="base URL of the controller; pulled at GET {url}/v1/routes"
    )
    pull_interval_s: float = Field(
        0.5, gt=0, description="how often to pull routes and re-read the state file"
    )
    state_file: Path | None = Field(
        None, description="last applied routing snapshot; loaded at startup"
    )
    schema_poll_s: float = Field(
        5.0, gt=0, description="how often to ask the feature schema source for its version"
    )
    max_body_bytes: int = Field(64 * 2**20, gt=0, description="larger request bodies get 413")
    backend_timeout_s: float = Field(30.0, gt=0, description="read timeout towards backends")
    connect_timeout_s: float = Field(2.0, gt=0, description="connect timeout towards backends")
    retry_after_s: int = Field(1, ge=0, description="Retry-After on 503 and 504")
    max_connections: int = Field(512, gt=0, description="backend connection pool size")
    shadow_queue_size: int = Field(1024, gt=0, description="mirrors waiting; more are dropped")
    shadow_workers: int = Field(4, gt=0, description="threads sending mirrors")
    record_queue_size: int = Field(
        100_000, gt=0, description="records waiting for the sink; more are dropped and counted"
    )
    event_interval_s: float = Field(
        10.0, ge=0, description="at most one shadow_dropped/contract event per table per interval"
    )
    breaker_cooldown_s: float | None = Field(
        None,
        gt=0,
        description="half-open an open breaker after this long; None: stay open until the "
        "controller publishes a newer table",
    )
    outcome_window_s: float = Field(
        3600.0,
        gt=0,
        description="an outcome is accepted only for a request this process served this recently",
    )
    outcome_max_ids: int = Field(
        200_000,
        gt=0,
        description="served request ids remembered for outcomes (about 200 bytes each); the "
        "oldest are forgotten first",
    )
    token: SecretStr | None = Field(
        None,
        description="bearer token for route pushes, outcomes, admin routes and route pulls; "
        f"None: {TOKEN_ENV}, else $MODELOPS_HOME/gateway.token (created on first use)",
    )


class NullSink:
    """A PredictionSink that keeps nothing: for a gateway run without a prediction log."""

    def submit(self, record: PredictionRecord) -> bool:
        return True

    def submit_outcome(self, outcome: Outcome) -> bool:
        return True

    def submit_event(self, event: GatewayEvent) -> bool:
        return True

    def close(self) -> None:
        return None
