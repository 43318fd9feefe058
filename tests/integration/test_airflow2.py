"""Real Airflow 2 (the pinned 2.11 in .venv-airflow2) under haflowd, from the presets:
migrate (oneshot), scheduler, standalone dag-processor, triggerer and webserver on
PostgreSQL with the LocalExecutor (Airflow 2 refuses a standalone dag-processor on SQLite).
The scheduler's orphan problem, then a clean stop.

One daemon supervises the five components for both tests, which run in file order.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import psycopg2
import pytest

from haflowd.airflow.jobs import postgres_kwargs
from tests.conftest import Daemon, alive, free_port, tree_pids, wait_until
from tests.fixtures.airflow import AIRFLOW2_DAG, AirflowHome, airflow_processes

HEALTHY_TIMEOUT_S = 300.0
COMPONENTS = ("scheduler", "dag-processor", "triggerer", "webserver")


@dataclass
class Node:
    daemon: Daemon
    started: float  # time.monotonic() when haflowd answered /liveness


@pytest.fixture(scope="module")
def node(airflow2_postgres: AirflowHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("airflow2-node")
    d = Daemon(dir=root, port=free_port(), config=root / "haflowd.toml")
    d.env = airflow2_postgres.env
    d.write_config("""
        [[component]]
        name = "migrate"
        preset = "airflow-db-migrate"

        [[component]]
        name = "scheduler"
        preset = "airflow-scheduler"
        start_after = ["migrate"]
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
        name = "triggerer"
        preset = "airflow-triggerer"
        start_after = ["migrate"]
        [component.health]
        interval = "5s"
        timeout = "5s"

        [[component]]
        name = "webserver"
        preset = "airflow-webserver"
        start_after = ["migrate"]
        [component.health]
        interval = "3s"
        timeout = "3s"
    """)
    d.start()
    try:
        yield Node(daemon=d, started=time.monotonic())
    finally:
        d.kill()
        for p in airflow_processes(airflow2_postgres.home):
            p.kill()


def _listener(port: int) -> int | None:
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
            return c.pid
    return None


def _all_healthy(d: Daemon) -> dict[str, dict[str, object]] | None:
    comps = d.components()
    if comps["migrate"]["completed"] is not True:
        return None
    return comps if all(comps[n]["state"] == "running" and comps[n]["healthy"] is True for n in COMPONENTS) else None


def test_airflow2_presets_bring_every_component_up_healthy(node: Node, airflow2_postgres: AirflowHome) -> None:
    d = node.daemon
    healthy_at: dict[str, float] = {}

    def progress() -> dict[str, dict[str, object]] | None:
        comps = d.components()
        for n, c in comps.items():
            done = c["completed"] is True if n == "migrate" else c["healthy"] is True
            if done and n not in healthy_at:
                healthy_at[n] = time.monotonic() - node.started
        return _all_healthy(d)

    comps = wait_until(progress, HEALTHY_TIMEOUT_S, "migrate done and every Airflow 2 component healthy",
                       interval=0.5)
    print("healthy after: " + ", ".join(f"{n} {t:.1f}s" for n, t in sorted(healthy_at.items(), key=lambda x: x[1])))
    assert comps["migrate"]["state"] == "stopped" and comps["migrate"]["last_exit_code"] == 0
    # each probe is the real one for Airflow 2: the webserver's /health JSON, the job heartbeats
    assert "metadatabase=healthy" in str(comps["webserver"]["note"])
    assert "DagProcessorJob" in str(comps["dag-processor"]["note"])
    assert "TriggererJob" in str(comps["triggerer"]["note"])
    # Airflow's own view agrees: its webserver sees the standalone dag-processor and the triggerer
    with urllib.request.urlopen(f"http://127.0.0.1:{airflow2_postgres.ports.api}/health", timeout=10) as r:
        health = json.loads(r.read())
    assert health["metadatabase"]["status"] == "healthy", health
    assert health["dag_processor"]["status"] == "healthy", health
    assert health["triggerer"]["status"] == "healthy", health
    # the standalone dag-processor parsed the session's DAG (the scheduler does not parse in Airflow 2 then)
    conn = psycopg2.connect(**postgres_kwargs(airflow2_postgres.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], 5))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM serialized_dag WHERE dag_id = %s", (AIRFLOW2_DAG,))
            row = cur.fetchone()
    finally:
        conn.close()
    assert row is not None and row[0] == 1, "the dag-processor should have serialized the DAG"
    # the scheduler's health server answers on the port Airflow was told, from the scheduler's own tree
    port = airflow2_postgres.ports.scheduler_health
    assert _listener(port) in tree_pids(d.comp("scheduler")["pid"])
    r2 = d.ctl("status")
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert all(name in r2.stdout for name in ("migrate", *COMPONENTS))


def test_airflow2_scheduler_sigkill_leaves_no_orphans_and_sigterm_stops_all(
        node: Node, airflow2_postgres: AirflowHome) -> None:
    d = node.daemon
    wait_until(lambda: _all_healthy(d), HEALTHY_TIMEOUT_S, "every component healthy", interval=1.0)
    before = d.comp("scheduler")
    old_tree = tree_pids(before["pid"])
    assert len(old_tree) > 2, f"the scheduler should have a process tree; got {old_tree}"
    port = airflow2_postgres.ports.scheduler_health
    assert _listener(port) in old_tree - {before["pid"]}, "the health server is a child of the scheduler"

    psutil.Process(before["pid"]).send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    # the whole old tree goes, the health server that would keep the port included
    wait_until(lambda: not alive(old_tree), 15, f"the old scheduler tree ({len(old_tree)} processes) to be gone")
    gone = time.monotonic() - t0
    after = wait_until(
        lambda: (c := d.comp("scheduler"))["pid"] not in (None, before["pid"]) and c["healthy"] is True and c,
        120, "a new healthy scheduler", interval=0.5)
    took = time.monotonic() - t0
    assert after["restarts"] == before["restarts"] + 1
    # the new scheduler bound the health port itself
    assert _listener(port) in tree_pids(after["pid"]) - old_tree
    print(f"old scheduler tree ({len(old_tree)} processes) gone {gone:.1f}s and a new scheduler healthy "
          f"{took:.1f}s after SIGKILL of its main pid")

    # a clean stop: every Airflow 2 process goes, the webserver's gunicorn tree included
    assert airflow_processes(airflow2_postgres.home), "Airflow should be running before the stop"
    d.signal(signal.SIGTERM)
    assert d.wait_exit(120) == 0
    wait_until(lambda: not airflow_processes(airflow2_postgres.home), 10, "every Airflow 2 process to be gone")
    # haflowd's own events carry no traceback (the Airflow 2 scheduler's output does: the group's
    # SIGTERM also reaches its LocalExecutor's manager process, whose queue then fails in end())
    own = [e for e in d.log_events() if e.get("event") != "output"]
    assert own and not any("Traceback" in json.dumps(e) for e in own)
