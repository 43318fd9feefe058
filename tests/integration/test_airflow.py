"""Real Airflow 3 under haflowd, from presets: migrate (oneshot), scheduler, dag-processor,
api-server on SQLite. The scheduler's orphan problem, a hung scheduler, and a clean stop.

The tests share one daemon (Airflow takes tens of seconds to start on two cores) and run
in file order: the last one stops it.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.conftest import Daemon, alive, free_port, tree_pids, wait_until
from tests.fixtures.airflow import AirflowHome, airflow_processes

HEALTHY_TIMEOUT_S = 300.0


def _inline(env: dict[str, str]) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in env.items()) + " }"


@pytest.fixture(scope="module")
def node(airflow_sqlite: AirflowHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("airflow-node")
    d = Daemon(dir=root, port=free_port(), config=root / "haflowd.toml")
    d.env = airflow_sqlite.env
    # the scheduler's health server reports the scheduler loop's heartbeat; a short
    # threshold makes a hung loop visible in seconds rather than half a minute
    sched_env = {"AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "8"}
    d.write_config(f"""
        [[component]]
        name = "migrate"
        preset = "airflow-db-migrate"

        [[component]]
        name = "scheduler"
        preset = "airflow-scheduler"
        start_after = ["migrate"]
        environment = {_inline(sched_env)}
        stop_timeout = "20s"
        [component.health]
        interval = "2s"
        timeout = "2s"
        failures = 2

        [[component]]
        name = "dag-processor"
        preset = "airflow-dag-processor"
        start_after = ["migrate"]
        [component.health]
        interval = "5s"
        timeout = "5s"

        [[component]]
        name = "api-server"
        preset = "airflow-api-server"
        start_after = ["migrate"]
        [component.health]
        interval = "3s"
        timeout = "3s"
    """)
    d.start()
    try:
        yield d
    finally:
        d.kill()
        for p in airflow_processes(airflow_sqlite.home):
            p.kill()


def _all_healthy(d: Daemon) -> dict[str, dict[str, object]] | None:
    comps = d.components()
    if comps["migrate"]["completed"] is not True:
        return None
    rest = [c for n, c in comps.items() if n != "migrate"]
    return comps if all(c["state"] == "running" and c["healthy"] is True for c in rest) else None


def _listener(port: int) -> int | None:
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
            return c.pid
    return None


def test_presets_bring_airflow_up_healthy(node: Daemon, airflow_sqlite: AirflowHome) -> None:
    comps = wait_until(lambda: _all_healthy(node), HEALTHY_TIMEOUT_S, "migrate done and every component healthy",
                       interval=1.0)
    assert comps["migrate"]["state"] == "stopped" and comps["migrate"]["last_exit_code"] == 0
    # each probe is the real one: the api-server's JSON, the dag-processor's job heartbeat
    assert "metadatabase=healthy" in str(comps["api-server"]["note"])
    assert "DagProcessorJob" in str(comps["dag-processor"]["note"])
    # the scheduler's health server answers on the port Airflow was told, from the scheduler's own tree
    port = airflow_sqlite.ports.scheduler_health
    sched = node.comp("scheduler")
    assert _listener(port) in tree_pids(sched["pid"])
    # resource use is summed over each component's tree
    sched = wait_until(lambda: (c := node.comp("scheduler"))["processes"] > 1 and c, 30, "scheduler usage sampled")
    assert sched["rss_bytes"] > 50 * 2**20
    status, health = node.get("/health")
    assert status == 200, health
    r = node.ctl("status")
    assert r.returncode == 0, r.stdout + r.stderr
    assert all(name in r.stdout for name in ("migrate", "scheduler", "dag-processor", "api-server"))


def test_sigkill_of_the_scheduler_main_pid_leaves_no_orphans(node: Daemon, airflow_sqlite: AirflowHome) -> None:
    wait_until(lambda: _all_healthy(node), HEALTHY_TIMEOUT_S, "every component healthy", interval=1.0)
    before = node.comp("scheduler")
    old_tree = tree_pids(before["pid"])
    assert len(old_tree) > 3, f"the scheduler should have a process tree; got {old_tree}"
    port = airflow_sqlite.ports.scheduler_health
    assert _listener(port) in old_tree - {before["pid"]}, "the health server is a child of the scheduler"

    psutil.Process(before["pid"]).send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    # the whole old tree goes, the health server that would keep the port included
    wait_until(lambda: not alive(old_tree), 15, f"the old scheduler tree ({len(old_tree)} processes) to be gone")
    after = wait_until(
        lambda: (c := node.comp("scheduler"))["pid"] not in (None, before["pid"]) and c["healthy"] is True and c,
        120, "a new healthy scheduler", interval=0.5)
    took = time.monotonic() - t0
    assert after["restarts"] == before["restarts"] + 1
    # the new scheduler bound the health port itself
    assert _listener(port) in tree_pids(after["pid"]) - old_tree
    print(f"scheduler healthy again {took:.1f}s after SIGKILL of its main pid")


def test_hung_scheduler_is_replaced_after_its_probe_fails(node: Daemon) -> None:
    wait_until(lambda: _all_healthy(node), HEALTHY_TIMEOUT_S, "every component healthy", interval=1.0)
    before = node.comp("scheduler")
    old_tree = tree_pids(before["pid"])
    psutil.Process(before["pid"]).send_signal(signal.SIGSTOP)  # the scheduler loop hangs; its children do not
    try:
        wait_until(lambda: node.comp("scheduler")["healthy"] is False, 90, "the probe to see the hung scheduler",
                   interval=0.5)
        after = wait_until(
            lambda: (c := node.comp("scheduler"))["pid"] not in (None, before["pid"]) and c["healthy"] is True and c,
            180, "a new healthy scheduler", interval=0.5)
    finally:
        if psutil.pid_exists(before["pid"]):
            psutil.Process(before["pid"]).send_signal(signal.SIGCONT)
    assert not alive(old_tree)
    assert after["restarts"] > before["restarts"]
    events = [e for e in node.log_events() if e.get("component") == "scheduler"]
    assert any(e.get("event") == "child_unhealthy" for e in events), "the restart was the probe's doing"


def test_sigterm_to_haflowd_stops_every_airflow_process(node: Daemon, airflow_sqlite: AirflowHome) -> None:
    assert airflow_processes(airflow_sqlite.home), "Airflow should be running before the stop"
    node.signal(signal.SIGTERM)
    assert node.wait_exit(120) == 0
    wait_until(lambda: not airflow_processes(airflow_sqlite.home), 10, "every Airflow process to be gone")
    assert "Traceback" not in node.log_text()
