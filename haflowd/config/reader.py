"""TOML → values: every problem collected (not just the first), one line each as
``FILE: key.path: expected ...; got ...``. Key paths index arrays from 0:
``component[2].restart`` is the third ``[[component]]`` table.

Defaults and bounds come from ``schema``. The reader runs nothing: a component's preset,
the Airflow version it depends on and the host's checks are later steps (``presets``).
"""

from __future__ import annotations

import base64
import binascii
import json
import pwd
import re
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from haflowd.airflow import jobs, presets
from haflowd.config.host import secret_exposure
from haflowd.config.model import (
    ApiConfig,
    ComponentConfig,
    GossipConfig,
    HookConfig,
    HostPort,
    NodeConfig,
    PostgresConfig,
    PostgresNode,
    RabbitConfig,
    RabbitNode,
    Secret,
    SyncConfig,
)
from haflowd.config.schema import (
    DEFAULT_API,
    DURATIONS,
    GOSSIP_PORT,
    INT_MAX,
    KEYS,
    SIZES,
    bounds_of,
    default_of,
    schema_key,
)
from haflowd.config.values import (
    _MISSING,
    _SIGNALS,
    _as_bool,
    _as_choice,
    _as_duration,
    _as_env,
    _as_host_map,
    _as_hostport,
    _as_int,
    _as_name,
    _as_names,
    _as_nonempty,
    _as_signal,
    _as_size,
    _as_str,
    _as_strings,
    _as_url,
    _as_written,
    _Missing,
    _resolve,
    describe,
    format_duration,
    human_duration,
    human_size,
    parse_hostport,
)
from haflowd.errors import ConfigError

T = TypeVar("T")


class Errors:
    """Every problem, each with the place it belongs in the report: the steps after the
    reader (presets, version detection, host checks) add theirs where one pass over the
    file would have, so the report reads in file order whichever step found a problem."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.pos: tuple[int, ...] = ()
        self._items: list[tuple[tuple[int, ...], int, str]] = []

    def at(self, *pos: int) -> None:
        """Where the next errors go: (section,) or (section, index, stage)."""
        self.pos = pos

    def add(self, path: str, message: str) -> None:
        line = f"{self.file}: {path}: {message}" if path else f"{self.file}: {message}"
        self._items.append((self.pos, len(self._items), line))

    def drop(self, section: int, index: int, stages: range) -> None:
        """Forget what was found at these stages (a table that turned out not to apply)."""
        def dropped(pos: tuple[int, ...]) -> bool:
            return len(pos) == 3 and pos[:2] == (section, index) and pos[2] in stages

        self._items = [x for x in self._items if not dropped(x[0])]

    @property
    def lines(self) -> list[str]:
        return [line for _pos, _seq, line in sorted(self._items)]


class Table:
    """One TOML table being read: typed getters that record errors and never raise."""

    def __init__(self, data: Mapping[str, Any], path: str, errors: Errors) -> None:
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

    def integer(self, name: str, default: Any = _MISSING) -> Any:
        """An integer within its bounds (``schema``); without ``default``, the key's own."""
        key = schema_key(self.key(name))
        lo, hi = bounds_of(key)
        what = f"an integer from {lo} to {hi}" if hi < INT_MAX else f"an integer of at least {lo}"
        return self.get(name, what, lambda v: _as_int(v, lo, hi), KEYS[key].default if default is _MISSING else default)

    def filled(self, name: str, value: T | None) -> T:
        """``value``, or where it was wrong (already reported) the key's default."""
        return value if value is not None else cast(T, KEYS[schema_key(self.key(name))].default)

    def duration(self, name: str, default: Any = _MISSING) -> Any:
        """A duration within its bounds (``schema``); without ``default``, the key's own."""
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

    def table(self, name: str) -> Table | None:
        value = self.raw(name)
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            self.fail(name, "a table", value)
            return None
        return Table(value, self.key(name), self.errors)

    def tables(self, name: str) -> list[Table]:
        value = self.raw(name)
        if value is _MISSING:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(name, f"an array of tables ([[{self.key(name)}]])", value)
            return []
        return [Table(v, f"{self.key(name)}[{i}]", self.errors) for i, v in enumerate(value)]

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



def _no_nul(t: Table, name: str, values: Sequence[str] | Mapping[str, str] | None, what: str) -> None:
    """A NUL cannot reach a process (execve ends the string there): an error, not a truncation."""
    items = values.items() if isinstance(values, Mapping) else enumerate(values or ())
    for k, v in items:
        if "\0" in v:
            sub = f"{name}.{k}" if isinstance(values, Mapping) else f"{name}[{k}]"
            t.errors.add(t.key(sub), f"contains a NUL character (no {what} can hold one)")



# --------------------------------------------------------------------------- sections

_NAME_WHAT = "a name of letters, digits, '_', '.', '@' or '-' (at most 63)"


def _node(t: Table | None, errors: Errors, base: Path) -> NodeConfig:
    name = socket.gethostname().split(".")[0] or "localhost"
    data_dir = Path(default_of("node.data_dir"))
    if t is not None:
        name = t.get("name", _NAME_WHAT, _as_name, name) or name
        d = t.nonempty("data_dir", str(data_dir))
        data_dir = _resolve(d, base) if d else data_dir
        t.finish()
    return NodeConfig(name=name, data_dir=data_dir)


def _api(t: Table | None, base: Path) -> ApiConfig:
    listen = parse_hostport(DEFAULT_API)
    sock = Path(default_of("api.control_socket"))
    if t is not None:
        listen = t.hostport("listen", listen) or listen
        s = t.nonempty("control_socket", str(sock))
        sock = _resolve(s, base) if s else sock
        t.finish()
    return ApiConfig(listen=listen, control_socket=sock)


def _gossip(t: Table, base: Path) -> GossipConfig:
    wildcard = parse_hostport(default_of("gossip.listen"))
    listen = t.hostport("listen", wildcard, default_port=GOSSIP_PORT)
    advertise = t.hostport("advertise", listen, default_port=GOSSIP_PORT)
    seeds_raw = t.strings("seeds", ())
    seeds: list[HostPort] = []
    for i, s in enumerate(seeds_raw or ()):
        try:
            seeds.append(parse_hostport(s, GOSSIP_PORT))
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
        listen=listen or wildcard,
        advertise=advertise or listen or wildcard,
        seeds=tuple(seeds),
        keys=keys,
        probe_interval=t.filled("probe_interval", interval),
        probe_timeout=t.filled("probe_timeout", timeout),
        indirect_checks=t.integer("indirect_checks") or 0,
        suspicion_mult=t.filled("suspicion_mult", t.integer("suspicion_mult")),
        leave_on_terminate=bool(t.boolean("leave_on_terminate", default_of("gossip.leave_on_terminate"))),
        reap_after=t.filled("reap_after", t.duration("reap_after")),
        tombstone=t.filled("tombstone", t.duration("tombstone")),
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


def _gossip_keys(t: Table, base: Path) -> tuple[Secret, ...]:
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

# Where a section's errors go in the report (Errors.at): the order of one pass over the file.
NODE, API, COMPONENT, START_ORDER, GOSSIP, SYNC, POSTGRES, RABBITMQ, ROOT = range(9)
# Stages of a [[component]], in the order its keys are read; the later steps add at theirs.
(DUPLICATE, IDENTITY, PRESET, COMMAND, USER, PATHS, HOST, RESTART, BACKOFF, LIMITS,
 HEALTH, PROBE, PROBE_KIND, EXPECT, JOB, TIMING, COUNTS, HEALTH_KEYS, UNKNOWN) = range(19)
HEALTH_STAGES = range(PROBE, HEALTH_KEYS + 1)  # what a [component.health] table itself reports


@dataclass
class Draft:
    """One table as written: each given key's value (None where it was wrong, already
    reported). What is not given is filled after the presets step."""

    table: Table
    values: dict[str, Any]

    def pick(self, name: str, fallback: Any) -> Any:
        return self.values[name] if self.table.has(name) else fallback


@dataclass
class ComponentDraft(Draft):
    index: int = 0
    health: Draft | None = None


def _expect(t: Table) -> dict[str, str] | None:
    """``expect``: each bad path or value named on its own line (not just "got a table");
    None when not given or not a table."""
    raw = t.raw("expect")
    if raw is _MISSING:
        return None
    if not isinstance(raw, dict) or not raw:
        got = "an empty table" if raw == {} else describe(raw)
        t.errors.add(t.key("expect"), f"expected {_EXPECT_WHAT}; got {got}")
        return None
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


def _health(t: Table, index: int) -> Draft:
    """``[component.health]`` as written; the probe a preset gives is merged later."""
    e, v = t.errors, cast(dict[str, Any], {})
    e.at(COMPONENT, index, PROBE)
    v["http"] = t.get("http", "an http:// or https:// URL", _as_url, None)
    v["command"] = t.strings("command", None, nonempty=True)
    _no_nul(t, "command", v["command"], "process argument")
    v["airflow_job"] = t.get("airflow_job", "one of " + ", ".join(jobs.JOB_TYPES),
                             lambda x: _as_choice(x, jobs.JOB_TYPES), None)
    e.at(COMPONENT, index, PROBE_KIND)
    kinds = [k for k in _PROBE_KINDS if t.has(k)]
    if len(kinds) > 1:
        e.add(t.path, f"expected exactly one of {', '.join(_PROBE_KINDS)}; got {', '.join(kinds)}")
    e.at(COMPONENT, index, EXPECT)
    v["expect"] = _expect(t)
    e.at(COMPONENT, index, JOB)
    v["max_age"] = t.duration("max_age", None)
    v["hostname"] = t.nonempty("hostname", None)
    e.at(COMPONENT, index, TIMING)
    v["interval"] = t.duration("interval", None)
    v["timeout"] = t.duration("timeout", None)
    e.at(COMPONENT, index, COUNTS)
    v["failures"] = t.integer("failures", None)
    v["start_period"] = t.duration("start_period", None)
    v["start_interval"] = t.duration("start_interval", None)
    e.at(COMPONENT, index, HEALTH_KEYS)
    t.finish()
    return Draft(t, v)


def _component(t: Table, index: int, check_system: bool) -> ComponentDraft:
    """One ``[[component]]`` as written. A preset's defaults, the Airflow version and the
    host's checks come in later steps (``haflowd.config.presets``)."""
    e, v = t.errors, cast(dict[str, Any], {})
    e.at(COMPONENT, index, IDENTITY)
    v["name"] = t.get("name", _NAME_WHAT, _as_name)
    v["preset"] = t.get("preset", "one of " + ", ".join(presets.PRESETS),
                        lambda x: _as_choice(x, tuple(presets.PRESETS)), None)
    no_env: dict[str, str] = {}
    v["environment"] = t.get("environment", 'a table of NAME = "value"', _as_env, no_env)
    v["command"] = t.strings("command", None, nonempty=True)
    e.at(COMPONENT, index, COMMAND)
    if not t.has("command") and not v["preset"]:
        t.fail("command", "a non-empty list of strings", _MISSING)
    e.at(COMPONENT, index, USER)
    v["user"] = _user(t, check_system)
    e.at(COMPONENT, index, PATHS)
    v["working_dir"] = t.nonempty("working_dir", None)
    _no_nul(t, "command", v["command"], "process argument")
    _no_nul(t, "environment", v["environment"], "environment value")
    if v["working_dir"] and "\0" in v["working_dir"]:
        e.add(t.key("working_dir"), "contains a NUL character (no path can hold one)")
        v["working_dir"] = None
    e.at(COMPONENT, index, RESTART)
    v["oneshot"] = t.boolean("oneshot", None)
    v["restart"] = t.choice("restart", ("always", "on-failure", "never"), None)
    e.at(COMPONENT, index, BACKOFF)
    v["backoff_initial"] = t.duration("backoff_initial", None)
    v["backoff_max"] = t.duration("backoff_max", None)
    e.at(COMPONENT, index, LIMITS)
    v["stable_after"] = t.duration("stable_after", None)
    v["crash_loop_failures"] = t.integer("crash_loop_failures", None)
    v["crash_loop_window"] = t.duration("crash_loop_window", None)
    v["start_after"] = t.strings("start_after", None)
    v["stop_signal"] = t.get("stop_signal", "one of " + ", ".join(_SIGNALS), _as_signal, None)
    v["stop_timeout"] = t.duration("stop_timeout", None)
    v["log_rate_limit"] = t.integer("log_rate_limit", None)
    v["on_drain"] = t.choice("on_drain", ("stop", "keep"), None)
    e.at(COMPONENT, index, HEALTH)
    h = t.table("health")
    health = _health(h, index) if h is not None else None
    e.at(COMPONENT, index, UNKNOWN)
    t.finish()
    return ComponentDraft(t, v, index, health)


def _user(t: Table, check_system: bool) -> str | None:
    user: str | None = t.nonempty("user", None)
    if user and check_system:
        try:
            pwd.getpwnam(user)
        except (KeyError, ValueError):
            t.errors.add(t.key("user"), f"no such user {json.dumps(user)}")
    return user


def _check_start_order(components: Sequence[ComponentConfig], errors: Errors) -> None:
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



def _sync(t: Table) -> SyncConfig:
    no_peers: tuple[str, ...] = ()
    no_map: dict[str, str] = {}
    csync2 = tuple(default_of("sync.command"))
    peers = t.get("peers", f"a list of node names ({_NAME_WHAT})", _as_names, no_peers)
    host_map = t.get("host_map", 'a table of node name = "csync2 host name"', _as_host_map, no_map)
    cfg = SyncConfig(
        enabled=bool(t.boolean("enabled", default_of("sync.enabled"))),
        command=t.strings("command", csync2, nonempty=True) or csync2,
        interval=t.filled("interval", t.duration("interval")),
        watch=tuple(Path(p) for p in (t.strings("watch", ()) or ())),
        debounce=t.duration("debounce") or 0.0,
        timeout=t.filled("timeout", t.duration("timeout")),
        retry_initial=t.filled("retry_initial", t.duration("retry_initial")),
        retry_max=t.filled("retry_max", t.duration("retry_max")),
        peers=peers or (),
        host_map=host_map or {},
        port=t.filled("port", t.integer("port")),
        probe_timeout=t.filled("probe_timeout", t.duration("probe_timeout")),
        debounce_max=t.filled("debounce_max", t.duration("debounce_max")),
        warn_after=t.filled("warn_after", t.duration("warn_after")),
        critical_after=t.filled("critical_after", t.duration("critical_after")),
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



def _postgres(t: Table, base: Path) -> PostgresConfig:
    topology = t.choice("topology", ("streaming", "bucardo"), default_of("postgres.topology"))
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
        topology=topology or default_of("postgres.topology"),
        local_node=local,
        interval=t.filled("interval", interval),
        timeout=t.filled("timeout", timeout),
        max_lag_bytes=t.filled("max_lag_bytes", lag),
        nodes=tuple(nodes),
        bucardo_dsn=bucardo,
    )


def _rabbitmq(t: Table, base: Path) -> RabbitConfig:
    def _amqp_url(table: Table) -> Secret | None:
        """``amqp_url`` / ``amqp_url_file`` (section or node): a secret that must be amqp(s)://."""
        amqp = table.secret("amqp_url", base)
        if amqp is not None and not re.match(r"^amqps?://", amqp.reveal()):
            table.errors.add(table.key("amqp_url"), "expected an amqp:// or amqps:// URL; got another string")
            return None
        return amqp

    interval = t.duration("interval")
    timeout = t.duration("timeout")
    amqp = _amqp_url(t)
    queues = t.strings("queues", tuple(default_of("rabbitmq.queues")))
    for i, q in enumerate(queues or ()):
        if not q:
            t.errors.add(t.key(f"queues[{i}]"), "expected a queue name; got an empty string")
    depth = t.integer("queue_warning_depth")
    vhost = t.nonempty("vhost", default_of("rabbitmq.vhost"))
    nodes: list[RabbitNode] = []
    node_tables = t.tables("node")
    if not node_tables and t.data.get("node", _MISSING) in (_MISSING, []):
        t.errors.add(t.key("node"), f"expected at least one [[rabbitmq.node]]; "
                     f"got {describe(t.data.get('node', _MISSING))}")
    seen: set[str] = set()
    for i, nt in enumerate(node_tables):
        name = nt.nonempty("name")
        url = nt.get("management_url", "an http:// or https:// URL", _as_url)
        user = nt.nonempty("username", default_of("rabbitmq.node.username"))
        password = nt.secret("password", base)
        node_amqp = _amqp_url(nt)
        nt.finish()
        if name in seen:
            t.errors.add(t.key(f"node[{i}].name"), f"duplicate name {json.dumps(name)}")
        elif name:
            seen.add(name)
        if name and url:
            nodes.append(RabbitNode(name, url.rstrip("/"), user or default_of("rabbitmq.node.username"), password,
                                    node_amqp))
    t.finish()
    return RabbitConfig(
        interval=t.filled("interval", interval),
        timeout=t.filled("timeout", timeout),
        amqp_url=amqp,
        nodes=tuple(nodes),
        queues=t.filled("queues", queues),
        queue_warning_depth=t.filled("queue_warning_depth", depth),
        vhost=vhost or default_of("rabbitmq.vhost"),
    )


def _hooks(root: Table, check_system: bool) -> tuple[HookConfig, ...]:
    """``[[hook]]`` tables: an unknown event type is an error with a suggestion."""
    import difflib

    from haflowd.events import EVENT_TYPES

    hooks: list[HookConfig] = []
    seen: dict[str, int] = {}
    for i, t in enumerate(root.tables("hook")):
        name = t.get("name", _NAME_WHAT, _as_name)
        on = t.strings("on", None, nonempty=True)
        if on is None and not t.has("on"):
            t.fail("on", 'a non-empty list of event types or "*"', _MISSING)
        for ev in on or ():
            if ev != "*" and ev not in EVENT_TYPES:
                close = difflib.get_close_matches(ev, sorted(EVENT_TYPES), n=1, cutoff=0.6)
                hint = f' (did you mean "{close[0]}"?)' if close else ' (see `haflowctl events`; "*" is every type)'
                t.errors.add(t.key("on"), f"unknown event type {json.dumps(ev)}{hint}")
        command = t.strings("command", None, nonempty=True)
        if command is None and not t.has("command"):
            t.fail("command", "a non-empty list of strings", _MISSING)
        _no_nul(t, "command", command, "an argument")
        timeout = t.duration("timeout")
        user = _user(t, check_system)
        t.finish()
        if isinstance(name, str):
            if name in seen:
                t.errors.add(t.key("name"), f"duplicate name {json.dumps(name)} (also hook[{seen[name]}])")
            seen[name] = i
        if name and on and command and timeout is not None:
            hooks.append(HookConfig(name, tuple(on), tuple(command), timeout, user))
    return tuple(hooks)


# --------------------------------------------------------------------------- the file


@dataclass
class Parsed:
    """A config file as read: every section but the components is final; the components
    wait for their presets (``haflowd.config.presets``)."""

    path: Path
    base: Path  # relative paths in the file are relative to its directory
    errors: Errors
    node: NodeConfig
    api: ApiConfig
    components: list[ComponentDraft]
    gossip: GossipConfig | None
    sync: SyncConfig | None
    postgres: PostgresConfig | None
    rabbitmq: RabbitConfig | None
    hooks: tuple[HookConfig, ...] = ()


def parse(text: str, path: Path, check_system: bool = True) -> Parsed:
    """TOML text → values, every problem recorded in ``errors`` (raised later, all at once).
    Runs nothing: no Airflow, no subprocess."""
    errors = Errors(str(path))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: invalid TOML: {e}"]) from None
    base = path.parent.resolve() if path.parent else Path.cwd()
    root = Table(data, "", errors)
    errors.at(NODE)
    node = _node(root.table("node"), errors, base)
    errors.at(API)
    api = _api(root.table("api"), base)
    errors.at(COMPONENT)
    comps = [_component(ct, i, check_system) for i, ct in enumerate(root.tables("component"))]
    _duplicates(comps, errors)
    gossip = _section(root, GOSSIP, "gossip", lambda t: _gossip(t, base))
    sync = _section(root, SYNC, "sync", _sync)
    postgres = _section(root, POSTGRES, "postgres", lambda t: _postgres(t, base))
    rabbitmq = _section(root, RABBITMQ, "rabbitmq", lambda t: _rabbitmq(t, base))
    errors.at(RABBITMQ, INT_MAX)  # after [rabbitmq], before the root's unknown keys
    hooks = _hooks(root, check_system)
    errors.at(ROOT)
    root.finish()
    return Parsed(path, base, errors, node, api, comps, gossip, sync, postgres, rabbitmq, hooks)


def _section(root: Table, pos: int, name: str, read: Callable[[Table], T]) -> T | None:
    """An optional section: None when the file has no such table."""
    root.errors.at(pos)
    t = root.table(name)
    return read(t) if t is not None else None


def _duplicates(comps: Sequence[ComponentDraft], errors: Errors) -> None:
    seen: dict[str, int] = {}
    for c in comps:
        n = c.table.data.get("name")
        if not isinstance(n, str):
            continue
        if n in seen:
            errors.at(COMPONENT, c.index, DUPLICATE)
            errors.add(f"component[{c.index}].name", f"duplicate name {json.dumps(n)} (also component[{seen[n]}])")
        else:
            seen[n] = c.index


def check_start_order(components: Sequence[ComponentConfig], errors: Errors) -> None:
    errors.at(START_ORDER)
    _check_start_order(components, errors)
