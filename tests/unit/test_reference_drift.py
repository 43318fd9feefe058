"""docs/reference.md names every route and every metric the code can serve.

The routes come from the OpenAPI document (which tests/unit/test_api_shape.py holds equal
to the app's routes); the metric families from a real ``/metrics`` registry built on a
test state with every section present and real checkers behind it (PostgreSQL probed once
with fake probes, Bucardo topology, so its conditional family shows too). The reasons a
counter pre-creates (``haflowd_gossip_rejected_total``, ``haflowd_api_refused_total``,
``haflowd_log_dropped_total``) must be named as well. Pure: no socket, no subprocess.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from haflowd.api import metrics
from haflowd.api.openapi import OPENAPI
from haflowd.api.server import ReadApi
from haflowd.api.state import GossipMetrics
from haflowd.checks import pg_topology as t
from haflowd.checks.postgres import PostgresChecker, ProbeAbort
from haflowd.checks.rabbitmq import RabbitChecker
from haflowd.config import PostgresNode, RabbitConfig, RabbitNode, Secret
from haflowd.gossip.transport import REJECT_REASONS
from haflowd.health import CheckRegistry
from haflowd.sync.service import SyncService
from haflowd.testing import FakeClock
from tests.fixtures.api_state import FakeState
from tests.unit.test_postgres_checker import cfg as pg_config
from tests.unit.test_sync_service import config as sync_config

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"
PRE_CREATED_REASONS = ("haflowd_gossip_rejected_total", "haflowd_api_refused_total", "haflowd_log_dropped_total")


def section(heading: str) -> str:
    """The text under ``## heading...`` up to the next ``## `` heading."""
    text = REFERENCE.read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(heading)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m is not None, f"docs/reference.md has no section '## {heading}'"
    return m.group(1)


def documented_routes() -> set[str]:
    """Paths in the read API's routes table: ``| GET `/path?query` | ...``."""
    found = set()
    for line in section("Read-only HTTP API").splitlines():
        m = re.match(r"\|\s*GET\s+`([^`?]+)", line)
        if m:
            found.add(m.group(1))
    return found


def tokens(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z0-9_]+", text))


async def full_state(tmp_path: Path) -> FakeState:
    """Every section a config can have, each served by the real class."""
    clock = FakeClock()
    registry = CheckRegistry(clock)

    def writable(node: PostgresNode, timeout: float, abort: ProbeAbort) -> t.NodeProbe:
        return t.NodeProbe(node.name, True, in_recovery=False, read_only=False, timeline=1, system_identifier=1)

    def syncs(dsn: Secret, timeout: float, abort: ProbeAbort) -> t.SyncsProbe:
        return t.SyncsProbe((t.SyncState("s1", "active", now=10.0, created_at=1.0),))

    pg = PostgresChecker(pg_config(topology="bucardo", bucardo="dbname=bucardo"), registry, clock,
                         node_prober=writable, syncs_prober=syncs)
    await pg.probe_round()
    rabbit = RabbitChecker(RabbitConfig(interval=1.0, timeout=1.0, amqp_url=None,
                                        nodes=(RabbitNode("rabbit@a", "http://127.0.0.1:1", "guest", None),)),
                           registry, clock)
    sync = SyncService(sync_config(), "n1", tmp_path, registry, clock, gossip=True)
    gossip = GossipMetrics(messages={("in", "ping"): 1, ("out", "ack"): 1},
                           rejected=dict.fromkeys(REJECT_REASONS, 0), local_health=0)
    return FakeState(clock=clock, gossip=gossip, postgres=pg, rabbitmq=rabbit, sync=sync)


def test_section_reader_finds_the_tables() -> None:
    assert "/liveness" in documented_routes()
    assert "haflowd_build_info" in tokens(section("Metrics"))


def test_every_route_of_the_openapi_document_is_in_the_reference() -> None:
    missing = sorted(set(OPENAPI["paths"]) - documented_routes())
    assert missing == [], f"docs/reference.md's routes table lacks {missing}"


@pytest.fixture
async def exposition(tmp_path: Path) -> str:
    api = ReadApi(await full_state(tmp_path))
    return metrics.render(api.registry).decode()


def test_every_metric_family_is_in_the_reference(exposition: str) -> None:
    exposed = set(re.findall(r"^# TYPE (\S+) ", exposition, re.M))
    for family in ("haflowd_log_queue_lines", "haflowd_worker_in_flight", "haflowd_sync_conflicts_resolved_total",
                   "haflowd_postgres_bucardo_sync_status", "haflowd_rabbitmq_amqp_up",
                   "haflowd_gossip_local_health", "haflowd_api_refused_total", "haflowd_process_open_fds"):
        assert family in exposed  # the state really has every section
    missing = sorted(exposed - tokens(section("Metrics")))
    assert missing == [], f"docs/reference.md's Metrics section lacks {missing}"


def test_every_pre_created_reason_is_in_the_reference(exposition: str) -> None:
    documented = section("Metrics")
    lines = {line.split()[0]: line for line in documented.splitlines() if line.startswith("haflowd_")}
    missing: list[str] = []
    for family in text_string_to_metric_families(exposition):
        name = family.name + ("_total" if family.type == "counter" else "")
        if name not in PRE_CREATED_REASONS:
            continue
        line = next((v for k, v in lines.items() if k.split("{")[0] == name), "")
        reasons = {s.labels["reason"] for s in family.samples if "reason" in s.labels}
        assert reasons, name
        missing += [f"{name} reason {r}" for r in sorted(reasons - tokens(line))]
    assert missing == [], missing
