"""Helpers for the gateway tests: tiny real models on the real Triton, real servers.

The prediction log is tested on its own; here a MemorySink stands in for it (it implements
the PredictionSink protocol and records what the gateway hands it). Everything else is
real: the Triton fixture serves Python-backend models written below, the gateway runs under
uvicorn on real sockets where a test needs a URL, and the hung backend is a real socket
that accepts connections and never answers.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.gateway import GatewayConfig, create_app
from serving.records import GatewayEvent, Outcome, PredictionRecord
from serving.routing import (
    ABRoute,
    BackendKind,
    BreakerPolicy,
    Endpoint,
    RouteTable,
    RoutingSnapshot,
    ShadowRoute,
    WeightedEndpoint,
)
from serving.triton.server import TritonServer

# The service token the test gateways are configured with, and the header that carries it.
TOKEN = "gateway-test-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}

# ---------------------------------------------------------------------- the sink double


class MemorySink:
    """A PredictionSink that keeps everything in memory (thread-safe), for assertions."""

    def __init__(self, *, accept: bool = True) -> None:
        self.records: list[PredictionRecord] = []
        self.outcomes: list[Outcome] = []
        self.events: list[GatewayEvent] = []
        self.accept = accept
        self.closed = False
        self._lock = threading.Lock()

    def submit(self, record: PredictionRecord) -> bool:
        with self._lock:
            self.records.append(record)
        return self.accept

    def submit_outcome(self, outcome: Outcome) -> bool:
        with self._lock:
            self.outcomes.append(outcome)
        return self.accept

    def submit_event(self, event: GatewayEvent) -> bool:
        with self._lock:
            self.events.append(event)
        return self.accept

    def close(self) -> None:
        self.closed = True

    def by_arm(self, arm: str) -> list[PredictionRecord]:
        with self._lock:
            return [r for r in self.records if r.arm == arm]

    def events_of(self, kind: str) -> list[GatewayEvent]:
        with self._lock:
            return [e for e in self.events if e.kind == kind]


async def until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `pred` until it is truthy (no fixed sleeps), failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


# ---------------------------------------------------------------------- Triton models

_MODEL_PY = '''
import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """OUTPUT0 = 2 * INPUT0 and VERSION = the configured version, or fail on purpose."""

    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.version = float(params["version"]["string_value"])
        self.mode = params["mode"]["string_value"]

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if self.mode == "raise":
                raise RuntimeError("this model fails on purpose")
            y = (x * 2).astype(np.float32)
            v = np.array([self.version], dtype=np.float32)
            responses.append(
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("OUTPUT0", y), pb_utils.Tensor("VERSION", v)]
                )
            )
        return responses
'''


def write_python_model(repository: Path, name: str, *, version: int, mode: str) -> Path:
    """A Python-backend model: FP32 INPUT0 [-1] -> OUTPUT0 (doubled) and VERSION [1]."""
    root = repository / name
    (root / "1").mkdir(parents=True, exist_ok=True)
    (root / "1" / "model.py").write_text(_MODEL_PY)
    (root / "config.pbtxt").write_text(
        f'name: "{name}"\n'
        'backend: "python"\n'
        "max_batch_size: 0\n"
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] },\n'
        '         { name: "VERSION" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        "instance_group [ { kind: KIND_CPU count: 1 } ]\n"
        f'parameters [ {{ key: "version" value: {{ string_value: "{version}" }} }},\n'
        f'             {{ key: "mode" value: {{ string_value: "{mode}" }} }} ]\n'
    )
    return root


@dataclass(frozen=True)
class Models:
    """The models loaded on the session's Triton: v1..v3 double their input, `bad` raises."""

    triton: TritonServer
    v1: str = "gw_double_v1"
    v2: str = "gw_double_v2"
    v3: str = "gw_double_v3"
    bad: str = "gw_raise_v9"

    @property
    def url(self) -> str:
        return self.triton.http_url

    def endpoint(self, version: int, contract: str | None = None) -> Endpoint:
        name = {1: self.v1, 2: self.v2, 3: self.v3, 9: self.bad}[version]
        return Endpoint(
            version=version,
            backend=BackendKind.triton,
            url=self.url,
            backend_model=name,
            feature_contract_ref=contract,
        )


_models_lock = threading.Lock()


@pytest.fixture(scope="session")
def gw_models(triton: TritonServer) -> Models:
    """Write and load the gateway test models once per session (about 1.5 s each)."""
    import tritonclient.http as th

    models = Models(triton)
    specs = [
        (models.v1, 1, "double"),
        (models.v2, 2, "double"),
        (models.v3, 3, "double"),
        (models.bad, 9, "raise"),
    ]
    with _models_lock:
        client = th.InferenceServerClient(triton.url)
        for name, version, mode in specs:
            if client.is_model_ready(name):
                continue
            write_python_model(triton.repository, name, version=version, mode=mode)
            client.load_model(name)
        client.close()
    return models


# ---------------------------------------------------------------------- tables


def table(
    model_id: str,
    prod: Endpoint | None,
    *,
    generation: int = 1,
    slice_: str = "global",
    canary: tuple[Endpoint, float] | None = None,
    ab: tuple[str, list[tuple[Endpoint, float]]] | None = None,
    shadow: tuple[Endpoint, float] | None = None,
    fallback: Endpoint | None = None,
    on_breaking_contract: str = "fail_closed",
    log_inputs: bool = False,
    breaker: BreakerPolicy | None = None,
    model_class: str = "dnn",
) -> RouteTable:
    return RouteTable(
        model_id=model_id,
        slice=slice_,
        generation=generation,
        model_class=model_class,
        prod=prod,
        canary=WeightedEndpoint(endpoint=canary[0], percent=canary[1]) if canary else None,
        ab_test=ABRoute(
            layer=ab[0], arms=[WeightedEndpoint(endpoint=e, percent=p) for e, p in ab[1]]
        )
        if ab
        else None,
        shadow=ShadowRoute(endpoint=shadow[0], percent=shadow[1]) if shadow else None,
        fallback=fallback,
        on_breaking_contract=on_breaking_contract,  # type: ignore[arg-type]
        log_inputs=log_inputs,
        breaker=breaker or BreakerPolicy(),
    )


def snapshot(*tables: RouteTable) -> RoutingSnapshot:
    return RoutingSnapshot(tables=list(tables))


def infer_body(values: list[float], name: str = "INPUT0") -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": [len(values)], "datatype": "FP32", "data": values}]}


def output(resp: httpx.Response, name: str = "OUTPUT0") -> list[float]:
    for o in resp.json()["outputs"]:
        if o["name"] == name:
            return o["data"]
    raise AssertionError(f"no output {name} in {resp.text}")


def metric(text: str, sample: str, **labels: str) -> float | None:
    """One sample's value from Prometheus text (None when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    return None


# ---------------------------------------------------------------------- running apps


def make_app(
    *,
    sink: MemorySink | None = None,
    schema_source: Any = None,
    contracts: Any = None,
    tables: list[RouteTable] | None = None,
    **config: Any,
) -> Any:
    config.setdefault("token", TOKEN)
    app = create_app(
        GatewayConfig(**config),
        sink=sink if sink is not None else MemorySink(),
        schema_source=schema_source,
        contracts=contracts,
    )
    if tables:
        app.state.gateway.store.apply(snapshot(*tables))
    return app


@asynccontextmanager
async def running(app: Any, *, token: str | None = TOKEN) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan (ASGITransport does not) and give an in-process client that
    sends the service token (none when `token` is None)."""
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway", headers=headers
        ) as client:
            yield client


class ServerThread:
    """The app under a real uvicorn on a real socket, in a thread of this process."""

    def __init__(self, app: Any, *, sock: socket.socket | None = None, loop: str = "auto") -> None:
        import uvicorn

        from serving.gateway.server import make_listener, nodelay_protocol

        self.sock = sock or make_listener("127.0.0.1", 0, reuse_port=False)
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            http=nodelay_protocol(),
            lifespan="on",
            log_level="warning",
            access_log=False,
            loop=loop,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.url}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_until(lambda: self.server.started, 20, "uvicorn to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        self.sock.close()


class HungServer:
    """Accepts TCP connections, reads what arrives, and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)

    def __enter__(self) -> HungServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in self._conns:
            c.close()
        self.sock.close()


@contextmanager
def json_server(
    handler: Callable[[str, str, bytes], tuple[int, dict[str, str], bytes]],
) -> Iterator[str]:
    """A real HTTP server answering every request with `handler(method, path, body)`."""

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _do(self) -> None:
            n = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(n) if n else b""
            status, headers, payload = handler(self.command, self.path, body)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = _do  # noqa: N815 - the stdlib's names

        def log_message(self, *args: object) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def openai_standin(method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """A stand-in OpenAI-compatible server (vLLM needs a GPU and cannot run here).

    It answers completions and chat completions the way `vllm serve` does in shape: echoes
    the prompt, counts prompt tokens as whitespace-separated words, and streams SSE chunks
    ending with a usage chunk and `[DONE]` when asked to stream.
    """
    if method != "POST" or path not in ("/v1/completions", "/v1/chat/completions"):
        return 404, {"content-type": "application/json"}, b'{"error": "not found"}'
    req = json.loads(body)
    if path.endswith("chat/completions"):
        prompt = " ".join(m.get("content", "") for m in req["messages"])
    else:
        prompt = req["prompt"]
    tokens = len(prompt.split())
    usage = {"prompt_tokens": tokens, "completion_tokens": 2, "total_tokens": tokens + 2}
    if req.get("stream"):
        chunks = [
            {"id": "c1", "model": req["model"], "choices": [{"index": 0, "text": "echo"}]},
            {"id": "c1", "model": req["model"], "choices": [{"index": 0, "text": ":" + prompt}]},
            {"id": "c1", "model": req["model"], "choices": [], "usage": usage},
        ]
        sse = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
        return 200, {"content-type": "text/event-stream"}, sse + b"data: [DONE]\n\n"
    answer = {
        "id": "c1",
        "object": "text_completion",
        "model": req["model"],
        "choices": [{"index": 0, "text": "echo:" + prompt, "finish_reason": "stop"}],
        "usage": usage,
    }
    return 200, {"content-type": "application/json"}, json.dumps(answer).encode()
