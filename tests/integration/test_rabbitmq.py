"""The RabbitMQ check against a real three-node cluster, with a real haflowd and real faults.

The cluster is the session's (``rabbit_cluster``: about 10-20 s to start); every test
that breaks it repairs it in ``finally`` and waits until it is healthy again, so the
order of the tests does not matter. Each test starts its own daemon (``daemon``).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from typing import Any

import aio_pika
import pytest

from tests.conftest import Daemon, wait_until
from tests.fixtures.rabbitmq import RabbitCluster

pytestmark = pytest.mark.integration

FAST = {"interval": "500ms", "timeout": "1s"}
TIMEOUT_S = 1.0
SECRET_PATHS = ("/rabbitmq", "/status", "/health", "/health/cluster", "/metrics", "/openapi.json")


def rabbit(d: Daemon) -> dict[str, Any]:
    status, body = d.get("/rabbitmq")
    assert status == 200, body  # always 200: the body says how the cluster is
    return body


def wait_rabbit(d: Daemon, pred: Any, timeout: float, what: str) -> dict[str, Any]:
    """Poll /rabbitmq until ``pred(body)``; the body that satisfied it."""
    def check() -> dict[str, Any] | None:
        body = rabbit(d)
        return body if pred(body) else None
    try:
        return wait_until(check, timeout, what, interval=0.1)
    except AssertionError as e:
        raise AssertionError(f"{e}\nlast /rabbitmq: {rabbit(d)}") from None


def passing(d: Daemon, timeout: float = 20.0) -> dict[str, Any]:
    return wait_rabbit(d, lambda b: b["status"] == "passing", timeout, "rabbitmq passing")


def node(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in body["nodes"] if n["name"] == name)


def metric(d: Daemon, name: str, **labels: str) -> float | None:
    """One sample of /metrics, or None when absent."""
    text = d.get("/metrics")[1].decode()
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if have == labels:
            return float(m.group(3))
    return None


async def _with_channel(url: str, work: Any) -> None:
    conn = await aio_pika.connect(url, timeout=5)
    try:
        await work(await conn.channel())
    finally:
        await conn.close()


def amqp(url: str, work: Any, timeout: float = 10.0) -> None:
    """Run ``await work(channel)`` on a fresh connection, within a deadline."""
    asyncio.run(asyncio.wait_for(_with_channel(url, work), timeout))


# =========================================================================== the healthy cluster


def test_all_running_and_the_round_trip_is_measured(daemon, rabbit_cluster: RabbitCluster) -> None:
    d = daemon(rabbit_cluster.toml(**FAST, per_node_amqp=True))
    passing(d)
    # a node that has just started has no statistics yet (they come every collect_statistics_interval)
    body = wait_rabbit(d, lambda b: b["status"] == "passing" and all(n["fd_used"] for n in b["nodes"]), 10,
                       "node statistics")
    names = [n.name for n in rabbit_cluster.nodes]
    assert [n["name"] for n in body["nodes"]] == names
    for n in body["nodes"]:
        assert (n["status"], n["running"], n["partitions"], n["alarms"], n["error"]) == ("passing", True, [], [], None)
        assert n["cluster_view"] == names
        assert 0 < n["fd_used"] < n["fd_total"]
        assert n["sockets_total"] > 0 and n["sockets_used"] is not None
        assert 0 < n["amqp_roundtrip_ms"] < TIMEOUT_S * 1000  # each node's own listener
    assert 0 < body["amqp_roundtrip_ms"] < TIMEOUT_S * 1000
    assert body["error"] is None and body["checked_at"] > time.time() - 10
    assert {q["name"]: q["exists"] for q in body["queues"]} == {"default": False, "celery": False}  # not a warning

    status, health = d.get("/health")
    assert status == 200
    check = next(c for c in health["checks"] if c["name"] == "rabbitmq")
    assert check["status"] == "passing" and "3 of 3 nodes running" in check["output"]
    assert d.get("/status")[1]["rabbitmq"]["status"] == "passing"
    assert d.get("/rabbitmq", method="HEAD")[0] == 200
    assert not d.get("/rabbitmq", method="HEAD")[1]  # no body
    assert "/rabbitmq" in d.get("/openapi.json")[1]["paths"]
    for n in names:
        assert metric(d, "haflowd_rabbitmq_node_running", node=n) == 1
        assert metric(d, "haflowd_rabbitmq_partitions", node=n) == 0
        assert metric(d, "haflowd_rabbitmq_alarm", node=n, alarm="memory") == 0
        assert metric(d, "haflowd_rabbitmq_alarm", node=n, alarm="disk") == 0
    assert 0 < (metric(d, "haflowd_rabbitmq_amqp_roundtrip_seconds") or 0) < TIMEOUT_S
    assert metric(d, "haflowd_check_status", check="rabbitmq") == 0
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/test installs the prometheus package"
    r = subprocess.run([promtool, "check", "metrics"], input=d.get("/metrics")[1].decode(), capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr

    # a node with no [rabbitmq] has no such check
    bare = daemon("")
    assert bare.get("/rabbitmq")[0] == 404
    assert all(c["name"] != "rabbitmq" for c in bare.get("/health")[1]["checks"])
    assert "rabbitmq" not in bare.get("/status")[1]


# =========================================================================== Celery's queues


def test_a_backlog_without_consumer_warns(daemon, rabbit_cluster: RabbitCluster) -> None:
    url = rabbit_cluster.amqp_url(1)

    async def backlog(ch: aio_pika.abc.AbstractChannel) -> None:
        await ch.declare_queue("celery", durable=True)
        for i in range(5):
            await ch.default_exchange.publish(
                aio_pika.Message(f"task {i}".encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="celery")

    async def delete(ch: aio_pika.abc.AbstractChannel) -> None:
        await ch.queue_delete("celery")

    try:
        amqp(url, backlog)
        d = daemon(rabbit_cluster.toml(**FAST, extra='queues = ["default", "celery"]\nqueue_warning_depth = 3\n'))
        body = wait_rabbit(d, lambda b: "queue celery" in (b.get("output") or ""), 20, "the backlog warning")
        assert body["status"] == "warning", body
        assert "queue celery: 5 messages, more than 3 and no consumer" in body["output"]
        queues = {q["name"]: q for q in body["queues"]}
        assert (queues["celery"]["exists"], queues["celery"]["messages"], queues["celery"]["consumers"]) == (True, 5, 0)
        assert (queues["default"]["exists"], queues["default"]["warning"]) == (False, None)
        assert "default" not in body["output"]
        assert metric(d, "haflowd_rabbitmq_queue_messages", queue="celery") == 5
        assert metric(d, "haflowd_rabbitmq_queue_consumers", queue="celery") == 0
    finally:
        amqp(url, delete)
    passing(d)


# =========================================================================== faults


def test_memory_alarm_is_a_warning_naming_the_node(daemon, rabbit_cluster: RabbitCluster) -> None:
    d = daemon(rabbit_cluster.toml(**FAST))
    passing(d)
    hf1 = rabbit_cluster.node(1)
    try:
        hf1.ctl("set_vm_memory_high_watermark", "0.0001")
        body = wait_rabbit(d, lambda b: "memory alarm on hf1@localhost" in (b.get("output") or ""), 15,
                           "the memory alarm")
        assert body["status"] == "warning", body  # publishers are blocked: the round trip fails, explained
        assert node(body, "hf1@localhost")["alarms"] == ["memory"]
        assert metric(d, "haflowd_rabbitmq_alarm", node="hf1@localhost", alarm="memory") == 1
        assert metric(d, "haflowd_rabbitmq_alarm", node="hf2@localhost", alarm="memory") == 0
    finally:
        hf1.ctl("set_vm_memory_high_watermark", "0.4")
        rabbit_cluster.wait_healthy()
    passing(d)  # and the probe connected again after its blocked connection was dropped
    assert metric(d, "haflowd_rabbitmq_alarm", node="hf1@localhost", alarm="memory") == 0


def test_a_stopped_node_is_a_warning_naming_it(daemon, rabbit_cluster: RabbitCluster) -> None:
    d = daemon(rabbit_cluster.toml(**FAST))
    passing(d)
    hf2 = rabbit_cluster.node(2)
    try:
        hf2.ctl("stop_app")  # about 6 s: RabbitMQ's own shutdown
        body = wait_rabbit(d, lambda b: "hf2@localhost: not running" in (b.get("output") or ""), 15,
                           "hf2 not running")
        assert body["status"] == "warning", body
        n = node(body, "hf2@localhost")
        assert (n["running"], n["status"]) == (False, "critical")
        assert metric(d, "haflowd_rabbitmq_node_running", node="hf2@localhost") == 0
        assert metric(d, "haflowd_rabbitmq_node_running", node="hf1@localhost") == 1
        status, health = d.get("/health")
        assert status == 200 and health["status"] == "warning"
    finally:
        hf2.ctl("start_app")
        rabbit_cluster.wait_healthy()
    passing(d)


def test_a_hung_node_is_critical_after_the_timeout_and_health_stays_fast(
        daemon, rabbit_cluster: RabbitCluster) -> None:
    d = daemon(rabbit_cluster.toml(**FAST))
    passing(d)
    hf3 = rabbit_cluster.node(3)
    slowest = 0.0
    hf3.signal(signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        deadline = stopped + 10
        seen: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            t = time.monotonic()
            code, _ = d.get("/health")
            slowest = max(slowest, time.monotonic() - t)
            assert code in (200, 503)
            body = rabbit(d)
            n = node(body, "hf3@localhost")
            if n["status"] == "critical" and not n["reachable"]:
                seen = body
                break
            time.sleep(0.05)
        assert seen is not None, f"hf3 never became critical: {rabbit(d)}"
        took = time.monotonic() - stopped
        assert took >= TIMEOUT_S * 0.9, f"critical after {took:.2f}s: sooner than the timeout?"
        assert "timeout after 1s" in node(seen, "hf3@localhost")["error"]
        assert "hf3@localhost: management API not answering" in seen["output"]
        assert seen["status"] in ("warning", "critical")
        for _ in range(20):  # and meanwhile, answers stay fast
            t = time.monotonic()
            d.get("/health")
            d.get("/rabbitmq", method="HEAD")
            slowest = max(slowest, (time.monotonic() - t) / 2)
            time.sleep(0.05)
    finally:
        hf3.signal(signal.SIGCONT)
    assert slowest < 0.1, f"a /health answer took {slowest * 1000:.0f} ms while a node hung"
    rabbit_cluster.wait_healthy()
    passing(d)


def test_a_broker_that_accepts_and_never_answers_does_not_stall_the_loop(daemon) -> None:
    """No cluster needed: a TCP listener that accepts and then says nothing, for the
    management API and for AMQP alike. Every round ends at its timeouts, the results say
    so, and the API answers at once meanwhile."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        port = hole.getsockname()[1]
        d = daemon(f"""
[rabbitmq]
interval = "300ms"
timeout = "500ms"
amqp_url = "amqp://haflowd:Hole-Secret-1@127.0.0.1:{port}/%2F"
[[rabbitmq.node]]
name = "rabbit@hole"
management_url = "http://127.0.0.1:{port}"
password = "Hole-Secret-1"
""")
        body = wait_rabbit(d, lambda b: b["nodes"][0]["error"] is not None and b["amqp_error"] is not None, 10,
                           "timeouts")
        assert body["status"] == "critical"
        assert "timeout after 500ms" in body["nodes"][0]["error"]
        assert body["amqp_error"] == "timeout after 500ms"
        first = body["checked_at"]
        slowest = 0.0
        for _ in range(30):
            t = time.monotonic()
            assert d.get("/health")[0] == 503
            slowest = max(slowest, time.monotonic() - t)
            time.sleep(0.05)
        assert slowest < 0.1
        later = rabbit(d)
        assert later["checked_at"] > first and not later["stale"]  # rounds go on
    assert "Hole-Secret-1" not in d.log_text()


# =========================================================================== secrets


def test_passwords_never_reach_logs_or_answers(daemon, rabbit_cluster: RabbitCluster) -> None:
    wrong_amqp = "Wrong-Amqp-" + secrets.token_urlsafe(8)
    wrong_mgmt = "Wrong-Mgmt-" + secrets.token_urlsafe(8)
    body = rabbit_cluster.toml(**FAST, per_node_amqp=True)
    body = body.replace(rabbit_cluster.amqp_url(2), rabbit_cluster.amqp_url(2, password=wrong_amqp))
    head, _, tail = body.rpartition(f'password = "{rabbit_cluster.password}"')  # node 3's management password
    body = head + f'password = "{wrong_mgmt}"' + tail
    d = daemon(body)
    seen = wait_rabbit(d, lambda b: "hf2@localhost: AMQP round trip failed" in (b.get("output") or "")
                       and "hf3@localhost" in (b.get("output") or ""), 20, "both login failures")
    assert seen["status"] == "warning", seen
    assert "login refused" in node(seen, "hf2@localhost")["amqp_error"]
    assert "HTTP 401" in node(seen, "hf3@localhost")["error"]
    assert any(e.get("event") == "rabbitmq_status" for e in d.log_events())
    leaks = (rabbit_cluster.password, wrong_amqp, wrong_mgmt)
    for path in SECRET_PATHS:
        answer = d.get(path)[1]
        text = answer.decode() if isinstance(answer, bytes) else str(answer)
        for s in leaks:
            assert s not in text, f"{path} shows a password"
    log = d.log_text()
    assert "rabbitmq_status" in log
    for s in leaks:
        assert s not in log, "the log shows a password"
