"""haflowctl without a daemon: tables, human units, and the command line of docs/reference.md."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from haflowd import ctl
from haflowd.ctl import build_parser, components_table, human_age, human_bytes, peers_table, table


def cells(text: str, headers: list[str]) -> list[dict[str, str]]:
    """Read a rendered table back by the header's column positions (which also checks alignment)."""
    head, *rows = text.split("\n")
    starts = [head.index(h) for h in headers]
    assert starts == sorted(starts), "columns out of order"
    assert head.split() == " ".join(headers).split()
    out = []
    for line in rows:
        assert line == line.rstrip(), "trailing whitespace"
        row = {}
        for i, h in enumerate(headers):
            end = starts[i + 1] if i + 1 < len(headers) else None
            if end is not None:
                assert line[end - 2:end].strip() == "", f"{h} overflows into the next column: {line!r}"
            row[h] = line[starts[i]:end].strip()
        out.append(row)
    return out


# =========================================================================== table


def test_table_aligns_columns() -> None:
    text = table([["a", 1], ["longer", None], ["mid", 12345]], ["NAME", "N"])
    assert text == "\n".join([
        "NAME    N",
        "a       1",
        "longer  -",
        "mid     12345",
    ])


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (None, "-"),
        (True, "yes"),
        (False, "no"),
        (0, "0"),
        (42, "42"),
        (2.0, "2.0"),
        (0.06, "0.1"),
        (1234.56, "1234.6"),
        ("text with spaces", "text with spaces"),
        ("", ""),
    ],
)
def test_table_cells(value: Any, cell: str) -> None:
    [row] = cells(table([["x", value, "end"]], ["A", "B", "C"]), ["A", "B", "C"])
    assert row == {"A": "x", "B": cell, "C": "end"}


def test_table_without_rows_is_its_header() -> None:
    assert table([], ["NAME", "STATE", "PID"]) == "NAME  STATE  PID"


def test_table_header_wider_than_cells() -> None:
    assert table([[1, 2]], ["LONG HEADER", "X"]) == "LONG HEADER  X\n1            2"


def test_table_never_ends_a_line_with_spaces() -> None:
    text = table([["a", ""], ["bb", None], ["ccc", "z"]], ["K", "V"])
    assert all(line == line.rstrip() for line in text.split("\n"))


# =========================================================================== human units


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (None, "-"),
        (0, "0B"),
        (1, "1B"),
        (1023, "1023B"),
        (1024, "1.0KiB"),
        (1536, "1.5KiB"),
        (10 * 1024, "10.0KiB"),
        (1024**2, "1.0MiB"),
        (int(1.5 * 1024**2), "1.5MiB"),
        (300 * 1024**2, "300.0MiB"),
        (1024**3, "1.0GiB"),
        (5 * 1024**3, "5.0GiB"),
        (1024**4, "1024.0GiB"),  # GiB is the largest unit
    ],
)
def test_human_bytes(n: int | None, text: str) -> None:
    assert human_bytes(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0.0s"),
        (0.5, "0.5s"),
        (9.4, "9.4s"),
        (10, "10s"),
        (59.9, "59s"),
        (119.9, "119s"),
        (120, "2m00s"),
        (125, "2m05s"),
        (3599, "59m59s"),
        (7199, "119m59s"),
        (7200, "2h00m"),
        (7260, "2h01m"),
        (90061, "25h01m"),
        (172799, "47h59m"),
        (172800, "2d00h"),
        (3 * 86400 + 5 * 3600 + 59, "3d05h"),
        (400 * 86400, "400d00h"),
    ],
)
def test_human_age(seconds: float | None, text: str) -> None:
    assert human_age(seconds) == text


# =========================================================================== components and peers

COMPONENT_HEADERS = ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "HEALTH", "CPU", "RSS", "EXIT", "NOTE"]


@pytest.mark.parametrize(
    ("component", "row"),
    [
        (
            {"name": "scheduler", "state": "running", "pid": 1234, "uptime_s": 125.0, "restarts": 2,
             "healthy": True, "cpu_percent": 3.5, "rss_bytes": 1536 * 1024**2 // 1024, "last_exit_code": None,
             "note": "healthy: HTTP 200"},
            ["scheduler", "running", "1234", "2m05s", "2", "healthy", "3.5%", "1.5MiB", "-", "healthy: HTTP 200"],
        ),
        (
            {"name": "triggerer", "state": "fatal", "pid": None, "uptime_s": None, "restarts": 5,
             "healthy": False, "cpu_percent": 0.0, "rss_bytes": 0, "last_exit_code": 1,
             "note": "crash loop: 5 exits within 120s"},
            ["triggerer", "FATAL", "-", "-", "5", "UNHEALTHY", "0.0%", "0B", "1", "crash loop: 5 exits within 120s"],
        ),
        (
            {"name": "api-server", "state": "backoff", "pid": None, "uptime_s": None, "restarts": 1,
             "healthy": None, "cpu_percent": 0.0, "rss_bytes": 0, "last_exit_code": 3,
             "note": "restarting in 1.93s after exit code 3"},
            ["api-server", "BACKOFF", "-", "-", "1", "-", "0.0%", "0B", "3", "restarting in 1.93s after exit code 3"],
        ),
        (
            {"name": "worker", "state": "stopped", "pid": None, "uptime_s": None, "restarts": 0,
             "healthy": None, "cpu_percent": 0.0, "rss_bytes": 0, "last_exit_code": 0,
             "note": "exited: exit code 0; restart = never"},
            ["worker", "stopped", "-", "-", "0", "-", "0.0%", "0B", "0", "exited: exit code 0; restart = never"],
        ),
        (
            {"name": "bare", "state": "starting"},  # every optional key missing
            ["bare", "starting", "-", "-", "-", "-", "0.0%", "-", "-", ""],
        ),
    ],
)
def test_components_table_row(component: dict[str, Any], row: list[str]) -> None:
    [got] = cells(components_table([component]), COMPONENT_HEADERS)
    assert list(got.values()) == row


def test_components_table_aligns_many_rows() -> None:
    comps = [
        {"name": "a", "state": "running", "pid": 1, "uptime_s": 5.0, "restarts": 0, "healthy": True,
         "cpu_percent": 100.0, "rss_bytes": 5 * 1024**3, "last_exit_code": None, "note": "x"},
        {"name": "a-much-longer-name", "state": "stopping", "pid": 123456, "uptime_s": 200000.0, "restarts": 1000,
         "healthy": None, "cpu_percent": 0.25, "rss_bytes": 12, "last_exit_code": 143, "note": "sent SIGTERM"},
    ]
    rows = cells(components_table(comps), COMPONENT_HEADERS)
    assert [r["NAME"] for r in rows] == ["a", "a-much-longer-name"]
    assert [r["UPTIME"] for r in rows] == ["5.0s", "2d07h"]
    assert [r["RSS"] for r in rows] == ["5.0GiB", "12B"]
    assert [r["CPU"] for r in rows] == ["100.0%", "0.2%"]


def test_components_table_empty() -> None:
    assert components_table([]) == "  ".join(COMPONENT_HEADERS)


PEER_HEADERS = ["NAME", "ADDRESS", "STATUS", "INCARNATION", "LAST SEEN", "RTT", "VERSION"]


@pytest.mark.parametrize(
    ("peer", "row"),
    [
        (
            {"name": "node1", "address": "10.0.0.1:7946", "status": "alive", "incarnation": 3,
             "last_seen_s": 0.0, "self": True, "rtt_ms": None},
            ["node1 (self)", "10.0.0.1:7946", "alive", "3", "0.0s", "-", "-"],
        ),
        (
            {"name": "node2", "address": "10.0.0.2:7946", "status": "suspect", "incarnation": 7,
             "last_seen_s": 4.5, "self": False, "rtt_ms": 1.234, "version": "0.2.0"},
            ["node2", "10.0.0.2:7946", "suspect", "7", "4.5s", "1.2ms", "0.2.0"],
        ),
        (
            {"name": "node3", "address": "[fd00::3]:7946", "status": "dead", "incarnation": 0,
             "last_seen_s": 3700.0, "rtt_ms": 12},
            ["node3", "[fd00::3]:7946", "dead", "0", "61m40s", "12.0ms", "-"],
        ),
        (
            {"name": "node4", "address": "node4.example:7946", "status": "left", "incarnation": 2,
             "last_seen_s": None},
            ["node4", "node4.example:7946", "left", "2", "-", "-", "-"],
        ),
    ],
)
def test_peers_table_row(peer: dict[str, Any], row: list[str]) -> None:
    [got] = cells(peers_table([peer]), PEER_HEADERS)
    assert list(got.values()) == row


def test_peers_table_aligns_many_rows() -> None:
    peers = [
        {"name": "n1", "address": "a:1", "status": "alive", "incarnation": 1, "last_seen_s": 0.1, "self": True},
        {"name": "a-long-node-name", "address": "192.168.100.200:7946", "status": "suspect",
         "incarnation": 123456, "last_seen_s": 42.0, "rtt_ms": 0.4},
    ]
    rows = cells(peers_table(peers), PEER_HEADERS)
    assert [r["NAME"] for r in rows] == ["n1 (self)", "a-long-node-name"]
    assert [r["INCARNATION"] for r in rows] == ["1", "123456"]
    assert [r["LAST SEEN"] for r in rows] == ["0.1s", "42s"]


# =========================================================================== the command line

# (the arguments after `haflowctl`, without --json) → what the parser must produce
COMMAND_LINES: list[tuple[list[str], dict[str, Any]]] = [
    (["peers"], {"command": "peers"}),
    (["status"], {"command": "status", "cluster": False}),
    (["status", "--cluster"], {"command": "status", "cluster": True}),
    (["health"], {"command": "health", "cluster": False}),
    (["health", "--cluster"], {"command": "health", "cluster": True}),
    (["components"], {"command": "components"}),
    (["restart", "scheduler"], {"command": "restart", "name": "scheduler"}),
    (["stop", "scheduler"], {"command": "stop", "name": "scheduler"}),
    (["start", "scheduler"], {"command": "start", "name": "scheduler"}),
    (["start", "celery worker"], {"command": "start", "name": "celery worker"}),
    (["sync"], {"command": "sync", "now": False}),
    (["sync", "--now"], {"command": "sync", "now": True}),
    (["reload"], {"command": "reload"}),
    (["leave"], {"command": "leave"}),
]

def _with_json(args: list[str], where: str) -> list[str]:
    return {"none": args, "after": [*args, "--json"], "before": ["--json", *args]}[where]


def _parse_cases() -> list[Any]:
    out = []
    for args, expected in COMMAND_LINES:
        for where in ("none", "after", "before"):
            out.append(pytest.param(_with_json(args, where), {**expected, "json": where != "none"},
                                    id=f"{'-'.join(args)}:json-{where}"))
    return out


@pytest.mark.parametrize(("argv", "expected"), _parse_cases())
def test_parser_accepts_every_documented_command(argv: list[str], expected: dict[str, Any]) -> None:
    a = build_parser().parse_args(argv)
    assert {k: getattr(a, k) for k in expected} == expected
    assert a.command in ctl.COMMANDS


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "--api", "http://10.0.0.1:8787", "peers"],
        ["--api", "http://10.0.0.1:8787", "peers", "--json"],
        ["--api", "http://10.0.0.1:8787", "--json", "peers"],
        ["--json", "--api", "http://10.0.0.1:8787", "peers", "--json"],
    ],
)
def test_json_with_global_options(argv: list[str]) -> None:
    a = build_parser().parse_args(argv)
    assert (a.command, a.api, a.json) == ("peers", "http://10.0.0.1:8787", True)


def test_parser_global_options() -> None:
    a = build_parser().parse_args(["--api", "http://h:1", "--socket", "/tmp/s", "--config", "/etc/x.toml",
                                   "--timeout", "2.5", "components"])
    assert (a.api, a.socket, a.config, a.timeout, a.command) == ("http://h:1", "/tmp/s", "/etc/x.toml", 2.5,
                                                                 "components")
    assert build_parser().parse_args(["peers"]).timeout is None  # main() picks 10 s or 900 s by command


def test_every_parser_command_has_a_handler() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(ctl.COMMANDS)
    assert set(ctl.COMMANDS) == {"peers", "status", "health", "components", "restart", "stop", "start", "sync",
                                 "reload", "leave", "doctor", "logs", "events", "force-leave",
                                 "drain", "undrain"}


@pytest.mark.parametrize(
    "argv",
    [[], ["bogus"], ["restart"], ["stop"], ["start"], ["restart", "a", "b"], ["peers", "--now"],
     ["sync", "--cluster"], ["--timeout", "soon", "peers"]],
)
def test_parser_rejects(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    assert "usage: haflowctl" in capsys.readouterr().err


# =========================================================================== main's argument handling (no daemon)


@pytest.fixture
def handled(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[argparse.Namespace]:
    """Every command handler replaced by one that records its arguments; no config is found."""
    seen: list[argparse.Namespace] = []

    def record(_client: ctl.Client, a: argparse.Namespace) -> int:
        seen.append(a)
        return 0

    for name in ctl.COMMANDS:
        monkeypatch.setitem(ctl.COMMANDS, name, record)
    for var in ("HAFLOWD_API", "HAFLOWD_CONTROL_SOCKET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HAFLOWD_CONFIG", str(tmp_path / "absent.toml"))
    return seen


def test_status_cluster_is_health_cluster(handled: list[argparse.Namespace]) -> None:
    assert ctl.main(["status", "--cluster"]) == 0
    [a] = handled
    assert (a.command, a.cluster) == ("health", True)


@pytest.mark.parametrize(
    ("argv", "timeout"),
    [
        (["reload"], 900.0),  # mutations may wait out a long stop_timeout
        (["leave"], 900.0),
        (["sync", "--now"], 900.0),
        (["peers"], 10.0),
        (["--timeout", "5", "reload"], 5.0),
        (["--timeout", "5", "peers"], 5.0),
        (["--timeout=5", "reload"], 5.0),
    ],
)
def test_timeout(argv: list[str], timeout: float, handled: list[argparse.Namespace]) -> None:
    assert ctl.main(argv) == 0
    [a] = handled
    assert a.timeout == timeout


def test_client_never_goes_through_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.request

    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    client = ctl.Client("http://127.0.0.1:8787", "/run/haflowd/control.sock", 1.0)
    # urllib's default opener would carry a ProxyHandler holding the variables above
    assert urllib.request.build_opener().handlers[0].proxies  # type: ignore[attr-defined]
    assert not [h for h in client._opener.handlers if getattr(h, "proxies", None)]
