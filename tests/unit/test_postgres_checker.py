"""The PostgreSQL checker's thin I/O shell, with fake probes: bounds, in-flight limit, staleness,
metrics, and no secret in a DSN error. Its routes (GET and HEAD), served by the read API, are
in tests/integration/test_postgres_routes.py (they need a listening socket)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from haflowd.checks import pg_topology as t
from haflowd.checks.postgres import PostgresChecker, ProbeAbort, probe_node, probe_syncs
from haflowd.config import PostgresConfig, PostgresNode, Secret
from haflowd.health import CheckRegistry, Status
from haflowd.testing import FakeClock

SYS = 42


def cfg(nodes: tuple[str, ...] = ("pg1", "pg2"), local: str | None = "pg1", interval: float = 1.0,
        timeout: float = 0.2, topology: str = "streaming", bucardo: str | None = None) -> PostgresConfig:
    return PostgresConfig(topology=topology, local_node=local, interval=interval, timeout=timeout,
                          max_lag_bytes=1024, nodes=tuple(PostgresNode(n, Secret(f"host={n}")) for n in nodes),
                          bucardo_dsn=Secret(bucardo) if bucardo else None)


def healthy(node: PostgresNode, timeout: float, abort: ProbeAbort) -> t.NodeProbe:
    if node.name == "pg1":
        return t.NodeProbe(node.name, True, in_recovery=False, timeline=1, system_identifier=SYS,
                           current_lsn=1000, checked_at=time.time())
    return t.NodeProbe(node.name, True, in_recovery=True, timeline=1, system_identifier=SYS,
                       receive_lsn=1000, replay_lsn=1000, receiver_status="streaming", checked_at=time.time())


class Hang:
    """A prober that blocks pg1 until released (a blackholed connect), and counts live threads."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.live = 0
        self.max_live = 0
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, node: PostgresNode, timeout: float, abort: ProbeAbort) -> t.NodeProbe:
        if node.name != "pg1":
            return healthy(node, timeout, abort)
        with self.lock:
            self.calls += 1
            self.live += 1
            self.max_live = max(self.max_live, self.live)
        try:
            self.release.wait(10)
            return healthy(node, timeout, abort)
        finally:
            with self.lock:
                self.live -= 1


async def test_a_round_publishes_to_the_registry() -> None:
    clock = FakeClock()
    reg = CheckRegistry(clock)
    c = PostgresChecker(cfg(), reg, clock, node_prober=healthy)
    rnd = await c.probe_round()
    assert rnd.assessment.status == Status.PASSING and rnd.assessment.primary == "pg1"
    (res,) = reg.results()
    assert (res.name, res.status, res.interval) == ("postgres", Status.PASSING, 1.0)
    body = c.snapshot()
    assert body["status"] == "passing" and body["primary"] == "pg1" and body["stale"] is False
    assert [n["name"] for n in body["nodes"]] == ["pg1", "pg2"]


async def test_a_hung_node_is_bounded_and_never_has_two_threads() -> None:
    clock = FakeClock()
    hang = Hang()
    c = PostgresChecker(cfg(timeout=0.1), CheckRegistry(clock), clock, node_prober=hang)
    try:
        start = time.monotonic()
        first = await c.probe_round()
        assert time.monotonic() - start < 0.5  # bounded by timeout, not by the hang
        pg1 = first.assessment.node("pg1")
        assert pg1 is not None and not pg1.up and pg1.error == "no answer within 0.1s"
        assert first.assessment.status == Status.CRITICAL  # no primary
        assert first.assessment.node("pg2").up  # type: ignore[union-attr]  # the other node's result is there
        for _ in range(5):
            clock.advance(1.0)
            rnd = await c.probe_round()
            err = rnd.assessment.node("pg1").error  # type: ignore[union-attr]
            assert err is not None and err.startswith("still waiting on the previous probe (started ")
        assert hang.calls == 1 and hang.max_live == 1
        assert set(c.inflight()) == {"pg1"}
    finally:
        hang.release.set()
    await asyncio.sleep(0.05)
    assert c.inflight() == {}
    clock.advance(1.0)
    rnd = await c.probe_round()
    assert rnd.assessment.status == Status.PASSING and hang.calls == 2


async def test_before_the_first_round() -> None:
    clock = FakeClock()
    reg = CheckRegistry(clock)
    c = PostgresChecker(cfg(), reg, clock, node_prober=healthy)
    body = c.snapshot()
    assert body["status"] == "critical" and body["checked_at"] is None
    assert all(n["up"] is False and n["error"] == "not checked yet" for n in body["nodes"])
    assert 'haflowd_postgres_up{node="pg1"} 0.0' in metrics(c)


async def test_metrics() -> None:
    clock = FakeClock()
    c = PostgresChecker(cfg(), CheckRegistry(clock), clock, node_prober=healthy)
    await c.probe_round()
    text = metrics(c)
    for line in ('haflowd_postgres_up{node="pg1"} 1.0', 'haflowd_postgres_is_primary{node="pg1"} 1.0',
                 'haflowd_postgres_is_primary{node="pg2"} 0.0',
                 'haflowd_postgres_replication_lag_bytes{node="pg2"} 0.0',
                 'haflowd_postgres_replication_lag_seconds{node="pg2"} 0.0',
                 'haflowd_postgres_timeline{node="pg1"} 1.0', "haflowd_postgres_split_brain 0.0"):
        assert line in text
    assert 'haflowd_postgres_replication_lag_bytes{node="pg1"}' not in text  # a primary has no lag


async def test_bucardo_syncs_are_probed_with_their_own_bound() -> None:
    clock = FakeClock()
    seen: list[str] = []

    def syncs(dsn: Secret, timeout: float, abort: ProbeAbort) -> t.SyncsProbe:
        seen.append(dsn.reveal())
        return t.SyncsProbe((t.SyncState("s1", "inactive", now=10.0, created_at=1.0),))

    def writable(node: PostgresNode, timeout: float, abort: ProbeAbort) -> t.NodeProbe:
        return t.NodeProbe(node.name, True, in_recovery=False, read_only=False)

    c = PostgresChecker(cfg(topology="bucardo", bucardo="dbname=bucardo"), CheckRegistry(clock), clock,
                        node_prober=writable, syncs_prober=syncs)
    rnd = await c.probe_round()
    assert seen == ["dbname=bucardo"]
    assert rnd.assessment.status == Status.WARNING and "sync s1 is inactive" in rnd.assessment.output
    assert c.snapshot()["syncs"][0]["state"] == "inactive"
    assert 'haflowd_postgres_bucardo_sync_status{sync="s1"} 1.0' in metrics(c)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://postgres:Sup3rSecret%zz@127.0.0.1:1/postgres",
        "host=127.0.0.1 port=1 password=Sup3rSecret junk=1",
        "host=127.0.0.1 port=1 password=Sup3r Secret",
        "host=127.0.0.1 port=1 user=x password=Sup3rSecret connect_timeout=1",
    ],
)
def test_real_psycopg2_errors_carry_no_password(dsn: str) -> None:
    p = probe_node(PostgresNode("pg1", Secret(dsn)), 1.0, ProbeAbort())
    assert not p.up and p.error
    assert "Sup3r" not in p.error and "Secret" not in p.error
    s = probe_syncs(Secret(dsn), 1.0, ProbeAbort())
    assert s.error and "Sup3r" not in s.error


# --------------------------------------------------------------------------- helpers


class _One(Collector):
    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn

    def collect(self) -> Any:
        return self.fn()


def metrics(c: PostgresChecker) -> str:
    reg = CollectorRegistry()
    reg.register(_One(c.collect))
    return generate_latest(reg).decode()


