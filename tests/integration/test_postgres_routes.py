"""The PostgreSQL checker's routes as the read API serves them (GET and HEAD), from a real
checker with fake probes (tests/unit/test_postgres_checker.py) behind a test state: the API
renders the checker's snapshot and verdicts. Integration only because the test client
listens on a loopback socket."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from haflowd.api.server import ReadApi
from haflowd.checks.postgres import PostgresChecker
from haflowd.health import CheckRegistry, Status
from haflowd.testing import FakeClock
from tests.fixtures.api_state import FakeState
from tests.unit.test_postgres_checker import cfg, healthy

pytestmark = pytest.mark.integration


class client:
    """The read API's whole app, its only section ``[postgres]`` served by ``c``."""

    def __init__(self, c: PostgresChecker) -> None:
        app = ReadApi(FakeState(clock=c.clock, postgres=c)).app()
        self.tc: TestClient[Any, Any] = TestClient(TestServer(app))

    async def __aenter__(self) -> TestClient[Any, Any]:
        await self.tc.start_server()
        return self.tc

    async def __aexit__(self, *exc: object) -> None:
        await self.tc.close()


async def test_staleness_turns_critical_and_endpoints_503() -> None:
    clock = FakeClock()
    c = PostgresChecker(cfg(), CheckRegistry(clock), clock, node_prober=healthy)
    await c.probe_round()
    async with client(c) as cl:
        assert (await cl.get("/postgres/primary")).status == 200
        clock.advance(3.0)
        assert (await cl.get("/postgres/primary")).status == 200
        clock.advance(0.5)
        r = await cl.get("/postgres/primary")
        body = await r.json()
        assert r.status == 503 and body["stale"] is True and body["status"] == "critical"
        assert body["reason"].startswith("stale")
        assert (await cl.get("/postgres")).status == 200
    assert c.registry.status() == Status.CRITICAL


async def test_routes_get_and_head() -> None:
    clock = FakeClock()
    c = PostgresChecker(cfg(local="pg2"), CheckRegistry(clock), clock, node_prober=healthy)
    async with client(c) as cl:
        r = await cl.get("/postgres/replica")
        assert r.status == 503 and (await r.json())["reason"] == "not checked yet"
        await c.probe_round()
        for path, code in (("/postgres", 200), ("/postgres/primary", 503), ("/postgres/replica", 200),
                           ("/postgres/replica?lag=0", 200), ("/postgres/replica?lag=16MiB", 200),
                           ("/postgres/read-only", 200), ("/postgres/replica?lag=much", 400),
                           ("/postgres/read-only?lag=-1", 400)):
            r = await cl.get(path)
            assert r.status == code, path
            h = await cl.head(path)
            assert h.status == code and await h.read() == b"", path

