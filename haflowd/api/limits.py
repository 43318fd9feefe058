"""What any client may cost a TCP listener of ours (the read API, the gossip port): bounded
memory and time, before it has proved anything.

- ``KEEPALIVE_S``: a connection must finish a request's headers within this long of
  connecting or of its previous answer, or it is closed (aiohttp's keep-alive timer, which
  also runs before the first request); an idle keep-alive connection closes then too.
- ``BODY_DEADLINE_S``: a handler that reads a body reads it within this long (408 after).
- ``MAX_CONNECTIONS`` per listener and ``MAX_CONNECTIONS_PER_REMOTE`` per client address:
  a connection over either is answered 503 and closed at once, before it is parsed.
- :class:`InflightLimit`: requests still being read or checked, in all and per address.
- :class:`_ParseOnce`: a connection's HTTP parser is fed until it fails, never after.
- :class:`RefusalLog`: refusals as a few lines per reason, then one summary per interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.log import server_logger
from aiohttp.web_protocol import RequestHandler

from haflowd.clock import Clock

KEEPALIVE_S = 5.0
BODY_DEADLINE_S = 5.0
LINGER_S = 1.0
MAX_CONNECTIONS = 128
MAX_CONNECTIONS_PER_REMOTE = 32
MAX_HEADERS = 32
MAX_FIELD_SIZE = 8190



def runner_options(on_bad_request: Callable[[str], None]) -> dict[str, Any]:
    """Keyword arguments for every ``web.AppRunner`` of a TCP listener. A request aiohttp
    cannot parse (answered 400 by aiohttp itself) is passed to ``on_bad_request`` with the
    client's address instead of being logged with a traceback: any client could send one
    per connection and flood the log."""
    return {
        "keepalive_timeout": KEEPALIVE_S,
        "lingering_time": LINGER_S,
        "max_headers": MAX_HEADERS,
        "max_field_size": MAX_FIELD_SIZE,
        "max_line_size": MAX_FIELD_SIZE,
        "logger": _ServerLog(on_bad_request),
    }


class _ServerLog:
    """What aiohttp's request handler logs through (``debug``, ``exception``): a client's
    malformed request or body is a refusal, anything else goes to aiohttp's own logger.
    A body that does not decode (``Content-Encoding``) or breaks off fails where it is read,
    also where aiohttp drains it after the answer ("Unhandled exception", a traceback)."""

    def __init__(self, on_bad_request: Callable[[str], None], remote: str | None = None) -> None:
        self._on_bad_request = on_bad_request
        self._remote = remote

    def of(self, remote: str) -> _ServerLog:
        """The same log for one connection: its refusals name its client, whatever aiohttp says."""
        return _ServerLog(self._on_bad_request, remote)

    def _client_fault(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        if isinstance(kwargs.get("exc_info"), HttpProcessingError | web.RequestPayloadError):
            self._on_bad_request(self._remote or (str(args[0]) if args else "?"))
            return True
        return False

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if not self._client_fault(args, kwargs):
            server_logger.debug(msg, *args, **kwargs)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if not self._client_fault(args, kwargs):
            server_logger.exception(msg, *args, **kwargs)

BUSY_ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
               b"Content-Length: 16\r\nConnection: close\r\n\r\n{\"error\":\"busy\"}")

log = structlog.get_logger()


def remote_of(peername: Any) -> str:
    """The client's address from ``get_extra_info("peername")``; "?" when there is none."""
    if isinstance(peername, tuple | list) and peername:
        return str(peername[0])
    return "?"


class InflightLimit:
    """Counts what is in progress, in all and per client address; refuses past either cap."""

    def __init__(self, total: int, per_remote: int) -> None:
        self.total = total
        self.per_remote = per_remote
        self._by_remote: dict[str, int] = {}
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def try_enter(self, remote: str) -> bool:
        mine = self._by_remote.get(remote, 0)
        if self._count >= self.total or mine >= self.per_remote:
            return False
        self._count += 1
        self._by_remote[remote] = mine + 1
        return True

    def leave(self, remote: str) -> None:
        left = self._by_remote.get(remote, 0) - 1
        if left > 0:
            self._by_remote[remote] = left
        else:
            self._by_remote.pop(remote, None)
        self._count = max(0, self._count - 1)


_NOTHING_PARSED: tuple[tuple[()], bool, bytes] = ((), False, b"")


class _ParseOnce:
    """A connection's HTTP parser, fed until it fails once. aiohttp feeds a failed parser on:
    each piece of data it held back (it pauses a body after about 16,000 chunks) or reads
    later raises again and queues another 400 with its traceback, thousands for one chunked
    body that breaks late, over the whole lingering time. After the first failure nothing is
    parsed, and the body still arriving, if any, fails with it: whoever reads it (aiohttp,
    draining it after the answer) stops at once and the connection closes."""

    def __init__(self, parser: Any) -> None:
        self._parser = parser
        self._body: Any = None  # the body of the last request parsed: it may still be arriving
        self.failed = False

    def feed_data(self, data: bytes) -> Any:
        if self.failed:
            return _NOTHING_PARSED
        try:
            parsed = self._parser.feed_data(data)
        except HttpProcessingError as exc:
            self.failed = True
            body, self._body = self._body, None
            if body is not None and not body.is_eof() and body.exception() is None:
                body.set_exception(web.RequestPayloadError(str(exc)), exc)
            raise
        for _message, body in parsed[0]:
            self._body = body
        return parsed

    def feed_eof(self) -> Any:
        return None if self.failed else self._parser.feed_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


class _Gate(asyncio.Protocol):
    """Admits a connection under the caps and hands it to aiohttp's handler, or answers 503."""

    def __init__(self, limit: InflightLimit, make: Callable[[], RequestHandler],
                 on_busy: Callable[[str], None]) -> None:
        self._limit = limit
        self._make = make
        self._on_busy = on_busy
        self._inner: RequestHandler | None = None
        self._remote = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._remote = remote_of(transport.get_extra_info("peername"))
        if not self._limit.try_enter(self._remote):
            self._on_busy(self._remote)
            assert isinstance(transport, asyncio.Transport)
            transport.write(BUSY_ANSWER)
            transport.close()
            return
        inner = self._inner = self._make()
        inner._parser = cast(Any, _ParseOnce(inner._parser))
        if isinstance(inner.logger, _ServerLog):
            inner.logger = cast(Any, inner.logger.of(self._remote))
        inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        """The client closed its side. A request being handled is still answered: a body
        cut short ends here (the handler sees what came), then the connection closes."""
        inner = self._inner
        if inner is None:
            return None
        inner.eof_received()
        if inner._waiter is not None and not inner._messages:
            return None  # waiting for a request that cannot come: the transport closes
        inner.close()  # answer what was asked, then close
        self._end_body(tries=3)
        return True

    def _end_body(self, tries: int) -> None:
        """End the body of the request in progress; its handler may start an instant later."""
        inner = self._inner
        if inner is None:
            return
        request = inner._current_request
        if request is None:
            if tries > 0:
                asyncio.get_running_loop().call_soon(self._end_body, tries - 1)
            return
        if not request.content.is_eof():
            request.content.feed_eof()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._limit.leave(self._remote)
            self._inner.connection_lost(exc)
            self._inner = None


class GuardedSite(web.TCPSite):
    """A TCP site whose connections pass a :class:`_Gate` first."""

    __slots__ = ("_on_busy", "connections")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, on_busy: Callable[[str], None],
                 max_connections: int = MAX_CONNECTIONS,
                 max_per_remote: int = MAX_CONNECTIONS_PER_REMOTE) -> None:
        super().__init__(runner, host, port, reuse_address=True)
        self.connections = InflightLimit(max_connections, max_per_remote)
        self._on_busy = on_busy

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Gate(self.connections, server, self._on_busy),
            self._host, self._port, backlog=self._backlog, reuse_address=True,
        )


@dataclass
class _Reason:
    tokens: float
    refilled: float
    suppressed: int = 0
    last_remote: str = ""
    remotes: set[str] = field(default_factory=set)
    last_line: float = float("-inf")


class RefusalLog:
    """Refusals logged without flooding the journal: per reason, the first ``burst`` lines
    at once (one line a ``interval`` refills the allowance), the rest as one summary line
    per ``interval`` with how many were held back. Counting is the caller's (metrics)."""

    MAX_REMOTES = 16  # distinct addresses named in a summary

    def __init__(self, event: str, clock: Clock, interval: float = 10.0, burst: int = 5) -> None:
        self.event = event
        self.clock = clock
        self.interval = interval
        self.burst = burst
        self._reasons: dict[str, _Reason] = {}

    def refused(self, reason: str, remote: str, **fields: Any) -> None:
        now = self.clock.monotonic()
        r = self._reasons.get(reason)
        if r is None:
            r = self._reasons[reason] = _Reason(tokens=float(self.burst), refilled=now)
        r.tokens = min(float(self.burst), r.tokens + (now - r.refilled) / self.interval)
        r.refilled = now
        if r.suppressed == 0 and r.tokens >= 1.0:
            r.tokens -= 1.0
            r.last_line = now
            log.warning(self.event, reason=reason, remote=remote, **fields)
            return
        r.suppressed += 1
        r.last_remote = remote
        if len(r.remotes) < self.MAX_REMOTES:
            r.remotes.add(remote)
        self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Write the summaries that are due; cheap enough to call on every tick."""
        now = self.clock.monotonic() if now is None else now
        for reason, r in self._reasons.items():
            if r.suppressed and now - r.last_line >= self.interval:
                log.warning(f"{self.event}_summary", reason=reason, count=r.suppressed,
                            interval_s=round(now - r.last_line, 1), remotes=sorted(r.remotes),
                            last_remote=r.last_remote)
                r.suppressed = 0
                r.remotes = set()
                r.last_line = now
                r.tokens = max(0.0, r.tokens - 1.0)
