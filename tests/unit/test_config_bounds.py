"""Hardening of the config: bounds on every duration and size, NUL characters, secret
files open to others, and (``--check-config``) commands and working directories the host
does not provide."""

from __future__ import annotations

import base64
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from haflowd import config
from haflowd.config import DURATIONS, SIZES, ConfigError, human_duration, human_size

ROOT = Path(__file__).resolve().parents[2]
KEY = base64.b64encode(b"k" * 32).decode()
A = '[[component]]\nname = "a"\ncommand = ["sleep", "1000"]\n'
PG_NODE = '[[postgres.node]]\nname = "pg1"\ndsn = "host=node1"\n'
RABBIT_NODE = '[[rabbitmq.node]]\nname = "rabbit@node1"\nmanagement_url = "http://node1:15672"\n'


def _errors(p: Path, text: str, **kw: bool) -> list[str]:
    p.write_text(text)
    try:
        config.load(p, check_system=False, **kw)
    except ConfigError as e:
        return [line.removeprefix(f"{p}: ") for line in e.lines]
    return []


def _with(key: str, value: str) -> tuple[str, str]:
    """A config that sets duration or size ``key`` (a schema key) to ``value``, and the key's path."""
    section, _, name = key.rpartition(".")
    line = f'{name} = "{value}"\n'
    if section == "gossip":
        return f'[gossip]\nkeys = ["{KEY}"]\n{line}', key
    if section == "component":
        return A + line, f"component[0].{name}"
    if section == "component.health":
        return A + '[component.health]\ncommand = ["true"]\n' + line, f"component[0].health.{name}"
    if section == "postgres":
        return "[postgres]\n" + line + PG_NODE, key
    if section == "rabbitmq":
        return "[rabbitmq]\n" + line + RABBIT_NODE, key
    if section == "hook":
        return '[[hook]]\nname = "h"\non = ["*"]\ncommand = ["true"]\n' + line, f"hook[0].{name}"
    return f"[{section}]\n{line}", key


@pytest.mark.parametrize("key", sorted(DURATIONS))
def test_every_duration_has_bounds_that_hold(tmp_path: Path, key: str) -> None:
    _default, lo, hi = DURATIONS[key]
    p = tmp_path / "h.toml"
    if lo > 0:
        below = human_duration(lo / 2)
        text, path = _with(key, below)
        assert f"{path}: {below} is below the minimum {human_duration(lo)}" in _errors(p, text)
    above = human_duration(hi * 2)
    text, path = _with(key, above)
    assert f"{path}: {above} is above the maximum {human_duration(hi)}" in _errors(p, text)
    for ok in (human_duration(lo), human_duration(hi)):
        text, path = _with(key, ok)
        assert not [e for e in _errors(p, text) if "minimum" in e or "maximum" in e], ok


def test_size_bounds(tmp_path: Path) -> None:
    p = tmp_path / "h.toml"
    text, _ = _with("postgres.max_lag_bytes", "2TiB")
    assert _errors(p, text) == ["postgres.max_lag_bytes: 2TiB is above the maximum 1TiB"]
    text, _ = _with("postgres.max_lag_bytes", "1TiB")
    assert _errors(p, text) == []


def test_the_issue_examples_all_at_once(tmp_path: Path) -> None:
    text = (A + 'stop_timeout = "100000000000000000000000s"\n'
            '[component.health]\ncommand = ["true"]\ninterval = "1ms"\ntimeout = "1ms"\n'
            '[gossip]\nkeys = ["' + KEY + '"]\nprobe_interval = "1ms"\n')
    assert _errors(tmp_path / "h.toml", text) == [
        "component[0].stop_timeout: 100000000000000000000000s is above the maximum 1d",
        "component[0].health.interval: 1ms is below the minimum 100ms",
        "component[0].health.timeout: 1ms is below the minimum 10ms",
        "gossip.probe_interval: 1ms is below the minimum 50ms",
    ]


def test_defaults_lie_within_their_bounds() -> None:
    for key, (default, lo, hi) in DURATIONS.items():
        assert default is None or lo <= default <= hi, key
    for key, (size, lo_s, hi_s) in SIZES.items():
        assert lo_s <= size <= hi_s, key


def test_reference_lists_every_bound() -> None:
    text = (ROOT / "docs" / "reference.md").read_text()
    for key, (_d, lo, hi) in DURATIONS.items():
        assert re.search(rf"\| `{re.escape(key)}` \| {human_duration(lo) if lo else '0s'} \| {human_duration(hi)} \|",
                         text), key
    for key, (_s, lo_s, hi_s) in SIZES.items():
        assert f"| `{key}` | {lo_s} | {human_size(hi_s)} |" in text, key


# --------------------------------------------------------------------------- NUL


def test_nul_in_arguments_environment_and_paths(tmp_path: Path) -> None:
    text = ('[[component]]\nname = "a"\ncommand = ["sleep", "10\\u00000"]\n'
            'environment = { OK = "fine", BAD = "x\\u0000y" }\nworking_dir = "/tmp\\u0000x"\n'
            '[component.health]\ncommand = ["true", "\\u0000"]\n'
            '[sync]\ncommand = ["csync2", "-x\\u0000"]\n')
    assert _errors(tmp_path / "h.toml", text) == [
        "component[0].command[1]: contains a NUL character (no process argument can hold one)",
        "component[0].environment.BAD: contains a NUL character (no environment value can hold one)",
        "component[0].working_dir: contains a NUL character (no path can hold one)",
        "component[0].health.command[1]: contains a NUL character (no process argument can hold one)",
        "sync.command[1]: contains a NUL character (no process argument can hold one)",
    ]


# --------------------------------------------------------------------------- secret files


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory anyone may enter (pytest's own tmp_path is inside a 0700 directory,
    which shields whatever is in it)."""
    d = Path(tempfile.mkdtemp(prefix="haflowd-perm-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.mark.parametrize(("mode", "who"), [(0o644, "its group and others"), (0o604, "others"),
                                           (0o640, "its group"), (0o620, "its group"), (0o666, "its group and others")])
def test_secret_files_open_to_others_are_errors(open_dir: Path, mode: int, who: str) -> None:
    key, dsn, pw = open_dir / "gossip.key", open_dir / "pg.dsn", open_dir / "rabbit.pass"
    key.write_text(KEY + "\n")
    dsn.write_text("host=x password=hunter2\n")
    pw.write_text("hunter2\n")
    for f in (key, dsn, pw):
        f.chmod(mode)
    text = (f'[gossip]\nkey_file = "{key}"\n[postgres]\n[[postgres.node]]\nname = "pg1"\ndsn_file = "{dsn}"\n'
            f'[rabbitmq]\n[[rabbitmq.node]]\nname = "r@n"\nmanagement_url = "http://n:15672"\n'
            f'password_file = "{pw}"\n')
    lines = _errors(open_dir / "h.toml", text)
    m = f"{mode:04o}"
    assert lines == [
        f'gossip.key_file: "{key}" is readable or writable by {who} (mode {m}); '
        f'a secret must be its owner\'s alone: chmod 600 "{key}"',
        f'postgres.node[0].dsn_file: "{dsn}" is readable or writable by {who} (mode {m}); '
        f'a secret must be its owner\'s alone: chmod 600 "{dsn}"',
        f'rabbitmq.node[0].password_file: "{pw}" is readable or writable by {who} (mode {m}); '
        f'a secret must be its owner\'s alone: chmod 600 "{pw}"',
    ]
    assert all("hunter2" not in line for line in lines)
    for f in (key, dsn, pw):
        f.chmod(0o600)
    assert _errors(open_dir / "h.toml", text) == []
    for f in (key, dsn, pw):
        f.chmod(0o400)
    assert _errors(open_dir / "h.toml", text) == []


def test_a_directory_only_its_owner_enters_shields_the_file(open_dir: Path) -> None:
    inner = open_dir / "private"
    inner.mkdir(mode=0o700)
    key = inner / "gossip.key"
    key.write_text(KEY + "\n")
    key.chmod(0o644)
    assert _errors(open_dir / "h.toml", f'[gossip]\nkey_file = "{key}"\n') == []
    inner.chmod(0o755)
    assert len(_errors(open_dir / "h.toml", f'[gossip]\nkey_file = "{key}"\n')) == 1


# --------------------------------------------------------------------------- --check-config: the host


def _script(path: Path, mode: int = 0o755) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return path


def test_commands_are_checked_only_by_check_config(open_dir: Path) -> None:
    p = open_dir / "h.toml"
    text = '[[component]]\nname = "a"\ncommand = ["no-such-command-haflowd"]\n'
    assert _errors(p, text) == []  # the daemon starts; the component goes fatal, "could not start"
    path = os.environ.get("PATH", os.defpath)
    [line] = _errors(p, text, check_commands=True)
    assert line.startswith('component[0].command: "no-such-command-haflowd" is not on haflowd\'s PATH (')
    assert path[:20] in line


def test_command_problems(open_dir: Path) -> None:
    p = open_dir / "h.toml"
    bin_dir = open_dir / "bin"
    bin_dir.mkdir(mode=0o755)
    _script(bin_dir / "good")
    _script(bin_dir / "plain", 0o644)
    private = _script(bin_dir / "rootonly", 0o700)
    (bin_dir / "adir").mkdir()
    wd = open_dir / "wd"
    wd.mkdir(mode=0o755)
    _script(wd / "rel")
    body = "".join(
        f'[[component]]\nname = "c{i}"\n{extra}'
        for i, extra in enumerate([
            f'command = ["good"]\nenvironment = {{ PATH = "{bin_dir}" }}\n',
            f'command = ["nope"]\nenvironment = {{ PATH = "{bin_dir}" }}\n',
            f'command = ["{bin_dir}/plain"]\n',
            f'command = ["{bin_dir}/missing"]\n',
            f'command = ["{bin_dir}/adir"]\n',
            f'command = ["{private}"]\nuser = "nobody"\n',
            f'command = ["{private}"]\n',
            f'command = ["./rel"]\nworking_dir = "{wd}"\n',
            f'command = ["good"]\nworking_dir = "{open_dir}/missing"\nenvironment = {{ PATH = "{bin_dir}" }}\n',
            f'command = ["good"]\nworking_dir = "{bin_dir}/good"\nenvironment = {{ PATH = "{bin_dir}" }}\n',
        ]))
    assert _errors(p, body, check_commands=True) == [
        f'component[1].command: "nope" is not on the component\'s PATH ("{bin_dir}")',
        f'component[2].command: "{bin_dir}/plain" is not executable (mode 0644)',
        f'component[3].command: "{bin_dir}/missing" does not exist',
        f'component[4].command: "{bin_dir}/adir" is a directory',
        f'component[5].command: "{private}" is not executable by user "nobody" (mode 0700)',
        f'component[8].working_dir: cannot use "{open_dir}/missing": No such file or directory',
        f'component[9].working_dir: "{bin_dir}/good" is not a directory',
    ]


def test_a_directory_the_user_cannot_enter(open_dir: Path) -> None:
    locked = open_dir / "locked"
    locked.mkdir(mode=0o700)
    _script(locked / "run")
    text = f'[[component]]\nname = "a"\ncommand = ["{locked}/run"]\nuser = "nobody"\nworking_dir = "{locked}"\n'
    assert _errors(open_dir / "h.toml", text, check_commands=True) == [
        f'component[0].working_dir: "{locked}" cannot be entered by user "nobody" (mode 0700)',
        f'component[0].command: "{locked}" cannot be entered by user "nobody"',
    ]


def test_preset_commands_are_found_on_the_component_path(open_dir: Path) -> None:
    from tests.fixtures.fake_airflow import fake_venv

    bin_dir = fake_venv(open_dir / "venv", "apache_airflow_core-3.3.2", prints="3.3.2")
    empty = open_dir / "empty"
    empty.mkdir()
    text = (f'[[component]]\nname = "s"\npreset = "airflow-scheduler"\nenvironment = {{ PATH = "{bin_dir}" }}\n'
            f'[[component]]\nname = "t"\npreset = "airflow-triggerer"\nenvironment = {{ PATH = "{empty}" }}\n')
    assert _errors(open_dir / "h.toml", text, check_commands=True) == [
        f'component[1].command: "airflow" is not on the component\'s PATH ("{empty}") '
        "(the command of preset airflow-triggerer)",
    ]
