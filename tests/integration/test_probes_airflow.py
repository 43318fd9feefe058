"""The ``airflow_job`` probe through a real daemon: a child that is only ``sleep``, and
Airflow's ``job`` table in a SQLite file the test writes. A fresh heartbeat of this host's
job is healthy; a stale one is unhealthy and, after ``failures``, the child is restarted."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from haflowd.airflow.jobs import airflow_hostname
from tests.conftest import Daemon, alive, wait_until
from tests.fixtures.fake_airflow import Job, write_jobs

TRIGGERER = """
    [[component]]
    name = "triggerer"
    command = ["sleep", "1000"]
    environment = {{ AIRFLOW__DATABASE__SQL_ALCHEMY_CONN = "sqlite:///{db}" }}
    backoff_initial = "100ms"
    backoff_max = "200ms"
    [component.health]
    airflow_job = "TriggererJob"
    max_age = "30s"
    interval = "200ms"
    timeout = "200ms"
    failures = {failures}
    start_period = "{start_period}"
    {more}
"""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _start(daemon: Any, db: Path, more: str = "", failures: int = 2, start_period: str = "0s") -> Daemon:
    d: Daemon = daemon(TRIGGERER.format(db=db, more=more, failures=failures, start_period=start_period))
    return d


def test_fresh_heartbeat_is_healthy_and_a_stale_one_restarts(daemon: Any, tmp_path: Path) -> None:
    db = tmp_path / "airflow.db"
    host = airflow_hostname()
    write_jobs(db, [Job("TriggererJob", host, _now(), id=7),
                    Job("TriggererJob", "other-host.example", _now() - dt.timedelta(hours=2), id=8)])
    d = _start(daemon, db)
    c = d.wait_state("triggerer", "running", healthy=True)
    assert c["note"].startswith("healthy: TriggererJob 7 heartbeat ")
    first_pid = c["pid"]
    _, body = d.get("/health")
    assert {x["name"]: x["status"] for x in body["checks"]}["component:triggerer"] == "passing"

    # the triggerer stops heartbeating: unhealthy, then killed and started again
    write_jobs(db, [Job("TriggererJob", host, _now() - dt.timedelta(hours=1), id=7)], replace=True)

    def restarted() -> dict[str, Any] | None:
        c = d.comp("triggerer")
        return c if c["restarts"] >= 1 and c["pid"] not in (None, first_pid) else None

    wait_until(restarted, 10, "a restart after the stale heartbeat")
    assert not alive({first_pid})
    unhealthy = [e for e in d.log_events() if e.get("event") == "child_unhealthy"]
    assert unhealthy and unhealthy[0]["component"] == "triggerer"
    failed = [e for e in d.log_events() if e.get("event") == "probe_failed"]
    assert [e["failures"] for e in failed[:2]] == [1, 2]
    assert all(e["output"] == f"TriggererJob 7 on {host}: last heartbeat 3600s ago (max 30s)" for e in failed[:2])

    # the new triggerer heartbeats: healthy again
    write_jobs(db, [Job("TriggererJob", host, _now(), id=9)], replace=True)
    c = d.wait_state("triggerer", "running", healthy=True)
    assert c["note"].startswith("healthy: TriggererJob 9 heartbeat ")


def test_no_job_for_this_host_is_unhealthy(daemon: Any, tmp_path: Path) -> None:
    db = tmp_path / "airflow.db"
    write_jobs(db, [Job("TriggererJob", "other-host.example", _now(), id=1)])
    d = _start(daemon, db, failures=1000)
    # alive but never healthy: "starting", and the note says why
    c = d.wait_state("triggerer", "starting", healthy=False)
    assert c["pid"] is not None
    assert c["note"].startswith("not healthy yet (")
    assert c["note"].endswith(f"/1000): no running TriggererJob on host {airflow_hostname()}")


def test_hostname_key_names_the_host(daemon: Any, tmp_path: Path) -> None:
    db = tmp_path / "airflow.db"
    write_jobs(db, [Job("TriggererJob", "worker-7.example", _now(), id=3)])
    d = _start(daemon, db, more='hostname = "worker-7.example"')
    c = d.wait_state("triggerer", "running", healthy=True)
    assert c["note"].startswith("healthy: TriggererJob 3 heartbeat ")


def test_missing_database_is_unhealthy_without_creating_it(daemon: Any, tmp_path: Path) -> None:
    db = tmp_path / "missing.db"
    d = _start(daemon, db, failures=1000)
    c = d.wait_state("triggerer", "starting", healthy=False)
    assert c["note"].endswith("/1000): the SQLite metadata database does not exist")
    assert not db.exists()


def test_failures_inside_start_period_do_not_count(daemon: Any, tmp_path: Path) -> None:
    db = tmp_path / "airflow.db"
    write_jobs(db, [])
    d = _start(daemon, db, start_period="1m")
    c = d.wait_state("triggerer", "starting", note=f"in start_period, probe failing: no running TriggererJob on host "
                                                    f"{airflow_hostname()}")
    assert c["healthy"] is None and c["restarts"] == 0
    # the job appears (Airflow's triggerer has started): healthy at once
    write_jobs(db, [Job("TriggererJob", airflow_hostname(), _now(), id=1)])
    d.wait_state("triggerer", "running", healthy=True)
    assert d.comp("triggerer")["restarts"] == 0
    assert not [e for e in d.log_events() if e.get("event") == "probe_failed"]
