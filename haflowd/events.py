"""The event bus: a bounded ring of what happened on this node, and its followers.

Every subsystem emits into one `EventBus`; `haflowctl events`, `GET /events` and the hooks read
it. Emitting never blocks and never raises: a follower (an HTTP stream, a hook queue) that
does not keep up loses events, counted, and sees a marker; supervision and gossip never wait.
Pure: no I/O, the time comes from an injected clock.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Callable, Iterable
from typing import Any

from haflowd.clock import SYSTEM_CLOCK, Clock

EVENT_TYPES: dict[str, str] = {
    "component-started": "a component's process started (subject: the component)",
    "component-exited": "a component's process exited (detail: code/signal, what happens next)",
    "component-unhealthy": "a component's health probe failed past its threshold",
    "component-fatal": "a component crash-looped and is no longer restarted",
    "component-completed": "a oneshot component exited 0",
    "member-alive": "a gossip member is (again) alive (subject: the member)",
    "member-suspect": "a gossip member is suspected dead",
    "member-dead": "a gossip member was declared dead",
    "member-left": "a gossip member left the cluster",
    "member-reaped": "a dead or left member was forgotten after its reap time",
    "sync-peer-failing": "a DAG sync peer started failing (subject: the peer)",
    "sync-peer-ok": "a DAG sync peer recovered",
    "check-changed": "a check's status moved (subject: the check; detail: from, to)",
    "split-brain": "more than one PostgreSQL primary was seen",
    "maintenance-on": "maintenance mode was switched on",
    "maintenance-off": "maintenance mode was switched off",
    "config-reloaded": "the configuration was reloaded",
}

RING_SIZE = 1000
FOLLOWER_QUEUE = 1000
MAX_FOLLOWERS = 64


@dataclasses.dataclass(frozen=True)
class Event:
    time: float
    type: str
    node: str
    subject: str
    detail: dict[str, Any]
    seq: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time, "type": self.type, "node": self.node,
                "subject": self.subject, "detail": self.detail}


class Follower:
    """One reader's bounded queue. `push` never blocks; on overflow the oldest pending events
    are dropped and counted, and the next `drain` starts with that count."""

    def __init__(self, bus: EventBus, limit: int = FOLLOWER_QUEUE,
                 wake: Callable[[], object] | None = None) -> None:
        self._bus = bus
        self._limit = max(1, limit)
        self._queue: collections.deque[Event] = collections.deque()
        self._lost = 0
        self._lock = threading.Lock()
        self.wake = wake
        self.closed = False

    def push(self, event: Event) -> None:
        with self._lock:
            if len(self._queue) >= self._limit:
                self._queue.popleft()
                self._lost += 1
            self._queue.append(event)
        wake = self.wake
        if wake is not None:
            try:
                wake()
            except Exception:  # a dead loop or a closed stream: the follower goes, emit goes on
                self.closed = True

    def drain(self) -> tuple[list[Event], int]:
        """Pending events and how many were lost since the last drain."""
        with self._lock:
            events = list(self._queue)
            self._queue.clear()
            lost, self._lost = self._lost, 0
        return events, lost

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def close(self) -> None:
        self.closed = True
        self._bus.unsubscribe(self)


class EventBus:
    def __init__(self, node: str = "", clock: Clock = SYSTEM_CLOCK, size: int = RING_SIZE,
                 max_followers: int = MAX_FOLLOWERS) -> None:
        self.node = node
        self._clock = clock
        self._ring: collections.deque[Event] = collections.deque(maxlen=max(1, size))
        self._followers: list[Follower] = []
        self._max_followers = max_followers
        self._lock = threading.Lock()
        self._seq = 0
        self.emitted: collections.Counter[str] = collections.Counter()
        self.errors = 0

    def emit(self, type_: str, subject: str = "", detail: dict[str, Any] | None = None,
             node: str | None = None) -> Event | None:
        """Record an event and hand it to every follower. Never raises, never blocks on a
        follower; returns the event (None only if something unexpected failed)."""
        try:
            with self._lock:
                self._seq += 1
                event = Event(time=self._clock.wall(), type=str(type_),
                              node=self.node if node is None else str(node),
                              subject=str(subject), detail=dict(detail or {}), seq=self._seq)
                self._ring.append(event)
                followers = list(self._followers)
                self.emitted[event.type] += 1
            for f in followers:
                if f.closed:
                    self.unsubscribe(f)
                    continue
                f.push(event)
            return event
        except Exception:
            self.errors += 1
            return None

    def recent(self, since: float | None = None, types: Iterable[str] | None = None) -> list[Event]:
        """The ring, oldest first; only events at or after wall time `since` if given."""
        wanted = set(types) if types is not None else None
        with self._lock:
            events = list(self._ring)
        return [e for e in events
                if (since is None or e.time >= since) and (wanted is None or e.type in wanted)]

    def subscribe(self, limit: int = FOLLOWER_QUEUE,
                  wake: Callable[[], object] | None = None) -> Follower | None:
        """A new follower, or None when `max_followers` are already following."""
        with self._lock:
            self._followers = [f for f in self._followers if not f.closed]
            if len(self._followers) >= self._max_followers:
                return None
            f = Follower(self, limit, wake)
            self._followers.append(f)
            return f

    def unsubscribe(self, follower: Follower) -> None:
        with self._lock:
            self._followers = [f for f in self._followers if f is not follower]

    @property
    def followers(self) -> int:
        with self._lock:
            return len(self._followers)


def matches(patterns: Iterable[str], type_: str) -> bool:
    """A hook's `on` list: exact event types or "*"."""
    return any(p == "*" or p == type_ for p in patterns)


BUS = EventBus()
"""The daemon's bus (like logs.REDACTOR: one per process). The daemon sets `BUS.node`; other
code emits with `events.emit("member-dead", name, {...})` or gets a bus injected."""


def emit(type_: str, subject: str = "", detail: dict[str, Any] | None = None) -> Event | None:
    return BUS.emit(type_, subject, detail)


LOG_LINES = 1000
LOG_BYTES = 1 << 20
LOG_LINE_MAX = 4096
LOG_FOLLOWER_QUEUE = 1000


@dataclasses.dataclass(frozen=True)
class OutputLine:
    time: float
    stream: str
    line: str

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time, "stream": self.stream, "line": self.line}


class OutputRing:
    """A component's last output lines (kept by the Child across its restarts, so a fatal
    component still shows what it printed before it died): at most `max_lines` and
    `max_bytes`, each line cut at `line_max`, masked by `scrub` before it is kept. Followers
    are bounded like the event bus's: a slow one loses lines, counted."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK, max_lines: int = LOG_LINES, max_bytes: int = LOG_BYTES,
                 line_max: int = LOG_LINE_MAX, scrub: Callable[[str], str] | None = None,
                 max_followers: int = MAX_FOLLOWERS) -> None:
        self._clock = clock
        self._max_lines = max(1, max_lines)
        self._max_bytes = max(1, max_bytes)
        self._line_max = max(1, line_max)
        self._scrub = scrub
        self._lines: collections.deque[OutputLine] = collections.deque()
        self._bytes = 0
        self._followers: list[LineFollower] = []
        self._max_followers = max_followers
        self._lock = threading.Lock()

    def append(self, stream: str, text: str) -> None:
        try:
            text = text[: self._line_max]
            if self._scrub is not None:
                text = self._scrub(text)[: self._line_max]
            item = OutputLine(self._clock.wall(), stream, text)
            with self._lock:
                self._lines.append(item)
                self._bytes += len(text)
                while len(self._lines) > self._max_lines or (self._bytes > self._max_bytes and len(self._lines) > 1):
                    self._bytes -= len(self._lines.popleft().line)
                followers = list(self._followers)
            for f in followers:
                if f.closed:
                    self.unsubscribe(f)
                else:
                    f.push(item)
        except Exception:  # never the supervisor's problem
            return

    def tail(self, n: int | None = None, stream: str | None = None) -> list[OutputLine]:
        with self._lock:
            lines = list(self._lines)
        if stream is not None:
            lines = [x for x in lines if x.stream == stream]
        if n is not None:
            lines = lines[-n:] if n > 0 else []
        return lines

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def subscribe(self, limit: int = LOG_FOLLOWER_QUEUE,
                  wake: Callable[[], object] | None = None) -> LineFollower | None:
        with self._lock:
            self._followers = [f for f in self._followers if not f.closed]
            if len(self._followers) >= self._max_followers:
                return None
            f = LineFollower(self, limit, wake)
            self._followers.append(f)
            return f

    def unsubscribe(self, follower: LineFollower) -> None:
        with self._lock:
            self._followers = [f for f in self._followers if f is not follower]


class LineFollower:
    def __init__(self, ring: OutputRing, limit: int, wake: Callable[[], object] | None) -> None:
        self._ring = ring
        self._limit = max(1, limit)
        self._queue: collections.deque[OutputLine] = collections.deque()
        self._lost = 0
        self._lock = threading.Lock()
        self.wake = wake
        self.closed = False

    def push(self, item: OutputLine) -> None:
        with self._lock:
            if len(self._queue) >= self._limit:
                self._queue.popleft()
                self._lost += 1
            self._queue.append(item)
        if self.wake is not None:
            try:
                self.wake()
            except Exception:
                self.closed = True

    def drain(self) -> tuple[list[OutputLine], int]:
        with self._lock:
            items = list(self._queue)
            self._queue.clear()
            lost, self._lost = self._lost, 0
        return items, lost

    def close(self) -> None:
        self.closed = True
        self._ring.unsubscribe(self)
