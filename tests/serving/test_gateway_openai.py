"""OpenAI-compatible routes for LLM models.

vLLM needs a GPU and cannot run on these machines, so the backend here is a stand-in
OpenAI-compatible server written for the tests (`gateway_fixtures.openai_standin`): it
speaks the same HTTP API (completions, chat completions, SSE streaming with a final usage
chunk) and echoes the model name it was asked for, so the tests can see which version
answered.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from gateway_fixtures import (
    MemorySink,
    json_server,
    make_app,
    openai_standin,
    running,
    table,
    until,
)

from serving.routing import BackendKind, Endpoint


def _llm(url: str, version: int) -> Endpoint:
    return Endpoint(
        version=version, backend=BackendKind.vllm, url=url, backend_model=f"llm-v{version}"
    )


@pytest.mark.timeout(60)
def test_completions_chat_and_streams_are_routed_and_logged() -> None:
    sink = MemorySink()

    async def scenario(url: str) -> None:
        t = table(
            "writer",
            _llm(url, 1),
            canary=(_llm(url + "/v1", 2), 50.0),
            shadow=(_llm(url, 3), 100.0),
            model_class="llm",
            log_inputs=True,
        )
        async with running(make_app(sink=sink, tables=[t])) as c:
            r = await c.post(
                "/v1/completions",
                json={"model": "writer", "prompt": "hello big world"},
                headers={"x-request-id": "c1"},
            )
            assert r.status_code == 200
            assert r.headers["x-modelops-version"] == "1" and r.headers["x-modelops-arm"] == "prod"
            body = r.json()
            assert (
                body["model"] == "llm-v1" and body["choices"][0]["text"] == "echo:hello big world"
            )
            # sticky by the body's "user" when no header names one
            arms = set()
            for i in range(20):
                msg = {
                    "model": "writer",
                    "user": f"u{i}",
                    "messages": [{"role": "user", "content": "hi there"}],
                }
                r1 = await c.post("/v1/chat/completions", json=msg)
                r2 = await c.post("/v1/chat/completions", json=msg)
                assert r1.status_code == r2.status_code == 200
                assert r1.headers["x-modelops-arm"] == r2.headers["x-modelops-arm"]
                assert r1.json()["model"] == f"llm-v{r1.headers['x-modelops-version']}"
                arms.add(r1.headers["x-modelops-arm"])
            assert arms == {"prod", "canary"}
            # streaming passes the server-sent events through
            async with c.stream(
                "POST",
                "/v1/completions",
                json={"model": "writer", "prompt": "a b c d", "stream": True},
                headers={"x-request-id": "s1"},
            ) as s:
                assert s.status_code == 200
                assert s.headers["content-type"].startswith("text/event-stream")
                raw = b"".join([chunk async for chunk in s.aiter_bytes()])
            events = [e for e in raw.split(b"\n\n") if e]
            assert events[-1] == b"data: [DONE]"
            assert json.loads(events[1][6:])["choices"][0]["text"] == ":a b c d"
            await until(lambda: {"c1", "s1"} <= {r.request_id for r in sink.records}, 5, "records")
            await until(lambda: len(sink.by_arm("shadow")) >= 42, 10, "shadow records")

    with json_server(openai_standin) as url:
        asyncio.run(scenario(url))
    recs = {(r.request_id, r.arm): r for r in sink.records}
    first = recs[("c1", "prod")]
    assert first.prompt_tokens == 3 and first.version == 1
    assert first.inputs == {"model": "llm-v1", "prompt": "hello big world"}
    assert first.outputs is not None and first.outputs["usage"]["prompt_tokens"] == 3
    streamed = recs[("s1", "prod")]
    assert streamed.prompt_tokens == 4 and streamed.error is None
    shadow = recs[("c1", "shadow")]
    assert shadow.version == 3 and shadow.prompt_tokens == 3 and shadow.error is None
