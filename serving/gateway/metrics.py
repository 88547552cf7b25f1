"""Prometheus metrics for the gateway, one registry per app.

A registry per app (not the process-global default) lets tests run several gateways in one
process without collisions. Label children are cached per label tuple, because
`Counter.labels()` takes a lock and hashes its arguments on every call and the request path
should pay that once per (model, version, arm), not once per request.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as _CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["GatewayMetrics", "CONTENT_TYPE_LATEST"]

CONTENT_TYPE_LATEST = _CONTENT_TYPE

# Sub-millisecond resolution matters: the gateway's own budget is about 1 ms.
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

_MVA = ("model", "version", "arm")


class GatewayMetrics:
    """Every counter the gateway exports, labelled by model, version and arm."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        p = "modelops_gateway_"
        self.requests = Counter(
            p + "requests", "requests answered, by status code", [*_MVA, "code"], registry=r
        )
        self.latency = Histogram(
            p + "request_seconds",
            "time from request to response, gateway included",
            list(_MVA),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            p + "errors", "requests that failed, by kind", [*_MVA, "kind"], registry=r
        )
        self.fallbacks = Counter(
            p + "fallbacks",
            "requests routed away from their assigned version (reason: contract or breaker)",
            [*_MVA, "reason"],
            registry=r,
        )
        self.contract_refusals = Counter(
            p + "contract_refusals",
            "requests refused because the version's feature contract is broken",
            list(_MVA),
            registry=r,
        )
        self.shadow_mirrored = Counter(
            p + "shadow_mirrored", "requests mirrored to a shadow version", list(_MVA), registry=r
        )
        self.shadow_dropped = Counter(
            p + "shadow_dropped",
            "mirrors dropped (reason: queue_full, breaker, contract)",
            [*_MVA, "reason"],
            registry=r,
        )
        self.shadow_errors = Counter(
            p + "shadow_errors", "mirrored requests that failed", [*_MVA, "kind"], registry=r
        )
        self.breaker_trips = Counter(
            p + "breaker_trips", "circuit breakers opened", list(_MVA), registry=r
        )
        self.breakers_open = Gauge(
            p + "breakers_open", "circuit breakers currently open", registry=r
        )
        self.records_dropped = Counter(
            p + "records_dropped",
            "prediction records, outcomes or events the sink refused or failed on",
            ["kind"],
            registry=r,
        )
        self.route_generation = Gauge(
            p + "route_generation",
            "generation of the routing table in use",
            ["model", "slice"],
            registry=r,
        )
        self.route_pull_failures = Counter(
            p + "route_pull_failures", "failed pulls from the controller", registry=r
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*labels)
            self._children[key] = child
        return child

    def observe(self, model: str, version: str, arm: str, code: int, seconds: float) -> None:
        """One answered request; called once per request on the hot path."""
        self._child(self.requests, (model, version, arm, str(code))).inc()
        self._child(self.latency, (model, version, arm)).observe(seconds)

    def inc(self, metric: Any, *labels: str) -> None:
        self._child(metric, labels).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
