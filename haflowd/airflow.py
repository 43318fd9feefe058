"""What haflowd needs to know of the Airflow it supervises.

* ``AirflowSettings``: Airflow's own configuration as Airflow reads it, for the keys the
  presets need (ports, hosts, the metadata database): ``AIRFLOW__SECTION__KEY`` in the
  component's environment, then in the daemon's, then ``airflow.cfg`` in ``AIRFLOW_HOME``
  (or ``AIRFLOW_CONFIG``), then Airflow's default.
* ``detect_version``: the installed Airflow's version, from the package metadata next to
  the ``airflow`` on the component's ``PATH`` (no Airflow import, no subprocess), with
  ``airflow version`` as the fallback.
* ``job_heartbeat``: the cheap equivalent of ``airflow jobs check --local``: one query of
  the metadata database for the newest running job of a type on this host. Blocking; the
  caller runs it in a thread under a timeout.
"""

from __future__ import annotations

import configparser
import contextlib
import datetime as dt
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

VERSION_TIMEOUT_S = 60.0
_DIST_RE = re.compile(r"^apache_airflow(?:_core)?-(\d+(?:\.\d+)*[^-]*)\.dist-info$")
JOB_TYPES = ("SchedulerJob", "TriggererJob", "DagProcessorJob")


class AirflowError(Exception):
    """A fact about the installed Airflow could not be established."""


@dataclass(frozen=True)
class AirflowSettings:
    env: Mapping[str, str]  # the component's environment over the daemon's
    cfg: configparser.RawConfigParser | None
    cfg_path: Path | None

    @classmethod
    def load(cls, component_env: Mapping[str, str], base_env: Mapping[str, str] | None = None) -> AirflowSettings:
        env = {**(os.environ if base_env is None else base_env), **component_env}
        home = Path(env.get("AIRFLOW_HOME") or Path(env.get("HOME", "/root")) / "airflow")
        path = Path(env["AIRFLOW_CONFIG"]) if env.get("AIRFLOW_CONFIG") else home / "airflow.cfg"
        parser = configparser.RawConfigParser(strict=False)
        try:
            with path.open(encoding="utf-8") as f:
                parser.read_file(f)
        except (OSError, configparser.Error, UnicodeDecodeError):
            return cls(env=env, cfg=None, cfg_path=None)
        return cls(env=env, cfg=parser, cfg_path=path)

    @property
    def home(self) -> Path:
        return Path(self.env.get("AIRFLOW_HOME") or Path(self.env.get("HOME", "/root")) / "airflow")

    def get(self, section: str, key: str, default: str) -> str:
        name = f"AIRFLOW__{section.upper()}__{key.upper()}"
        if name in self.env:
            return self.env[name]
        if self.cfg is not None and self.cfg.has_option(section, key):
            value = self.cfg.get(section, key)
            return value.replace("{AIRFLOW_HOME}", str(self.home))
        return default

    def port(self, section: str, key: str, default: int) -> int:
        raw = self.get(section, key, str(default))
        try:
            port = int(raw)
        except ValueError:
            raise AirflowError(f"[{section}] {key} in Airflow's configuration is not a port: {raw!r}") from None
        if not 0 < port < 65536:
            raise AirflowError(f"[{section}] {key} in Airflow's configuration is not a port: {raw!r}")
        return port

    def probe_host(self, section: str, key: str) -> str:
        """Where a local probe should connect for a server bound to ``[section] key``."""
        host = self.get(section, key, "0.0.0.0").strip()
        if host in ("", "0.0.0.0", "::", "[::]"):
            return "127.0.0.1"
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    def database_url(self) -> str:
        url = self.get("database", "sql_alchemy_conn", "")
        if not url:
            url = self.get("core", "sql_alchemy_conn", "")  # Airflow < 2.3
        return url or f"sqlite:///{self.home / 'airflow.db'}"


def option_value(command: tuple[str, ...], *names: str) -> str | None:
    """The value of ``--port 9000`` or ``--port=9000`` (any of ``names``) in a command line."""
    for i, arg in enumerate(command):
        for name in names:
            if arg == name and i + 1 < len(command):
                return command[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


# ---------------------------------------------------------------------------- version


def detect_version(env: Mapping[str, str], run_fallback: bool = True) -> str | None:
    """The version of the Airflow that ``airflow`` on ``env['PATH']`` runs, or None if
    there is no ``airflow`` there. Raises AirflowError if one is there but says nothing."""
    exe = shutil.which("airflow", path=env.get("PATH", os.defpath))
    if exe is None:
        return None
    version = _version_from_metadata(Path(exe))
    if version is not None or not run_fallback:
        return version
    key = (str(Path(exe).resolve()), _mtime(exe))
    if key not in _ASKED:  # one `airflow version` (seconds of CPU) per executable, not per component
        _ASKED[key] = _ask_version(exe, env)
    result = _ASKED[key]
    if isinstance(result, AirflowError):
        raise result
    return result


_ASKED: dict[tuple[str, float], str | AirflowError] = {}


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _ask_version(exe: str, env: Mapping[str, str]) -> str | AirflowError:
    try:
        out = subprocess.run([exe, "version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S,
                             env={**env, "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR"}, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return AirflowError(f"{exe} version: {type(e).__name__}")
    for line in reversed(out.stdout.strip().splitlines()):
        if re.fullmatch(r"\d+\.\d+\S*", line.strip()):
            return line.strip()
    return AirflowError(f"{exe} version printed no version (exit {out.returncode})")


def _version_from_metadata(exe: Path) -> str | None:
    """Look for the package's dist-info in the environment the ``airflow`` script belongs to."""
    prefixes = [exe.resolve().parent.parent, exe.parent.parent]
    with contextlib.suppress(OSError, UnicodeDecodeError):
        first = exe.read_bytes()[:512].split(b"\n", 1)[0].decode()
        if first.startswith("#!"):
            interp = Path(first[2:].strip().split()[0])
            prefixes.append(interp.parent.parent)
    found: dict[str, str] = {}
    for prefix in dict.fromkeys(prefixes):
        sites = sorted(prefix.glob("lib/python3*/site-packages")) + sorted(prefix.glob("lib/python3/dist-packages"))
        for site in sites:
            with contextlib.suppress(OSError):
                for entry in site.iterdir():
                    m = _DIST_RE.match(entry.name)
                    if m:
                        found.setdefault("core" if "_core-" in entry.name else "airflow", m.group(1))
        if found:
            break
    return found.get("core") or found.get("airflow")


def major(version: str | None) -> int | None:
    if not version:
        return None
    m = re.match(r"(\d+)", version)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------- job heartbeat


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
