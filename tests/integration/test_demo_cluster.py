"""The demo's three-node cluster, headless and smaller (scheduler and dag-processor on every
node, the api-server on n1): it becomes healthy, survives the loss of a node, and the node
catches up when it is back. Everything real: namespaces, PostgreSQL primary + standby,
three RabbitMQ nodes, csync2, gossip, Airflow 3 on PostgreSQL with the CeleryExecutor.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.cluster import CHAOS_DAG, DemoCluster, unavailable
from tests.conftest import wait_until


@pytest.fixture(scope="module")
def cluster() -> Iterator[DemoCluster]:
    why = unavailable()
    if why:
        pytest.fail(f"the demo cluster cannot run: {why}")
    c = DemoCluster(profile="small")
    try:
        took = c.up(timeout=600, progress=print)
        print(f"demo cluster healthy after {took:.0f}s")
        yield c
    finally:
        prefix = c.prefix
        c.down()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert prefix not in left, f"namespaces left behind: {left}"
        assert not any(Path("/etc/netns").glob(f"{prefix}-*")), "hosts files left behind"


def _dead_on(c: DemoCluster, observer: str, peer: str) -> bool:
    _, peers = c.get(observer, "/peers")
    return any(p["name"] == peer and p["status"] == "dead" for p in peers)


def test_becomes_healthy_with_every_node_seeing_the_others(cluster: DemoCluster) -> None:
    for name in ("n1", "n2", "n3"):
        view = cluster.node_view(name)
        assert sorted(view["alive"]) == sorted({"n1", "n2", "n3"} - {name})
        assert len(view["ok"]) == len(cluster.nodes[name].components)
    # one node shows the whole cluster
    status, body = cluster.get("n2", "/health/cluster")
    assert status == 200, body
    assert {n["name"] for n in body["nodes"]} == {"n1", "n2", "n3"}
    # the checks see the real PostgreSQL pair and RabbitMQ cluster
    _, health = cluster.get("n1", "/health")
    checks = {c["name"]: c["status"] for c in health["checks"]}
    assert checks.get("postgres") == "passing", checks
    assert checks.get("rabbitmq") == "passing", checks
    # every node's scheduler recorded its own host name in Airflow's job table
    hosts = {r[0] for r in cluster.pg_sql("SELECT hostname FROM job WHERE job_type = 'SchedulerJob'")}
    assert {"n1", "n2", "n3"} <= hosts


def test_survives_the_loss_of_a_node_and_catches_it_up(cluster: DemoCluster) -> None:
    t0 = time.monotonic()
    cluster.kill_node("n3")
    wait_until(lambda: _dead_on(cluster, "n1", "n3") and _dead_on(cluster, "n2", "n3"), 30,
               "n1 and n2 to see n3 dead", interval=0.2)
    detected = time.monotonic() - t0
    # the survivors' own Airflow components are untouched
    assert cluster.healthy(["n1", "n2"])

    (cluster.nodes["n1"].dir / "dags" / "haflowd_chaos.py").write_text(CHAOS_DAG)
    wait_until(lambda: (cluster.nodes["n2"].dir / "dags" / "haflowd_chaos.py").exists(), 30,
               "the DAG written on n1 to reach n2 while n3 is down", interval=0.1)
    wait_until(lambda: cluster.pg_sql("SELECT dag_id FROM dag WHERE dag_id = 'haflowd_chaos'"), 180,
               "the new DAG to be parsed", interval=1.0)
    _, sync = cluster.get("n1", "/sync")
    assert sync["peers"]["n2"]["state"] == "ok"
    assert sync["peers"]["n3"]["state"] in ("failing", "pending")

    t1 = time.monotonic()
    cluster.revive_node("n3")
    wait_until(lambda: (cluster.nodes["n3"].dir / "dags" / "haflowd_chaos.py").exists(), 90,
               "n3 to catch up with the DAG written while it was away", interval=0.1)
    caught_up = time.monotonic() - t1
    wait_until(lambda: all(not _dead_on(cluster, o, "n3") and "n3" in cluster.node_view(o)["alive"]
                           for o in ("n1", "n2")), 60, "n3 alive again on n1 and n2", interval=0.5)
    wait_until(lambda: cluster.healthy(), 400, "the whole cluster healthy again", interval=2.0)
    print(f"n3 dead on both survivors after {detected:.1f}s; caught up {caught_up:.1f}s after it came back")
