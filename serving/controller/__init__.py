"""The deployment controller: make the serving plane match the registry's desired state.

`reconciler` (the Controller: one pass loads, routes, pushes and unloads; `drift()` reads
what differs without acting), `adapters` (one per runtime: Triton, Ray Serve, vLLM) and
`route_server` (`GET /v1/routes` and `/v1/status` for gateways that pull).
"""

from serving.controller.adapters import RayAdapter, ServingBackend, TritonAdapter, VLLMAdapter
from serving.controller.reconciler import (
    Controller,
    ControllerStatus,
    PassBackoff,
    ReconcileStep,
    SliceStatus,
    triton_controller,
)
from serving.controller.route_server import ControllerServer

__all__ = [
    "ServingBackend",
    "TritonAdapter",
    "RayAdapter",
    "VLLMAdapter",
    "Controller",
    "ControllerStatus",
    "SliceStatus",
    "ReconcileStep",
    "PassBackoff",
    "ControllerServer",
    "triton_controller",
]
