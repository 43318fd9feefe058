"""structlog set-up: JSON lines on stdout (journald keeps them), or a console format.

Every line carries ``event``, ``level``, ``timestamp`` and ``node``. Known secrets
are masked at any depth of every value, in exception texts and tracebacks (which never
carry frame locals), as a last line of defence: a child that prints its DSN does not
put the password in our log.

Logging is best effort and never blocks or raises: a line goes into a bounded queue
that one thread writes to stdout. A closed (EPIPE, EBADF), full (ENOSPC) or slow output
(a stalled journald, a pipe nobody reads) loses lines, counted in ``LogSink.dropped``
and ``LogSink.write_errors`` (the metrics ``haflowd_log_dropped_total`` and
``haflowd_log_write_errors_total``); once the output takes lines again, a
``log_lines_lost`` line says how many were lost. Supervision and shutdown never wait
for the log.

Under journald (``JOURNAL_STREAM`` names the log's descriptor) every line starts with its
syslog priority, ``<3>`` for an error, ``<4>`` a warning, ``<6>`` info (sd-daemon(3)):
journald strips it and files the line at that priority, so ``journalctl -p warning``
finds warnings and errors.
"""

from __future__ import annotations

import collections
import datetime as dt
import errno
import json
import logging
import os
import select
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from haflowd.journal import is_journal_stream, journal_prefix, parse_journal_stream, syslog_priority
from haflowd.secrets import MASK, Scrubber

__all__ = ["MASK", "REDACTOR", "SINK", "LogSink", "Redactor", "configure", "flush", "is_journal_stream",
           "journal_prefix", "parse_journal_stream", "syslog_priority"]

MAX_DEPTH = 8
MAX_QUEUE_LINES = 10_000
MAX_QUEUE_BYTES = 4 * 2**20
BATCH_BYTES = 64 * 2**10
FLUSH_AT_EXIT_S = 2.0


class Redactor:
    """The structlog processor that masks secrets in every value, at any depth."""

    def __init__(self) -> None:
        self.scrubber = Scrubber(())

    @property
    def secrets(self) -> frozenset[str]:
        return self.scrubber.secrets

    def set(self, secrets: Iterable[str]) -> None:
        self.scrubber = Scrubber(secrets)

    def scrub(self, text: str) -> str:
        return self.scrubber(text)

    def scrub_value(self, value: Any, depth: int = 0) -> Any:
        """Strings scrubbed; containers rebuilt with scrubbed items; anything else becomes
        its scrubbed ``repr`` (what the JSON renderer would have printed)."""
        if isinstance(value, str):
            return self.scrubber(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if depth < MAX_DEPTH:
            if isinstance(value, Mapping):
                return {(self.scrubber(k) if isinstance(k, str) else k): self.scrub_value(v, depth + 1)
                        for k, v in value.items()}
            if isinstance(value, tuple):
                return tuple(self.scrub_value(v, depth + 1) for v in value)
            if isinstance(value, list | set | frozenset):
                return [self.scrub_value(v, depth + 1) for v in value]
        return self.scrubber(repr(value))

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        return {self.scrubber(k): self.scrub_value(v) for k, v in event.items()}


REDACTOR = Redactor()


def _json_notice(lost: int) -> str:
    return json.dumps({"event": "log_lines_lost", "lines": lost, "level": "warning",
                       "timestamp": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
                       "detail": "the log output failed or was too slow; these lines were not written"})


class LogSink:
    """A bounded queue of rendered lines and the one thread that writes them to ``fd``.

    ``put`` never blocks and never raises: when the queue is full the line is dropped
    and counted. The writer thread may block on a slow output; nothing else waits for it.
    """

    def __init__(self, fd: int = 1, max_lines: int = MAX_QUEUE_LINES, max_bytes: int = MAX_QUEUE_BYTES,
                 write: Callable[[int, memoryview], int] = os.write,
                 notice: Callable[[int], str] = _json_notice) -> None:
        self.fd = fd
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.notice = notice
        self._write = write
        self._queue: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        self._cv = threading.Condition()
        self._busy = False
        self._thread: threading.Thread | None = None
        self._lost = 0  # lines lost since the last notice was written
        self.written = 0
        self.dropped: collections.Counter[str] = collections.Counter()  # lines lost, by reason
        self.write_errors: collections.Counter[str] = collections.Counter()  # failed writes, by errno name

    def put(self, line: str) -> None:
        try:
            data = (line + "\n").encode("utf-8", "replace")
            with self._cv:
                if len(self._queue) >= self.max_lines or self._bytes + len(data) > self.max_bytes:
                    self.dropped["queue_full"] += 1
                    self._lost += 1
                    return
                self._queue.append(data)
                self._bytes += len(data)
                if self._thread is None:
                    thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
                    thread.start()
                    self._thread = thread
                self._cv.notify()
        except Exception:  # a thread that cannot start, say: the line is lost, the caller goes on
            self.dropped["internal"] += 1
            self._lost += 1

    def pending(self) -> int:
        with self._cv:
            return len(self._queue)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the queue to be written; False if the output is stuck."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._queue and not self._busy, timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue:
                    self._busy = False
                    self._cv.notify_all()
                    self._cv.wait()
                self._busy = True
                batch: list[bytes] = []
                size = 0
                while self._queue and size < BATCH_BYTES:
                    data = self._queue.popleft()
                    batch.append(data)
                    size += len(data)
                self._bytes -= size
                lost = self._lost
            try:
                self._write_batch(batch, lost)
            except Exception:  # never let the writer die: count what it could not write
                with self._cv:
                    self.dropped["internal"] += len(batch)
                    self._lost += len(batch)

    def _write_batch(self, batch: list[bytes], lost: int) -> None:
        head = (self.notice(lost) + "\n").encode("utf-8", "replace") if lost else b""
        buf = memoryview(head + b"".join(batch))
        pos = 0
        error: str | None = None
        while pos < len(buf):
            try:
                pos += self._write(self.fd, buf[pos:])
            except InterruptedError:
                continue
            except BlockingIOError:  # a non-blocking fd someone else set up: wait until it drains
                _wait_writable(self.fd)
            except OSError as e:
                error = errno.errorcode.get(e.errno or 0, "OSError")
                break
        with self._cv:
            if len(head) and pos >= len(head):
                self._lost -= lost
            end = len(head)
            done = 0
            for data in batch:
                end += len(data)
                if end <= pos:
                    done += 1
            self.written += done
            if error is not None:
                self.write_errors[error] += 1
                self.dropped["write_error"] += len(batch) - done
                self._lost += len(batch) - done


def _wait_writable(fd: int) -> None:
    try:
        select.select([], [fd], [], 0.5)
    except (OSError, ValueError):
        pass


SINK = LogSink()


class SinkLogger:
    """structlog's logger: hands the rendered line to the sink (never blocks, never raises)."""

    def __init__(self, sink: LogSink) -> None:
        self._sink = sink

    def msg(self, message: str) -> None:
        self._sink.put(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _StreamWriter:
    """``write`` for a text stream that is not a file descriptor (a test's StringIO)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, _fd: int, data: memoryview) -> int:
        self.stream.write(bytes(data).decode("utf-8", "replace"))
        self.stream.flush()
        return len(data)


def _fd_of(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):
        return None


def _safe_chain(processors: list[Any], fallback: Callable[[Mapping[str, Any], BaseException], str],
                prefix: str = "") -> Any:
    """The processors as one: if any raises, one plain line says so instead of the caller failing."""
    def run(logger: Any, name: str, event: MutableMapping[str, Any]) -> Any:
        original = dict(event)
        try:
            for p in processors:
                event = p(logger, name, event)
            return event
        except structlog.DropEvent:
            raise
        except Exception as e:
            try:
                return fallback(original, e)
            except Exception:
                return prefix + '{"event": "log_render_failed", "level": "error"}'

    return run


def configure(fmt: str = "json", node: str | None = None, level: str = "info",
              stream: TextIO | None = None, journal: bool | None = None) -> None:
    """Set up structlog. Call once, early; ``stream`` defaults to stdout (file descriptor 1).
    ``journal``: start each line with its syslog priority; by default when the output is
    the journal stream (``JOURNAL_STREAM``)."""
    global SINK

    def add_node(_l: Any, _n: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if node is not None:
            event.setdefault("node", node)
        return event

    out = stream or sys.stdout
    renderer: Any
    exceptions: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(out), exception_formatter=structlog.dev.plain_traceback)
        exceptions = structlog.processors.format_exc_info  # traceback.format_exception: no locals
    else:
        renderer = structlog.processors.JSONRenderer()
        exceptions = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False, use_rich=False))
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp")
    fd = _fd_of(out)
    if journal is None:
        journal = fd is not None and is_journal_stream(fd)
    if journal:
        renderer = _with_priority(renderer)

    def render_plain(event: dict[str, Any]) -> str:
        try:
            return str(renderer(None, "warning", add_node(None, "warning", timestamper(None, "warning", event))))
        except Exception:
            return (journal_prefix("warning") if journal else "") + _json_notice(int(event.get("lines", 0)))

    def fallback(original: Mapping[str, Any], e: BaseException) -> str:
        event = {"event": "log_render_failed", "level": "error", "error": type(e).__name__,
                 "original_event": REDACTOR.scrub(str(original.get("event", "")))[:200]}
        return render_plain(event)

    def notice(lost: int) -> str:
        return render_plain({"event": "log_lines_lost", "level": "warning", "lines": lost,
                             "detail": "the log output failed or was too slow; these lines were not written"})

    old = SINK
    if stream is not None and fd is None:
        SINK = LogSink(write=_StreamWriter(stream), notice=notice)
    else:
        SINK = LogSink(fd=1 if fd is None else fd, notice=notice)
    old.flush(0.5)
    sink = SINK
    structlog.configure(
        processors=[_safe_chain([
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            add_node,
            exceptions,
            REDACTOR,  # last before the renderer: masks on values, so no mask cuts a JSON escape
            renderer,
        ], fallback, journal_prefix("error") if journal else "")],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=lambda *_args: SinkLogger(sink),
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging()


def _with_priority(renderer: Any) -> Any:
    """The renderer, with the line's syslog priority in front (from its ``level``)."""
    def render(logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
        return journal_prefix(str(event.get("level", name))) + str(renderer(logger, name, event))

    return render


class StdlibToStructlog(logging.Handler):
    """Libraries' logging (asyncio's "Task exception was never retrieved", aiohttp's server
    errors) goes through the same pipeline: masked, one JSON line, never a bare traceback
    on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            structlog.get_logger().log(record.levelno, "library_log", logger=record.name,
                                       message=record.getMessage(), exc_info=record.exc_info or None)
        except Exception:
            SINK.dropped["internal"] += 1


def _route_stdlib_logging() -> None:
    logging.raiseExceptions = False  # a failing handler prints no "--- Logging error ---" traceback
    root = logging.getLogger()
    root.handlers = [StdlibToStructlog()]
    root.setLevel(logging.WARNING)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError, AttributeError):
        return False


def _guard_fd(fd: int) -> None:
    """A log descriptor closed at start gets /dev/null, so that the next file or socket the
    daemon opens does not take its number and receive the log."""
    try:
        os.fstat(fd)
    except OSError:
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        except OSError:
            pass


def flush(timeout: float = FLUSH_AT_EXIT_S) -> bool:
    """At exit: give the log a bounded time to drain; a stuck output does not hold us."""
    return SINK.flush(timeout)


