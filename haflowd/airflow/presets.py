"""Presets for Airflow components: a command, a real health probe, restart and stop settings.

A preset reads Airflow's own configuration (``AIRFLOW__...`` variables, then airflow.cfg)
for ports and hosts, and the installed Airflow's major version for what differs between
Airflow 2 and 3. Anything set explicitly in ``[[component]]`` wins over the preset.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from haflowd.airflow import celery_ping
from haflowd.airflow.version import AirflowError, AirflowSettings, detect_version, major, option_value

if TYPE_CHECKING:
    from haflowd.config.model import HealthConfig, Secret

CELERY_APP = "airflow.providers.celery.executors.celery_executor.app"


@dataclass(frozen=True)
class PresetContext:
    name: str  # the component's name
    command: tuple[str, ...] | None  # the command the config sets, if it does
    settings: AirflowSettings
    version: str | None  # the installed Airflow's version, None when not found
    hostname: str  # socket.gethostname(): what Celery names its worker after


@dataclass(frozen=True)
class Defaults:
    """What a preset fills in; each is used only where the config is silent."""

    command: tuple[str, ...]
    health: HealthConfig | None
    environment: Mapping[str, str] = field(default_factory=dict)
    stop_signal: int = int(signal.SIGTERM)
    stop_timeout: float = 30.0
    restart: str = "always"
    oneshot: bool = False
    backoff_initial: float = 1.0


def _health(
    *,
    http: str | None = None,
    command: tuple[str, ...] | None = None,
    airflow_job: str | None = None,
    database: Secret | None = None,
    expect: Mapping[str, str] | None = None,
    max_age: float = 60.0,
    interval: float = 10.0,
    timeout: float = 5.0,
    failures: int = 3,
    start_period: float = 120.0,
    start_interval: float | None = 2.0,
) -> HealthConfig:
    from haflowd.config.model import HealthConfig

    return HealthConfig(http=http, command=command, interval=interval, timeout=timeout,
                        failures=failures, start_period=start_period,
                        start_interval=min(start_interval, interval) if start_interval else None,
                        expect=dict(expect or {}),
                        airflow_job=airflow_job, database=database, max_age=max_age)


def _secret(value: str) -> Secret:
    from haflowd.config.model import Secret

    return Secret(value)


def _port(ctx: PresetContext, section: str, key: str, default: int, *flags: str) -> int:
    """A server's port: the command line's ``--port`` wins, then Airflow's configuration."""
    given = option_value(ctx.command or (), *flags) if flags else None
    if given is not None:
        try:
            port = int(given)
        except ValueError:
            port = 0
        if not 0 < port < 65536:
            raise AirflowError(f"{flags[0]} {given!r} in the command is not a port")
        return port
    return ctx.settings.port(section, key, default)


def _job_probe(ctx: PresetContext, job_type: str, threshold: tuple[str, str] | None) -> HealthConfig:
    max_age = 60.0
    if threshold is not None:
        raw = ctx.settings.get(threshold[0], threshold[1], "")
        try:
            max_age = max(float(raw), 10.0) if raw else max_age
        except ValueError:
            pass
    return _health(airflow_job=job_type, database=_secret(ctx.settings.database_url()), max_age=max_age,
                   interval=15.0, timeout=10.0, failures=3, start_period=120.0)


def scheduler(ctx: PresetContext) -> Defaults:
    port = ctx.settings.port("scheduler", "scheduler_health_check_server_port", 8974)
    host = ctx.settings.probe_host("scheduler", "scheduler_health_check_server_host")
    return Defaults(
        command=("airflow", "scheduler"),
        health=_health(http=f"http://{host}:{port}/health"),
        environment={"AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True"},
        stop_timeout=60.0,
    )


def api_server(ctx: PresetContext) -> Defaults:
    m = major(ctx.version)
    if m is not None and m < 3:
        raise AirflowError(f"Airflow {ctx.version} has no api-server; use preset \"airflow-webserver\"")
    port = _port(ctx, "api", "port", 8080, "--port", "-p")
    host = ctx.settings.probe_host("api", "host")
    return Defaults(
        command=("airflow", "api-server"),
        # The endpoint queries the metadata database, and Airflow 3 builds its execution API
        # inside the server's event loop on the first task's request, answering nothing for
        # up to half a minute on a loaded machine: restarting it then would fail that task.
        health=_health(http=f"http://{host}:{port}/api/v2/monitor/health",
                       expect={"metadatabase.status": "healthy"}, interval=15.0, timeout=10.0, failures=5),
    )


def webserver(ctx: PresetContext) -> Defaults:
    m = major(ctx.version)
    if m is not None and m >= 3:
        raise AirflowError(f"Airflow {ctx.version} replaced the webserver with the api-server; "
                           "use preset \"airflow-api-server\"")
    port = _port(ctx, "webserver", "web_server_port", 8080, "--port", "-p")
    host = ctx.settings.probe_host("webserver", "web_server_host")
    return Defaults(
        command=("airflow", "webserver"),
        health=_health(http=f"http://{host}:{port}/health", expect={"metadatabase.status": "healthy"},
                       interval=15.0, timeout=10.0, failures=5),
    )


def dag_processor(ctx: PresetContext) -> Defaults:
    m = major(ctx.version)
    env = {"AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True"} if m is not None and m < 3 else {}
    return Defaults(command=("airflow", "dag-processor"), health=_job_probe(ctx, "DagProcessorJob", None),
                    environment=env)


def triggerer(ctx: PresetContext) -> Defaults:
    return Defaults(command=("airflow", "triggerer"),
                    health=_job_probe(ctx, "TriggererJob", ("triggerer", "triggerer_health_check_threshold")))


def celery_nodename(given: str | None, hostname: str) -> str:
    """The node name a Celery worker takes from ``--celery-hostname``, as Celery reads it:
    without ``@`` it is a host name for ``celery@``; ``%h``, ``%n``, ``%d`` are this host's
    name, its first label and its domain."""
    name, at, host = (given or "").partition("@")
    if not at:
        name, host = "", name
    short, _, domain = hostname.partition(".")
    return re.sub(r"%([hnd])", lambda m: {"h": hostname, "n": short, "d": domain}[m.group(1)],
                  f"{name or 'celery'}@{host or hostname}")


def celery_worker(ctx: PresetContext) -> Defaults:
    worker = celery_nodename(option_value(ctx.command or (), "--celery-hostname", "-H"), ctx.hostname)
    broker = ctx.settings.get("celery", "broker_url", "redis://redis:6379/0")
    if celery_ping.amqp_urls(broker):
        # Celery's own remote-control ping, addressed to this node's worker only, sent from
        # inside the daemon: the same question as `celery inspect ping`, without its 4 s of CPU
        health = _health(interval=30.0, timeout=10.0, failures=3, start_period=180.0, start_interval=3.0)
        health = dataclasses.replace(health, celery_ping=worker, broker=_secret(broker))
    else:  # not RabbitMQ: ask the celery CLI
        health = _health(command=("celery", "--app", CELERY_APP, "inspect", "ping", "--destination", worker,
                                  "--timeout", "10"),
                         interval=60.0, timeout=45.0, failures=3, start_period=180.0, start_interval=10.0)
    return Defaults(
        command=("airflow", "celery", "worker"),
        health=health,
        # SIGTERM is Celery's warm shutdown: running tasks finish first
        stop_timeout=600.0,
    )


def flower(ctx: PresetContext) -> Defaults:
    port = _port(ctx, "celery", "flower_port", 5555, "--port", "-p")
    host = ctx.settings.probe_host("celery", "flower_host")
    return Defaults(command=("airflow", "celery", "flower"),
                    health=_health(http=f"http://{host}:{port}/healthcheck", start_period=60.0))


def db_migrate(ctx: PresetContext) -> Defaults:
    return Defaults(command=("airflow", "db", "migrate"), health=None, restart="on-failure", oneshot=True,
                    backoff_initial=5.0, stop_timeout=300.0)


PRESETS: dict[str, Callable[[PresetContext], Defaults]] = {
    "airflow-scheduler": scheduler,
    "airflow-api-server": api_server,
    "airflow-webserver": webserver,
    "airflow-dag-processor": dag_processor,
    "airflow-triggerer": triggerer,
    "airflow-celery-worker": celery_worker,
    "airflow-flower": flower,
    "airflow-db-migrate": db_migrate,
}


def resolve(name: str, component: str, command: tuple[str, ...] | None, env: Mapping[str, str],
            version: str | None = None, detect: bool = True, hostname: str | None = None) -> Defaults:
    """The defaults preset ``name`` gives a component; AirflowError if they cannot be found."""
    settings = AirflowSettings.load(env)
    if version is None and detect:
        version = detect_version(settings.env)
    ctx = PresetContext(name=component, command=command, settings=settings, version=version,
                        hostname=hostname or socket.gethostname())
    return PRESETS[name](ctx)
