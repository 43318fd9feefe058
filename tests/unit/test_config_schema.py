"""The schema is the one declaration of the config's keys: the reader asks for no key it
does not list, it lists no key the reader ignores, the dataclasses and the restart policy
take their defaults from it, and docs/reference.md shows what it says."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from haflowd import config
from haflowd.config import doc, reader
from haflowd.config.model import ComponentConfig, HealthConfig, SyncConfig
from haflowd.config.schema import KEYS, SCHEMA, SECTIONS, default_of, schema_key
from haflowd.supervisor.policy import PolicySettings

ROOT = Path(__file__).resolve().parents[2]
KEY = base64.b64encode(b"k" * 32).decode()

# Every section and table, so that the reader asks for every key it knows.
EVERYTHING = f"""
[node]
name = "n1"
[api]
listen = "127.0.0.1:8787"
[gossip]
keys = ["{KEY}"]
[[component]]
name = "a"
command = ["sleep", "1"]
[component.health]
command = ["true"]
[sync]
[postgres]
topology = "bucardo"
bucardo_dsn = "host=b"
[[postgres.node]]
name = "pg1"
dsn = "host=pg1"
[rabbitmq]
[[rabbitmq.node]]
name = "rabbit@n1"
management_url = "http://n1:15672"
[[hook]]
name = "h"
on = ["*"]
command = ["true"]
"""


def test_the_reader_asks_for_the_schemas_keys_and_no_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: set[str] = set()
    raw = reader.Table.raw

    def recording(self: reader.Table, name: str) -> Any:
        asked.add(schema_key(self.key(name)))
        return raw(self, name)

    monkeypatch.setattr(reader.Table, "raw", recording)
    p = tmp_path / "h.toml"
    p.write_text(EVERYTHING)
    config.load(p, check_system=False)
    secrets = {k.path for k in SCHEMA if k.type == "secret"}
    allowed = set(KEYS) | set(SECTIONS) | {f"{k}_file" for k in secrets}
    assert asked - allowed == set()
    assert set(KEYS) - asked == set()


def test_the_dataclasses_and_the_restart_policy_take_the_schemas_defaults() -> None:
    policy = PolicySettings()
    for name in ("restart", "backoff_initial", "backoff_max", "stable_after", "crash_loop_failures",
                 "crash_loop_window"):
        assert getattr(policy, name) == default_of(f"component.{name}"), name
    c = ComponentConfig(name="a", command=("true",))
    for name in ("backoff_initial", "backoff_max", "stable_after", "crash_loop_failures", "crash_loop_window",
                 "stop_timeout", "log_rate_limit", "oneshot", "restart"):
        assert getattr(c, name) == default_of(f"component.{name}"), name
    h = HealthConfig(http=None, command=("true",), interval=1.0, timeout=1.0, failures=1, start_period=0.0)
    assert h.max_age == default_of("component.health.max_age")
    s = SyncConfig(enabled=True, command=("csync2",), interval=1.0, watch=(), debounce=0.0, timeout=1.0,
                   retry_initial=1.0, retry_max=1.0, peers=())
    for name in ("port", "probe_timeout", "debounce_max", "warn_after", "critical_after"):
        assert getattr(s, name) == default_of(f"sync.{name}"), name


def test_a_config_without_optional_keys_gets_the_schemas_defaults(tmp_path: Path) -> None:
    p = tmp_path / "h.toml"
    p.write_text(EVERYTHING)
    cfg = config.load(p, check_system=False)
    assert cfg.gossip is not None and cfg.sync is not None and cfg.postgres is not None and cfg.rabbitmq is not None
    sections: dict[str, Any] = {"gossip": cfg.gossip, "component": cfg.components[0],
                                "component.health": cfg.components[0].health, "sync": cfg.sync,
                                "postgres": cfg.postgres, "rabbitmq": cfg.rabbitmq}
    checked = 0
    for k in SCHEMA:
        section, _, name = k.path.rpartition(".")
        if section in sections and k.type in ("duration", "size", "integer", "boolean") and k.default is not None:
            assert getattr(sections[section], name) == k.default, k.path
            checked += 1
    assert checked >= 30


def test_the_reference_shows_the_schema() -> None:
    """Fails when docs/reference.md and the schema drift: run ``python -m haflowd.config.doc``."""
    text = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert doc.render(text) == text
    assert doc.main(["--check", str(ROOT / "docs" / "reference.md")]) == 0


def test_the_generator_rewrites_only_its_part(tmp_path: Path) -> None:
    p = tmp_path / "reference.md"
    p.write_text(f"prose before\n{doc.BEGIN}\nstale | table\n{doc.END}\nprose after\n")
    assert doc.main(["--check", str(p)]) == 1
    assert doc.main([str(p)]) == 0
    text = p.read_text()
    assert text.startswith(f"prose before\n{doc.BEGIN}\n") and text.endswith(f"{doc.END}\nprose after\n")
    assert "stale" not in text and "| `sync.port` | 1 | 65535 | `30865` |" in text
    assert doc.main(["--check", str(p)]) == 0


def test_errors_keep_file_order_across_the_steps(tmp_path: Path) -> None:
    """The reader, the presets step and the host checks each find some problems; the report
    lists them as one pass over the file would (as before the config became a package)."""
    p = tmp_path / "h.toml"
    p.write_text('[[component]]\nname = "a"\npreset = "airflow-db-migrate"\ncommand = ["/nonexistent/x"]\n'
                 'stable_after = "0s"\ncrash_loop_failures = 0\ncrash_loop_window = "0s"\nstart_after = [1]\n'
                 'stop_signal = "FOO"\nstop_timeout = "0s"\nlog_rate_limit = -1\nbackoff_max = "1s"\n'
                 '[component.health]\nhttp = "http://x/h"\ninterval = "1ms"\nbogus = 1\n'
                 '[[component]]\nname = "b"\ncommand = ["true"]\n[component.health]\ntimeout = "20s"\nexpect = 3\n')
    with pytest.raises(config.ConfigError) as e:
        config.load(p, check_system=False, check_commands=True)
    assert [line.removeprefix(f"{p}: ") for line in e.value.lines] == [
        'component[0].command: "/nonexistent/x" does not exist',
        'component[0].backoff_max: expected at least backoff_initial (5s); got "1s"',
        'component[0].stable_after: expected a duration such as "250ms", "10s", "5m"; got "0s"',
        "component[0].crash_loop_failures: expected an integer from 1 to 10000; got 0",
        'component[0].crash_loop_window: expected a duration such as "250ms", "10s", "5m"; got "0s"',
        "component[0].start_after: expected a list of strings; got [1]",
        'component[0].stop_signal: expected one of TERM, INT, QUIT, HUP, KILL, USR1, USR2, WINCH; got "FOO"',
        'component[0].stop_timeout: expected a duration such as "250ms", "10s", "5m"; got "0s"',
        "component[0].log_rate_limit: expected an integer from 0 to 1000000; got -1",
        "component[0].health: expected no health check for a oneshot component (it runs to exit)",
        "component[1].health: expected exactly one of http, command, airflow_job; got none",
        'component[1].health.expect: expected a table of "json.path" = "value"; got 3',
        "component[1].health.expect: expected only with http (it checks the JSON answer)",
        'component[1].health.timeout: expected at most interval (10s); got "20s"',
    ]


def test_the_reader_runs_nothing_and_version_detection_is_its_own_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from haflowd.airflow import version as airflow_version
    from haflowd.config import presets as steps

    asked: list[str] = []

    def detect(env: Any, run_fallback: bool = True) -> str:
        asked.append(env.get("PATH", ""))
        return "2.10.5"

    monkeypatch.setattr(airflow_version, "detect_version", detect)
    text = ('[[component]]\nname = "w"\npreset = "airflow-webserver"\nenvironment = { PATH = "/x" }\n'
            '[[component]]\nname = "s"\ncommand = ["true"]\n')
    parsed = reader.parse(text, tmp_path / "h.toml", check_system=True)
    assert asked == [] and parsed.errors.lines == []
    assert steps.detect_versions(parsed.components) == {0: "2.10.5"} and asked == ["/x"]
    p = tmp_path / "h.toml"
    p.write_text(text)
    web = config.load(p).components[0]
    assert web.command == ("airflow", "webserver") and asked == ["/x", "/x"]
    assert config.load(p, check_system=False).components[0].command == ("airflow", "webserver")
    assert asked == ["/x", "/x"]
