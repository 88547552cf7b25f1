"""The gateway (traffic manager): routes, mirrors, checks contracts and logs every request.

It speaks the KServe v2 Open Inference Protocol (an unmodified `tritonclient.http` client
works against it as against Triton) and the OpenAI completions API for LLM models. For each
request it picks the version by the routing table of (model, slice) and a sticky hash of
the user, refuses or reroutes a version whose feature contract the current schema breaks
(Invariant 1), forwards the body as the client sent it (decoded if it was compressed),
answers with the model's name and registry version in place of the backend's, mirrors a
sample to the shadow version out of band, and hands a record to the prediction log
without waiting for it. `/v2/models/{model}/versions/{v}/infer` reaches version v itself.

Status codes a client can get from the gateway itself:

| case | status |
|---|---|
| malformed body, bad header or parameter, JSON nested too deep, a number out of range | 400 |
| missing or wrong service token on an admin route, outcome post or route push | 401 |
| unknown model, or a version it does not serve | 404 |
| broken feature contract, fail_closed (no usable fallback) | 409, x-modelops-contract: breaking |
| body larger than `max_body_bytes` (also once decompressed) | 413 |
| a Content-Encoding other than gzip, deflate or identity | 415 |
| backend answered 5xx | 502 with the backend's body |
| backend down, unreachable, version not loaded, nothing serving | 503 with Retry-After |
| backend timeout | 504 with Retry-After |

409 was chosen over 422 because the request itself is fine: it conflicts with the current
state of the feature store, and the same request succeeds once the schema or the route
changes. A backend's own 4xx answers pass through unchanged.

The modules: `config` (GatewayConfig), `asgi` (the bare fast path, body limit, token check),
`traffic` (the core `Gateway`), `route_choice` (which version a request goes to),
`openai_routes`, `kserve` (the v2 wire format), `shadow` (mirroring), `breaker`, `contracts`
(request-time contract verdicts), `metrics`, `recorder` (records off the request path),
`backend_pool` (HTTP to backends), `route_store` (the tables), `app` (the FastAPI routes),
`server` (listener and workers) and `launch` (what `modelops serve gateway` runs; its
flags are in `serving.cli`).
"""

from serving.gateway.app import OutcomeIn, create_app
from serving.gateway.config import GatewayConfig, NullSink
from serving.gateway.contracts import ContractResolver, ContractVerdict, RegistryContracts
from serving.gateway.launch import build_app_from_args
from serving.gateway.shadow import replay
from serving.gateway.traffic import Gateway

__all__ = [
    "ContractResolver",
    "ContractVerdict",
    "Gateway",
    "GatewayConfig",
    "NullSink",
    "OutcomeIn",
    "RegistryContracts",
    "build_app_from_args",
    "create_app",
    "replay",
]
