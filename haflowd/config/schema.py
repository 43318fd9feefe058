"""Every config key, declared once: its type, default, bounds and a one-line doc.

The reader takes defaults and bounds from here, the frozen dataclasses of ``model`` take
their field defaults from here, the restart policy takes its defaults from here, and
``python -m haflowd.config.doc`` writes the Config tables of docs/reference.md from here.
Key paths have no array indices: ``component.health.interval``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_MS, _S, _MIN, _H, _D = 0.001, 1.0, 60.0, 3600.0, 86400.0

DEFAULT_CONFIG_PATH = "/etc/haflowd/haflowd.toml"
DEFAULT_API = "127.0.0.1:8787"
GOSSIP_PORT = 7946
INT_MAX = 2**31


@dataclass(frozen=True)
class Key:
    """One key. ``default`` None: the key has none of its own (``shown`` says what stands in:
    the host name, a preset, another key). ``lo``/``hi`` bound durations (seconds), sizes
    (bytes) and integers; a minimum of 0 admits zero."""

    path: str
    type: str
    doc: str
    default: Any = None
    lo: float | None = None
    hi: float | None = None
    shown: str | None = None


def _d(path: str, default: float | None, lo: float, hi: float, doc: str, shown: str | None = None) -> Key:
    return Key(path, "duration", doc, default, lo, hi, shown)


def _i(path: str, default: int, lo: int, hi: int, doc: str) -> Key:
    return Key(path, "integer", doc, default, lo, hi)


SECTIONS: dict[str, str] = {
    "node": "`[node]`: this node",
    "api": "`[api]`: the read-only HTTP API and the control socket",
    "gossip": "`[gossip]`: membership (optional; without it, a cluster of one)",
    "component": "`[[component]]`: a supervised process",
    "component.health": "`[component.health]`: its probe (optional; without it, running means alive)",
    "sync": "`[sync]`: DAG synchronisation with csync2 (optional)",
    "postgres": "`[postgres]`: PostgreSQL checks (optional)",
    "postgres.node": "`[[postgres.node]]`",
    "rabbitmq": "`[rabbitmq]`: RabbitMQ checks (optional)",
    "rabbitmq.node": "`[[rabbitmq.node]]`",
    "hook": "`[[hook]]`: a command run on events (optional; docs/reference.md, Events)",
}

# The bounds keep typos (1e23 s, 1 ms) out, not tuning.
SCHEMA: tuple[Key, ...] = (
    Key("node.name", "name", "unique in the cluster", shown="the host name (first label)"),
    Key("node.data_dir", "path", "durable state: incarnation number, sync state", "/var/lib/haflowd"),
    Key("api.listen", "address", "read-only HTTP: health, status, metrics", DEFAULT_API),
    Key("api.control_socket", "path", "mutations (restart, sync now); mode 0600", "/run/haflowd/control.sock"),
    Key("gossip.listen", "address", "where peers reach this node (port 7946 when not given)",
        f"0.0.0.0:{GOSSIP_PORT}"),
    Key("gossip.advertise", "address", "what peers use to reach this node; a wildcard is an error with seeds",
        shown="listen"),
    Key("gossip.seeds", "list of addresses", "nodes to join through", []),
    Key("gossip.keys", "list of secrets", "base64 keys (16 bytes or more); the first signs, all verify",
        shown="one of keys, key_file"),
    Key("gossip.key_file", "path", "the same keys, one per line (`#` comments)", shown="one of keys, key_file"),
    _d("gossip.probe_interval", 0.3, 50 * _MS, 60 * _S, "time between probes of one peer (README, gossip defaults)"),
    _d("gossip.probe_timeout", 0.15, 10 * _MS, 30 * _S, "a direct probe's wait for its ack; less than probe_interval"),
    _i("gossip.indirect_checks", 3, 0, 16, "peers asked to probe a silent peer"),
    _i("gossip.suspicion_mult", 4, 1, 100, "scales the suspicion timeout (Lifeguard)"),
    Key("gossip.leave_on_terminate", "boolean", "say goodbye on SIGTERM (peers see left, not dead)", True),
    _d("gossip.reap_after", 72 * _H, 1 * _S, 365 * _D,
       "a member dead this long is forgotten (each node on its own clock); seconds are for tests"),
    _d("gossip.tombstone", 24 * _H, 1 * _S, 365 * _D, "a member that left (or was forced to) is forgotten after this"),
    Key("component.name", "name", "unique among components", shown="required"),
    Key("component.preset", "preset", "fills command, health and stop settings for an Airflow component"),
    Key("component.command", "list of strings", "argv; run with execvpe on the component's PATH",
        shown="required unless preset"),
    Key("component.environment", "table of strings", "added to haflowd's environment (over the preset's)", {}),
    Key("component.user", "string", "drop privileges to this user", shown="haflowd's user"),
    Key("component.working_dir", "path", "the child's working directory", shown="haflowd's"),
    Key("component.oneshot", "boolean", "runs to exit (a migration): no health check, restart not always", False),
    Key("component.restart", "always | on-failure | never", "when an exit is followed by a start", "always",
        shown='"always" ("on-failure" when oneshot)'),
    _d("component.backoff_initial", 1.0, 10 * _MS, 1 * _H, "first delay after a quick failure, doubling"),
    _d("component.backoff_max", 60.0, 10 * _MS, 1 * _D, "longest delay; at least backoff_initial"),
    _d("component.stable_after", 10.0, 10 * _MS, 1 * _D, "a run this long restarts at once and resets the backoff"),
    _i("component.crash_loop_failures", 5, 1, 10000, "this many quick failures within crash_loop_window: fatal"),
    _d("component.crash_loop_window", 120.0, 1 * _S, 1 * _D, "the window of crash_loop_failures"),
    Key("component.start_after", "list of names", "components that must be running (and healthy) first", []),
    Key("component.stop_signal", "signal", "TERM, INT, QUIT, HUP, KILL, USR1, USR2 or WINCH", "TERM"),
    _d("component.stop_timeout", 30.0, 100 * _MS, 1 * _D, "then SIGKILL to the whole process group"),
    Key("component.on_drain", "stop | keep",
        "on `haflowctl drain`: stop it (warmly, in reverse start order) or keep it", "stop"),
    _i("component.log_rate_limit", 200, 0, 1_000_000, "output lines per second logged (a token bucket); 0: no limit"),
    Key("component.health", "table", "the probe; not for a oneshot component"),
    Key("component.health.http", "URL", "healthy on a 2xx answer", shown="one of http, command, airflow_job"),
    Key("component.health.command", "list of strings", "healthy on exit 0", shown="one of http, command, airflow_job"),
    Key("component.health.airflow_job", "SchedulerJob | TriggererJob | DagProcessorJob",
        "healthy while this host's job heartbeat is fresher than max_age", shown="one of http, command, airflow_job"),
    Key("component.health.expect", "table of strings", 'http only: JSON paths that must hold these values', {}),
    _d("component.health.interval", 10.0, 100 * _MS, 1 * _H, "time between probes"),
    _d("component.health.timeout", 5.0, 10 * _MS, 1 * _H, "one probe's limit; at most interval"),
    _i("component.health.failures", 3, 1, 1000, "consecutive failures before the child is restarted"),
    _d("component.health.start_period", 10.0, 0.0, 1 * _D, "failures in this time after a start do not count"),
    _d("component.health.start_interval", None, 100 * _MS, 1 * _H,
       "probe this often until the first success within start_period", shown="interval"),
    _d("component.health.max_age", 60.0, 1 * _S, 1 * _D, "airflow_job only: the oldest heartbeat that is healthy"),
    Key("component.health.hostname", "string", "airflow_job only: the host name the job records",
        shown="the host's canonical name, as Airflow records it"),
    Key("sync.enabled", "boolean", "false keeps the section but syncs nothing", True),
    Key("sync.command", "list of strings", "base command; per-peer retries add csync2's own options", ["csync2", "-x"]),
    _d("sync.interval", 60.0, 100 * _MS, 7 * _D, "the schedule that replaces crontab"),
    Key("sync.watch", "list of paths", "absolute; a change here triggers a sync (debounced)", []),
    _d("sync.debounce", 0.5, 0.0, 1 * _H, "quiet time after a change before the sync"),
    _d("sync.debounce_max", 5.0, 10 * _MS, 1 * _H, "longest wait under a stream of changes; at least debounce"),
    _d("sync.timeout", 120.0, 1 * _S, 1 * _D, "one csync2 run is killed after this"),
    _d("sync.retry_initial", 2.0, 100 * _MS, 1 * _H, "first retry of a failing peer, doubling"),
    _d("sync.retry_max", 300.0, 100 * _MS, 1 * _D, "longest retry delay; at least retry_initial"),
    Key("sync.peers", "list of names", "node names to sync with", shown="every other gossip member"),
    Key("sync.host_map", "table of strings", "node name = csync2 host name, where they differ", {}),
    _i("sync.port", 30865, 1, 65535, "csync2's port, probed before a run"),
    _d("sync.probe_timeout", 1.0, 10 * _MS, 5 * _MIN, "that probe's limit; at most timeout"),
    _d("sync.warn_after", 300.0, 1 * _S, 30 * _D, "a peer not synced for this long is a warning"),
    _d("sync.critical_after", 1800.0, 1 * _S, 30 * _D, "... and critical; at least warn_after"),
    Key("postgres.topology", "streaming | bucardo", "one primary and standbys, or every node a primary", "streaming"),
    Key("postgres.local_node", "name", "the node on this host, for /postgres/primary and /replica; one of node.name"),
    _d("postgres.interval", 10.0, 100 * _MS, 1 * _H, "time between checks"),
    _d("postgres.timeout", 3.0, 100 * _MS, 10 * _MIN, "one check's limit"),
    Key("postgres.max_lag_bytes", "size", "a standby further behind is not a healthy replica", 16 * 2**20, 0, 2**40),
    Key("postgres.bucardo_dsn", "secret", 'topology = "bucardo" only: where bucardo.sync lives'),
    Key("postgres.node", "array of tables", "at least one", shown="required"),
    Key("postgres.node.name", "name", "unique among the nodes", shown="required"),
    Key("postgres.node.dsn", "secret", "a libpq connection string", shown="required"),
    _d("rabbitmq.interval", 10.0, 100 * _MS, 1 * _H, "time between checks"),
    _d("rabbitmq.timeout", 3.0, 100 * _MS, 10 * _MIN, "one check's limit"),
    Key("rabbitmq.amqp_url", "secret", "amqp:// or amqps://: a publish-and-consume round trip"),
    Key("rabbitmq.queues", "list of strings", "queues whose depth and consumers are watched", ["default", "celery"]),
    Key("rabbitmq.queue_warning_depth", "integer", "a deeper queue is a warning", 1000, 1, None),
    Key("rabbitmq.vhost", "string", "the virtual host of the queues", "/"),
    Key("rabbitmq.node", "array of tables", "at least one", shown="required"),
    Key("rabbitmq.node.name", "string", 'as rabbitmqctl names it: "rabbit@node1"', shown="required"),
    Key("rabbitmq.node.management_url", "URL", "http:// or https://", shown="required"),
    Key("rabbitmq.node.username", "string", "for the management API", "guest"),
    Key("rabbitmq.node.password", "secret", "for the management API"),
    Key("rabbitmq.node.amqp_url", "secret", "this node's own listener, for a per-node round trip"),
    Key("hook.name", "name", "unique among hooks; the metric's `hook` label", shown="required"),
    Key("hook.on", "list of event types", 'event types (`haflowctl events`), or "*" for every one', shown="required"),
    Key("hook.command", "list of strings", "argv; the event as JSON on stdin, HAFLOWD_EVENT_* in the environment",
        shown="required"),
    _d("hook.timeout", 30.0, 100 * _MS, 1 * _H, "then SIGKILL to its process group and what it forked"),
    Key("hook.user", "string", "drop privileges to this user", shown="haflowd's user"),
)

KEYS: dict[str, Key] = {k.path: k for k in SCHEMA}

# Every duration key: (default, minimum, maximum) in seconds; every size key: in bytes.
DURATIONS: dict[str, tuple[float | None, float, float]] = {
    k.path: (k.default, float(k.lo or 0.0), float(k.hi or 0.0)) for k in SCHEMA if k.type == "duration"
}
SIZES: dict[str, tuple[int, int, int]] = {
    k.path: (int(k.default), int(k.lo or 0), int(k.hi or 0)) for k in SCHEMA if k.type == "size"
}


def schema_key(path: str) -> str:
    """``component[2].health.interval`` → ``component.health.interval``."""
    return re.sub(r"\[\d+\]", "", path)


def default_of(key: str) -> Any:
    """The default of a key that has its own."""
    d = KEYS[key].default
    assert d is not None, key
    return d


def bounds_of(key: str) -> tuple[int, int]:
    """An integer key's bounds; no maximum of its own is ``INT_MAX``."""
    k = KEYS[key]
    return int(k.lo or 0), int(k.hi) if k.hi is not None else INT_MAX


def duration_default(key: str) -> float:
    return float(default_of(key))


def int_default(key: str) -> int:
    return int(default_of(key))
