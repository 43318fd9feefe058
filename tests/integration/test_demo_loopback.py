"""The demo's loopback layout (scripts/demo --loopback, and its fallback where namespaces
cannot be made), headless and small: three nodes on 127.0.1.11-13 of one machine, each its
own haflowd, Airflow identity and DAG folder; PostgreSQL primary + standby and three
RabbitMQ nodes on 127.0.1.10; csync2 and gossip between the nodes. Killing every process of
a node is noticed by the others, and the node catches up when it is back.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest

from demo.cluster import CHAOS_DAG, DEMO_DAG, DemoCluster, unavailable
from tests.conftest import wait_until


@pytest.fixture(scope="module")
def cluster() -> Iterator[DemoCluster]:
    why = unavailable()
    if why:
        pytest.fail(f"the demo cluster cannot run: {why}")
    c = DemoCluster(profile="small", loopback=True)
    try:
        took = c.up(timeout=600, progress=print)
        print(f"loopback demo cluster healthy after {took:.0f}s")
        yield c
    finally:
        tmp = c.tmp
        c.down()
        assert not c.leftovers(), f"processes left behind: {c.leftovers()}"
        assert not tmp.exists(), f"{tmp} left behind"


def _dead_on(c: DemoCluster, observer: str, peer: str) -> bool:
    _, peers = c.get(observer, "/peers")
    return any(p["name"] == peer and p["status"] == "dead" for p in peers)


def _refused(addr: str, port: int) -> bool:
    try:
        socket.create_connection((addr, port), 1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def test_three_nodes_with_their_own_identities_on_one_machine(cluster: DemoCluster) -> None:
    addrs = {n.addr for n in cluster.nodes.values()}
    assert len(addrs) == 3 and all(a.startswith("127.") for a in addrs)
    for name in ("n1", "n2", "n3"):
        view = cluster.node_view(name)
        assert sorted(view["alive"]) == sorted({"n1", "n2", "n3"} - {name})
        assert len(view["ok"]) == len(cluster.nodes[name].components), view["components"]
    _, health = cluster.get("n1", "/health")
    checks = {c["name"]: c["status"] for c in health["checks"]}
    assert checks.get("postgres") == "passing", checks
    assert checks.get("rabbitmq") == "passing", checks
    # one host name, three Airflow identities: each node's scheduler and dag-processor
    # recorded the node's own name (demo.identity), and its job probes found them
    for job in ("SchedulerJob", "DagProcessorJob"):
        hosts = {r[0] for r in cluster.pg_sql(f"SELECT hostname FROM job WHERE job_type = '{job}'")}
        assert {"n1", "n2", "n3"} <= hosts, (job, hosts)
    # the demo DAG written in n1's folder reached the other two folders through csync2
    for name in ("n2", "n3"):
        assert (cluster.nodes[name].dir / "dags" / "haflowd_demo.py").read_text() == DEMO_DAG
    (cluster.nodes["n1"].dir / "dags" / "fresh.py").write_text("# written on n1\n")
    wait_until(lambda: all((cluster.nodes[m].dir / "dags" / "fresh.py").exists() for m in ("n2", "n3")), 30,
               "a file written on n1 to reach n2 and n3", interval=0.1)


def test_a_node_whose_processes_all_die_is_noticed_and_catches_up(cluster: DemoCluster) -> None:
    n3 = cluster.nodes["n3"]
    t0 = time.monotonic()
    cluster.kill_node("n3")
    assert not cluster.leftovers("n3")
    wait_until(lambda: _dead_on(cluster, "n1", "n3") and _dead_on(cluster, "n2", "n3"), 30,
               "n1 and n2 to see n3 dead", interval=0.2)
    detected = time.monotonic() - t0
    # nothing of n3 is left listening on its address; the survivors are untouched
    assert _refused(n3.addr, 8787) and _refused(n3.addr, 30865) and _refused(n3.addr, 8974)
    assert os.path.isdir(n3.dir / "dags")
    assert cluster.healthy(["n1", "n2"])

    (cluster.nodes["n1"].dir / "dags" / "haflowd_chaos.py").write_text(CHAOS_DAG)
    wait_until(lambda: (cluster.nodes["n2"].dir / "dags" / "haflowd_chaos.py").exists(), 30,
               "the DAG written on n1 to reach n2 while n3 is down", interval=0.1)

    t1 = time.monotonic()
    cluster.revive_node("n3")
    wait_until(lambda: (n3.dir / "dags" / "haflowd_chaos.py").exists(), 90,
               "n3 to catch up with the DAG written while it was away", interval=0.1)
    caught_up = time.monotonic() - t1
    wait_until(lambda: all("n3" in cluster.node_view(o)["alive"] for o in ("n1", "n2")), 60,
               "n3 alive again on n1 and n2", interval=0.5)
    print(f"n3 dead on both survivors after {detected:.1f}s; caught up {caught_up:.1f}s after it came back")
