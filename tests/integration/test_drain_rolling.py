"""The rolling upgrade of docs/operations.md on three gossiping daemons: drain, restart,
undrain, one node after the other, while a Celery task runs on node A's worker.

Lean on purpose (two shared cores): node A runs the Airflow stack (CeleryExecutor, the
session's RabbitMQ, a PostgreSQL of its own) with one worker; B and C run a cheap component
each. The task (sleep 8 s) is running on A's worker when A is drained: the worker finishes it
warmly (success, same process, no SIGKILL) before it exits, then the rest of A's stack stops in
reverse start order. Each node's /readiness is 503 exactly while it is drained, peers see its
maintenance, and a restarted drained daemon starts nothing until undrain. The install step
of the procedure is the restart alone here (test_install covers scripts/install).
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from tests.conftest import (
    Daemon,
    free_port,
    gossip_body,
    new_gossip_key,
    peer_map,
    rename_node,
    render_config,
    wait_until,
)
from tests.fixtures.airflow import AirflowPorts, require_airflow, sweep
from tests.fixtures.airflow_celery import (
    SLEEP_DAG,
    SLEEP_TASK,
    AirflowApi,
    airflow_postgres,
    marker_dags,
    read_marker,
)
from tests.fixtures.rabbitmq import RabbitCluster
from tests.integration.test_airflow_celery import _config, _diagnosis, _queues, _state, _up, celery_env

SLEEP_S = 8.0
NAMES = ("a", "b", "c")
CHEAP = """
[[component]]
name = "app"
command = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]
"""


def _ready(d: Daemon) -> int:
    return d.get("/readiness")[0]


def _maintenance_seen(observer: Daemon, node: str, on: bool) -> bool:
    return peer_map(observer).get(node, {}).get("maintenance") is on


def test_rolling_drain_restart_undrain_with_a_celery_task_through_it(
    daemon: Any, rabbit_cluster: RabbitCluster, pg_template: tuple[Path, Path], tmp_path: Path,
) -> None:
    require_airflow()
    t0 = time.monotonic()
    home = tmp_path / "airflow"
    out = tmp_path / "markers"
    marker_dags(home / "dags", out, sleep_s=SLEEP_S)
    ports = AirflowPorts()
    key = new_gossip_key()
    gport = {n: free_port() for n in NAMES}
    seeds = [f"127.0.0.1:{gport['a']}", f"127.0.0.1:{gport['b']}"]
    with airflow_postgres(pg_template) as pg:
        env = celery_env(home, ports, pg, rabbit_cluster, concurrency=1)
        queues_before = _queues(rabbit_cluster)
        nodes: dict[str, Daemon] = {}
        for n in NAMES:
            d = daemon("", start=False)
            key_file = d.dir / "gossip.key"
            key_file.write_text(key + "\n")
            comps = _config(env) if n == "a" else CHEAP
            d.config.write_text(render_config(d, gossip_body(f"127.0.0.1:{gport[n]}", seeds, key_file) + comps))
            rename_node(d, n)
            nodes[n] = d
        try:
            for d in nodes.values():
                d.start(wait=False)
            for n, d in nodes.items():
                wait_until(d.live, 30, f"{n} /liveness")
            _roll(nodes, pg, out, ports, t0)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{_diagnosis(nodes['a'], home)}") from None
        finally:
            for d in nodes.values():
                d.kill()
            sweep(home)
            for name in _queues(rabbit_cluster) - queues_before:
                with contextlib.suppress(OSError):
                    rabbit_cluster.api(f"/api/queues/%2F/{urllib.parse.quote(name, safe='')}", method="DELETE")


def _drain_restart_undrain(nodes: dict[str, Daemon], n: str, during: Any = None) -> None:
    """One node's turn: drain --wait (``during`` runs meanwhile), restart, undrain."""
    d = nodes[n]
    others = [o for m, o in nodes.items() if m != n]
    result: dict[str, subprocess.CompletedProcess[str]] = {}
    drainer = threading.Thread(target=lambda: result.setdefault("r", d.ctl("drain", "--wait", timeout=300)))
    drainer.start()
    try:
        wait_until(lambda: _ready(d) == 503, 10, f"{n} /readiness 503 once drained")
        if during is not None:
            during()
    finally:
        drainer.join(300)
    assert not drainer.is_alive(), f"haflowctl drain --wait on {n} did not return"
    r = result["r"]
    assert r.returncode == 0, r.stdout + r.stderr
    assert all(_ready(o) == 200 for o in others), "only the drained node is out of the load balancers"
    wait_until(lambda: all(_maintenance_seen(o, n, True) for o in others), 15, f"peers to see {n} in maintenance")
    assert all(c["state"] == "stopped" for c in d.components().values()), d.components()

    d.signal(15)  # the upgrade: a new haflowd starts from the same data_dir
    assert d.wait_exit(60) == 0
    d.start()
    assert _ready(d) == 503, "a restarted drained node stays out"
    # the API answers before the supervisor has placed its components: "stopped", never started
    wait_until(lambda: all(c["state"] == "stopped" and c["pid"] is None for c in d.components().values()), 30,
               f"{n}'s components placed as stopped")
    assert all(c["note"] == "drained for maintenance" for c in d.components().values()), d.components()

    r = d.ctl("undrain")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: _ready(d) == 200, 30, f"{n} /readiness 200 after undrain")
    wait_until(lambda: all(_maintenance_seen(o, n, False) for o in others), 15, f"peers to see {n} back")


def _roll(nodes: dict[str, Daemon], pg: Any, out: Path, ports: AirflowPorts, t0: float) -> None:
    a = nodes["a"]
    wait_until(lambda: _up(a, "api-server", "scheduler"), 240, "A's Airflow up", interval=0.5)
    wait_until(lambda: pg.dag_known(SLEEP_DAG), 120, "the dag-processor to parse the DAG", interval=0.5)
    assert all(_ready(d) == 200 for d in nodes.values())
    api = AirflowApi(ports.api)
    api.warm_execution_api()
    t_up = time.monotonic()
    print(f"stack up after {t_up - t0:.1f}s")

    api.trigger(SLEEP_DAG)
    wait_until(lambda: _state(pg.ti_states(SLEEP_DAG, SLEEP_TASK), "running") and read_marker(out, "sleep-started.json"),
               120, "the sleeping task to run on A's worker", interval=0.2)
    started = read_marker(out, "sleep-started.json")
    assert started is not None and a.comp("worker")["pid"] in started["ancestors"], started
    t_drain = time.time()

    def task_finishes() -> None:
        wait_until(lambda: read_marker(out, "sleep-done.json"), SLEEP_S + 60, "the task to finish during the drain",
                   interval=0.2)

    _drain_restart_undrain(nodes, "a", during=task_finishes)
    done = read_marker(out, "sleep-done.json")
    assert done is not None and done["time"] > t_drain and done["pid"] == started["pid"], (done, started)
    assert _state(pg.ti_states(SLEEP_DAG, SLEEP_TASK), "success"), pg.ti_states(SLEEP_DAG, SLEEP_TASK)
    assert not [e for e in a.log_events() if e.get("component") == "worker" and e.get("event") == "stop_timeout"]
    for n in ("b", "c"):
        _drain_restart_undrain(nodes, n)
    print(f"rolled a, b, c in {time.monotonic() - t_up:.1f}s; total {time.monotonic() - t0:.1f}s")
