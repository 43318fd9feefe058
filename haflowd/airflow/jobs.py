"""Airflow's job heartbeats: the query, and the health probe built on it.

* ``job_heartbeat``: the cheap equivalent of ``airflow jobs check --local``: one query of
  the metadata database for the newest running job of a type on this host. Blocking; the
  caller runs it in a thread under a timeout.
* ``probe``: what a component's ``airflow_job`` health check runs: that query in the
  Airflow probes' worker budget, one at a time per component, its connection cut on
  timeout, and the answer as (healthy, one line without the database's password).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from haflowd.airflow.version import AirflowError

if TYPE_CHECKING:
    from haflowd.config.model import HealthConfig

JOB_TYPES = ("SchedulerJob", "TriggererJob", "DagProcessorJob")


def airflow_hostname() -> str:
    """The host name Airflow records for jobs by default (``airflow.utils.net.getfqdn``):
    the canonical name of ``gethostname()``."""
    name = socket.gethostname()
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(name, None, 0, socket.SOCK_DGRAM, 0, socket.AI_CANONNAME):
            if info[3]:
                return info[3]
    return name


@dataclass(frozen=True)
class JobBeat:
    found: bool
    age_s: float | None = None
    job_id: int | None = None


class ConnectionCutter(Protocol):
    """Lets the caller cut a blocked query's connection from another thread (ProbeAbort)."""

    def attach(self, conn: Any) -> bool: ...

    def close(self) -> None: ...


def job_heartbeat(url: str, job_type: str, hostname: str, timeout: float,
                  now: dt.datetime | None = None, abort: ConnectionCutter | None = None) -> JobBeat:
    """The newest ``running`` job of ``job_type`` recorded by ``hostname``. Blocking: PostgreSQL
    gets ``connect_timeout`` and ``statement_timeout``, and ``abort`` can cut the connection
    of a server that stopped answering (neither timeout helps then)."""
    now = now or dt.datetime.now(dt.UTC)
    sql = ("SELECT id, latest_heartbeat FROM job WHERE job_type = {p} AND hostname = {p} AND state = 'running' "
           "ORDER BY latest_heartbeat IS NULL, latest_heartbeat DESC LIMIT 1")
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    if scheme == "sqlite":
        row = _sqlite_query(url, sql.format(p="?"), (job_type, hostname), timeout)
    elif scheme in ("postgresql", "postgres"):
        row = _postgres_query(url, sql.format(p="%s"), (job_type, hostname), timeout, abort)
    else:
        raise AirflowError(f"metadata database {scheme!r} is not supported by this probe (sqlite, postgresql)")
    if row is None:
        return JobBeat(found=False)
    raw = row[1]
    beat = dt.datetime.fromisoformat(raw) if isinstance(raw, str) else raw
    if not isinstance(beat, dt.datetime):
        return JobBeat(found=True, job_id=row[0])
    if beat.tzinfo is None:
        beat = beat.replace(tzinfo=dt.UTC)  # Airflow stores UTC
    return JobBeat(found=True, age_s=max(0.0, (now - beat).total_seconds()), job_id=int(row[0]))


def _sqlite_query(url: str, sql: str, args: tuple[str, ...], timeout: float) -> tuple[int, object] | None:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    path = path.split("?", 1)[0]
    if not path:
        raise AirflowError("the SQLite metadata database has no file path")
    if not Path(path).exists():
        raise AirflowError("the SQLite metadata database does not exist")
    import sqlite3  # only where a SQLite metadata database is probed

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
    try:
        row = conn.execute(sql, args).fetchone()
    finally:
        conn.close()
    return (int(row[0]), row[1]) if row else None


def postgres_kwargs(url: str, timeout: float) -> dict[str, Any]:
    """psycopg2 connection arguments for an SQLAlchemy PostgreSQL URL."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:  # its message quotes the URL's text, which may be the password
        raise AirflowError("the metadata database URL cannot be parsed (is a character in the password "
                           "not %-encoded?)") from None
    kw: dict[str, Any] = {"dbname": unquote(u.path.lstrip("/")) or "airflow",
                             "connect_timeout": max(1, int(timeout)),
                             "application_name": "haflowd-airflow-probe"}
    if u.hostname:
        kw["host"] = u.hostname
    if port:
        kw["port"] = port
    if u.username:
        kw["user"] = unquote(u.username)
    if u.password:
        kw["password"] = unquote(u.password)
    for k, v in parse_qsl(u.query):
        if k in ("host", "port", "sslmode", "sslrootcert", "sslcert", "sslkey"):
            kw[k] = v
    kw["options"] = f"-c statement_timeout={int(timeout * 1000)}"
    return kw


def _postgres_query(url: str, sql: str, args: tuple[str, ...], timeout: float,
                    abort: ConnectionCutter | None = None) -> tuple[int, object] | None:
    import psycopg2

    conn = psycopg2.connect(**postgres_kwargs(url, timeout))
    if abort is not None and not abort.attach(conn):
        conn.close()
        raise AirflowError("the probe was abandoned (timed out)")
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            row = cur.fetchone()
    finally:
        if abort is not None:
            abort.close()  # under its lock: a cut cannot meet a reused descriptor
        else:
            conn.close()
    return (int(row[0]), row[1]) if row else None


# ---------------------------------------------------------------------------- the probe


async def probe(h: HealthConfig, component: str) -> tuple[bool, str]:
    """Airflow's job heartbeat for this host: the cheap equivalent of ``airflow jobs check --local``."""
    assert h.airflow_job is not None and h.database is not None
    # not at the top: config loading imports this module (JOB_TYPES), and needs neither
    from haflowd import workers
    from haflowd.checks.pg_abort import ProbeAbort

    abort = ProbeAbort()
    url, job = h.database.reveal(), h.airflow_job

    def ask() -> tuple[str, JobBeat]:
        host = h.hostname or airflow_hostname()
        return host, job_heartbeat(url, job, host, h.timeout, abort=abort)

    try:
        # one at a time per component, in a budget of its own: a hung database holds one
        # thread per component at most, and none of the default pool
        host, beat = await workers.budget(workers.AIRFLOW_PROBES).call(
            ask, key=component, timeout=h.timeout, on_timeout=abort.abort)
    except workers.WorkerBusy as e:
        return False, str(e)
    except AirflowError as e:
        return False, str(e)
    except Exception as e:  # a driver error must not leak the URL: name the error only
        return False, f"metadata database: {type(e).__name__}: {_first_line(e)}"
    return verdict(job, host, beat, h.max_age)


def verdict(job: str, host: str, beat: JobBeat, max_age: float) -> tuple[bool, str]:
    """(healthy, why) for the newest ``job`` that ``host`` recorded."""
    if not beat.found:
        return False, f"no running {job} on host {host}"
    if beat.age_s is None:
        return False, f"{job} {beat.job_id} on {host} has never heartbeat"
    if beat.age_s > max_age:
        return False, f"{job} {beat.job_id} on {host}: last heartbeat {beat.age_s:.0f}s ago (max {max_age:g}s)"
    return True, f"{job} {beat.job_id} heartbeat {beat.age_s:.1f}s ago"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""
