"""Airflow 3 with the CeleryExecutor under one haflowd: RabbitMQ (the session's real
three-node cluster) as the broker, a real PostgreSQL as the metadata database and the
Celery result backend. migrate (oneshot), api-server, scheduler, dag-processor and a
Celery worker come from presets; a task of a DAG runs in the worker's process tree, and
``haflowctl stop worker`` drains a running task warmly: it finishes with success, the
worker exits on its own (no SIGKILL after stop_timeout) and nothing of its tree is left.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import Daemon, alive, tree_pids, wait_until
from tests.fixtures.airflow import AirflowPorts, airflow_env, require_airflow, sweep
from tests.fixtures.airflow_celery import (
    MARKER_DAG,
    MARKER_TASK,
    SLEEP_DAG,
    SLEEP_TASK,
    AirflowApi,
    AirflowPostgres,
    airflow_postgres,
    marker_dags,
    read_marker,
)
from tests.fixtures.rabbitmq import RabbitCluster

UP_TIMEOUT_S = 240.0  # migrate on PostgreSQL, then four Airflow components on two shared cores
TASK_TIMEOUT_S = 120.0
SLEEP_S = 15.0
WORKER_STOP_TIMEOUT_S = 120  # far above the drain; a SIGKILL at this deadline fails the test


def _inline(env: dict[str, str]) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in env.items()) + " }"



def celery_env(home: Path, ports: AirflowPorts, pg: Any, rabbit_cluster: RabbitCluster,
               concurrency: int) -> dict[str, str]:
    """Airflow with the CeleryExecutor on the session's RabbitMQ, results and metadata in ``pg``."""
    return airflow_env(
        home, ports, db_url=pg.sqlalchemy_url,
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__CELERY__BROKER_URL=rabbit_cluster.amqp_url(1),
        AIRFLOW__CELERY__RESULT_BACKEND=pg.celery_result_backend,
        AIRFLOW__CELERY__WORKER_CONCURRENCY=str(concurrency),
        AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER="1",
        AIRFLOW__CELERY__SYNC_PARALLELISM="1",
        AIRFLOW__CELERY__OPERATION_TIMEOUT="10",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
    )

def _config(env: dict[str, str]) -> str:
    """Probes answer sooner than the presets' (the test waits on them) but tolerate a machine
    that other test runs keep busy: a slow minute must not get a component restarted (the
    api-server answers nothing while it sets up its execution API, see warm_execution_api).
    The worker's probe (``celery inspect ping``, an Airflow import each time) stays rare."""
    e = _inline(env)
    return f"""
        [[component]]
        name = "migrate"
        preset = "airflow-db-migrate"
        environment = {e}

        [[component]]
        name = "api-server"
        preset = "airflow-api-server"
        start_after = ["migrate"]
        environment = {e}
        [component.health]
        interval = "3s"
        timeout = "3s"
        failures = 20

        [[component]]
        name = "scheduler"
        preset = "airflow-scheduler"
        start_after = ["migrate"]
        environment = {e}
        stop_timeout = "20s"
        [component.health]
        interval = "5s"
        timeout = "5s"
        failures = 6

        [[component]]
        name = "dag-processor"
        preset = "airflow-dag-processor"
        start_after = ["migrate"]
        environment = {e}
        [component.health]
        interval = "10s"
        timeout = "10s"

        [[component]]
        name = "worker"
        preset = "airflow-celery-worker"
        start_after = ["migrate"]
        environment = {e}
        stop_timeout = "{WORKER_STOP_TIMEOUT_S}s"
        [component.health]
        interval = "30s"
        timeout = "30s"
        start_period = "120s"
    """


def _up(d: Daemon, *names: str) -> dict[str, dict[str, Any]] | None:
    comps = d.components()
    if comps["migrate"]["completed"] is not True:
        bad = comps["migrate"]
        assert bad["state"] != "fatal", f"airflow db migrate failed: {bad}\n{d.log_text()[-4000:]}"
        return None
    for n in names:
        c = comps[n]
        assert c["state"] != "fatal", f"{n} is fatal: {c}\n{d.log_text()[-4000:]}"
        if c["state"] != "running" or c["healthy"] is not True:
            return None
    return comps


def _state(states: list[str | None], want: str) -> bool:
    assert not states or states[0] not in ("failed", "upstream_failed", "removed"), f"task {states[0]}"
    return bool(states) and states[0] == want


def test_celery_worker_runs_a_task_and_stop_drains_it_warmly(
    daemon: Any, rabbit_cluster: RabbitCluster, pg_template: tuple[Path, Path], tmp_path: Path,
) -> None:
    require_airflow()
    t_start = time.monotonic()
    home = tmp_path / "airflow"
    out = tmp_path / "markers"
    marker_dags(home / "dags", out, sleep_s=SLEEP_S)
    ports = AirflowPorts()
    with airflow_postgres(pg_template) as pg:
        env = celery_env(home, ports, pg, rabbit_cluster, concurrency=2)
        queues_before = _queues(rabbit_cluster)
        d: Daemon = daemon(_config(env))
        try:
            _run(d, pg, out, ports, t_start)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{_diagnosis(d, home)}") from None
        finally:
            d.kill()  # first the daemon (it would restart what the sweep kills), then any stray
            sweep(home)
            # the session's cluster is shared: the queues Celery declared must not outlive the test
            for name in _queues(rabbit_cluster) - queues_before:
                with contextlib.suppress(OSError):
                    rabbit_cluster.api(f"/api/queues/%2F/{urllib.parse.quote(name, safe='')}", method="DELETE")


def _queues(cluster: RabbitCluster) -> set[str]:
    return {q["name"] for q in cluster.api("/api/queues/%2F?columns=name")}


def _diagnosis(d: Daemon, home: Path) -> str:
    """What a failure needs: the daemon's own events, the task logs and the worker's last words."""
    events = d.log_events()
    out = ["--- haflowd events (last 40)"]
    out += [json.dumps({k: v for k, v in e.items() if k not in ("level", "node")})
            for e in [e for e in events if e.get("event") != "output"][-40:]]
    for f in sorted((home / "logs").glob("dag_id=*/**/*.log")):
        out += [f"--- {f.relative_to(home)} (tail)", f.read_text(errors="replace")[-3000:]]
    out += ["--- worker output (last 30 lines)"]
    out += [str(e.get("line", "")) for e in events
            if e.get("component") == "worker" and e.get("event") == "output"][-30:]
    return "\n".join(out)


def _run(d: Daemon, pg: AirflowPostgres, out: Path, ports: AirflowPorts, t_start: float) -> None:
    # ---------------------------------------------------------------- everything up
    wait_until(lambda: _up(d, "api-server", "scheduler"), UP_TIMEOUT_S,
               "migrate completed, api-server and scheduler healthy", interval=0.5)
    migrate = d.comp("migrate")
    assert migrate["state"] == "stopped" and migrate["last_exit_code"] == 0, migrate
    wait_until(lambda: pg.dag_known(MARKER_DAG) and pg.dag_known(SLEEP_DAG), 120,
               "the dag-processor to parse both DAGs", interval=0.5)
    print(f"up and parsed after {time.monotonic() - t_start:.1f}s")
    api = AirflowApi(ports.api)
    api.warm_execution_api()

    # ---------------------------------------------------------------- a task runs in the worker
    api.trigger(MARKER_DAG)
    wait_until(lambda: _state(pg.ti_states(MARKER_DAG, MARKER_TASK), "success"), TASK_TIMEOUT_S,
               f"{MARKER_DAG}.{MARKER_TASK} to succeed", interval=0.5)
    print(f"first task done after {time.monotonic() - t_start:.1f}s")
    # the worker ran the task; its own probe (celery inspect ping) may not have passed yet
    worker = d.comp("worker")
    assert worker["state"] in ("starting", "running") and worker["pid"], worker
    marker = read_marker(out, "marker.json")
    assert marker is not None, "the task succeeded but wrote no marker"
    assert worker["pid"] in marker["ancestors"], (
        f"the task (pid {marker['pid']}, ancestors {marker['ancestors']}) did not run below the "
        f"worker haflowd supervises (pid {worker['pid']})")
    assert marker["supervisor"] and str(d.dir) in marker["supervisor"], marker
    assert worker["guard_pid"] in marker["ancestors"], marker
    assert pg.ti_hostname(MARKER_DAG, MARKER_TASK), "the task instance records the worker's host"
    # the preset's probe (Celery's remote-control ping, sent over AMQP to this host's worker) passes
    worker = d.wait_state("worker", "running", timeout=90, healthy=True)
    assert f"celery@{socket.gethostname()}: pong" in str(worker["note"]), worker

    # ---------------------------------------------------------------- warm drain of a running task
    api.trigger(SLEEP_DAG)
    wait_until(lambda: _state(pg.ti_states(SLEEP_DAG, SLEEP_TASK), "running") and read_marker(out, "sleep-started.json"),
               TASK_TIMEOUT_S, f"{SLEEP_DAG}.{SLEEP_TASK} to be running", interval=0.2)
    started = read_marker(out, "sleep-started.json")
    assert started is not None
    worker = d.comp("worker")
    wpid, guard = worker["pid"], worker["guard_pid"]
    assert wpid in started["ancestors"], (started, wpid)
    tree = tree_pids(wpid)
    assert started["pid"] in tree, (started, tree)

    t_stop = time.time()
    t_stop_mono = time.monotonic()
    result: dict[str, subprocess.CompletedProcess[str]] = {}
    stopper = threading.Thread(target=lambda: result.setdefault("r", d.ctl("stop", "worker", timeout=300)))
    stopper.start()
    try:
        wait_until(lambda: d.comp("worker")["state"] in ("stopping", "stopped"), 10, "the worker to be stopping")
        # while it drains, the worker takes nothing new but its task goes on
        wait_until(lambda: read_marker(out, "sleep-done.json"), SLEEP_S + 60,
                   "the sleeping task to finish after the stop", interval=0.2)
    finally:
        stopper.join(WORKER_STOP_TIMEOUT_S + 30)
    assert not stopper.is_alive(), "haflowctl stop worker did not return"
    r = result["r"]
    stop_s = time.monotonic() - t_stop_mono
    print(f"worker drained and stopped in {stop_s:.1f}s (sleep {SLEEP_S}s); total {time.monotonic() - t_start:.1f}s")
    assert r.returncode == 0, r.stdout + r.stderr
    done = read_marker(out, "sleep-done.json")
    assert done is not None and done["time"] > t_stop, (done, t_stop)
    assert done["pid"] == started["pid"], "the same task process finished the work"
    wait_until(lambda: _state(pg.ti_states(SLEEP_DAG, SLEEP_TASK), "success"), 30,
               f"{SLEEP_DAG}.{SLEEP_TASK} recorded as success", interval=0.2)

    worker = d.comp("worker")
    assert worker["state"] == "stopped", worker
    assert worker["pid"] is None, worker
    events = [e for e in d.log_events() if e.get("component") == "worker"]
    assert not [e for e in events if e.get("event") == "stop_timeout"], "the worker was killed at stop_timeout"
    assert stop_s < WORKER_STOP_TIMEOUT_S, stop_s
    assert worker["last_exit_code"] == 0 and worker["last_exit_signal"] is None, worker
    # nothing of the worker's tree is left: not the processes we saw, not an orphan re-parented to the guard
    assert not alive(tree), f"left from the worker's tree: {alive(tree)}"
    if guard and psutil.pid_exists(guard):
        assert not alive(tree_pids(guard) - {guard}), "processes left below the worker's guard"
    # the others were not touched
    comps = d.components()
    for n in ("api-server", "scheduler", "dag-processor"):
        assert comps[n]["state"] == "running", comps[n]
