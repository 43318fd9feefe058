"""The config loader: every bad file gives exact, one-line errors; every good key is typed."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import signal
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from haflowd import config
from haflowd.config import ConfigError, HostPort, Secret
from haflowd.errors import HaflowdError

ROOT = Path(__file__).resolve().parents[2]


def _load_fixture(name: str) -> ModuleType:
    path = ROOT / "tests" / "fixtures" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"haflowd_test_fixtures_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bad = _load_fixture("bad_configs")

KEY = base64.b64encode(b"k" * 32).decode()
KEY2 = base64.b64encode(b"second key, rotating in").decode()


def _fill(text: str, cfg_path: Path) -> str:
    return text.replace("$FILE", str(cfg_path)).replace("$DIR", str(cfg_path.parent))


def _write_files(directory: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        target = directory / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)


def _errors(call: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        call()
    return info.value.lines


# =========================================================================== bad configs


def test_corpus_is_large_and_ids_are_unique() -> None:
    ids = [case[0] for case in bad.BAD_CONFIGS]
    assert len(ids) >= 35
    assert len(set(ids)) == len(ids)
    assert set(bad.SECRETS) <= set(ids)


@pytest.mark.parametrize(
    ("text", "expected"),
    [pytest.param(text, expected, id=case_id) for case_id, text, expected in bad.BAD_CONFIGS],
)
def test_bad_config(tmp_path: Path, text: str | bytes | None, expected: list[str]) -> None:
    _write_files(tmp_path, bad.FILES)
    cfg_path = tmp_path / "haflowd.toml"
    if isinstance(text, bytes):
        cfg_path.write_bytes(text)
    elif text is not None:
        cfg_path.write_text(_fill(text, cfg_path))
    lines = _errors(lambda: config.load(cfg_path, check_system=False))
    assert lines == [_fill(line, cfg_path) for line in expected]


@pytest.mark.parametrize(("case_id", "secret"), sorted(bad.SECRETS.items()))
def test_secrets_never_appear_in_errors(tmp_path: Path, case_id: str, secret: str) -> None:
    [text] = [t for i, t, _ in bad.BAD_CONFIGS if i == case_id]
    _write_files(tmp_path, bad.FILES)
    cfg_path = tmp_path / "haflowd.toml"
    cfg_path.write_text(_fill(text, cfg_path))
    with pytest.raises(ConfigError) as info:
        config.load(cfg_path, check_system=False)
    assert secret in cfg_path.read_text() or secret in str(bad.FILES)
    assert secret not in str(info.value)
    assert secret not in repr(info.value)
    assert all(secret not in line for line in info.value.lines)


def test_config_error_is_a_haflowd_error_with_one_line_per_problem(tmp_path: Path) -> None:
    p = tmp_path / "h.toml"
    p.write_text('[api]\nlisten = 1\n[[component]]\nname = "a"\n')
    with pytest.raises(HaflowdError) as info:
        config.load(p, check_system=False)
    assert isinstance(info.value, ConfigError)
    assert str(info.value) == "\n".join(info.value.lines)
    assert len(info.value.lines) == 2
    assert all(line.startswith(f"{p}: ") for line in info.value.lines)


def test_unknown_user_is_reported_when_checking_the_system(tmp_path: Path) -> None:
    p = tmp_path / "h.toml"
    p.write_text(bad.A + 'user = "no-such-user-haflowd-test"\n')
    assert _errors(lambda: config.load(p)) == [
        f'{p}: component[0].user: no such user "no-such-user-haflowd-test"'
    ]
    assert config.load(p, check_system=False).components[0].user == "no-such-user-haflowd-test"
    p.write_text(bad.A + 'user = "nul\\u0000user"\n')
    assert _errors(lambda: config.load(p)) == [
        f'{p}: component[0].user: no such user "nul\\u0000user"'
    ]


def test_an_existing_user_passes_the_system_check(tmp_path: Path) -> None:
    import pwd

    me = pwd.getpwuid(os.getuid()).pw_name
    p = tmp_path / "h.toml"
    p.write_text(bad.A + f'user = "{me}"\n')
    assert config.load(p).components[0].user == me


# =========================================================================== good configs

FULL = """
[node]
name = "node1"
data_dir = "state"

[api]
listen = "0.0.0.0:9797"
control_socket = "/run/haflowd-test/control.sock"

[gossip]
listen = "[::]:7000"
advertise = "node1.example:7000"
seeds = ["node2.example:7000", "node3.example", "[fd00::3]:7001"]
key_file = "gossip.key"
probe_interval = "2s"
probe_timeout = "250ms"
indirect_checks = 3
suspicion_mult = 5
leave_on_terminate = false

[[component]]
name = "web"
command = ["gunicorn", "app:app"]
environment = { PORT = 8000, RATIO = 0.5, NAME = "web" }
user = "nobody"
working_dir = "/srv/web"
restart = "on-failure"
backoff_initial = "250ms"
backoff_max = "1m30s"
stable_after = "15s"
crash_loop_failures = 7
crash_loop_window = "10m"
start_after = ["db"]
stop_signal = "SIGINT"
stop_timeout = "1h"
log_rate_limit = 0
[component.health]
http = "https://127.0.0.1:8000/health?deep=1"
interval = "20s"
timeout = "20s"
failures = 1
start_period = "0s"

[[component]]
name = "db"
command = ["postgres", "-D", "/var/lib/pg"]
working_dir = "rel/dir"
restart = "never"
stop_signal = "TERM"
[component.health]
command = ["pg_isready", "-q"]

[sync]
enabled = false
command = ["csync2", "-x", "-v"]
interval = "5m"
watch = ["/opt/airflow/dags", "/opt/airflow/plugins"]
debounce = "0s"
timeout = "2m"
retry_initial = "1s"
retry_max = "1h"
peers = ["node2", "node3"]

[postgres]
topology = "bucardo"
local_node = "pg2"
interval = "15s"
timeout = "2s"
max_lag_bytes = 1048576
[[postgres.node]]
name = "pg1"
dsn = "host=node1 dbname=airflow user=haflowd"
[[postgres.node]]
name = "pg2"
dsn_file = "$DIR/pg2.dsn"

[rabbitmq]
interval = "30s"
timeout = "5s"
amqp_url_file = "amqp.url"
[[rabbitmq.node]]
name = "rabbit@node1"
management_url = "http://node1:15672/"
username = "monitor"
password = "inline-pass"
[[rabbitmq.node]]
name = "rabbit@node2"
management_url = "https://node2:15671"
password_file = "rabbit.pass"
"""

FULL_FILES: dict[str, str | bytes] = {
    "gossip.key": f"# current key first\n{KEY}\n\n  # the old one, still accepted\n{KEY2}\n",
    "pg2.dsn": "host=node2 dbname=airflow user=haflowd password=pg-secret\n",
    "amqp.url": "amqps://haflowd:amqp-secret@node1:5671/%2F\n",
    "rabbit.pass": "  file-pass \n",
}


@pytest.fixture
def full_path(tmp_path: Path) -> Path:
    _write_files(tmp_path, FULL_FILES)
    p = tmp_path / "haflowd.toml"
    p.write_text(_fill(FULL, p))
    return p


@pytest.fixture
def full(full_path: Path) -> config.Config:
    return config.load(full_path, check_system=False)


def test_full_node_and_api(full: config.Config, full_path: Path) -> None:
    assert full.path == full_path
    assert full.node == config.NodeConfig(name="node1", data_dir=full_path.parent / "state")
    assert full.api.listen == HostPort("0.0.0.0", 9797)
    assert full.api.control_socket == Path("/run/haflowd-test/control.sock")


def test_full_gossip(full: config.Config) -> None:
    g = full.gossip
    assert g is not None
    assert g.listen == HostPort("::", 7000)
    assert str(g.listen) == "[::]:7000"
    assert g.advertise == HostPort("node1.example", 7000)
    assert g.seeds == (
        HostPort("node2.example", 7000),
        HostPort("node3.example", 7946),
        HostPort("fd00::3", 7001),
    )
    assert [k.reveal() for k in g.keys] == [KEY, KEY2]
    assert g.probe_interval == 2.0
    assert g.probe_timeout == 0.25
    assert g.indirect_checks == 3
    assert g.suspicion_mult == 5
    assert g.leave_on_terminate is False


def test_full_components(full: config.Config, full_path: Path) -> None:
    web, db = full.components
    assert full.component("web") is web
    assert full.component("nope") is None
    assert web.name == "web"
    assert web.command == ("gunicorn", "app:app")
    assert web.preset is None
    assert dict(web.environment) == {"PORT": "8000", "RATIO": "0.5", "NAME": "web"}
    assert web.user == "nobody"
    assert web.working_dir == Path("/srv/web")
    assert web.restart == "on-failure"
    assert web.backoff_initial == 0.25
    assert web.backoff_max == 90.0
    assert web.stable_after == 15.0
    assert web.crash_loop_failures == 7
    assert web.crash_loop_window == 600.0
    assert web.start_after == ("db",)
    assert web.stop_signal == int(signal.SIGINT)
    assert web.stop_timeout == 3600.0
    assert web.log_rate_limit == 0
    assert web.health == config.HealthConfig(
        http="https://127.0.0.1:8000/health?deep=1",
        command=None,
        interval=20.0,
        timeout=20.0,
        failures=1,
        start_period=0.0,
    )
    assert db.working_dir == full_path.parent / "rel" / "dir"
    assert db.restart == "never"
    assert db.stop_signal == int(signal.SIGTERM)
    assert db.health is not None
    assert db.health.http is None
    assert db.health.command == ("pg_isready", "-q")
    assert (db.health.interval, db.health.timeout, db.health.failures) == (10.0, 5.0, 3)
    assert db.health.start_period == 10.0


def test_full_sync(full: config.Config) -> None:
    assert full.sync == config.SyncConfig(
        enabled=False,
        command=("csync2", "-x", "-v"),
        interval=300.0,
        watch=(Path("/opt/airflow/dags"), Path("/opt/airflow/plugins")),
        debounce=0.0,
        timeout=120.0,
        retry_initial=1.0,
        retry_max=3600.0,
        peers=("node2", "node3"),
    )


def test_full_postgres(full: config.Config) -> None:
    pg = full.postgres
    assert pg is not None
    assert pg.topology == "bucardo"
    assert pg.local_node == "pg2"
    assert (pg.interval, pg.timeout) == (15.0, 2.0)
    assert pg.max_lag_bytes == 1048576
    assert [n.name for n in pg.nodes] == ["pg1", "pg2"]
    assert pg.nodes[0].dsn.reveal() == "host=node1 dbname=airflow user=haflowd"
    assert pg.nodes[1].dsn.reveal() == "host=node2 dbname=airflow user=haflowd password=pg-secret"


def test_full_rabbitmq(full: config.Config) -> None:
    rb = full.rabbitmq
    assert rb is not None
    assert (rb.interval, rb.timeout) == (30.0, 5.0)
    assert rb.amqp_url is not None
    assert rb.amqp_url.reveal() == "amqps://haflowd:amqp-secret@node1:5671/%2F"
    n1, n2 = rb.nodes
    assert (n1.name, n1.management_url, n1.username) == ("rabbit@node1", "http://node1:15672", "monitor")
    assert n1.password == Secret("inline-pass")
    assert (n2.name, n2.management_url, n2.username) == ("rabbit@node2", "https://node2:15671", "guest")
    assert n2.password is not None and n2.password.reveal() == "file-pass"


def test_secrets_never_show_in_repr(full: config.Config) -> None:
    text = repr(full) + str(full)
    for secret in ("pg-secret", "amqp-secret", "inline-pass", "file-pass", KEY, KEY2):
        assert secret not in text
    s = Secret("hunter2")
    assert repr(s) == str(s) == "Secret('***')"
    assert f"{s}" == "Secret('***')"
    assert "hunter2" not in repr([s, {"k": s}])
    assert s == Secret("hunter2") and s != Secret("other") and s != "hunter2"
    assert hash(s) == hash(Secret("hunter2"))


def test_defaults_when_sections_are_absent(tmp_path: Path) -> None:
    p = tmp_path / "h.toml"
    p.write_text("")
    cfg = config.load(p, check_system=False)
    assert cfg.node.name
    assert config._NAME.match(cfg.node.name)
    assert cfg.node.data_dir == Path("/var/lib/haflowd")
    assert cfg.api.listen == HostPort("127.0.0.1", 8787)
    assert cfg.api.control_socket == Path("/run/haflowd/control.sock")
    assert cfg.components == ()
    assert (cfg.gossip, cfg.sync, cfg.postgres, cfg.rabbitmq) == (None, None, None, None)


def test_defaults_inside_sections(tmp_path: Path) -> None:
    (tmp_path / "k").write_text(KEY + "\n")
    p = tmp_path / "h.toml"
    p.write_text(
        '[node]\n[api]\n[gossip]\nkey_file = "k"\n[sync]\n'
        '[postgres]\n[[postgres.node]]\nname = "pg1"\ndsn = "host=x"\n'
        '[rabbitmq]\n[[rabbitmq.node]]\nname = "r1"\nmanagement_url = "http://r1:15672"\n'
        '[[component]]\nname = "c"\ncommand = ["c"]\n'
    )
    cfg = config.load(p, check_system=False)
    assert cfg.gossip == config.GossipConfig(
        listen=HostPort("0.0.0.0", 7946),
        advertise=HostPort("0.0.0.0", 7946),
        seeds=(),
        keys=(Secret(KEY),),
        probe_interval=0.3,
        probe_timeout=0.15,
        indirect_checks=3,
        suspicion_mult=4,
        leave_on_terminate=True,
    )
    assert cfg.sync == config.SyncConfig(
        enabled=True, command=("csync2", "-x"), interval=60.0, watch=(), debounce=0.5,
        timeout=120.0, retry_initial=2.0, retry_max=300.0, peers=(),
    )
    assert cfg.postgres is not None
    assert (cfg.postgres.topology, cfg.postgres.local_node) == ("streaming", None)
    assert (cfg.postgres.interval, cfg.postgres.timeout) == (10.0, 3.0)
    assert cfg.postgres.max_lag_bytes == 16 * 2**20
    assert cfg.rabbitmq is not None
    assert (cfg.rabbitmq.interval, cfg.rabbitmq.timeout, cfg.rabbitmq.amqp_url) == (10.0, 3.0, None)
    assert cfg.rabbitmq.nodes[0].username == "guest"
    assert cfg.rabbitmq.nodes[0].password is None
    [c] = cfg.components
    assert c == config.ComponentConfig(name="c", command=("c",))
    assert (c.restart, c.backoff_initial, c.backoff_max, c.stop_timeout) == ("always", 1.0, 60.0, 30.0)
    assert (c.stable_after, c.crash_loop_failures, c.crash_loop_window) == (10.0, 5, 120.0)
    assert (c.stop_signal, c.log_rate_limit, c.health, c.user) == (int(signal.SIGTERM), 200, None, None)


def test_inline_gossip_keys(tmp_path: Path) -> None:
    p = tmp_path / "h.toml"
    p.write_text(f'[gossip]\nkeys = ["{KEY}", "{KEY2}"]\n')
    cfg = config.load(p, check_system=False)
    assert cfg.gossip is not None
    assert cfg.gossip.keys == (Secret(KEY), Secret(KEY2))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"250ms"', 0.25),
        ('"1m30s"', 90.0),
        ('"1h"', 3600.0),
        ('"1.5s"', 1.5),
        ('"2d"', 172800.0),
    ],
)
def test_duration_keys(tmp_path: Path, value: str, expected: float) -> None:
    p = tmp_path / "h.toml"
    p.write_text(f"[sync]\ninterval = {value}\n")
    cfg = config.load(p, check_system=False)
    assert cfg.sync is not None and cfg.sync.interval == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1048576", 1048576), ('"16MiB"', 16777216), ('"1GB"', 10**9), ("0", 0), ('"512 KiB"', 524288)],
)
def test_size_keys(tmp_path: Path, value: str, expected: int) -> None:
    p = tmp_path / "h.toml"
    p.write_text(f'[postgres]\nmax_lag_bytes = {value}\n[[postgres.node]]\nname = "a"\ndsn = "x"\n')
    cfg = config.load(p, check_system=False)
    assert cfg.postgres is not None and cfg.postgres.max_lag_bytes == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("TERM", signal.SIGTERM),
        ("SIGINT", signal.SIGINT),
        ("term", signal.SIGTERM),
        ("QUIT", signal.SIGQUIT),
        ("HUP", signal.SIGHUP),
        ("KILL", signal.SIGKILL),
        ("USR1", signal.SIGUSR1),
        ("SIGUSR2", signal.SIGUSR2),
        ("WINCH", signal.SIGWINCH),
    ],
)
def test_stop_signals(tmp_path: Path, value: str, expected: int) -> None:
    p = tmp_path / "h.toml"
    p.write_text(bad.A + f'stop_signal = "{value}"\n')
    [c] = config.load(p, check_system=False).components
    assert c.stop_signal == int(expected)
    assert isinstance(c.stop_signal, int)


def test_preset_fills_command_health_and_environment(tmp_path: Path) -> None:
    p = tmp_path / "h.toml"
    p.write_text(
        '[[component]]\nname = "scheduler"\npreset = "airflow-scheduler"\n'
        '[[component]]\nname = "worker"\npreset = "airflow-celery-worker"\n'
        '[[component]]\nname = "dags"\npreset = "airflow-dag-processor"\n'
    )
    sched, worker, dags = config.load(p, check_system=False).components
    assert sched.preset == "airflow-scheduler"
    assert sched.command == ("airflow", "scheduler")
    assert sched.environment["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "True"
    assert sched.health is not None and sched.health.http == "http://127.0.0.1:8974/health"
    assert worker.command == ("airflow", "celery", "worker")
    assert worker.health is not None and worker.health.command is not None
    assert worker.health.command[-5:-2] == ("ping", "--destination", f"celery@{socket.gethostname()}")
    assert worker.stop_timeout == 600.0
    assert dags.health is not None
    assert dags.health.airflow_job == "DagProcessorJob"


def test_explicit_keys_win_over_the_preset(tmp_path: Path) -> None:
    p = tmp_path / "h.toml"
    p.write_text(
        '[[component]]\nname = "scheduler"\npreset = "airflow-scheduler"\n'
        'command = ["airflow", "scheduler", "--num-runs", "5"]\n'
        'environment = { AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK = "False", '
        'AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT = "9999", AIRFLOW_HOME = "/a" }\n'
        '[[component]]\nname = "worker"\npreset = "airflow-celery-worker"\nstop_timeout = "5s"\n'
        'stop_signal = "INT"\n'
        '[[component]]\nname = "api"\npreset = "airflow-api-server"\n'
        '[component.health]\nhttp = "http://127.0.0.1:1234/x"\n'
    )
    sched, worker, api = config.load(p, check_system=False).components
    assert sched.command == ("airflow", "scheduler", "--num-runs", "5")
    assert sched.environment["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "False"
    assert sched.environment["AIRFLOW_HOME"] == "/a"
    # the preset's probe follows the port given in the environment
    assert sched.health is not None and sched.health.http == "http://127.0.0.1:9999/health"
    assert worker.stop_timeout == 5.0
    assert worker.stop_signal == int(signal.SIGINT)
    assert api.command == ("airflow", "api-server")
    assert api.health is not None
    # a probe named in the config replaces the preset's; keys it does not give keep the preset's
    assert (api.health.http, api.health.start_period, api.health.expect) == ("http://127.0.0.1:1234/x", 120.0, {})


def test_resolve_path_and_haflowd_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HAFLOWD_CONFIG", raising=False)
    assert config.resolve_path(None) == Path(config.DEFAULT_CONFIG_PATH)
    assert config.resolve_path(None) == Path("/etc/haflowd/haflowd.toml")
    env_path = tmp_path / "from-env.toml"
    env_path.write_text('[node]\nname = "from-env"\n')
    monkeypatch.setenv("HAFLOWD_CONFIG", str(env_path))
    assert config.resolve_path(None) == env_path
    assert config.resolve_path("") == env_path
    assert config.load(check_system=False).node.name == "from-env"
    explicit = tmp_path / "explicit.toml"
    explicit.write_text('[node]\nname = "explicit"\n')
    assert config.resolve_path(explicit) == explicit
    assert config.load(str(explicit), check_system=False).node.name == "explicit"
    monkeypatch.setenv("HAFLOWD_CONFIG", "")
    assert config.resolve_path(None) == Path(config.DEFAULT_CONFIG_PATH)


def test_start_order(tmp_path: Path) -> None:
    p = tmp_path / "h.toml"
    p.write_text(
        '[[component]]\nname = "flower"\ncommand = ["f"]\nstart_after = ["worker", "api"]\n'
        '[[component]]\nname = "worker"\ncommand = ["w"]\nstart_after = ["scheduler"]\n'
        '[[component]]\nname = "triggerer"\ncommand = ["t"]\n'
        '[[component]]\nname = "api"\ncommand = ["a"]\n'
        '[[component]]\nname = "scheduler"\ncommand = ["s"]\nstart_after = ["api"]\n'
    )
    cfg = config.load(p, check_system=False)
    order = [c.name for c in config.start_order(cfg.components)]
    assert order == ["triggerer", "api", "scheduler", "worker", "flower"]
    for i, c in enumerate(config.start_order(cfg.components)):
        assert set(c.start_after) <= set(order[:i])
    assert config.start_order([]) == []


def _chain(n: int, closed: bool) -> str:
    """c0 after c1 after ... after c(n-1) (after c0 when closed): deeper than the stack."""
    out = []
    for i in range(n):
        after = f"c{i + 1}" if i < n - 1 else ("c0" if closed else None)
        out.append(f'[[component]]\nname = "c{i}"\ncommand = ["x"]\n')
        if after:
            out.append(f'start_after = ["{after}"]\n')
    return "".join(out)


def test_a_long_start_after_chain_is_no_recursion_error(tmp_path: Path) -> None:
    n = 1500
    cfg = config.loads(_chain(n, closed=False), tmp_path / "h.toml", check_system=False)
    assert len(cfg.components) == n
    order = config.start_order(cfg.components[-300:])
    assert [c.name for c in order] == [f"c{i}" for i in reversed(range(n - 300, n))]
    lines = _errors(lambda: config.loads(_chain(n, closed=True), tmp_path / "h.toml"))
    [line] = lines
    assert line.startswith(f"{tmp_path / 'h.toml'}: component[0].start_after: "
                           "start_after forms a cycle: c0 -> c1 -> c2 -> ")
    assert line.endswith(" -> c1499 -> c0")


def test_cycles_are_reported_once_each(tmp_path: Path) -> None:
    p = tmp_path / "h.toml"
    comps = {"a": ["b"], "b": ["a"], "c": ["d"], "d": ["e"], "e": ["c", "a"], "f": ["e"]}
    p.write_text("".join(
        f'[[component]]\nname = "{n}"\ncommand = ["x"]\nstart_after = {json.dumps(after)}\n'
        for n, after in comps.items()
    ))
    assert _errors(lambda: config.load(p, check_system=False)) == [
        f"{p}: component[0].start_after: start_after forms a cycle: a -> b -> a",
        f"{p}: component[2].start_after: start_after forms a cycle: c -> d -> e -> c",
    ]


def test_relative_secret_files_resolve_against_the_config_directory(tmp_path: Path) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    (sub / "rabbit.pass").write_text("pw\n")
    p = sub / "h.toml"
    p.write_text('[[rabbitmq.node]]\nname = "r"\nmanagement_url = "http://r"\npassword_file = "rabbit.pass"\n')
    cfg = config.load(p, check_system=False)
    assert cfg.rabbitmq is not None
    assert cfg.rabbitmq.nodes[0].password == Secret("pw")


def test_loads_without_a_file(tmp_path: Path) -> None:
    cfg = config.loads('[node]\nname = "n1"\n', tmp_path / "virtual.toml", check_system=False)
    assert cfg.node.name == "n1"
    assert _errors(lambda: config.loads("x = ", Path("/v.toml"))) == [
        "/v.toml: invalid TOML: Invalid value (at end of document)"
    ]


# =========================================================================== value parsers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("1s", 1.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1m30s", 90.0),
        ("1h2m3s4ms", 3723.004),
        ("1.5s", 1.5),
        ("0s", 0.0),
        (" 10s ", 10.0),
        ("0.5ms", 0.0005),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert config.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", " ", "5", "5 minutes", "-1s", "+1s", "1 s", "1S", "s", "1.s", ".5s", "1e3s", "1m 30s",
     "1sm", "ms", "10 ", "1w", "1y", "inf", "nans", "1_000s"],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        config.parse_duration(text)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (1048576, 1048576),
        ("1048576", 1048576),
        ("16MiB", 16 * 2**20),
        ("16 MiB", 16 * 2**20),
        ("1KiB", 1024),
        ("1K", 1024),
        ("2M", 2 * 2**20),
        ("1G", 2**30),
        ("1GiB", 2**30),
        ("1TiB", 2**40),
        ("1KB", 1000),
        ("1MB", 10**6),
        ("1GB", 10**9),
        ("1TB", 10**12),
        ("100B", 100),
        ("1.5KiB", 1536),
        ("0.5MiB", 2**19),
        ("9007199254740993", 9007199254740993),
        ("1" * 400, int("1" * 400)),
    ],
)
def test_parse_size(value: int | str, size: int) -> None:
    assert config.parse_size(value) == size
    assert isinstance(config.parse_size(value), int)


@pytest.mark.parametrize(
    "value",
    [-1, True, False, "", "MiB", "-1", "16 megs", "16mib", "1.5.5K", "1e6", "0x10", "16iB", "1 PiB"],
)
def test_parse_size_rejects(value: int | str) -> None:
    with pytest.raises(ValueError):
        config.parse_size(value)


@pytest.mark.parametrize(
    ("text", "default_port", "expected"),
    [
        ("127.0.0.1:8787", None, HostPort("127.0.0.1", 8787)),
        ("node1.example:7946", None, HostPort("node1.example", 7946)),
        ("node1", 7946, HostPort("node1", 7946)),
        ("node1:1", 7946, HostPort("node1", 1)),
        ("[::1]:8787", None, HostPort("::1", 8787)),
        ("[::]", 7946, HostPort("::", 7946)),
        ("[fe80::1%eth0]:80", None, None),
        (" host:65535 ", None, HostPort("host", 65535)),
        ("my_host-1.local:80", None, HostPort("my_host-1.local", 80)),
    ],
)
def test_parse_hostport(text: str, default_port: int | None, expected: HostPort | None) -> None:
    if expected is None:
        with pytest.raises(ValueError):
            config.parse_hostport(text, default_port)
    else:
        assert config.parse_hostport(text, default_port) == expected


@pytest.mark.parametrize(
    ("text", "default_port"),
    [
        ("localhost", None),
        ("", 80),
        (":80", None),
        ("host:", None),
        ("host:0", None),
        ("host:65536", None),
        ("host:-1", None),
        ("host:http", None),
        ("host:\uff18\uff10", None),
        ("host:\u0668\u0660", None),
        ("::1:8787", None),
        ("::1", 80),
        ("[::1]:", None),
        ("[nothex]:80", None),
        ("host name:80", None),
        ("host/path:80", None),
        ("node1\n:7946", None),
        ("http://host:80", None),
    ],
)
def test_parse_hostport_rejects(text: str, default_port: int | None) -> None:
    with pytest.raises(ValueError):
        config.parse_hostport(text, default_port)


def test_hostport_str() -> None:
    assert str(HostPort("node1", 7946)) == "node1:7946"
    assert str(HostPort("::1", 7946)) == "[::1]:7946"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.25, "250ms"), (1.0, "1s"), (90.0, "90s"), (0.0, "0s")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert config.format_duration(seconds) == text


@pytest.mark.parametrize(
    ("name", "ok"),
    [("pg1", True), ("rabbit@node1", True), ("a.b_c-d", True), ("x" * 63, True),
     ("x" * 64, False), ("-a", False), ("a b", False), ("pg1\n", False), ("", False)],
)
def test_names(tmp_path: Path, name: str, ok: bool) -> None:
    p = tmp_path / "h.toml"
    p.write_text(f"[node]\nname = {json.dumps(name)}\n")
    if ok:
        assert config.load(p, check_system=False).node.name == name
    else:
        [line] = _errors(lambda: config.load(p, check_system=False))
        assert line.startswith(f"{p}: node.name: expected a name of letters")


# =========================================================================== fuzz-ish

WRONG_VALUES: list[Any] = [
    1, "x", True, [], {},
    "", -1, 0, 1.5, 2**63 - 1, "0s", "9" * 400 + "s", "\x00", [1], [{}], ["x"], {"x": 1},
    "http://user:pass@host", "/", "../..",
]


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        items = (f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items())
        return "{" + ", ".join(items) + "}"
    raise TypeError(v)


def _toml(doc: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in doc.items())


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``doc`` with the item at ``path`` set to ``value`` (or deleted)."""
    head, rest = path[0], path[1:]
    out = dict(doc) if isinstance(doc, dict) else list(doc)
    if rest:
        out[head] = _replaced(doc[head], rest, value)
    elif value is _DELETE:
        del out[head]
    else:
        out[head] = value
    return out


_DELETE = object()


def _must_not_crash(p: Path, check_system: bool = False) -> str:
    try:
        config.load(p, check_system=check_system)
    except ConfigError as e:
        assert e.lines
        for line in e.lines:
            assert line.startswith(f"{p}: ")
            assert "\n" not in line
        return "error"
    return "ok"


def test_fuzz_wrong_values_never_crash(full_path: Path) -> None:
    doc = tomllib.loads(full_path.read_text())
    assert tomllib.loads(_toml(doc)) == doc  # the serializer round-trips
    outcomes: dict[str, int] = {"ok": 0, "error": 0}
    p = full_path.parent / "mutated.toml"
    paths = list(_paths(doc))
    assert len(paths) > 80
    for path in paths:
        for value in [*WRONG_VALUES, _DELETE]:
            p.write_text(_toml(_replaced(doc, path, value)))
            outcomes[_must_not_crash(p)] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 0


def test_fuzz_unknown_keys_everywhere(full_path: Path) -> None:
    doc = tomllib.loads(full_path.read_text())
    p = full_path.parent / "mutated.toml"
    # every table but environment, whose keys are the child's variables
    tables = [
        path for path in _paths(doc)
        if isinstance(_get(doc, path), dict) and path[-1] != "environment"
    ]
    assert len(tables) > 10
    for path in [(), *tables]:
        table = _get(doc, path)
        for extra in ("zzz_unknown", *[k + "s" for k in table][:3]):
            if extra in table:
                continue
            p.write_text(_toml(_replaced(doc, (*path, extra), 1)))
            lines = _errors(lambda: config.load(p, check_system=False))
            dotted = _dotted((*path, extra))
            assert any(line.startswith(f"{p}: {dotted}: unknown key") for line in lines), lines


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def test_fuzz_with_system_checks(full_path: Path) -> None:
    doc = tomllib.loads(full_path.read_text())
    p = full_path.parent / "mutated.toml"
    for value in [*WRONG_VALUES, "root", "nobody", "no-such-user-x"]:
        p.write_text(_toml(_replaced(doc, ("component", 0, "user"), value)))
        _must_not_crash(p, check_system=True)


def test_fuzz_random_bytes_never_crash(tmp_path: Path) -> None:
    import random

    rng = random.Random(1234)
    p = tmp_path / "h.toml"
    source = FULL.encode()
    for _ in range(300):
        data = bytearray(source)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] = rng.choice(b'"[]{}=,.\n 0123456789abcxyz#\\\xff:-')
        p.write_bytes(bytes(data))
        _must_not_crash(p)


# =========================================================================== the example


def test_example_config_parses(tmp_path: Path) -> None:
    example = ROOT / "etc" / "haflowd.toml"
    text = example.read_text()
    referenced = sorted(set(re.findall(r'"/etc/haflowd/([^"]+)"', text)))
    assert "gossip.key" in referenced
    assert "rabbitmq.pass" in referenced
    for name in referenced:
        target = tmp_path / name
        if name.endswith(".key"):
            target.write_text(f"{KEY}\n")
        elif name.endswith(".url"):
            target.write_text("amqp://haflowd:example@node1.example:5672/%2F\n")
        else:
            target.write_text("example-secret\n")
        text = text.replace(f'"/etc/haflowd/{name}"', json.dumps(str(target)))
    cfg = config.loads(text, tmp_path / "haflowd.toml", check_system=False)
    assert cfg.node.name == "node1"
    assert len(cfg.components) == 7
    names = [c.name for c in cfg.components]
    assert len(set(names)) == 7
    assert all(c.preset for c in cfg.components)
    migrate = cfg.component("migrate")
    assert migrate is not None and migrate.oneshot and migrate.restart == "on-failure"
    assert all(c.start_after == ("migrate",) for c in cfg.components if c.name not in ("migrate", "flower"))
    assert cfg.gossip is not None and len(cfg.gossip.seeds) == 2
    assert all(not str(s).startswith("node1") for s in cfg.gossip.seeds)
    assert cfg.sync is not None and cfg.sync.enabled
    assert cfg.postgres is not None
    assert [n.name for n in cfg.postgres.nodes] == ["pg1", "pg2", "pg3"]
    assert cfg.postgres.topology == "streaming" and cfg.postgres.local_node == "pg1"
    assert cfg.rabbitmq is not None and len(cfg.rabbitmq.nodes) == 3
    assert all(n.password == Secret("example-secret") for n in cfg.rabbitmq.nodes)
    flower = cfg.component("flower")
    assert flower is not None and flower.start_after
    assert flower.user == "airflow"
    assert flower.working_dir is not None
    assert "AIRFLOW_HOME" in flower.environment
    order = [c.name for c in config.start_order(cfg.components)]
    assert order.index("flower") > max(order.index(n) for n in flower.start_after)
