"""The bad-input table: client mistakes get 4xx with a message, backend trouble 5xx with a
reason, and nothing a client sends is answered with a 500.

Hand-written cases cover each row; schemathesis then generates requests from the gateway's
own OpenAPI document against a gateway served over a real socket, in front of the real
Triton, and asserts that no generated request gets a server error.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from gateway_fixtures import (  # noqa: F401 - gw_models is a fixture
    AUTH,
    HungServer,
    ServerThread,
    gw_models,
    infer_body,
    make_app,
    running,
    table,
)
from hypothesis import HealthCheck, given, settings

from serving.routing import BackendKind, Endpoint
from serving.triton.server import free_port

MAX = 4096


def _llm(url: str = "http://127.0.0.1:1") -> Endpoint:
    return Endpoint(version=1, backend=BackendKind.vllm, url=url, backend_model="llm")


@pytest.fixture
def tables(gw_models) -> list:  # noqa: F811
    dead = Endpoint(
        version=4,
        backend=BackendKind.triton,
        url=f"http://127.0.0.1:{free_port()}",
        backend_model="x",
    )
    unloaded = Endpoint(
        version=5, backend=BackendKind.triton, url=gw_models.url, backend_model="never_loaded"
    )
    return [
        table("good", gw_models.endpoint(1)),
        table("raises", gw_models.endpoint(9)),
        table("down", dead),
        table("unloaded", unloaded),
        table("chat", _llm(), model_class="llm"),
        table("empty", None),
    ]


def _binary(header: dict[str, Any], blob: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + blob, {
        "inference-header-content-length": str(len(head)),
        "content-type": "application/octet-stream",
    }


BAD_BODIES: list[tuple[str, bytes, dict[str, str]]] = [
    ("not json", b"{nope", {}),
    (
        "NaN literal",
        b'{"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [NaN]}]}',
        {},
    ),
    ("not an object", b"[1, 2]", {}),
    ("no inputs", b"{}", {}),
    ("empty inputs", b'{"inputs": []}', {}),
    (
        "bad datatype",
        json.dumps(
            {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP99", "data": [1]}]}
        ).encode(),
        {},
    ),
    (
        "negative dim",
        json.dumps(
            {"inputs": [{"name": "INPUT0", "shape": [-1], "datatype": "FP32", "data": [1]}]}
        ).encode(),
        {},
    ),
    (
        "count mismatch",
        json.dumps(
            infer_body([1.0])
            | {"inputs": [{"name": "INPUT0", "shape": [3], "datatype": "FP32", "data": [1.0]}]}
        ).encode(),
        {},
    ),
    (
        "huge shape",
        json.dumps(
            {"inputs": [{"name": "INPUT0", "shape": [10**10], "datatype": "FP32", "data": [1.0]}]}
        ).encode(),
        {},
    ),
    (
        "string in FP32",
        json.dumps(
            {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": ["x"]}]}
        ).encode(),
        {},
    ),
    (
        "bool in FP32",
        json.dumps(
            {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [True]}]}
        ).encode(),
        {},
    ),
    ("id not a string", json.dumps(infer_body([1.0]) | {"id": 5}).encode(), {}),
    (
        "binary_data_output not bool",
        json.dumps(infer_body([1.0]) | {"parameters": {"binary_data_output": "yes"}}).encode(),
        {},
    ),
    (
        "header length not a number",
        json.dumps(infer_body([1.0])).encode(),
        {"inference-header-content-length": "abc"},
    ),
    (
        "header length past the body",
        json.dumps(infer_body([1.0])).encode(),
        {"inference-header-content-length": "100000"},
    ),
    (
        "binary size mismatch",
        *_binary(
            {
                "inputs": [
                    {
                        "name": "INPUT0",
                        "shape": [2],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": 4},
                    }
                ]
            },
            b"\0" * 4,
        ),
    ),
    (
        "trailing bytes",
        *_binary(
            {
                "inputs": [
                    {
                        "name": "INPUT0",
                        "shape": [1],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": 4},
                    }
                ]
            },
            b"\0" * 9,
        ),
    ),
]


@pytest.mark.timeout(60)
def test_malformed_bodies_are_400_with_a_message(tables) -> None:
    async def scenario() -> None:
        async with running(make_app(tables=tables)) as c:
            for what, body, headers in BAD_BODIES:
                r = await c.post("/v2/models/good/infer", content=body, headers=headers)
                assert r.status_code == 400, (what, r.status_code, r.text)
                assert r.json()["error"], what
                assert r.headers["x-request-id"]

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_the_bad_input_table(tables, gw_models) -> None:  # noqa: F811
    async def scenario() -> None:
        app = make_app(tables=tables, max_body_bytes=MAX, backend_timeout_s=0.3)
        async with running(app) as c:
            ok = infer_body([1.0])

            async def status(path: str, **kw: Any) -> httpx.Response:
                return await c.post(path, **kw)

            # unknown model: 404 on every route that names one
            for r in [
                await status("/v2/models/nope/infer", json=ok),
                await c.get("/v2/models/nope"),
                await c.get("/v2/models/nope/ready"),
                await status("/v1/completions", json={"model": "nope", "prompt": "hi"}),
            ]:
                assert r.status_code == 404, r.text
                assert "nope" in r.json()["error"]
            # backend down, version not loaded, nothing serving: 503 with Retry-After
            for model in ("down", "unloaded", "empty"):
                r = await status(f"/v2/models/{model}/infer", json=ok)
                assert r.status_code == 503, (model, r.text)
                assert r.headers["retry-after"] == "1" and r.json()["error"]
            # the backend failed on its own: 502, with the backend's message
            r = await status("/v2/models/raises/infer", json=ok)
            assert r.status_code == 502 and "fails on purpose" in r.json()["error"]
            # the backend rejected the request: its 4xx passes through
            r = await status("/v2/models/good/infer", json=infer_body([1.0], name="NOPE"))
            assert r.status_code == 400 and "NOPE" in r.json()["error"]
            # oversized: by Content-Length, and by counting a chunked body
            r = await status("/v2/models/good/infer", content=b"x" * (MAX + 1))
            assert r.status_code == 413

            async def chunks():  # type: ignore[no-untyped-def]
                for _ in range(10):
                    yield b"x" * 1024

            r = await status("/v2/models/good/infer", content=chunks())
            assert r.status_code == 413
            r = await c.put("/admin/routes", content=chunks())
            assert r.status_code == 413
            # wrong protocol for the model
            r = await status("/v2/models/chat/infer", json=ok)
            assert r.status_code == 400 and "LLM" in r.json()["error"]
            r = await status("/v1/completions", json={"model": "good", "prompt": "hi"})
            assert r.status_code == 400 and "not an LLM" in r.json()["error"]
            # bad identity headers
            r = await status("/v2/models/good/infer", json=ok, headers={"x-user-id": "u" * 300})
            assert r.status_code == 400
            r = await status("/v2/models/good/infer", json=ok, headers={"x-request-id": "r" * 300})
            assert r.status_code == 400
            # admin and outcome bodies
            for path, body in [
                ("/admin/routes", {"tables": "no"}),
                ("/v1/outcomes", {"value": 1}),
                ("/v1/outcomes", {"request_id": "r", "value": "NaN"}),
            ]:
                r = await (c.put if path == "/admin/routes" else c.post)(path, json=body)
                assert r.status_code == 400, (path, r.text)
                assert r.json()["error"].startswith("invalid request")
            r = await c.post("/v1/completions", content=b"{")
            assert r.status_code == 400
            r = await c.post("/v1/chat/completions", json={"model": "chat"})
            assert r.status_code == 400 and "messages" in r.json()["error"]

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_backend_timeout_is_504_with_retry_after() -> None:
    async def scenario(url: str) -> None:
        ep = Endpoint(version=3, backend=BackendKind.triton, url=url, backend_model="slow")
        app = make_app(tables=[table("slow", ep)], backend_timeout_s=0.3)
        async with running(app) as c:
            r = await c.post("/v2/models/slow/infer", json=infer_body([1.0]))
            assert r.status_code == 504 and r.headers["retry-after"] == "1"
            assert r.headers["x-modelops-version"] == "3" and "0.3 s" in r.json()["error"]

    with HungServer() as hung:
        asyncio.run(scenario(hung.url))


@pytest.mark.timeout(60)
def test_oversized_bodies_over_a_real_socket(tables) -> None:
    """uvicorn itself frames the body; the gateway still refuses it before buffering it all."""
    with ServerThread(make_app(tables=tables, max_body_bytes=MAX)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(
                b"POST /v2/models/good/infer HTTP/1.1\r\nHost: x\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            s.sendall(b"".join(b"400\r\n" + b"x" * 1024 + b"\r\n" for _ in range(8)))
            s.sendall(b"0\r\n\r\n")
            reply = b""
            while b"\r\n" not in reply:
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 413"), reply
        with httpx.Client(base_url=server.http_url) as client:
            for _ in range(3):  # a small remainder is drained: the connection stays usable
                r = client.post("/v2/models/good/infer", content=b"y" * (MAX + 10))
                assert r.status_code == 413 and "connection" not in r.headers
            r = client.post("/v2/models/good/infer", json=infer_body([1.0]))
            assert r.status_code == 200


# ---------------------------------------------------------------------- schemathesis


@pytest.fixture(scope="module")
def served_gateway(gw_models) -> Iterator[str]:  # noqa: F811
    good = table(
        "good", gw_models.endpoint(1), log_inputs=True, shadow=(gw_models.endpoint(2), 50.0)
    )
    app = make_app(tables=[good], max_body_bytes=1 << 16)
    with ServerThread(app) as server:
        yield server.http_url


@pytest.fixture(scope="module")
def admin_gateway() -> Iterator[str]:
    with ServerThread(make_app()) as server:
        yield server.http_url


def _no_server_error(case: Any, base_url: str) -> None:
    # With the service token, so generated admin and outcome requests reach validation.
    response = case.call(base_url=base_url, timeout=20, headers=AUTH)
    assert response.status_code < 500, (
        case.method,
        case.path,
        response.status_code,
        response.text[:300],
    )


_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)

# The schema is the gateway's own OpenAPI document; requests go to real servers (fixtures).
# Operations are parametrized by hand (one test id per operation) so that pytest-xdist
# schedules each of them; examples mix valid and schema-violating requests.
_SCHEMA = schemathesis.openapi.from_dict(make_app().openapi())
_OPS = [result.ok() for result in _SCHEMA.get_all_operations()]
# Route pushes run against a gateway of their own, so random tables never point the main
# gateway's models at made-up backends.
_PUSH = [op for op in _OPS if (op.method.upper(), op.path) == ("PUT", "/admin/routes")]
_OTHER = [op for op in _OPS if op not in _PUSH]


def _strategy(op: Any) -> Any:
    from hypothesis import strategies as st

    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    strategies = [op.as_strategy(generation_mode=m) for m in modes]
    if "{model}" in op.path:  # also aim at a real model, so bodies reach validation and Triton
        strategies += [
            op.as_strategy(generation_mode=m, path_parameters={"model": "good"}) for m in modes
        ]
    return st.one_of(strategies)


def _fuzz(op: Any, base_url: str) -> None:
    @given(case=_strategy(op))
    @_SETTINGS
    def run(case: Any) -> None:
        _no_server_error(case, base_url)

    run()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("op", _OTHER, ids=lambda op: op.label)
def test_generated_requests_never_get_a_server_error(op: Any, served_gateway: str) -> None:
    _fuzz(op, served_gateway)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("op", _PUSH, ids=lambda op: op.label)
def test_generated_route_pushes_never_get_a_server_error(op: Any, admin_gateway: str) -> None:
    _fuzz(op, admin_gateway)


def test_openapi_documents_the_proxy_routes(served_gateway: str) -> None:
    doc = httpx.get(f"{served_gateway}/openapi.json").json()
    infer = doc["paths"]["/v2/models/{model}/infer"]["post"]
    assert "inputs" in infer["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"400", "404", "409", "413", "503", "504"} <= set(infer["responses"])
    assert {
        "/v1/completions",
        "/v1/chat/completions",
        "/v1/outcomes",
        "/admin/routes",
        "/admin/breakers",
        "/metrics",
        "/v2/health/ready",
    } <= set(doc["paths"])


# ---------------------------------------------------------------------- hostile bodies


@pytest.mark.timeout(120)
def test_deeply_nested_json_is_a_400_that_says_so(tables) -> None:
    """200k `[` or 200k `{"a":` blew the JSON decoder's recursion limit: a 500."""
    bodies = [b"[" * 200_000, b'{"a":' * 200_000, b'{"inputs": ' + b"[" * 900 + b"]" * 900 + b"}"]
    routes = [
        ("POST", "/v2/models/good/infer"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("PUT", "/admin/routes"),
        ("POST", "/v1/outcomes"),
    ]

    async def scenario() -> None:
        async with running(make_app(tables=tables, max_body_bytes=4 << 20)) as c:
            for body in bodies:
                for method, path in routes:
                    r = await c.request(
                        method, path, content=body, headers={"content-type": "application/json"}
                    )
                    assert r.status_code == 400, (path, body[:20], r.text[:200])
                    error = r.json()["error"]
                    if body is not bodies[2] and path.startswith(("/v2", "/v1/c")):
                        assert "nests" in error and "not valid JSON" in error, error
            # a tensor whose data nests deeper than any rank: refused before the backend
            deep: object = [1.0]
            for _ in range(40):
                deep = [deep]
            body = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": deep}]}
            r = await c.post("/v2/models/good/infer", json=body)
            assert r.status_code == 400 and "nests deeper than 32" in r.json()["error"]
            chat = {"model": "chat", "messages": [{"role": "user", "content": "x"}]}
            for _ in range(100):
                chat = {"model": "chat", "messages": [chat]}
            r = await c.post("/v1/chat/completions", json=chat)
            assert r.status_code == 400 and "nests deeper than 64" in r.json()["error"]

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_numbers_out_of_their_datatypes_range_are_a_400(tables) -> None:
    """`1e400` parses as inf and reached Triton, which answered 502."""

    def body(value: str, dtype: str = "FP32") -> bytes:
        inp = f'{{"name": "INPUT0", "shape": [2], "datatype": "{dtype}", "data": [1.0, {value}]}}'
        return f'{{"inputs": [{inp}]}}'.encode()

    async def scenario() -> None:
        async with running(make_app(tables=tables)) as c:
            for value, dtype in [
                ("1e400", "FP32"),
                ("-1e400", "FP32"),
                ("1e39", "FP32"),
                ("70000", "FP16"),
                ("1e400", "FP64"),
                ("128", "INT8"),
                ("-1", "UINT32"),
                ("18446744073709551616", "UINT64"),
            ]:
                r = await c.post(
                    "/v2/models/good/infer",
                    content=body(value, dtype),
                    headers={"content-type": "application/json"},
                )
                assert r.status_code == 400, (value, dtype, r.text)
                assert f"out of range for {dtype}" in r.json()["error"], r.text
            r = await c.post(
                "/v2/models/good/infer",
                content=body("3.4e38"),
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 200 and r.json()["outputs"][0]["data"][0] == 2.0

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_compressed_bodies_are_decoded_checked_and_bounded(tables, gw_models) -> None:  # noqa: F811
    """A garbage gzip body got a 200 with an empty output. Valid gzip and deflate bodies
    (what tritonclient sends with request compression) are decoded and served; garbage is a
    400, a bomb past max_body_bytes a 413, an unknown encoding a 415."""
    import gzip
    import zlib

    ok = json.dumps(infer_body([1.5, 2.5])).encode()

    async def scenario() -> None:
        async with running(make_app(tables=tables, max_body_bytes=1 << 20)) as c:

            async def post(body: bytes, encoding: str) -> httpx.Response:
                return await c.post(
                    "/v2/models/good/infer",
                    content=body,
                    headers={"content-type": "application/json", "content-encoding": encoding},
                )

            for encoding, packed in [
                ("gzip", gzip.compress(ok)),
                ("deflate", zlib.compress(ok)),
                ("deflate", _raw_deflate(ok)),
                ("identity", ok),
            ]:
                r = await post(packed, encoding)
                assert r.status_code == 200, (encoding, r.text)
                assert r.json()["outputs"][0]["data"] == [3.0, 5.0]
                assert "content-encoding" not in r.headers
            for encoding, junk in [
                ("gzip", b"\x00garbage, not gzip"),
                ("gzip", gzip.compress(ok)[:-12]),  # truncated
                ("gzip", gzip.compress(ok) + b"trailing"),
                ("deflate", b"nope"),
            ]:
                r = await post(junk, encoding)
                assert r.status_code == 400, (encoding, junk[:10], r.text)
                assert f"not valid {encoding} data" in r.json()["error"]
            r = await post(gzip.compress(b" " * (4 << 20)), "gzip")  # 4 MiB of spaces
            assert r.status_code == 413 and "decompressed" in r.json()["error"]
            r = await post(ok, "br")
            assert r.status_code == 415 and "gzip, deflate" in r.json()["error"]
            r = await post(gzip.compress(b"{not json"), "gzip")
            assert r.status_code == 400 and "not valid JSON" in r.json()["error"]

    asyncio.run(scenario())

    # An unmodified tritonclient with request compression, over a real socket.
    import numpy as np
    import tritonclient.http as th

    with ServerThread(make_app(tables=tables)) as server:
        client = th.InferenceServerClient(server.url)
        x = np.array([1.0, 4.0], dtype=np.float32)
        for algorithm in ("gzip", "deflate"):
            inp = th.InferInput("INPUT0", [2], "FP32")
            inp.set_data_from_numpy(x)
            got = client.infer("good", [inp], request_compression_algorithm=algorithm)
            np.testing.assert_array_equal(got.as_numpy("OUTPUT0"), x * 2)
        client.close()


def _raw_deflate(data: bytes) -> bytes:
    import zlib

    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()
