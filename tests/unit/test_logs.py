"""The log: secrets masked at any depth, no frame locals, and a log call that never raises
or blocks whatever happens to the output (issue 15 #4 and #8)."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from haflowd import logs

SECRET = "hunter2-Pw"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure() changes structlog and the stdlib root logger: both come back after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        logs.REDACTOR.set([])
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
def captured() -> io.StringIO:
    """A JSON log into a StringIO, with SECRET known to the redactor."""
    buf = io.StringIO()
    logs.configure("json", node="n1", stream=buf)
    logs.REDACTOR.set([SECRET])
    return buf


def event(out: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The one line with this event (a library may log something of its own meanwhile)."""
    found = [e for e in out if e.get("event") == name]
    assert len(found) == 1, out
    return found[0]


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    flush = getattr(logs, "flush", None)  # the log is written by a thread now
    if flush is not None:
        assert flush(5.0)
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_secrets_are_masked_at_any_depth(captured: io.StringIO) -> None:
    log = structlog.get_logger()
    log.info("deep", items=["x", f"dsn password={SECRET}"], nested={"a": {"b": (SECRET, 1)}},
             error=ValueError(f"auth failed for {SECRET}"), where={SECRET: "as a key"})
    out = lines(captured)
    text = captured.getvalue()
    assert SECRET not in text, text
    ev = event(out, "deep")
    assert ev["items"][1] == "dsn password=***"
    assert ev["nested"]["a"]["b"][0] == "***"
    assert "***" in ev["error"]


def _fail_with_a_secret_in_a_local() -> None:
    password = SECRET  # noqa: F841  (a frame local that must never be rendered)
    marker_local = "visible-local-value"  # noqa: F841
    raise RuntimeError(f"cannot connect with postgresql://u:{SECRET}@db/x")


def test_tracebacks_carry_no_locals_and_no_secret(captured: io.StringIO) -> None:
    try:
        _fail_with_a_secret_in_a_local()
    except RuntimeError:
        structlog.get_logger().exception("crashed")
    out = lines(captured)
    text = captured.getvalue()
    assert SECRET not in text
    assert "visible-local-value" not in text, "frame locals reached the log"
    assert event(out, "crashed")["exception"][0]["exc_type"] == "RuntimeError"


def test_console_tracebacks_carry_no_secret() -> None:
    buf = io.StringIO()
    logs.configure("console", node="n1", stream=buf)
    logs.REDACTOR.set([SECRET])
    try:
        _fail_with_a_secret_in_a_local()
    except RuntimeError:
        structlog.get_logger().exception("crashed", detail=[SECRET])
    getattr(logs, "flush", lambda _t: True)(5.0)
    text = buf.getvalue()
    assert "RuntimeError" in text and SECRET not in text and "visible-local-value" not in text


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_a_log_call_never_raises(captured: io.StringIO) -> None:
    """A value that cannot be rendered gives a line saying so, not an exception in the caller
    (the caller may be the SIGTERM handler)."""
    structlog.get_logger().info("odd", value=Unprintable())
    out = lines(captured)
    assert event(out, "log_render_failed")["original_event"] == "odd"


def test_request_stop_stops_even_when_logging_fails(tmp_path: Any) -> None:
    """SIGTERM was ignored when the log call in request_stop raised before ``_stop.set()``."""
    from haflowd import config
    from haflowd.daemon import Daemon

    p = tmp_path / "h.toml"
    p.write_text(f'[node]\ndata_dir = "{tmp_path}"\n[api]\ncontrol_socket = "{tmp_path}/c.sock"\n')
    d = Daemon(config.load(p, check_system=False))

    class Broken:
        def info(self, *_a: Any, **_k: Any) -> None:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    d.log = Broken()
    with contextlib.suppress(OSError):
        d.request_stop(signal.SIGTERM)
    assert d._stop.is_set()


# --------------------------------------------------------------------------- the sink


class FakeOutput:
    """A write() that fails with ``error`` or blocks until released, as told."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.error: int | None = None
        self.open = threading.Event()
        self.open.set()
        self.calls = 0

    def __call__(self, _fd: int, data: memoryview) -> int:
        self.calls += 1
        if not self.open.wait(10):
            raise AssertionError("the test never released the output")
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        self.data += bytes(data)
        return len(data)

    def lines(self) -> list[str]:
        return self.data.decode().splitlines()


def notice(lost: int) -> str:
    return f"LOST {lost}"


def wait_for(cond: Any, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def test_a_stalled_output_never_blocks_and_says_what_it_lost() -> None:
    out = FakeOutput()
    out.open.clear()
    sink = logs.LogSink(write=out, max_lines=10, notice=notice)
    sink.put("first")
    wait_for(lambda: out.calls == 1, "the writer to be stuck in write()")
    t0 = time.monotonic()
    for i in range(1000):
        sink.put(f"line {i}")
    assert time.monotonic() - t0 < 1.0, "put() waited for the output"
    assert sink.dropped["queue_full"] == 990
    assert not sink.flush(0.05), "a stuck output cannot be flushed"
    out.open.set()
    assert sink.flush(5.0)
    assert out.lines() == ["first", "LOST 990"] + [f"line {i}" for i in range(10)]
    assert sink.written == 11


@pytest.mark.parametrize("error", [errno.EPIPE, errno.EBADF, errno.ENOSPC, errno.EIO])
def test_a_broken_output_is_counted_and_the_loss_told_when_it_recovers(error: int) -> None:
    out = FakeOutput()
    out.error = error
    sink = logs.LogSink(write=out, notice=notice)
    for i in range(5):
        sink.put(f"lost {i}")
        assert sink.flush(5.0)
    name = errno.errorcode[error]
    assert sink.write_errors[name] >= 1
    assert sink.dropped["write_error"] == 5
    out.error = None
    sink.put("back")
    assert sink.flush(5.0)
    assert out.lines() == ["LOST 5", "back"]


def test_dev_full_is_counted_not_raised() -> None:
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        sink = logs.LogSink(fd=fd, notice=notice)
        for i in range(3):
            sink.put(f"line {i}")
        assert sink.flush(5.0)
        assert sink.write_errors["ENOSPC"] >= 1 and sink.dropped["write_error"] == 3
    finally:
        os.close(fd)


def test_partial_writes_are_completed() -> None:
    got = bytearray()

    def dribble(_fd: int, data: memoryview) -> int:
        got.extend(bytes(data[:3]))
        return min(3, len(data))

    sink = logs.LogSink(write=dribble, notice=notice)
    sink.put("a line longer than three bytes")
    assert sink.flush(5.0)
    assert got == b"a line longer than three bytes\n"


def test_library_logging_goes_through_the_redactor(captured: io.StringIO, capsys: Any) -> None:
    """asyncio and aiohttp log through the stdlib: their tracebacks became bare text on stderr."""
    try:
        raise ConnectionError(f"peer said {SECRET}")
    except ConnectionError as e:
        logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=e)
    out = lines(captured)
    assert [e for e in out if e["event"] == "library_log" and e["logger"] == "asyncio"
            and e["message"] == "Task exception was never retrieved"], out
    assert SECRET not in captured.getvalue()
    assert "Traceback" not in capsys.readouterr().err


def test_masking_never_breaks_a_json_line(captured: io.StringIO) -> None:
    """Masks are applied to values before they are encoded: a mask never cuts a JSON escape."""
    logs.REDACTOR.set([SECRET, "ends-with\\", "n12345"])
    log = structlog.get_logger()
    log.info("q", line='password=abc", more', other="path ends-with\\", esc="a\n12345 b")
    out = lines(captured)
    ev = event(out, "q")
    assert ev["line"] == 'password=***", more'
    assert ev["other"] == "path ***"
    assert ev["esc"] == "a\n12345 b"
