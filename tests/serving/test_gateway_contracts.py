"""Invariant 1 at request time: fail closed or fall back when the schema breaks a contract.

Contracts live in a real registry (SQLite in tmp) and schemas in real versioned schema
files; the gateway checks them through `RegistryContracts` and `FileSchemaSource`. A schema
change takes effect after the gateway's poll, never per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_fixtures import (  # noqa: F401 - gw_models is a fixture
    MemorySink,
    gw_models,
    infer_body,
    make_app,
    metric,
    output,
    running,
    table,
    until,
)

from modelops.contracts import (
    Feature,
    FeatureContract,
    FeatureSchema,
    FileSchemaSource,
    write_schema,
)
from modelops.errors import SpecError
from modelops.registry import Registry
from serving.gateway import GatewayConfig, RegistryContracts, create_app

A = Feature(name="a", dtype="float32")
B = Feature(name="b", dtype="int64")


class CountingSchemaSource(FileSchemaSource):
    """The real file source, counting how often the gateway asks for the version."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.version_calls = 0

    def current_version(self) -> int:
        self.version_calls += 1
        return super().current_version()


@pytest.fixture
def contracts(tmp_path: Path) -> Iterator[RegistryContracts]:
    reg = Registry(f"sqlite:///{tmp_path / 'registry.db'}", auto_upgrade=True)
    reg.register_contract(FeatureContract(name="feat", version=1, features=[A]))
    reg.register_contract(FeatureContract(name="feat", version=2, features=[A, B]))
    try:
        yield RegistryContracts(reg)
    finally:
        reg.close()


@pytest.fixture
def schemas(tmp_path: Path) -> CountingSchemaSource:
    write_schema(tmp_path / "schemas", FeatureSchema(version=1, features=[A, B]))
    return CountingSchemaSource(tmp_path / "schemas")


def _schema(source: FileSchemaSource, version: int, *features: Feature) -> None:
    write_schema(source.directory, FeatureSchema(version=version, features=list(features)))


@pytest.mark.timeout(60)
def test_fail_closed_after_the_poll_not_per_request(gw_models, contracts, schemas) -> None:  # noqa: F811
    sink = MemorySink()
    t = table("closed", gw_models.endpoint(2, "feat@2"))

    async def scenario() -> None:
        app = make_app(
            sink=sink, schema_source=schemas, contracts=contracts, tables=[t], schema_poll_s=3600
        )
        gw = app.state.gateway
        async with running(app) as c:

            async def call():  # type: ignore[no-untyped-def]
                return await c.post("/v2/models/closed/infer", json=infer_body([1.0]))

            assert (await call()).status_code == 200
            _schema(schemas, 2, A)  # feature b is gone: breaks feat@2
            asked = schemas.version_calls
            for _ in range(5):  # no poll yet: the cached verdict stands, and is not re-asked
                assert (await call()).status_code == 200
            assert schemas.version_calls == asked
            assert await asyncio.to_thread(gw.guard.poll_once)  # the background poll's work
            r = await call()
            assert r.status_code == 409
            assert r.headers["x-modelops-contract"] == "breaking"
            assert r.headers["x-modelops-version"] == "2"
            body = r.json()
            assert body["contract"] == "feat@2" and body["schema_version"] == 2
            assert body["policy"] == "fail_closed" and "failing closed" in body["error"]
            assert any("'b'" in reason for reason in body["reasons"])
            text = (await c.get("/metrics")).text
            assert (
                metric(
                    text,
                    "modelops_gateway_contract_refusals_total",
                    arm="prod",
                    model="closed",
                    version="2",
                )
                == 1.0
            )
            _schema(schemas, 3, A, B)  # the feature is back
            assert await asyncio.to_thread(gw.guard.poll_once)
            assert (await call()).status_code == 200
            await until(lambda: sink.events_of("contract_breaking"), 5, "contract event")
            await until(
                lambda: any(r.error == "contract_breaking" for r in sink.records),
                5,
                "refusal record",
            )

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_background_poll_picks_up_a_schema_change(gw_models, contracts, schemas) -> None:  # noqa: F811
    t = table("polled", gw_models.endpoint(2, "feat@2"))

    async def scenario() -> None:
        app = make_app(schema_source=schemas, contracts=contracts, tables=[t], schema_poll_s=0.05)
        async with running(app) as c:
            r = await c.post("/v2/models/polled/infer", json=infer_body([1.0]))
            assert r.status_code == 200
            _schema(schemas, 2, A)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while r.status_code == 200:
                assert loop.time() < deadline, "the schema change was never noticed"
                await asyncio.sleep(0.02)
                r = await c.post("/v2/models/polled/infer", json=infer_body([1.0]))
            assert r.status_code == 409

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_fallback_to_last_good_version(gw_models, contracts, schemas) -> None:  # noqa: F811
    t = table(
        "fallen",
        gw_models.endpoint(2, "feat@2"),
        fallback=gw_models.endpoint(1, "feat@1"),
        on_breaking_contract="fallback",
    )

    async def scenario() -> None:
        app = make_app(schema_source=schemas, contracts=contracts, tables=[t], schema_poll_s=3600)
        gw = app.state.gateway
        async with running(app) as c:
            r = await c.post("/v2/models/fallen/infer", json=infer_body([1.0]))
            assert r.headers["x-modelops-version"] == "2" and "x-modelops-fallback" not in r.headers
            _schema(schemas, 2, A)  # breaks feat@2, not feat@1
            await asyncio.to_thread(gw.guard.poll_once)
            r = await c.post("/v2/models/fallen/infer", json=infer_body([1.0]))
            assert r.status_code == 200
            assert r.headers["x-modelops-fallback"] == "contract"
            assert r.headers["x-modelops-arm"] == "fallback"
            assert r.headers["x-modelops-version"] == "1" and output(r, "VERSION") == [1.0]
            text = (await c.get("/metrics")).text
            assert (
                metric(
                    text,
                    "modelops_gateway_fallbacks_total",
                    arm="prod",
                    model="fallen",
                    reason="contract",
                    version="2",
                )
                == 1.0
            )
            _schema(schemas, 3)  # now nothing is left: the fallback is broken too
            await asyncio.to_thread(gw.guard.poll_once)
            r = await c.post("/v2/models/fallen/infer", json=infer_body([1.0]))
            assert r.status_code == 409 and r.json()["policy"] == "fallback"
            assert "no usable fallback" in r.json()["error"]

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_candidate_with_broken_contract_leaves_rotation(gw_models, contracts, schemas) -> None:  # noqa: F811
    sink = MemorySink()
    t = table(
        "cand", gw_models.endpoint(1, "feat@1"), canary=(gw_models.endpoint(2, "feat@2"), 100.0)
    )

    async def scenario() -> None:
        app = make_app(
            sink=sink, schema_source=schemas, contracts=contracts, tables=[t], schema_poll_s=3600
        )
        async with running(app) as c:
            hdr = {"x-user-id": "someone"}
            r = await c.post("/v2/models/cand/infer", json=infer_body([1.0]), headers=hdr)
            assert r.headers["x-modelops-arm"] == "canary"
            _schema(schemas, 2, A)
            await asyncio.to_thread(app.state.gateway.guard.poll_once)
            r = await c.post("/v2/models/cand/infer", json=infer_body([1.0]), headers=hdr)
            assert r.status_code == 200 and output(r, "VERSION") == [1.0]
            assert r.headers["x-modelops-arm"] == "prod"
            assert r.headers["x-modelops-fallback"] == "contract"
            await until(lambda: sink.events_of("contract_breaking"), 5, "event")
            assert sink.events_of("contract_breaking")[0].version == 2

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_unknown_contract_and_missing_schema(gw_models, contracts, tmp_path: Path) -> None:  # noqa: F811
    source = FileSchemaSource(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    t = table("ghost", gw_models.endpoint(1, "ghost@1"))
    ok = table("known", gw_models.endpoint(1, "feat@1"))

    async def scenario() -> None:
        app = make_app(
            schema_source=source, contracts=contracts, tables=[t, ok], schema_poll_s=3600
        )
        async with running(app) as c:
            # no schema at all yet: the answer is unknown, so nobody is served (503, retry)
            r = await c.post("/v2/models/known/infer", json=infer_body([1.0]))
            assert r.status_code == 503 and r.headers["x-modelops-contract"] == "unknown"
            assert "retry-after" in r.headers
            _schema(source, 1, A, B)
            await asyncio.to_thread(app.state.gateway.guard.poll_once)
            assert (
                await c.post("/v2/models/known/infer", json=infer_body([1.0]))
            ).status_code == 200
            r = await c.post("/v2/models/ghost/infer", json=infer_body([1.0]))
            assert r.status_code == 409 and r.json()["status"] == "UNRESOLVED"

    asyncio.run(scenario())


def test_contract_checks_need_both_sources(schemas) -> None:
    with pytest.raises(SpecError, match="both"):
        create_app(GatewayConfig(), sink=MemorySink(), schema_source=schemas, contracts=None)
