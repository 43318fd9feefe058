"""Test doubles for the pure cores: a clock that moves only when told to, and an in-memory
network for membership cores."""

from __future__ import annotations

import heapq
import itertools
import json
import math
import random
from collections.abc import Callable, Iterable

from haflowd.gossip.membership import Membership, Message, Outgoing


class FakeClock:
    """A Clock for unit tests: ``advance`` moves both monotonic and wall time."""

    __slots__ = ("now", "wall_offset")  # the simulator sets ``now`` for every event

    def __init__(self, start: float = 1000.0, wall_offset: float = 1_700_000_000.0) -> None:
        self.now = start
        self.wall_offset = wall_offset

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self.wall_offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self.now += seconds


class MemoryNetwork:
    """Membership cores on one FakeClock, wired through an in-memory network: for unit tests.

    Events (deliveries, and each core's wake-up at ``next_wakeup()``) run in time order. Each
    directed link drops a message with its own probability (``loss``, ``set_loss``) and delays
    it by ``latency`` plus up to ``jitter`` plus its own ``delay``, so messages overtake each other. A stalled node is a
    blocked event loop: what arrives queues up, and when the stall ends it is handled in order
    with the late timer before or after it (either can happen in asyncio), and ``note_lag``
    as the transport calls it. A node's outbound link can be rate limited as ``tc tbf`` does
    (``limit_rate``): its messages leave one after the other, each taking its size over the
    rate, and one that would wait in the queue longer than the limit is dropped (so a burst,
    say what a node sends on waking from a stall, is both late and lossy). A crashed node
    drops everything until ``restart`` puts a new core in its place. ``on_event(name)`` runs
    after every event of a core. Every run is bounded: ``run_for`` raises after ``max_events``.
    """

    def __init__(self, clock: FakeClock, rng: random.Random, latency: float = 0.001,
                 jitter: float = 0.002) -> None:
        self.clock = clock
        self.rng = rng
        self.latency = latency
        self.jitter = jitter
        self.cores: dict[str, Membership] = {}
        self.loss: dict[tuple[str, str], float] = {}  # (from, to) -> probability
        self.delay: dict[tuple[str, str], float] = {}  # (from, to) -> seconds on top of the latency
        self.rate: dict[str, tuple[float, float]] = {}  # node -> (bytes per second, longest wait in its queue)
        self.stalled_until: dict[str, float] = {}
        self.crashed: set[str] = set()
        self.on_event: Callable[[str], None] | None = None
        self.delivered = 0
        self.dropped = 0
        self._by_addr: dict[str, str] = {}
        self._wake_at: dict[str, float] = {}
        self._backlog: dict[str, list[Message]] = {}
        self._missed: dict[str, float] = {}  # the first wake-up that fell inside a stall
        self._egress_free: dict[str, float] = {}  # a rate-limited node: when its link has sent its queue
        self._events: list[tuple[float, int, int, str, Message | None]] = []
        self._ids = itertools.count()

    def add(self, core: Membership) -> None:
        self.cores[core.name] = core
        self._by_addr[core.address] = core.name
        self._backlog[core.name] = []
        self._schedule(core.name)

    def send(self, out: Iterable[Outgoing], src: str) -> None:
        for o in out:
            dst = self._by_addr.get(o.address)
            if dst is None or dst in self.crashed or self.rng.random() < self.loss.get((src, dst), 0.0):
                self.dropped += 1
                continue
            leaves = self.clock.now
            limited = self.rate.get(src)
            if limited is not None:
                bytes_per_s, longest_wait = limited
                start = max(leaves, self._egress_free.get(src, -math.inf))
                if start - leaves > longest_wait:  # tbf's latency: a packet that would wait longer is dropped
                    self.dropped += 1
                    continue
                leaves = self._egress_free[src] = start + message_size(o.message) / bytes_per_s
            when = leaves + self.latency + self.rng.uniform(0, self.jitter) + self.delay.get((src, dst), 0.0)
            heapq.heappush(self._events, (when, next(self._ids), _DELIVER, dst, o.message))

    def set_loss(self, a: str, b: str, p: float) -> None:
        """Both directions between ``a`` and ``b`` drop a message with probability ``p``."""
        self.loss[(a, b)] = self.loss[(b, a)] = p

    def limit_rate(self, name: str, bytes_per_s: float, longest_wait: float) -> None:
        """``name``'s outbound link sends ``bytes_per_s`` and queues at most ``longest_wait``
        seconds of it (``tc qdisc add dev eth0 root tbf rate R latency L``)."""
        self.rate[name] = (bytes_per_s, longest_wait)

    def heal(self) -> None:
        self.loss.clear()
        self.delay.clear()
        self.rate.clear()
        self._egress_free.clear()

    def stall(self, name: str, seconds: float) -> None:
        end = self.clock.now + seconds
        if end > self.stalled_until.get(name, -math.inf):
            self.stalled_until[name] = end
            heapq.heappush(self._events, (end, next(self._ids), _STALL_END, name, None))

    def crash(self, name: str) -> None:
        """kill -9: no more ticks, and what arrives is lost."""
        self.crashed.add(name)
        self._backlog[name] = []
        self._missed.pop(name, None)
        self.stalled_until.pop(name, None)

    def restart(self, core: Membership) -> None:
        """A new core in a crashed node's place (the daemon restarts with its incarnation + 1)."""
        self.crashed.discard(core.name)
        self.cores[core.name] = core
        self._wake_at.pop(core.name, None)
        self.send(core.start(), core.name)
        self._schedule(core.name)

    def run_for(self, seconds: float, max_events: int = 1_000_000) -> None:
        end = self.clock.now + seconds
        for _ in range(max_events):
            if not self._events or self._events[0][0] > end:
                self.clock.now = end
                return
            when, _, kind, name, msg = heapq.heappop(self._events)
            self.clock.now = max(self.clock.now, when)
            if name in self.crashed:
                if kind == _DELIVER:
                    self.dropped += 1
                continue
            core = self.cores[name]
            stalled = self.stalled_until.get(name, -math.inf) > when
            if kind == _DELIVER:
                assert msg is not None
                if stalled:
                    self._backlog[name].append(msg)
                    continue
                self.delivered += 1
                self.send(core.handle(msg), name)
            elif kind == _WAKE:
                if when != self._wake_at.get(name):
                    continue  # superseded
                self._wake_at[name] = math.inf
                if stalled:
                    self._missed.setdefault(name, when)
                    continue
                self.send(core.tick(), name)
            else:
                if stalled:
                    continue  # a longer stall came on top
                tick_first = self.rng.random() < 0.5
                if tick_first:
                    self.send(core.tick(), name)
                backlog, self._backlog[name] = self._backlog[name], []
                for m in backlog:
                    self.delivered += 1
                    self.send(core.handle(m), name)
                missed = self._missed.pop(name, None)
                if missed is not None:
                    core.note_lag(self.clock.now - missed)
                if not tick_first:
                    self.send(core.tick(), name)
            if self.on_event is not None:
                self.on_event(name)
            self._schedule(name)
        raise RuntimeError(f"more than {max_events} events in {seconds}s")

    def _schedule(self, name: str) -> None:
        wake = max(self.clock.now, self.cores[name].next_wakeup())
        if wake != self._wake_at.get(name):
            self._wake_at[name] = wake
            heapq.heappush(self._events, (wake, next(self._ids), _WAKE, name, None))


HTTP_OVERHEAD = 400
"""Bytes a message costs on the wire besides its JSON: the request line, the signature
headers, the answer's status and headers (the transport sends each message as one POST)."""


def message_size(msg: Message) -> int:
    """Bytes ``msg`` takes on a link, as the transport sends it."""
    return len(json.dumps(msg.to_json(), separators=(",", ":"))) + HTTP_OVERHEAD


_WAKE, _DELIVER, _STALL_END = 0, 1, 2
