"""The pure helpers of a supervised child: output rate limit, JSON health verdict, exit text,
the probe output tail, and what children.json may be trusted with."""

from __future__ import annotations

import json
import signal

import pytest

from haflowd.supervisor.child import (
    LineLimiter,
    OutputTail,
    _describe_exit,
    _json_or_none,
    _json_verdict,
    _status_summary,
    _under,
    child_environment,
)
from haflowd.supervisor.policy import ExitInfo
from haflowd.supervisor.supervisor import parse_state
from haflowd.testing import FakeClock

# =========================================================================== LineLimiter


@pytest.mark.parametrize("rate", [1, 2, 5, 200])
def test_a_burst_of_rate_lines_then_drops(rate: int) -> None:
    clock = FakeClock()
    limiter = LineLimiter(rate, clock)
    assert [limiter.allow() for _ in range(rate)] == [(True, 0)] * rate
    assert [limiter.allow() for _ in range(3)] == [(False, 0)] * 3
    assert limiter.dropped == 3

    clock.advance(1.0)
    assert limiter.allow() == (True, 3)  # the drops are reported once, on the next line that gets through
    assert limiter.dropped == 0
    assert [limiter.allow() for _ in range(rate - 1)] == [(True, 0)] * (rate - 1)
    assert limiter.allow() == (False, 0)


@pytest.mark.parametrize(
    ("rate", "advance", "allowed"),
    [
        (4, 0.25, 1),  # one line's worth of tokens
        (4, 0.5, 2),
        (4, 0.1, 0),
        (4, 1.0, 4),
        (4, 100.0, 4),  # the bucket holds at most ``rate`` tokens
        (10, 0.5, 5),
        (1, 0.5, 0),
        (1, 1.0, 1),
    ],
)
def test_tokens_refill_with_time(rate: int, advance: float, allowed: int) -> None:
    clock = FakeClock()
    limiter = LineLimiter(rate, clock)
    for _ in range(rate):
        assert limiter.allow()[0]
    assert limiter.allow() == (False, 0)
    clock.advance(advance)
    got = [limiter.allow() for _ in range(rate + 2)]
    assert [ok for ok, _ in got] == [True] * allowed + [False] * (rate + 2 - allowed)
    if allowed:
        assert got[0] == (True, 1)


def test_a_quiet_child_cannot_save_up_more_than_a_burst() -> None:
    clock = FakeClock()
    limiter = LineLimiter(3, clock)
    clock.advance(3600)
    assert [limiter.allow()[0] for _ in range(5)] == [True, True, True, False, False]


def test_drops_accumulate_until_reported() -> None:
    clock = FakeClock()
    limiter = LineLimiter(2, clock)
    limiter.allow()
    limiter.allow()
    for _ in range(10):
        assert limiter.allow() == (False, 0)
    assert limiter.dropped == 10
    clock.advance(0.25)  # half a line's worth of tokens: still dropping
    assert limiter.allow() == (False, 0)
    clock.advance(0.5)
    assert limiter.allow() == (True, 11)
    assert limiter.dropped == 0
    assert limiter.allow() == (False, 0)


@pytest.mark.parametrize("rate", [0, -1])
def test_rate_zero_is_unlimited(rate: int) -> None:
    clock = FakeClock()
    limiter = LineLimiter(rate, clock)
    assert all(limiter.allow() == (True, 0) for _ in range(10_000))
    assert limiter.dropped == 0


# =========================================================================== _json_verdict


@pytest.mark.parametrize(
    ("body", "verdict"),
    [
        (b'{"status": "unhealthy"}', "unhealthy"),
        (b'{"status": "down"}', "down"),
        (b'{"status": "fail"}', "fail"),
        (b'{"status": "failed"}', "failed"),
        (b'{"status": "failing"}', "failing"),
        (b'{"status": "error"}', "error"),
        (b'{"status": "critical"}', "critical"),
        (b'{"status": "dead"}', "dead"),
        (b'{"status": "DOWN"}', "DOWN"),  # case-insensitive; reported as the body said it
        (b'{"status": " Unhealthy\\n"}', " Unhealthy\n"),
        (b'{"status": "down", "details": {"db": "ok"}}', "down"),
        (b'  {"status":"fail"}  \n', "fail"),
        ('{"status": "unhealthy", "note": "é"}'.encode(), "unhealthy"),
    ],
)
def test_json_verdict_unhealthy(body: bytes, verdict: str) -> None:
    assert _json_verdict(_json_or_none(body)) == f"the body says {verdict!r}"


@pytest.mark.parametrize(
    "body",
    [
        b'{"status": "healthy"}',
        b'{"status": "ok"}',
        b'{"status": "OK"}',
        b'{"status": "up"}',
        b'{"status": "pass"}',
        b'{"status": "passing"}',
        b'{"status": "degraded"}',
        b'{"status": ""}',
        b'{"status": null}',
        b'{"status": 0}',
        b'{"status": false}',
        b'{"status": ["down"]}',
        b'{"status": {"status": "down"}}',
        b'{"state": "down"}',
        b"{}",
        # nested statuses are not ours to judge (Airflow's monitor/health reports other components)
        b'{"metadatabase": {"status": "unhealthy"}, "scheduler": {"status": "unhealthy"}}',
        b'[{"status": "down"}]',
        b'["down"]',
        b'"down"',
        b"1",
        b"null",
        b"",
        b"OK",
        b"<html>down</html>",
        b'{"status": "down"',  # truncated
        b"\xff\xfe\x00garbage",
    ],
)
def test_json_verdict_none(body: bytes) -> None:
    assert _json_verdict(_json_or_none(body)) is None


@pytest.mark.parametrize("body", [b"[" * 65536, b'{"a":' * 20000])
def test_json_verdict_survives_deep_nesting(body: bytes) -> None:
    assert _json_verdict(_json_or_none(body), {"a.b": "x"}) == 'a.b is null, expected "x"'


AIRFLOW_HEALTH = (b'{"metadatabase":{"status":"healthy"},"scheduler":{"status":"unhealthy",'
                  b'"latest_scheduler_heartbeat":null},"triggerer":{"status":null}}')
META = {"metadatabase.status": "healthy"}


@pytest.mark.parametrize(
    ("body", "expect", "verdict"),
    [
        # Airflow's api-server: its own database matters, another component's state does not
        (AIRFLOW_HEALTH, META, None),
        (b'{"metadatabase":{"status":"unhealthy"}}', META, 'metadatabase.status is "unhealthy", expected "healthy"'),
        (b'{"scheduler":{"status":"healthy"}}', META, 'metadatabase.status is null, expected "healthy"'),
        (b'{"metadatabase":"healthy"}', META, 'metadatabase.status is null, expected "healthy"'),
        (b"not json", META, 'metadatabase.status is null, expected "healthy"'),
        (b'{"a":{"b":true}}', {"a.b": "true"}, None),
        (b'{"a":{"b":3}}', {"a.b": "3"}, None),
        (b'{"a":{"b":3}}', {"a.b": "4"}, 'a.b is 3, expected "4"'),
        (b'{"status":"down","a":"x"}', {"a": "x"}, "the body says 'down'"),
    ],
)
def test_json_verdict_expect(body: bytes, expect: dict[str, str], verdict: str | None) -> None:
    assert _json_verdict(_json_or_none(body), expect) == verdict


def test_status_summary_names_each_part() -> None:
    assert _status_summary(_json_or_none(AIRFLOW_HEALTH)) == (
        "metadatabase=healthy scheduler=unhealthy triggerer=None")
    assert _status_summary([1]) == ""


# =========================================================================== _describe_exit


@pytest.mark.parametrize(
    ("info", "text"),
    [
        (ExitInfo(uptime=0.0, spawn_failed=True), "could not start"),
        (ExitInfo(uptime=0.0, code=127, spawn_failed=True), "could not start"),
        (ExitInfo(uptime=5.0, signal=int(signal.SIGTERM), unhealthy=True), "killed after failing its health check"),
        (ExitInfo(uptime=5.0, code=0, unhealthy=True), "killed after failing its health check"),
        (ExitInfo(uptime=5.0, signal=int(signal.SIGKILL)), "killed by SIGKILL"),
        (ExitInfo(uptime=5.0, signal=int(signal.SIGTERM)), "killed by SIGTERM"),
        (ExitInfo(uptime=5.0, signal=int(signal.SIGSEGV)), "killed by SIGSEGV"),
        (ExitInfo(uptime=5.0, signal=200), "killed by 200"),
        (ExitInfo(uptime=5.0), "lost"),
        (ExitInfo(uptime=5.0, code=0), "exit code 0"),
        (ExitInfo(uptime=5.0, code=1), "exit code 1"),
        (ExitInfo(uptime=5.0, code=137), "exit code 137"),
    ],
)
def test_describe_exit(info: ExitInfo, text: str) -> None:
    assert _describe_exit(info) == text


# =========================================================================== OutputTail


def test_output_tail_keeps_the_last_bytes_only() -> None:
    tail = OutputTail(16)
    for _ in range(10_000):
        tail.feed(b"x" * 1000)
    tail.feed(b"\nall good\n")
    assert len(tail.buf) == 16 and tail.total == 10_000_010
    assert tail.last_line() == "all good"


@pytest.mark.parametrize(
    ("chunks", "last"),
    [
        ([], ""),
        ([b"\n\n  \n"], ""),
        ([b"one\ntwo"], "two"),
        ([b"one\ntw", b"o\n"], "two"),
        ([b"\xff\xfe broken \xff\n"], "\ufffd\ufffd broken \ufffd"),
        ([b"y" * 500], "y" * 200),  # a long last line is cut to 200 characters
    ],
)
def test_output_tail_last_line(chunks: list[bytes], last: str) -> None:
    tail = OutputTail(65536)
    for c in chunks:
        tail.feed(c)
    assert tail.last_line() == last


# =========================================================================== children.json

MARKER = "n1:/var/lib/haflowd"
BOOT = "b0b0b0b0-0000-4000-8000-000000000000"
STARTS = {100: 5000.0, 200: 5001.0}


def state(**over: object) -> str:
    base: dict[str, object] = {
        "version": 2, "boot_id": BOOT, "daemon_pid": 42, "marker": MARKER,
        "children": {"a": {"guard_pid": 100, "guard_start": 5000.0, "pid": 200, "pid_start": 5001.0}},
    }
    base.update(over)
    return json.dumps(base)


def parse(text: str, me: int = 7) -> tuple[dict[int, float], str | None]:
    return parse_state(text, MARKER, BOOT, me, start_time=STARTS.get)


def test_records_that_still_name_our_processes() -> None:
    assert parse(state()) == ({100: 5000.0, 200: 5001.0}, None)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{", "not valid JSON"),
        ("", "not valid JSON"),
        ("[" * 100_000, "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ("null", "not a JSON object"),
        (state(marker="n2:/var/lib/haflowd"), "written by another node or data_dir ('n2:/var/lib/haflowd')"),
        (state(marker=None), "written by another node or data_dir ('None')"),
        (state(children=[{"pid": 200}]), "children is not an object of records"),
        (state(children={"a": 200}), "children is not an object of records"),
        (state(version=None), "an older format, without boot and start times to prove a pid is still ours"),
        (state(boot_id="another"), "written before the last reboot"),
        (state(boot_id=None), "written before the last reboot"),
    ],
)
def test_a_state_file_that_cannot_be_trusted_says_why(text: str, why: str) -> None:
    assert parse(text) == ({}, why)


@pytest.mark.parametrize(
    "record",
    [
        {"pid": 200, "pid_start": 4000.0},  # the pid was reused by a later process
        {"pid": 300, "pid_start": 5001.0},  # gone
        {"pid": "200", "pid_start": 5001.0},
        {"pid": True, "pid_start": 5001.0},
        {"pid": 1, "pid_start": 5001.0},
        {"pid": -200, "pid_start": 5001.0},
        {"pid": 200, "pid_start": None},
        {"pid": 200, "pid_start": "5001"},
        {"pid": 200},
        {},
    ],
)
def test_a_record_that_does_not_prove_the_pid_is_ours_is_dropped(record: dict[str, object]) -> None:
    assert parse(state(children={"a": record})) == ({}, None)


def test_start_times_equal_within_the_clock_tick() -> None:
    assert parse(state(children={"a": {"pid": 200, "pid_start": 5001.04}})) == ({200: 5001.04}, None)
    assert parse(state(children={"a": {"pid": 200, "pid_start": 5001.2}})) == ({}, None)


def test_our_own_file_from_this_run_is_no_record_of_leftovers() -> None:
    assert parse(state(), me=42) == ({}, None)


def test_no_boot_id_trusts_no_record() -> None:
    assert parse_state(state(), MARKER, None, 7, start_time=STARTS.get) == ({}, "written before the last reboot")


# =========================================================================== _under (the orphan scan's exclusion)

PARENTS = {10: 1, 11: 10, 12: 11, 20: 1, 21: 20, 30: 0}


@pytest.mark.parametrize(
    ("pid", "tops", "under"),
    [
        (12, {10}, True),  # a grandchild of a live guard is that guard's, not an orphan
        (11, {10}, True),
        (10, {10}, True),
        (21, {10}, False),
        (20, set(), False),
        (30, {10}, False),  # parent unknown
        (99, {10}, False),  # not in the map
    ],
)
def test_under(pid: int, tops: set[int], under: bool) -> None:
    assert _under(pid, frozenset(tops), PARENTS) is under


def test_under_survives_a_cycle() -> None:
    assert _under(5, frozenset({99}), {5: 6, 6: 5}) is False


def test_what_addresses_the_daemon_alone_is_not_passed_to_children() -> None:
    """systemd's notify socket and watchdog, and the journal stream that names the daemon's
    stdout: a child that saw them could send READY=1 for us, or put journald priority
    prefixes into its own output (its stdout is a pipe to the daemon, not the journal)."""
    base = {"PATH": "/usr/bin", "NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2",
            "JOURNAL_STREAM": "8:123", "AIRFLOW_HOME": "/opt/airflow"}
    assert child_environment(base) == {"PATH": "/usr/bin", "AIRFLOW_HOME": "/opt/airflow"}
