"""Under journald every log line starts with its syslog priority (sd-daemon(3)), so that
`journalctl -p err` and `-p warning` find haflowd's errors and warnings (issue 17)."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from haflowd import logs


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        logs.REDACTOR.set([])
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize(("level", "priority"), [
    ("emergency", 0), ("alert", 1), ("critical", 2), ("fatal", 2), ("CRITICAL", 2),
    ("error", 3), ("exception", 3), ("err", 3), ("warning", 4), ("warn", 4),
    ("notice", 5), ("info", 6), ("debug", 7),
    ("", 6), ("verbose", 6), ("trace", 6),  # unknown: info, never dropped or an error
])
def test_syslog_priority(level: str, priority: int) -> None:
    assert logs.syslog_priority(level) == priority
    assert logs.journal_prefix(level) == f"<{priority}>"


@pytest.mark.parametrize(("value", "parsed"), [
    ("8:12345", (8, 12345)),
    (" 0:7 ", (0, 7)),
    (None, None), ("", None), ("8", None), ("8:", None), (":9", None),
    ("a:1", None), ("1:b", None), ("-1:2", None), ("1:2:3", None),
])
def test_parse_journal_stream(value: str | None, parsed: tuple[int, int] | None) -> None:
    assert logs.parse_journal_stream(value) == parsed


def test_journal_stream_must_name_this_descriptor(tmp_path: Path) -> None:
    """The variable is inherited by whatever a service starts; only a match of device and
    inode says that this descriptor is the journal."""
    with open(tmp_path / "a", "w") as a, open(tmp_path / "b", "w") as b:
        fd = a.fileno()
        st = os.fstat(fd)
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert logs.is_journal_stream(a.fileno(), env)
        assert not logs.is_journal_stream(b.fileno(), env)
        assert not logs.is_journal_stream(a.fileno(), {})
        assert not logs.is_journal_stream(a.fileno(), {"JOURNAL_STREAM": "garbage"})
    assert not logs.is_journal_stream(fd, env)  # closed


def _lines(buf: io.StringIO) -> list[str]:
    assert logs.flush(5.0)
    return buf.getvalue().splitlines()


def _split(line: str) -> tuple[int, dict[str, object]]:
    assert line.startswith("<") and line[2] == ">", line
    return int(line[1]), json.loads(line[3:])


def test_each_line_starts_with_its_priority() -> None:
    buf = io.StringIO()
    logs.configure("json", node="n1", level="debug", stream=buf, journal=True)
    log = structlog.get_logger().bind(component="scheduler")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("x")
    logging.getLogger("aiohttp.server").error("from a library")
    got = {ev["event"]: prio for prio, ev in map(_split, _lines(buf))}
    assert got == {"d": 7, "i": 6, "w": 4, "e": 3, "c": 2, "x": 3, "library_log": 3}


def test_the_prefix_is_outside_the_json() -> None:
    """journald strips it: `journalctl -o cat | jq` reads plain JSON, fields as before."""
    buf = io.StringIO()
    logs.configure("json", node="n1", stream=buf, journal=True)
    structlog.get_logger().bind(component="scheduler").info("output", stream="stderr", line="x")
    prio, ev = _split(_lines(buf)[0])
    assert prio == 6
    assert ev["component"] == "scheduler" and ev["stream"] == "stderr" and ev["level"] == "info"


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_a_line_that_cannot_be_rendered_is_an_error() -> None:
    buf = io.StringIO()
    logs.configure("json", node="n1", stream=buf, journal=True)
    structlog.get_logger().info("odd", value=Unprintable())
    prio, ev = _split(_lines(buf)[0])
    assert (prio, ev["event"], ev["original_event"]) == (3, "log_render_failed", "odd")


def test_lost_lines_notice_is_a_warning() -> None:
    logs.configure("json", node="n1", stream=io.StringIO(), journal=True)
    prio, ev = _split(logs.SINK.notice(12))
    assert (prio, ev["event"], ev["lines"]) == (4, "log_lines_lost", 12)


def test_console_format_gets_the_prefix_too() -> None:
    buf = io.StringIO()
    logs.configure("console", node="n1", stream=buf, journal=True)
    structlog.get_logger().warning("careful")
    line = _lines(buf)[0]
    assert line.startswith("<4>") and "careful" in line


def test_no_prefix_outside_the_journal() -> None:
    """A terminal, a file or a pipe nobody named in JOURNAL_STREAM gets plain JSON lines."""
    buf = io.StringIO()
    logs.configure("json", node="n1", stream=buf)
    structlog.get_logger().error("e")
    assert json.loads(_lines(buf)[0])["event"] == "e"
