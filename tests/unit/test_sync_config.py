"""The [sync] section: defaults, the keys beyond the first contract (docs/reference.md), and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from haflowd import config
from haflowd.errors import ConfigError


def load(tmp_path: Path, body: str) -> config.Config:
    p = tmp_path / "haflowd.toml"
    p.write_text(f'[node]\nname = "n1"\ndata_dir = "{tmp_path}"\n[api]\n{body}')
    return config.load(p, check_system=False)


def errors(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, body)
    return [line.split(": ", 1)[1] for line in e.value.lines]


def test_defaults(tmp_path: Path) -> None:
    s = load(tmp_path, "[sync]\n").sync
    assert s is not None
    assert (s.port, s.probe_timeout, s.debounce_max, s.warn_after, s.critical_after) == (30865, 1.0, 5.0, 300.0, 1800.0)
    assert s.host_map == {} and s.peers == ()
    assert s.csync2_host("node2") == "node2"  # equal by default


def test_host_map_and_the_rest(tmp_path: Path) -> None:
    s = load(tmp_path, """[sync]
peers = ["node2", "node3"]
host_map = { node2 = "dags-b.example", node3 = "198.18.0.13" }
port = 30866
probe_timeout = "250ms"
debounce_max = "2s"
warn_after = "1m"
critical_after = "10m"
""").sync
    assert s is not None
    assert s.csync2_host("node2") == "dags-b.example" and s.csync2_host("node3") == "198.18.0.13"
    assert s.csync2_host("node4") == "node4"
    assert (s.port, s.probe_timeout, s.debounce_max, s.warn_after, s.critical_after) == (30866, 0.25, 2.0, 60.0, 600.0)
    assert hash(s) == hash(s)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('critical_after = "1m"\nwarn_after = "5m"',
         'sync.critical_after: expected at least warn_after (300s); got "1m"'),
        ('debounce = "10s"', "sync.debounce_max: expected at least debounce (10s); got 5s (the default)"),
        ('probe_timeout = "3m"', 'sync.probe_timeout: expected at most timeout (120s); got "3m"'),
        ("port = 0", "sync.port: expected an integer from 1 to 65535; got 0"),
        ('peers = ["node2", "node2"]', 'sync.peers[1]: duplicate peer "node2"'),
        ('peers = ["no spaces"]', "sync.peers: expected a list of node names (a name of letters, digits, '_', '.', "
                                  "'@' or '-' (at most 63)); got [\"no spaces\"]"),
        ('host_map = { node2 = "has space" }',
         'sync.host_map: expected a table of node name = "csync2 host name"; got a table'),
        ('host_map = ["node2"]', 'sync.host_map: expected a table of node name = "csync2 host name"; got ["node2"]'),
        ('hostmap = { a = "b" }', 'sync.hostmap: unknown key (did you mean "host_map"?)'),
    ],
)
def test_errors(tmp_path: Path, body: str, expected: str) -> None:
    assert expected in errors(tmp_path, f"[sync]\n{body}\n")
