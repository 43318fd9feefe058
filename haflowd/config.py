"""TOML configuration → frozen dataclasses.

Every problem is collected (not just the first) and reported one line each as
``FILE: key.path: expected ...; got ...``. Key paths index arrays from 0:
``component[2].restart`` is the third ``[[component]]`` table.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import pwd
import re
import signal
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from haflowd import airflow, presets
from haflowd.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/haflowd/haflowd.toml"
DEFAULT_API = "127.0.0.1:8787"

T = TypeVar("T")


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
    max_age: float = 60.0
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
    restart: str = "always"
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    stable_after: float = 10.0
    crash_loop_failures: int = 5
    crash_loop_window: float = 120.0
    start_after: tuple[str, ...] = ()
    stop_signal: int = int(signal.SIGTERM)
    stop_timeout: float = 30.0
    log_rate_limit: int = 200
    health: HealthConfig | None = None
    oneshot: bool = False

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
    port: int = 30865
    probe_timeout: float = 1.0
    debounce_max: float = 5.0
    warn_after: float = 300.0
    critical_after: float = 1800.0

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
    queues: tuple[str, ...] = ("default", "celery")  # Celery's queues: depth and consumers
    queue_warning_depth: int = 1000
    vhost: str = "/"


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

    def component(self, name: str) -> ComponentConfig | None:
        for c in self.components:
            if c.name == name:
                return c
        return None


# --------------------------------------------------------------------------- values

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB|K|M|G)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "K": 2**10, "M": 2**20, "G": 2**30,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}\Z")
_SIGNALS = ("TERM", "INT", "QUIT", "HUP", "KILL", "USR1", "USR2", "WINCH")


_MS, _S, _MIN, _H, _D = 0.001, 1.0, 60.0, 3600.0, 86400.0

# Every duration key: (default, minimum, maximum) in seconds, by key path without array
# indices. A default of None: the key has none of its own (a preset or another key gives it).
# A minimum of 0 admits "0s"; the bounds keep typos (1e23 s, 1 ms) out, not tuning.
DURATIONS: dict[str, tuple[float | None, float, float]] = {
    "gossip.probe_interval": (0.3, 50 * _MS, 60 * _S),  # see README, "gossip defaults"
    "gossip.probe_timeout": (0.15, 10 * _MS, 30 * _S),
    "component.backoff_initial": (1.0, 10 * _MS, 1 * _H),
    "component.backoff_max": (60.0, 10 * _MS, 1 * _D),
    "component.stable_after": (10.0, 10 * _MS, 1 * _D),
    "component.crash_loop_window": (120.0, 1 * _S, 1 * _D),
    "component.stop_timeout": (30.0, 100 * _MS, 1 * _D),
    "component.health.interval": (10.0, 100 * _MS, 1 * _H),
    "component.health.timeout": (5.0, 10 * _MS, 1 * _H),
    "component.health.start_period": (10.0, 0.0, 1 * _D),
    "component.health.start_interval": (None, 100 * _MS, 1 * _H),
    "component.health.max_age": (60.0, 1 * _S, 1 * _D),
    "sync.interval": (60.0, 100 * _MS, 7 * _D),
    "sync.debounce": (0.5, 0.0, 1 * _H),
    "sync.debounce_max": (5.0, 10 * _MS, 1 * _H),
    "sync.timeout": (120.0, 1 * _S, 1 * _D),
    "sync.retry_initial": (2.0, 100 * _MS, 1 * _H),
    "sync.retry_max": (300.0, 100 * _MS, 1 * _D),
    "sync.probe_timeout": (1.0, 10 * _MS, 5 * _MIN),
    "sync.warn_after": (300.0, 1 * _S, 30 * _D),
    "sync.critical_after": (1800.0, 1 * _S, 30 * _D),
    "postgres.interval": (10.0, 100 * _MS, 1 * _H),
    "postgres.timeout": (3.0, 100 * _MS, 10 * _MIN),
    "rabbitmq.interval": (10.0, 100 * _MS, 1 * _H),
    "rabbitmq.timeout": (3.0, 100 * _MS, 10 * _MIN),
}
# Every size key: (default, minimum, maximum) in bytes.
SIZES: dict[str, tuple[int, int, int]] = {
    "postgres.max_lag_bytes": (16 * 2**20, 0, 2**40),
}


def schema_key(path: str) -> str:
    """``component[2].health.interval`` → ``component.health.interval``."""
    return re.sub(r"\[\d+\]", "", path)


def default_of(key: str) -> float:
    """The default of a duration key (one that has its own)."""
    d = DURATIONS[key][0]
    assert d is not None, key
    return d


def human_duration(seconds: float) -> str:
    """A bound as an operator writes it: the largest unit that divides it (``1d``, ``100ms``)."""
    for unit, size in (("d", _D), ("h", _H), ("m", _MIN), ("s", _S)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return format_duration(seconds)


def human_size(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}"


def _as_written(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_duration(text: str) -> float:
    """``"1m30s"`` → 90.0. Raises ValueError on anything else."""
    s = text.strip()
    if not s:
        raise ValueError(text)
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            raise ValueError(text)
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(text)
    return total


def parse_size(value: int | str) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(value)
        return value
    m = _SIZE.match(value)
    if not m:
        raise ValueError(value)
    import fractions  # only here: the daemon need not carry it (about 0.4 MiB)

    return int(fractions.Fraction(m.group(1)) * _SIZE_UNITS[m.group(2)])


def format_duration(seconds: float) -> str:
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def parse_hostport(text: str, default_port: int | None = None) -> HostPort:
    s = text.strip()
    m = re.match(r"^\[([0-9A-Fa-f:.]+)\](?::([0-9]+))?\Z", s)
    if m:
        host, port_s = m.group(1), m.group(2)
    elif s.count(":") == 1:
        host, port_s = s.split(":")
    elif ":" not in s:
        host, port_s = s, None
    else:
        raise ValueError(text)
    if not host or not re.match(r"^[A-Za-z0-9_.:-]+\Z", host):
        raise ValueError(text)
    if port_s is None:
        if default_port is None:
            raise ValueError(text)
        port = default_port
    else:
        if not (port_s.isascii() and port_s.isdigit()):
            raise ValueError(text)
        port = int(port_s)
    if not 0 < port < 65536:
        raise ValueError(text)
    return HostPort(host, port)


def describe(value: Any, secret: bool = False) -> str:
    """How a wrong value is shown in an error: its TOML-ish spelling, never a secret."""
    if value is _MISSING:
        return "nothing"
    if isinstance(value, dict):
        return "a table"
    if secret:
        if value == "":
            return "an empty string"
        kind = _type_name(value)
        return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = json.dumps(value, default=str, ensure_ascii=False)
    text = re.sub(r"(\w[\w+.-]*://[^/\s:@\"]*):[^@/\s\"]*@", r"\1:***@", text)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


class _Missing:
    pass


_MISSING: Any = _Missing()


# --------------------------------------------------------------------------- reader


class _Errors:
    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{self.file}: {path}: {message}" if path else f"{self.file}: {message}")


class _Table:
    """One TOML table being read: typed getters that record errors and never raise."""

    def __init__(self, data: Mapping[str, Any], path: str, errors: _Errors) -> None:
        self.data = data
        self.path = path
        self.errors = errors
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name, _MISSING)

    def fail(self, name: str, expected: str, value: Any, secret: bool = False) -> None:
        self.errors.add(self.key(name), f"expected {expected}; got {describe(value, secret)}")

    def get(
        self,
        name: str,
        expected: str,
        convert: Callable[[Any], T],
        default: T | _Missing = _MISSING,
        secret: bool = False,
    ) -> T | None:
        value = self.raw(name)
        if value is _MISSING:
            if isinstance(default, _Missing):
                self.fail(name, expected, value)
                return None
            return default
        try:
            return convert(value)
        except (ValueError, TypeError):
            self.fail(name, expected, value, secret)
            return None

    def string(self, name: str, default: Any = _MISSING, what: str = "a string") -> Any:
        return self.get(name, what, _as_str, default)

    def nonempty(self, name: str, default: Any = _MISSING) -> Any:
        return self.get(name, "a non-empty string", _as_nonempty, default)

    def boolean(self, name: str, default: Any = _MISSING) -> Any:
        return self.get(name, "true or false", _as_bool, default)

    def integer(self, name: str, default: Any = _MISSING, lo: int = 0, hi: int = 2**31) -> Any:
        what = f"an integer from {lo} to {hi}" if hi < 2**31 else f"an integer of at least {lo}"
        return self.get(name, what, lambda v: _as_int(v, lo, hi), default)

    def duration(self, name: str, default: Any = _MISSING) -> Any:
        """A duration within its bounds (``DURATIONS``); without ``default``, the key's own."""
        key = schema_key(self.key(name))
        own, lo, hi = DURATIONS[key]
        what = 'a duration such as "250ms", "10s", "5m"'
        value = self.get(name, what, lambda v: _as_duration(v, lo > 0), own if default is _MISSING else default)
        if value is None or not self.has(name):
            return value
        if value < lo:
            self.errors.add(self.key(name), f"{_as_written(self.data[name])} is below the minimum {human_duration(lo)}")
            return None
        if value > hi:
            self.errors.add(self.key(name), f"{_as_written(self.data[name])} is above the maximum {human_duration(hi)}")
            return None
        return value

    def size(self, name: str) -> Any:
        """A size within its bounds (``SIZES``)."""
        own, lo, hi = SIZES[schema_key(self.key(name))]
        value = self.get(name, 'a size such as 1048576 or "16MiB"', _as_size, own)
        if value is None or not self.has(name):
            return value
        if value < lo:
            self.errors.add(self.key(name), f"{_as_written(self.data[name])} is below the minimum {human_size(lo)}")
            return None
        if value > hi:
            self.errors.add(self.key(name), f"{_as_written(self.data[name])} is above the maximum {human_size(hi)}")
            return None
        return value

    def choice(self, name: str, choices: Sequence[str], default: Any = _MISSING) -> Any:
        return self.get(name, "one of " + ", ".join(choices), lambda v: _as_choice(v, choices), default)

    def strings(self, name: str, default: Any = _MISSING, nonempty: bool = False) -> Any:
        what = "a non-empty list of strings" if nonempty else "a list of strings"
        return self.get(name, what, lambda v: _as_strings(v, nonempty), default)

    def hostport(self, name: str, default: Any = _MISSING, default_port: int | None = None) -> Any:
        return self.get(name, 'an address "host:port"', lambda v: _as_hostport(v, default_port), default)

    def secret(self, name: str, base: Path, required: bool = False) -> Secret | None:
        """``name`` inline or ``name_file``; never both, never echoed."""
        file_key = f"{name}_file"
        inline, path = self.raw(name), self.raw(file_key)
        if inline is not _MISSING and path is not _MISSING:
            self.errors.add(self.key(name), f"expected one of {name}, {file_key}; got both")
            return None
        if inline is not _MISSING:
            if not isinstance(inline, str) or not inline:
                self.fail(name, "a non-empty string", inline, secret=True)
                return None
            return Secret(inline)
        if path is not _MISSING:
            text = self.read_file(file_key, path, base)
            if text is None:
                return None
            text = text.strip()
            if not text:
                self.errors.add(self.key(file_key), f"file {json.dumps(str(path))} is empty")
                return None
            return Secret(text)
        if required:
            self.errors.add(self.key(name), f"expected one of {name}, {file_key}; got nothing")
        return None

    def read_file(self, key: str, path: Any, base: Path) -> str | None:
        if not isinstance(path, str) or not path:
            self.fail(key, "a file path", path)
            return None
        if "\0" in path:
            self.fail(key, "a file path", path)
            return None
        p = _resolve(path, base)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            self.errors.add(self.key(key), f"cannot read {json.dumps(str(p))}: {e.strerror or e}")
            return None
        except UnicodeDecodeError:
            self.errors.add(self.key(key), f"cannot read {json.dumps(str(p))}: not UTF-8 text")
            return None
        exposed = secret_exposure(p)
        if exposed is not None:
            who, mode = exposed
            self.errors.add(self.key(key), f"{json.dumps(str(p))} is readable or writable by {who} (mode {mode:04o}); "
                            f"a secret must be its owner's alone: chmod 600 {json.dumps(str(p))}")
            return None
        return text

    def table(self, name: str) -> _Table | None:
        value = self.raw(name)
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            self.fail(name, "a table", value)
            return None
        return _Table(value, self.key(name), self.errors)

    def tables(self, name: str) -> list[_Table]:
        value = self.raw(name)
        if value is _MISSING:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(name, f"an array of tables ([[{self.key(name)}]])", value)
            return []
        return [_Table(v, f"{self.key(name)}[{i}]", self.errors) for i, v in enumerate(value)]

    def given(self, name: str, value: float) -> str:
        """How a duration that broke a cross-key rule is shown: as written, or as the default."""
        if name in self.data:
            return describe(self.data[name])
        return f"{format_duration(value)} (the default)"

    def finish(self) -> None:
        """Unknown keys are errors, with a suggestion when one is close."""
        for k in self.data:
            if k in self.seen:
                continue
            import difflib  # only for an error message

            close = difflib.get_close_matches(k, sorted(self.seen), n=1, cutoff=0.75)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            self.errors.add(self.key(k), f"unknown key{hint}")


def secret_exposure(p: Path) -> tuple[str, int] | None:
    """Who besides its owner can read or change a secret file: ``("others", 0o644)``, or None.

    The group counts too: haflowd runs as root, so no group needs a secret, and the
    components' group (``airflow``) runs task code. A file is shielded, whatever its mode,
    inside a directory that only its owner (or root) can enter (mode ``0700``)."""
    try:
        real = p.resolve()
        st = os.stat(real)
    except (OSError, ValueError, RuntimeError):
        return None
    mode = st.st_mode & 0o7777
    who = [w for w, bits in (("its group", 0o060), ("others", 0o006)) if mode & bits]
    if not who:
        return None
    for d in real.parents:
        try:
            ds = os.stat(d)
        except OSError:
            return None
        if ds.st_mode & 0o011 == 0 and ds.st_uid in (0, st.st_uid):
            return None
    return " and ".join(who), mode


def _resolve(path: str, base: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base / p


def _as_str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError
    return v


def _as_nonempty(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise TypeError
    return v


def _as_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError
    return v


def _as_int(v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise TypeError
    return v


def _as_duration(v: Any, positive: bool) -> float:
    if not isinstance(v, str):
        raise TypeError
    d = parse_duration(v)
    if (positive and d <= 0) or not math.isfinite(d):
        raise ValueError
    return d


def _as_size(v: Any) -> int:
    if not isinstance(v, int | str):
        raise TypeError
    return parse_size(v)


def _as_choice(v: Any, choices: Sequence[str]) -> str:
    if not isinstance(v, str) or v not in choices:
        raise ValueError
    return v


def _as_strings(v: Any, nonempty: bool) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise TypeError
    if nonempty and (not v or not v[0]):
        raise ValueError
    return tuple(v)


def _as_hostport(v: Any, default_port: int | None) -> HostPort:
    if not isinstance(v, str):
        raise TypeError
    return parse_hostport(v, default_port)


def _as_signal(v: Any) -> int:
    if not isinstance(v, str):
        raise TypeError
    name = v.upper().removeprefix("SIG")
    if name not in _SIGNALS:
        raise ValueError
    return int(getattr(signal, "SIG" + name))


def _as_url(v: Any) -> str:
    if not isinstance(v, str) or not re.match(r"^https?://[^\s/]+(/\S*)?\Z", v):
        raise ValueError
    return v


def _as_env(v: Any) -> dict[str, str]:
    if not isinstance(v, dict):
        raise TypeError
    out: dict[str, str] = {}
    for k, val in v.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*\Z", k):
            raise ValueError
        if isinstance(val, bool) or not isinstance(val, str | int | float):
            raise TypeError
        out[k] = str(val)
    return out


def _as_name(v: Any) -> str:
    if not isinstance(v, str) or not _NAME.match(v):
        raise ValueError
    return v


def _no_nul(t: _Table, name: str, values: Sequence[str] | Mapping[str, str] | None, what: str) -> None:
    """A NUL cannot reach a process (execve ends the string there): an error, not a truncation."""
    items = values.items() if isinstance(values, Mapping) else enumerate(values or ())
    for k, v in items:
        if "\0" in v:
            sub = f"{name}.{k}" if isinstance(values, Mapping) else f"{name}[{k}]"
            t.errors.add(t.key(sub), f"contains a NUL character (no {what} can hold one)")


_ACL = "system.posix_acl_access"


def _has_acl(path: str) -> bool:
    try:
        os.getxattr(path, _ACL)
    except (OSError, AttributeError):
        return False
    return True


def _may(path: str, st: os.stat_result, who: tuple[int, list[int]] | None, bit: int) -> bool:
    """Whether ``who`` (uid, groups; None: haflowd itself) has permission ``bit`` (4 read,
    1 execute/search) on ``path``, from its mode bits; a file with an ACL is given the
    benefit of the doubt."""
    if who is None:
        return os.access(path, os.X_OK if bit == 1 else os.R_OK)
    uid, gids = who
    if uid == 0:
        return bit != 1 or bool(st.st_mode & 0o111) or os.path.isdir(path)
    if _has_acl(path):
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid in gids:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def _reachable(path: str, who: tuple[int, list[int]] | None) -> str | None:
    """The first directory above ``path`` that ``who`` cannot enter, or None."""
    for d in reversed(Path(path).parents):
        try:
            if not _may(str(d), os.stat(d), who, 1):
                return str(d)
        except OSError:
            return None
    return None


def _as_user(user: str | None) -> tuple[tuple[int, list[int]] | None, str]:
    """(uid, groups) of a component's user, and how to name it in an error."""
    if not user:
        return None, ""
    try:
        uid, gid, groups, _home = user_ids(user)
    except (KeyError, ValueError):
        return None, ""  # reported as "no such user"
    return (uid, [gid, *groups]), f" by user {json.dumps(user)}"


def command_problem(argv0: str, env: Mapping[str, str], cwd: Path | None, user: str | None) -> str | None:
    """Why a component's command cannot be run (as its user), as haflowd's guard runs it
    (execvpe: the component's PATH, else haflowd's), or None."""
    who, by = _as_user(user)
    if "/" in argv0:
        candidates = [str((cwd or Path.cwd()) / argv0)]
    else:
        path = env.get("PATH", os.environ.get("PATH", os.defpath))
        candidates = [os.path.join(d or ".", argv0) for d in path.split(os.pathsep)]
    blocked: list[str] = []
    for c in candidates:
        try:
            st = os.stat(c)
        except (OSError, ValueError):
            continue
        if os.path.isdir(c):
            blocked.append(f"{json.dumps(c)} is a directory")
        elif (d := _reachable(c, who)) is not None:
            blocked.append(f"{json.dumps(d)} cannot be entered{by}")
        elif not _may(c, st, who, 1):
            blocked.append(f"{json.dumps(c)} is not executable{by} (mode {st.st_mode & 0o7777:04o})")
        else:
            return None
    if blocked:
        return blocked[0]
    if "/" in argv0:
        return f"{json.dumps(candidates[0])} does not exist"
    where = "the component's PATH" if "PATH" in env else "haflowd's PATH"
    return f"{json.dumps(argv0)} is not on {where} ({describe(path)})"


def directory_problem(wd: Path, user: str | None) -> str | None:
    """Why a component cannot start in ``working_dir`` (as its user), or None."""
    who, by = _as_user(user)
    try:
        st = os.stat(wd)
    except (OSError, ValueError) as e:
        return f"cannot use {json.dumps(str(wd))}: {getattr(e, 'strerror', None) or e}"
    if not os.path.isdir(wd):
        return f"{json.dumps(str(wd))} is not a directory"
    d = _reachable(str(wd), who)
    if d is not None:
        return f"{json.dumps(d)} cannot be entered{by}"
    if not _may(str(wd), st, who, 1):
        return f"{json.dumps(str(wd))} cannot be entered{by} (mode {st.st_mode & 0o7777:04o})"
    return None


# --------------------------------------------------------------------------- sections

_NAME_WHAT = "a name of letters, digits, '_', '.', '@' or '-' (at most 63)"


def _node(t: _Table | None, errors: _Errors, base: Path) -> NodeConfig:
    name = socket.gethostname().split(".")[0] or "localhost"
    data_dir = Path("/var/lib/haflowd")
    if t is not None:
        name = t.get("name", _NAME_WHAT, _as_name, name) or name
        d = t.nonempty("data_dir", str(data_dir))
        data_dir = _resolve(d, base) if d else data_dir
        t.finish()
    return NodeConfig(name=name, data_dir=data_dir)


def _api(t: _Table | None, base: Path) -> ApiConfig:
    listen = parse_hostport(DEFAULT_API)
    sock = Path("/run/haflowd/control.sock")
    if t is not None:
        listen = t.hostport("listen", listen) or listen
        s = t.nonempty("control_socket", str(sock))
        sock = _resolve(s, base) if s else sock
        t.finish()
    return ApiConfig(listen=listen, control_socket=sock)


def _gossip(t: _Table, base: Path) -> GossipConfig:
    listen = t.hostport("listen", parse_hostport("0.0.0.0:7946"), default_port=7946)
    advertise = t.hostport("advertise", listen, default_port=7946)
    seeds_raw = t.strings("seeds", ())
    seeds: list[HostPort] = []
    for i, s in enumerate(seeds_raw or ()):
        try:
            seeds.append(parse_hostport(s, 7946))
        except ValueError:
            t.errors.add(t.key(f"seeds[{i}]"), f'expected an address "host:port"; got {describe(s)}')
    keys = _gossip_keys(t, base)
    interval = t.duration("probe_interval")
    timeout = t.duration("probe_timeout")
    if interval and timeout and timeout >= interval:
        t.errors.add(
            t.key("probe_timeout"),
            f"expected less than probe_interval ({format_duration(interval)}); "
            f"got {t.given('probe_timeout', timeout)}",
        )
    cfg = GossipConfig(
        listen=listen or parse_hostport("0.0.0.0:7946"),
        advertise=advertise or listen or parse_hostport("0.0.0.0:7946"),
        seeds=tuple(seeds),
        keys=keys,
        probe_interval=interval or 0.3,
        probe_timeout=timeout or 0.15,
        indirect_checks=t.integer("indirect_checks", 3, lo=0, hi=16) or 0,
        suspicion_mult=t.integer("suspicion_mult", 4, lo=1, hi=100) or 4,
        leave_on_terminate=bool(t.boolean("leave_on_terminate", True)),
    )
    if cfg.advertise.host in ("0.0.0.0", "::") and cfg.seeds:
        if t.has("advertise"):
            t.errors.add(t.key("advertise"), "expected an address peers can reach, not a wildcard; "
                         f"got {describe(t.data['advertise'])}")
        else:
            t.errors.add(
                t.key("advertise"),
                "expected an address peers can reach (listen is a wildcard); got nothing",
            )
    t.finish()
    return cfg


def _gossip_keys(t: _Table, base: Path) -> tuple[Secret, ...]:
    inline, path = t.raw("keys"), t.raw("key_file")
    if inline is not _MISSING and path is not _MISSING:
        t.errors.add(t.key("keys"), "expected one of keys, key_file; got both")
        return ()
    lines: list[str]
    where: str
    if inline is not _MISSING:
        if not isinstance(inline, list) or not all(isinstance(x, str) for x in inline) or not inline:
            t.fail("keys", "a non-empty list of base64 keys", inline, secret=True)
            return ()
        lines, where = list(inline), "keys"
    elif path is not _MISSING:
        text = t.read_file("key_file", path, base)
        if text is None:
            return ()
        lines = [ln.strip() for ln in text.splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("#")]
        where = "key_file"
        if not lines:
            t.errors.add(t.key("key_file"), "expected one or more base64 keys, one per line; got none")
            return ()
    else:
        t.errors.add(t.key("key_file"), "expected one of key_file, keys (messages are signed); got nothing")
        return ()
    keys: list[Secret] = []
    for i, line in enumerate(lines):
        try:
            raw = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            t.errors.add(t.key(where), f"key {i + 1} is not valid base64")
            continue
        if len(raw) < 16:
            t.errors.add(t.key(where), f"key {i + 1} is {len(raw)} bytes; expected at least 16")
            continue
        keys.append(Secret(line))
    return tuple(keys)


_PROBE_KINDS = ("http", "command", "airflow_job")


_EXPECT_WHAT = 'a table of "json.path" = "value"'


def _expect(t: _Table, default: dict[str, str]) -> dict[str, str]:
    """``expect``: each bad path or value named on its own line (not just "got a table")."""
    raw = t.raw("expect")
    if raw is _MISSING:
        return default
    if not isinstance(raw, dict) or not raw:
        got = "an empty table" if raw == {} else describe(raw)
        t.errors.add(t.key("expect"), f"expected {_EXPECT_WHAT}; got {got}")
        return default
    out: dict[str, str] = {}
    for k, x in raw.items():
        if not k or not all(k.split(".")):
            t.errors.add(t.key("expect"),
                         f'expected dotted JSON paths such as "metadatabase.status"; got {json.dumps(k)}')
        elif not isinstance(x, str | bool | int):
            key = k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)
            t.errors.add(f"{t.key('expect')}.{key}", f"expected a string, integer or boolean; got {describe(x)}")
        else:
            out[k] = str(x).lower() if isinstance(x, bool) else str(x)
    return out


def _health(t: _Table, env: Mapping[str, str] | None = None, base: HealthConfig | None = None) -> HealthConfig | None:
    """``[component.health]``; with a preset (``base``), keys not given keep the preset's,
    and a table that names no probe keeps the preset's probe."""
    http = t.get("http", "an http:// or https:// URL", _as_url, None)
    command = t.strings("command", None, nonempty=True)
    _no_nul(t, "command", command, "process argument")
    job = t.get("airflow_job", "one of " + ", ".join(airflow.JOB_TYPES),
                lambda v: _as_choice(v, airflow.JOB_TYPES), None)
    kinds = [k for k in _PROBE_KINDS if t.has(k)]
    if len(kinds) > 1:
        t.errors.add(t.path, f"expected exactly one of {', '.join(_PROBE_KINDS)}; got {', '.join(kinds)}")
    elif not kinds and base is None:
        t.errors.add(t.path, f"expected exactly one of {', '.join(_PROBE_KINDS)}; got none")
    inherit = base if (base is not None and not kinds) else None
    if inherit is not None:
        http, command, job = inherit.http, inherit.command, inherit.airflow_job
    celery_ping, broker = (inherit.celery_ping, inherit.broker) if inherit is not None else (None, None)
    expect = _expect(t, dict(inherit.expect) if inherit else {})
    if t.has("expect") and not http:
        t.errors.add(t.key("expect"), "expected only with http (it checks the JSON answer)")
    max_age = t.duration("max_age", inherit.max_age if inherit else _MISSING)
    hostname = t.nonempty("hostname", inherit.hostname if inherit else None)
    for key in ("max_age", "hostname"):
        if t.has(key) and not job:
            t.errors.add(t.key(key), "expected only with airflow_job")
    d = base or HealthConfig(http=None, command=None, interval=default_of("component.health.interval"),
                             timeout=default_of("component.health.timeout"), failures=3,
                             start_period=default_of("component.health.start_period"))
    interval = t.duration("interval", d.interval)
    timeout = t.duration("timeout", d.timeout)
    if interval and timeout and timeout > interval:
        t.errors.add(t.key("timeout"), f"expected at most interval ({format_duration(interval)}); "
                     f"got {t.given('timeout', timeout)}")
    failures = t.integer("failures", d.failures, lo=1, hi=1000)
    start_period = t.duration("start_period", d.start_period)
    start_interval = t.duration("start_interval", d.start_interval)
    if start_interval and interval and start_interval > interval:
        t.errors.add(t.key("start_interval"), f"expected at most interval ({format_duration(interval)}); "
                     f"got {t.given('start_interval', start_interval)}")
    t.finish()
    if inherit is not None and inherit.database is not None:
        database: Secret | None = inherit.database
    else:
        database = Secret(airflow.AirflowSettings.load(env or {}).database_url()) if job else None
    return HealthConfig(
        http=http,
        command=command,
        interval=interval or d.interval,
        timeout=timeout or d.timeout,
        failures=failures or d.failures,
        start_period=start_period if start_period is not None else d.start_period,
        start_interval=start_interval if start_interval and (not interval or start_interval <= interval) else None,
        expect=expect or {},
        airflow_job=job,
        database=database,
        max_age=max_age or 60.0,
        hostname=hostname,
        celery_ping=celery_ping,
        broker=broker,
    )


def _component(t: _Table, check_system: bool, base: Path, check_commands: bool = False) -> ComponentConfig | None:
    name = t.get("name", _NAME_WHAT, _as_name)
    preset_name = t.get(
        "preset", "one of " + ", ".join(presets.PRESETS), lambda v: _as_choice(v, tuple(presets.PRESETS)), None
    )
    no_env: dict[str, str] = {}
    env = t.get("environment", 'a table of NAME = "value"', _as_env, no_env)
    given_command = t.strings("command", None, nonempty=True)
    pre: presets.Defaults | None = None
    if preset_name:
        try:
            pre = presets.resolve(preset_name, name or "", given_command, env or {}, detect=check_system)
        except airflow.AirflowError as e:
            t.errors.add(t.key("preset"), f"{preset_name}: {e}")
    command = given_command if t.has("command") else (pre.command if pre else None)
    if command is None and not t.has("command") and not preset_name:
        t.fail("command", "a non-empty list of strings", _MISSING)
    user = t.nonempty("user", None)
    if user and check_system:
        try:
            pwd.getpwnam(user)
        except (KeyError, ValueError):
            t.errors.add(t.key("user"), f"no such user {json.dumps(user)}")
    wd = t.nonempty("working_dir", None)
    _no_nul(t, "command", given_command, "process argument")
    _no_nul(t, "environment", env, "environment value")
    if wd and "\0" in wd:
        t.errors.add(t.key("working_dir"), "contains a NUL character (no path can hold one)")
        wd = None
    if check_commands:  # --check-config: what the host must provide for the component to start
        wd_path = _resolve(wd, base) if wd else None
        if wd_path is not None and (problem := directory_problem(wd_path, user)):
            t.errors.add(t.key("working_dir"), problem)
        if command and "\0" not in command[0]:
            merged = {**(pre.environment if pre else {}), **(env or {})}
            problem = command_problem(command[0], merged, wd_path, user)
            if problem:
                origin = "" if t.has("command") else f" (the command of preset {preset_name})"
                t.errors.add(t.key("command"), problem + origin)
    oneshot = t.boolean("oneshot", pre.oneshot if pre else False)
    restart = t.choice("restart", ("always", "on-failure", "never"),
                       pre.restart if pre else ("on-failure" if oneshot else "always"))
    if oneshot and restart == "always":
        t.errors.add(t.key("restart"), 'expected "on-failure" or "never" for a oneshot component; got "always"')
    b_init = t.duration("backoff_initial", pre.backoff_initial if pre else _MISSING)
    b_max = t.duration("backoff_max")
    if b_init and b_max and b_max < b_init:
        t.errors.add(t.key("backoff_max"), f"expected at least backoff_initial ({format_duration(b_init)}); "
                     f"got {t.given('backoff_max', b_max)}")
    stable = t.duration("stable_after")
    cl_failures = t.integer("crash_loop_failures", 5, lo=1, hi=10000)
    cl_window = t.duration("crash_loop_window")
    start_after = t.strings("start_after", ())
    stop_signal = t.get("stop_signal", "one of " + ", ".join(_SIGNALS), _as_signal,
                        pre.stop_signal if pre else int(signal.SIGTERM))
    stop_timeout = t.duration("stop_timeout", pre.stop_timeout if pre else _MISSING)
    log_rate = t.integer("log_rate_limit", 200, lo=0, hi=1_000_000)
    h = t.table("health")
    health: HealthConfig | None = None
    if h is not None and oneshot:  # one error for the table, not also the probe it lacks
        t.errors.add(t.key("health"), "expected no health check for a oneshot component (it runs to exit)")
    elif h is not None:
        health = _health(h, env or {}, pre.health if pre else None)
    elif pre is not None:
        health = pre.health
    t.finish()
    if name is None or command is None:
        return None
    return ComponentConfig(
        name=name,
        command=command,
        preset=preset_name,
        environment={**(pre.environment if pre else {}), **(env or {})},
        user=user,
        working_dir=_resolve(wd, base) if wd else None,
        restart=restart or "always",
        backoff_initial=b_init or 1.0,
        backoff_max=b_max or 60.0,
        stable_after=stable or 10.0,
        crash_loop_failures=cl_failures or 5,
        crash_loop_window=cl_window or 120.0,
        start_after=start_after or (),
        stop_signal=stop_signal or int(signal.SIGTERM),
        stop_timeout=stop_timeout or 30.0,
        log_rate_limit=log_rate if log_rate is not None else 200,
        health=health,
        oneshot=bool(oneshot),
    )


def _check_start_order(components: Sequence[ComponentConfig], errors: _Errors) -> None:
    index = {c.name: i for i, c in enumerate(components)}
    for i, c in enumerate(components):
        for dep in c.start_after:
            if dep not in index:
                errors.add(f"component[{i}].start_after",
                           f"expected names of components; got unknown {json.dumps(dep)}")
            elif dep == c.name:
                errors.add(f"component[{i}].start_after", f"a component cannot start after itself ({json.dumps(dep)})")
    # cycle detection, reported once per cycle at its first member
    graph = {c.name: [d for d in c.start_after if d in index and d != c.name] for c in components}
    state: dict[str, int] = {}
    reported: set[frozenset[str]] = set()

    for c in components:  # depth-first, without recursion: a long chain is no RecursionError
        if c.name in state:
            continue
        state[c.name] = 1
        stack, todo = [c.name], [iter(graph[c.name])]
        while todo:
            d = next(todo[-1], None)
            if d is None:
                todo.pop()
                state[stack.pop()] = 2
            elif state.get(d) == 1:
                cycle = [*stack[stack.index(d):], d]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    errors.add(f"component[{index[cycle[0]]}].start_after",
                               "start_after forms a cycle: " + " -> ".join(cycle))
            elif d not in state:
                state[d] = 1
                stack.append(d)
                todo.append(iter(graph[d]))


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


def _sync(t: _Table) -> SyncConfig:
    no_peers: tuple[str, ...] = ()
    no_map: dict[str, str] = {}
    peers = t.get("peers", f"a list of node names ({_NAME_WHAT})", _as_names, no_peers)
    host_map = t.get("host_map", 'a table of node name = "csync2 host name"', _as_host_map, no_map)
    cfg = SyncConfig(
        enabled=bool(t.boolean("enabled", True)),
        command=t.strings("command", ("csync2", "-x"), nonempty=True) or ("csync2", "-x"),
        interval=t.duration("interval") or 60.0,
        watch=tuple(Path(p) for p in (t.strings("watch", ()) or ())),
        debounce=t.duration("debounce") or 0.0,
        timeout=t.duration("timeout") or 120.0,
        retry_initial=t.duration("retry_initial") or 2.0,
        retry_max=t.duration("retry_max") or 300.0,
        peers=peers or (),
        host_map=host_map or {},
        port=t.integer("port", 30865, lo=1, hi=65535) or 30865,
        probe_timeout=t.duration("probe_timeout") or 1.0,
        debounce_max=t.duration("debounce_max") or 5.0,
        warn_after=t.duration("warn_after") or 300.0,
        critical_after=t.duration("critical_after") or 1800.0,
    )
    _no_nul(t, "command", cfg.command, "process argument")
    if cfg.retry_max < cfg.retry_initial:
        t.errors.add(t.key("retry_max"), f"expected at least retry_initial ({format_duration(cfg.retry_initial)}); "
                     f"got {t.given('retry_max', cfg.retry_max)}")
    if cfg.debounce_max < cfg.debounce:
        t.errors.add(t.key("debounce_max"), f"expected at least debounce ({format_duration(cfg.debounce)}); "
                     f"got {t.given('debounce_max', cfg.debounce_max)}")
    if cfg.critical_after < cfg.warn_after:
        t.errors.add(t.key("critical_after"), f"expected at least warn_after ({format_duration(cfg.warn_after)}); "
                     f"got {t.given('critical_after', cfg.critical_after)}")
    if cfg.probe_timeout > cfg.timeout:
        t.errors.add(t.key("probe_timeout"), f"expected at most timeout ({format_duration(cfg.timeout)}); "
                     f"got {t.given('probe_timeout', cfg.probe_timeout)}")
    for i, w in enumerate(cfg.watch):
        if not w.is_absolute():
            t.errors.add(t.key(f"watch[{i}]"),
                         f"expected an absolute path; got {describe(t.data['watch'][i])}")
    seen: set[str] = set()
    for i, p in enumerate(cfg.peers):
        if p in seen:
            t.errors.add(t.key(f"peers[{i}]"), f"duplicate peer {json.dumps(p)}")
        seen.add(p)
    t.finish()
    return cfg


def _as_names(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise TypeError
    return tuple(_as_name(x) for x in v)


def _as_host_map(v: Any) -> dict[str, str]:
    """node name -> csync2 host name: csync2 takes a host name or an address, no spaces."""
    if not isinstance(v, dict):
        raise TypeError
    out: dict[str, str] = {}
    for k, val in v.items():
        if not isinstance(val, str) or not re.match(r"^[A-Za-z0-9_.:@%-]{1,253}\Z", val):
            raise ValueError
        out[_as_name(k)] = val
    return out


def _postgres(t: _Table, base: Path) -> PostgresConfig:
    topology = t.choice("topology", ("streaming", "bucardo"), "streaming")
    local = t.get("local_node", _NAME_WHAT, _as_name, None)
    interval = t.duration("interval")
    timeout = t.duration("timeout")
    lag = t.size("max_lag_bytes")
    nodes: list[PostgresNode] = []
    node_tables = t.tables("node")
    if not node_tables and t.data.get("node", _MISSING) in (_MISSING, []):
        t.errors.add(t.key("node"), f"expected at least one [[postgres.node]]; "
                     f"got {describe(t.data.get('node', _MISSING))}")
    seen: dict[str, int] = {}
    for i, nt in enumerate(node_tables):
        name = nt.get("name", _NAME_WHAT, _as_name)
        dsn = nt.secret("dsn", base, required=True)
        nt.finish()
        if name in seen:
            t.errors.add(t.key(f"node[{i}].name"), f"duplicate name {json.dumps(name)}")
        elif name:
            seen[name] = i
        if name and dsn:
            nodes.append(PostgresNode(name, dsn))
    names = [n.name for n in nodes]
    if local and names and local not in names:
        t.errors.add(t.key("local_node"), f"expected one of {', '.join(names)}; got {describe(local)}")
    bucardo = t.secret("bucardo_dsn", base)
    if bucardo is not None and topology == "streaming":
        t.errors.add(t.key("bucardo_dsn"), 'expected only with topology = "bucardo"; got topology "streaming"')
    t.finish()
    return PostgresConfig(
        topology=topology or "streaming",
        local_node=local,
        interval=interval or 10.0,
        timeout=timeout or 3.0,
        max_lag_bytes=lag if lag is not None else 16 * 2**20,
        nodes=tuple(nodes),
        bucardo_dsn=bucardo,
    )


def _rabbitmq(t: _Table, base: Path) -> RabbitConfig:
    def _amqp_url(table: _Table) -> Secret | None:
        """``amqp_url`` / ``amqp_url_file`` (section or node): a secret that must be amqp(s)://."""
        amqp = table.secret("amqp_url", base)
        if amqp is not None and not re.match(r"^amqps?://", amqp.reveal()):
            table.errors.add(table.key("amqp_url"), "expected an amqp:// or amqps:// URL; got another string")
            return None
        return amqp

    interval = t.duration("interval")
    timeout = t.duration("timeout")
    amqp = _amqp_url(t)
    queues = t.strings("queues", ("default", "celery"))
    for i, q in enumerate(queues or ()):
        if not q:
            t.errors.add(t.key(f"queues[{i}]"), "expected a queue name; got an empty string")
    depth = t.integer("queue_warning_depth", 1000, lo=1)
    vhost = t.nonempty("vhost", "/")
    nodes: list[RabbitNode] = []
    node_tables = t.tables("node")
    if not node_tables and t.data.get("node", _MISSING) in (_MISSING, []):
        t.errors.add(t.key("node"), f"expected at least one [[rabbitmq.node]]; "
                     f"got {describe(t.data.get('node', _MISSING))}")
    seen: set[str] = set()
    for i, nt in enumerate(node_tables):
        name = nt.nonempty("name")
        url = nt.get("management_url", "an http:// or https:// URL", _as_url)
        user = nt.nonempty("username", "guest")
        password = nt.secret("password", base)
        node_amqp = _amqp_url(nt)
        nt.finish()
        if name in seen:
            t.errors.add(t.key(f"node[{i}].name"), f"duplicate name {json.dumps(name)}")
        elif name:
            seen.add(name)
        if name and url:
            nodes.append(RabbitNode(name, url.rstrip("/"), user or "guest", password, node_amqp))
    t.finish()
    return RabbitConfig(
        interval=interval or 10.0,
        timeout=timeout or 3.0,
        amqp_url=amqp,
        nodes=tuple(nodes),
        queues=queues if queues is not None else ("default", "celery"),
        queue_warning_depth=depth or 1000,
        vhost=vhost or "/",
    )


# --------------------------------------------------------------------------- entry


def resolve_path(path: str | os.PathLike[str] | None) -> Path:
    """``--config``, else ``$HAFLOWD_CONFIG``, else the default."""
    if path:
        return Path(path)
    return Path(os.environ.get("HAFLOWD_CONFIG") or DEFAULT_CONFIG_PATH)


def load(path: str | os.PathLike[str] | None = None, check_system: bool = True,
         check_commands: bool = False) -> Config:
    """Read and validate a config file. Raises ConfigError listing every problem.

    ``check_commands`` (``haflowd --check-config``) also asks the host for what each
    component needs to start: its command (found on its PATH, executable by its user) and
    its ``working_dir``. The daemon itself starts without them: a component that cannot
    start is reported (fatal, "could not start") while the rest of the node runs."""
    p = resolve_path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError([f"{p}: cannot read: {e.strerror or e}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{p}: expected UTF-8 text; got undecodable bytes"]) from None
    return loads(text, p, check_system=check_system, check_commands=check_commands)


def loads(text: str, path: Path, check_system: bool = True, check_commands: bool = False) -> Config:
    errors = _Errors(str(path))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: invalid TOML: {e}"]) from None
    base = path.parent.resolve() if path.parent else Path.cwd()
    root = _Table(data, "", errors)
    node = _node(root.table("node"), errors, base)
    api = _api(root.table("api"), base)
    comps: list[ComponentConfig] = []
    seen: dict[str, int] = {}
    for i, ct in enumerate(root.tables("component")):
        n = ct.data.get("name")
        if isinstance(n, str):
            if n in seen:
                errors.add(f"component[{i}].name", f"duplicate name {json.dumps(n)} (also component[{seen[n]}])")
            else:
                seen[n] = i
        c = _component(ct, check_system, base, check_commands)
        if c is not None:
            comps.append(c)
    _check_start_order(comps, errors)
    g = root.table("gossip")
    gossip = _gossip(g, base) if g is not None else None
    s = root.table("sync")
    sync = _sync(s) if s is not None else None
    pg = root.table("postgres")
    postgres = _postgres(pg, base) if pg is not None else None
    rb = root.table("rabbitmq")
    rabbit = _rabbitmq(rb, base) if rb is not None else None
    root.finish()
    if errors.lines:
        raise ConfigError(errors.lines)
    return Config(
        path=path,
        node=node,
        api=api,
        components=tuple(comps),
        gossip=gossip,
        sync=sync,
        postgres=postgres,
        rabbitmq=rabbit,
    )


def user_ids(user: str) -> tuple[int, int, list[int], str]:
    """uid, gid, supplementary groups and home of a user name."""
    pw = pwd.getpwnam(user)
    groups = os.getgrouplist(user, pw.pw_gid)
    return pw.pw_uid, pw.pw_gid, groups, pw.pw_dir


__all__ = [
    "ApiConfig", "ComponentConfig", "Config", "ConfigError", "GossipConfig", "HealthConfig",
    "HostPort", "NodeConfig", "PostgresConfig", "RabbitConfig", "Secret", "SyncConfig",
    "load", "loads", "parse_duration", "parse_size", "start_order",
]
