"""The frozen dataclasses a config becomes. Field defaults come from ``schema``."""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from haflowd.config.schema import default_of as _default
from haflowd.config.schema import duration_default as _dur
from haflowd.config.schema import int_default as _int


class Secret:
    """A string that never shows itself in a repr, a log line or an API answer."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class NodeConfig:
    name: str
    data_dir: Path


@dataclass(frozen=True)
class ApiConfig:
    listen: HostPort
    control_socket: Path


@dataclass(frozen=True)
class GossipConfig:
    listen: HostPort
    advertise: HostPort
    seeds: tuple[HostPort, ...]
    keys: tuple[Secret, ...]
    probe_interval: float
    probe_timeout: float
    indirect_checks: int
    suspicion_mult: int
    leave_on_terminate: bool
    reap_after: float = 72 * 3600.0
    tombstone: float = 24 * 3600.0


@dataclass(frozen=True)
class HealthConfig:
    http: str | None
    command: tuple[str, ...] | None
    interval: float
    timeout: float
    failures: int
    start_period: float
    # until the first success within start_period, probe this often (Docker's --health-start-interval)
    start_interval: float | None = None
    # http: dotted JSON paths that must hold these values ({"metadatabase.status": "healthy"})
    expect: Mapping[str, str] = field(default_factory=dict)
    # airflow_job: the job type whose heartbeat on this host must be fresher than max_age
    airflow_job: str | None = None
    database: Secret | None = None
    max_age: float = _dur("component.health.max_age")
    hostname: str | None = None
    # celery_ping (presets only): Celery's remote-control ping of this worker over AMQP
    celery_ping: str | None = None
    broker: Secret | None = None

    def __hash__(self) -> int:
        return hash((self.http, self.command, self.airflow_job, self.celery_ping, self.interval))


@dataclass(frozen=True)
class ComponentConfig:
    name: str
    command: tuple[str, ...]
    preset: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    working_dir: Path | None = None
    restart: str = _default("component.restart")
    backoff_initial: float = _dur("component.backoff_initial")
    backoff_max: float = _dur("component.backoff_max")
    stable_after: float = _dur("component.stable_after")
    crash_loop_failures: int = _int("component.crash_loop_failures")
    crash_loop_window: float = _dur("component.crash_loop_window")
    start_after: tuple[str, ...] = ()
    stop_signal: int = int(getattr(signal, "SIG" + _default("component.stop_signal")))
    stop_timeout: float = _dur("component.stop_timeout")
    log_rate_limit: int = _int("component.log_rate_limit")
    health: HealthConfig | None = None
    oneshot: bool = _default("component.oneshot")
    on_drain: str = _default("component.on_drain")

    def __hash__(self) -> int:
        return hash((self.name, self.command))


@dataclass(frozen=True)
class SyncConfig:
    """``[sync]``: csync2 driven by a schedule, file changes, peers coming back and requests.

    ``peers`` are node names (as gossip knows them); empty means "every other gossip
    member". ``host_map`` maps a node name to its csync2 host name where they differ.
    """

    enabled: bool
    command: tuple[str, ...]
    interval: float
    watch: tuple[Path, ...]
    debounce: float
    timeout: float
    retry_initial: float
    retry_max: float
    peers: tuple[str, ...]
    host_map: Mapping[str, str] = field(default_factory=dict)
    port: int = _int("sync.port")
    probe_timeout: float = _dur("sync.probe_timeout")
    debounce_max: float = _dur("sync.debounce_max")
    warn_after: float = _dur("sync.warn_after")
    critical_after: float = _dur("sync.critical_after")

    def csync2_host(self, node: str) -> str:
        """The csync2 host name of a node (the same name unless ``host_map`` says otherwise)."""
        return self.host_map.get(node, node)

    def __hash__(self) -> int:
        return hash((self.command, self.peers))


@dataclass(frozen=True)
class PostgresNode:
    name: str
    dsn: Secret


@dataclass(frozen=True)
class PostgresConfig:
    topology: str
    local_node: str | None
    interval: float
    timeout: float
    max_lag_bytes: int
    nodes: tuple[PostgresNode, ...]
    bucardo_dsn: Secret | None = None  # topology = "bucardo": where bucardo.sync/syncrun live


@dataclass(frozen=True)
class RabbitNode:
    name: str  # the RabbitMQ node name, as in ``rabbitmqctl status``: "rabbit@node1"
    management_url: str
    username: str
    password: Secret | None
    amqp_url: Secret | None = None  # this node's own AMQP listener, for a per-node round trip


@dataclass(frozen=True)
class RabbitConfig:
    interval: float
    timeout: float
    amqp_url: Secret | None
    nodes: tuple[RabbitNode, ...]
    queues: tuple[str, ...] = tuple(_default("rabbitmq.queues"))  # Celery's queues: depth and consumers
    queue_warning_depth: int = _int("rabbitmq.queue_warning_depth")
    vhost: str = _default("rabbitmq.vhost")


@dataclass(frozen=True)
class HookConfig:
    """``[[hook]]``: ``command`` run on each event whose type is in ``on`` ("*": every one)."""

    name: str
    on: tuple[str, ...]
    command: tuple[str, ...]
    timeout: float = _dur("hook.timeout")
    user: str | None = None


@dataclass(frozen=True)
class Config:
    path: Path
    node: NodeConfig
    api: ApiConfig
    components: tuple[ComponentConfig, ...]
    gossip: GossipConfig | None = None
    sync: SyncConfig | None = None
    postgres: PostgresConfig | None = None
    rabbitmq: RabbitConfig | None = None
    hooks: tuple[HookConfig, ...] = ()

    def component(self, name: str) -> ComponentConfig | None:
        for c in self.components:
            if c.name == name:
                return c
        return None



def start_order(components: Sequence[ComponentConfig]) -> list[ComponentConfig]:
    """Components sorted so each comes after everything in its start_after (stable)."""
    done: list[ComponentConfig] = []
    names: set[str] = set()
    pending = list(components)
    known = {x.name for x in components}
    while pending:
        progressed = False
        for c in list(pending):
            if all(d in names or d not in known for d in c.start_after):
                done.append(c)
                names.add(c.name)
                pending.remove(c)
                progressed = True
        if not progressed:  # a cycle; validation reports it, keep going deterministically
            done.extend(pending)
            break
    return done
