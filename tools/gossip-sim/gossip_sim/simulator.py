"""A deterministic discrete-event simulator for the membership core.

N :class:`~haflowd.gossip.membership.Membership` cores share one virtual clock; a queue
of events (message deliveries and per-node wake-ups at ``next_wakeup()``) drives them.
The network loses messages with a configurable probability, delays them by a base
latency plus random jitter, and can be partitioned into groups that cannot reach each
other. Nodes can crash, restart (incarnation + 1, like the daemon after persisting it),
stall (a blocked event loop: deliveries queue up and are handled in order when it ends)
or leave gracefully.

The same seed gives the same run. Measurements: messages sent per node and type,
detection latency of crashes (crash → ``dead`` on every survivor), false deaths (a
node marked ``dead`` by someone that could reach it and that never crashed), and a
convergence check (every live node sees every other live node ``alive``).

A run starts with every node joining through three seeds at once (the costliest join:
each arrival is passed on ``retransmit_limit`` times by every node), or ``warm``: every
node already knows every other and no news is pending, a cluster that has run a while.

    python -m gossip_sim --nodes 100 --minutes 2 --loss 0.1 --seed 1
    python -m gossip_sim --nodes 1000 --minutes 10 --warm

A tool of its own (tools/gossip-sim in the haflowd repository), outside the daemon's
package: it imports haflowd and drives the daemon's membership.py as it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import heapq
import importlib
import itertools
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from haflowd.gossip import membership as _membership
from haflowd.gossip.membership import (
    ALIVE,
    DEAD,
    LEFT,
    GossipSettings,
    Membership,
    Message,
    Outgoing,
    suspicion_min,
)
from haflowd.testing import FakeClock

try:  # the event loop in C, when it was built (setup.py); the Python loop below is the same loop
    from gossip_sim import _simloop
except ImportError:  # pragma: no cover - built by every install with a C compiler
    _simloop = None  # type: ignore[assignment]

COMPILED = _simloop is not None


def _compiled_core() -> tuple[Any, str]:
    """membership.py compiled by mypyc (setup.py), if it was built from membership.py as it is
    now; else None and why not. A stale build never runs in place of the source."""
    try:
        module = importlib.import_module("gossip_sim._core_sim")
    except ImportError:
        return None, "not built (pip install -e tools/gossip-sim with a C compiler and mypy)"
    source = Path(_membership.__file__).read_bytes()
    if getattr(module, "SOURCE_SHA256", None) != hashlib.sha256(source).hexdigest():
        return None, "built from an older membership.py (pip install -e tools/gossip-sim rebuilds it)"
    return module, ""


_CORE, CORE_NOT_COMPILED = _compiled_core()
COMPILED_CORE = _CORE is not None

_WAKE, _DELIVER, _STALL_END = 0, 1, 2
_BUCKET = 0.001  # seconds of simulated time per calendar bucket
_PER_BUCKET = 1 / _BUCKET
_Event = tuple[float, int, int, int, "Message | None"]  # time, id (ties), kind, node, message


@dataclass(frozen=True)
class NetworkSettings:
    """Per-message loss probability and one-way latency ``base + uniform(0, jitter)`` seconds."""

    loss: float = 0.0
    latency: float = 0.001
    jitter: float = 0.002


@dataclass(frozen=True)
class FalseDeath:
    time: float
    observer: str
    node: str


@dataclass
class Detection:
    """How long after ``node`` crashed each survivor first saw it ``dead``."""

    node: str
    crashed_at: float
    survivors: frozenset[str]
    seen: dict[str, float] = field(default_factory=dict)  # survivor → latency (s)
    restarted_at: float | None = None  # no more records after that

    @property
    def complete(self) -> bool:
        return self.survivors <= self.seen.keys()

    @property
    def latency(self) -> float | None:
        """Crash → dead on every survivor, or None while some survivor has not seen it yet."""
        if not self.complete:
            return None
        return max((self.seen[s] for s in self.survivors), default=0.0)


@dataclass
class _Partition:
    group: list[int]  # a group number per node
    start: float
    end: float | None = None


@dataclass(slots=True)
class _Node:
    index: int
    name: str
    address: str
    core: Membership
    rng: random.Random
    wake_at: float = float("inf")  # the wake-up currently queued (older ones are stale)
    crashed: bool = False
    left: bool = False
    down: bool = False  # crashed or left: events for it are dropped
    stalled_until: float = 0.0
    blocked: float = 0.0  # stalled_until, or inf while down: one test per event for both
    backlog: list[Message] = field(default_factory=list)
    missed_wake: float | None = None  # the first wake-up that fell inside a stall
    sent_before: dict[str, int] = field(default_factory=dict)  # by the cores before a restart
    restarts: int = 0


class Simulator:
    """N membership cores on a simulated network; see the module docstring.

    Time only moves inside :meth:`run_for` / :meth:`run_until`. Faults (``crash``,
    ``restart``, ``stall``, ``leave``, ``partition``, ``heal``) act at the current time;
    schedule one for later with :meth:`at`.
    """

    def __init__(
        self,
        nodes: int,
        *,
        seed: int = 0,
        settings: GossipSettings | None = None,
        network: NetworkSettings | None = None,
        seeds: int = 3,
        start_spread: float = 0.0,
        warm: bool = False,
        compiled: bool | None = None,
        compiled_core: bool | None = None,
    ) -> None:
        """``compiled``: run the C event loop (default: when it is built) or the Python one.
        ``compiled_core``: run the cores as membership.py compiled by mypyc (default: when
        that build is of the source as it is) or interpreted; :attr:`core_module` is the one
        they come from. The same seed gives the same run with any of these."""
        if nodes < 1:
            raise ValueError("at least one node")
        if compiled and _simloop is None:
            raise RuntimeError(
                "the compiled event loop is not built (pip install -e tools/gossip-sim with a C compiler)")
        if compiled_core and _CORE is None:
            raise RuntimeError(f"the compiled core is {CORE_NOT_COMPILED}")
        self.compiled = _simloop is not None if compiled is None else compiled
        self.compiled_core = _CORE is not None if compiled_core is None else compiled_core
        self._queue = _simloop.Queue() if self.compiled else None
        # the module the cores, and what they take (settings, updates, messages), come from
        self.core_module: Any = _CORE if self.compiled_core else _membership
        mod = self.core_module
        self._membership: type[Membership] = mod.Membership
        given = settings or GossipSettings()
        self.settings: GossipSettings = mod.GossipSettings(
            **{f.name: getattr(given, f.name) for f in dataclasses.fields(given)})
        self.network = network or NetworkSettings()
        # the one clock every node reads; only the simulator moves it. The C loop's is
        # FakeClock in C: the cores ask it the time for every event.
        self.clock: FakeClock | _simloop.Clock = _simloop.Clock() if self.compiled else FakeClock()
        self.start_time = self.clock.now
        self.rng = random.Random(seed)
        # the event queue: a calendar of buckets _BUCKET seconds wide. The current bucket's
        # events (and any scheduled into it) are a small heap; later ones wait unsorted in
        # their bucket. The order is a global heap's, (time, id), at a fraction of its cost:
        # no sift through thousands of entries per event.
        self._near: list[_Event] = []
        self._cur = -1  # the bucket whose events are in _near; every bucket waiting is later
        self._buckets: dict[int, list[_Event]] = {}
        self._keys: list[int] = []  # a heap of the waiting buckets' numbers
        self._ids = itertools.count()  # ties in time go in the order of scheduling
        self._actions: list[tuple[float, int, Callable[[], None]]] = []
        self.names = [f"n{i:04d}" for i in range(nodes)]
        self.addresses = [f"10.0.{i // 250}.{i % 250 + 1}:7946" for i in range(nodes)]
        self.seed_addresses = self.addresses[:seeds]
        self._by_addr = {a: i for i, a in enumerate(self.addresses)}
        self._by_name = {n: i for i, n in enumerate(self.names)}
        self._group = [0] * nodes  # partition group per node
        self._split = False  # some group is not 0
        self._partitions: list[_Partition] = []
        self._ever_crashed: set[str] = set()
        # after a heal, deaths between the two sides are still expected for a while: stale
        # suspicions and verdicts from the partition run out
        lo = suspicion_min(self.settings.suspicion_mult, nodes, self.settings.probe_interval)
        self.partition_grace = 2 * lo * self.settings.suspicion_max_mult
        self.nodes: list[_Node] = []
        self.detections: dict[str, Detection] = {}
        self.false_deaths: list[FalseDeath] = []
        self.dropped = 0
        self.delivered = 0
        self.events = 0
        for i in range(nodes):
            rng = random.Random(self.rng.getrandbits(64))
            self.nodes.append(_Node(i, self.names[i], self.addresses[i], self._core(i, 0, rng), rng))
        if warm:  # a cluster that has run for a while: every node knows every other, no news pending
            everyone = [mod.Update(ALIVE, n.name, 0, n.address) for n in self.nodes]
            collecting = gc.isenabled()
            gc.disable()  # a million member records and no cycles: the collector would only rescan them
            try:
                for node in self.nodes:
                    node.core.assume(everyone)
                    self._schedule(node)
            finally:
                if collecting:
                    gc.enable()
            return
        for node in self.nodes:
            delay = self.rng.uniform(0, start_spread) if start_spread > 0 else 0.0
            self.at(delay, lambda node=node: self._start(node))  # type: ignore[misc]

    # ------------------------------------------------------------------ views

    @property
    def now(self) -> float:
        """Seconds of simulated time since the start."""
        return self.clock.now - self.start_time

    def core(self, name: str) -> Membership:
        return self.nodes[self._by_name[name]].core

    def live_names(self) -> list[str]:
        """Nodes that run: not crashed, not left (a stalled node is live)."""
        return [n.name for n in self.nodes if not n.crashed and not n.left]

    def status(self, observer: str, node: str) -> str | None:
        m = self.core(observer).members.get(node)
        return m.status if m else None

    def converged(self) -> bool:
        """Every live node sees every other live node ``alive``."""
        live = self.live_names()
        for name in live:
            members = self.core(name).members
            for other in live:
                m = members.get(other)
                if m is None or m.status != ALIVE:
                    return False
        return True

    def sees_all_alive(self, observers: Iterable[str], nodes: Iterable[str]) -> bool:
        targets = list(nodes)
        for name in observers:
            members = self.core(name).members
            for other in targets:
                m = members.get(other)
                if m is None or m.status != ALIVE:
                    return False
        return True

    def sent_by_type(self) -> dict[str, int]:
        """Messages sent by every node since the start, per message type."""
        out: dict[str, int] = {}
        for n in self.nodes:
            for t, c in _sent(n.core).items():
                out[t] = out.get(t, 0) + c
            for t, c in n.sent_before.items():
                out[t] = out.get(t, 0) + c
        return out

    def sent_total(self) -> int:
        return sum(self.sent_by_type().values())

    # ------------------------------------------------------------------ faults

    def at(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` ``delay`` simulated seconds from now."""
        heapq.heappush(self._actions, (self.clock.now + delay, next(self._ids), action))

    def crash(self, name: str) -> None:
        """The node stops at once (kill -9): no ticks, messages to it are lost; detection starts."""
        node = self.nodes[self._by_name[name]]
        if node.crashed:
            return
        node.crashed = node.down = True
        node.blocked = math.inf
        node.backlog.clear()
        self._ever_crashed.add(name)
        survivors = frozenset(n.name for n in self.nodes if not n.crashed and not n.left)
        self.detections[name] = Detection(name, self.now, survivors)

    def restart(self, name: str) -> None:
        """A fresh core with the persisted incarnation + 1, joining through the seeds."""
        node = self.nodes[self._by_name[name]]
        incarnation = node.core.incarnation + 1
        for t, c in _sent(node.core).items():
            node.sent_before[t] = node.sent_before.get(t, 0) + c
        node.crashed = node.left = node.down = False
        node.stalled_until = node.blocked = 0.0
        node.backlog.clear()
        node.missed_wake = None
        node.restarts += 1
        node.core = self._core(node.index, incarnation, node.rng)
        det = self.detections.get(name)
        if det is not None and det.restarted_at is None:
            det.restarted_at = self.now
        self._start(node)

    def stall(self, name: str, seconds: float) -> None:
        """Block the node's event loop for ``seconds``: no ticks, deliveries queue up."""
        node = self.nodes[self._by_name[name]]
        if node.crashed or node.left:
            return
        end = self.clock.now + seconds
        if end > node.stalled_until:
            node.stalled_until = node.blocked = end
            self._push(end, _STALL_END, node.index, None)

    def leave(self, name: str) -> None:
        """A graceful leave: the core's leave broadcast goes out, then the node stops."""
        node = self.nodes[self._by_name[name]]
        if node.crashed or node.left:
            return
        self._send(node, node.core.leave())
        self._collect(node)
        node.blocked = math.inf
        node.left = node.down = True  # it stops at once, as the daemon does after its leave broadcast

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: nodes in different groups cannot reach each other.

        Nodes not named in any group form one more group together.
        """
        group = [0] * len(self.nodes)
        for g, names in enumerate(groups, start=1):
            for name in names:
                group[self._by_name[name]] = g
        self.heal()
        self._group = group
        self._split = any(group)
        self._partitions.append(_Partition(group, self.now))

    def heal(self) -> None:
        """Every node reaches every other again."""
        self._group = [0] * len(self.nodes)
        self._split = False
        for p in self._partitions:
            if p.end is None:
                p.end = self.now

    def periodic_stalls(self, seconds: float, every: float, until: float, names: Iterable[str] | None = None) -> None:
        """Each node stalls for ``seconds`` once every ``every`` seconds (at its own random
        phase) until ``until`` seconds from now: a SIGSTOP/SIGCONT or a blocking call."""
        for name in self.names if names is None else names:
            t = self.rng.uniform(0, every)
            while t < until:
                self.at(t, lambda name=name: self.stall(name, seconds))  # type: ignore[misc]
                t += every

    # ------------------------------------------------------------------ running

    def run_for(self, seconds: float) -> None:
        self._run(self.clock.now + seconds, None, 0.0)

    def run_until(self, predicate: Callable[[], bool], timeout: float, check_every: float = 0.5) -> float | None:
        """Run until ``predicate()`` holds (checked every ``check_every`` s); seconds taken, or None."""
        start = self.clock.now
        if predicate():
            return 0.0
        return self._run(start + timeout, predicate, check_every)

    def _run(self, end: float, predicate: Callable[[], bool] | None, check_every: float) -> float | None:
        # the cores make no reference cycles; at 1,000 nodes the collector's scans of their
        # million objects would be a large share of the run
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._loop(end, predicate, check_every)
        finally:
            if collecting:
                gc.enable()

    def _loop(self, end: float, predicate: Callable[[], bool] | None, check_every: float) -> float | None:
        if self._queue is not None:
            return self._queue.run(self, end, predicate, check_every)
        start = self.clock.now
        clock = self.clock
        pop, push, heapify = heapq.heappop, heapq.heappush, heapq.heapify
        buckets, keys = self._buckets, self._keys
        near = self._near
        send, schedule = self._send, self._push  # both keep to the calendar's current bucket
        actions = self._actions
        nodes = self.nodes
        inf = math.inf
        next_check = start + check_every if predicate is not None else inf
        events = dropped = delivered = 0
        try:
            while True:
                # the events before the next action, check or the end need no other look-ahead;
                # only actions and checks can partition the network or change it
                t_action = actions[0][0] if actions else inf
                limit = end if end < next_check else next_check
                # an event runs now if it is due by the limit and before the next action
                stop = limit if limit < t_action else math.nextafter(t_action, -inf)
                while True:
                    if not near:
                        if not keys:
                            break
                        self._cur = pop(keys)
                        near = self._near = buckets.pop(self._cur)
                        heapify(near)
                    entry = pop(near)
                    when, _, kind, i, msg = entry
                    if when > stop:
                        push(near, entry)
                        break
                    clock.now = when
                    events += 1
                    node = nodes[i]
                    if kind == _DELIVER:
                        if node.blocked > when:  # down: lost; stalled: handled when the stall ends
                            if node.down:
                                dropped += 1
                            else:
                                node.backlog.append(msg)  # type: ignore[arg-type]
                            continue
                        delivered += 1
                        core = node.core
                        out = core.handle(msg)  # type: ignore[arg-type]
                    elif kind == _WAKE:
                        if when != node.wake_at:  # superseded by a later one
                            continue
                        if node.blocked > when:
                            if not node.down:
                                node.wake_at = inf
                                if node.missed_wake is None:
                                    node.missed_wake = when
                            continue
                        node.wake_at = inf
                        core = node.core
                        out = core.tick()
                    else:  # _STALL_END
                        if node.blocked > when:
                            continue
                        core = node.core
                        out = self._unstall(node, when)
                        near = self._near
                    if out:
                        send(node, out)
                    if core.changes:
                        self._collect(node)
                    wake = core.next_wakeup()
                    if wake < when:
                        wake = when
                    if wake != node.wake_at:  # earlier or later: the one already queued goes stale
                        node.wake_at = wake
                        schedule(wake, _WAKE, i, None)
                t = near[0][0] if near else inf
                if t_action < t:
                    t = t_action
                if t > next_check and next_check <= end:
                    clock.now = next_check
                    assert predicate is not None
                    if predicate():
                        return clock.now - start
                    next_check += check_every
                    continue
                if t > end:
                    clock.now = end
                    return None
                clock.now = t_action
                pop(actions)[2]()
                near = self._near
        finally:
            self.events += events
            self.dropped += dropped
            self.delivered += delivered

    def _unstall(self, node: _Node, now: float) -> list[Outgoing]:
        """The loop runs again: what queued up is handled in order, then the late timers."""
        backlog, node.backlog = node.backlog, []
        for msg in backlog:
            self.delivered += 1
            self._send(node, node.core.handle(msg))
        if node.missed_wake is not None:
            node.core.note_lag(now - node.missed_wake)
            node.missed_wake = None
        node.wake_at = float("inf")
        return node.core.tick()

    # ------------------------------------------------------------------ internals

    def _core(self, index: int, incarnation: int, rng: random.Random) -> Membership:
        seeds = [a for a in self.seed_addresses if a != self.addresses[index]]
        return self._membership(self.names[index], self.addresses[index], self.clock, self.settings,
                                incarnation=incarnation, seeds=seeds, rng=random.Random(rng.getrandbits(64)))

    def _start(self, node: _Node) -> None:
        if node.crashed or node.left:
            return
        self._send(node, node.core.start())
        self._collect(node)
        self._schedule(node)

    def _push(self, when: float, kind: int, index: int, msg: Message | None) -> None:
        if self._queue is not None:
            self._queue.push(when, kind, index, msg)
            return
        e: _Event = (when, next(self._ids), kind, index, msg)
        k = int(when * _PER_BUCKET)
        if k <= self._cur:
            heapq.heappush(self._near, e)
            return
        b = self._buckets.get(k)
        if b is None:
            self._buckets[k] = [e]
            heapq.heappush(self._keys, k)
        else:
            b.append(e)

    def _schedule(self, node: _Node) -> None:
        if node.crashed or node.left:
            return
        when = node.core.next_wakeup()
        now = self.clock.now
        if when < now:
            when = now
        if when != node.wake_at:  # earlier or later: the one already queued goes stale
            node.wake_at = when
            self._push(when, _WAKE, node.index, None)

    def _send(self, node: _Node, out: Sequence[Outgoing]) -> None:
        loss, latency, jitter = self.network.loss, self.network.latency, self.network.jitter
        random_ = self.rng.random
        group = self._group
        by_addr = self._by_addr
        push = self._push
        now = self.clock.now
        src_group = group[node.index]
        for o in out:
            dst = by_addr.get(o.address)
            if dst is None or group[dst] != src_group or (loss and random_() < loss):
                self.dropped += 1
                continue
            push(now + latency + (random_() * jitter if jitter else 0.0), _DELIVER, dst, o.message)

    def _collect(self, node: _Node) -> None:
        for c in node.core.drain_changes():
            if c.new != DEAD:
                continue
            det = self.detections.get(c.node)
            if det is not None:
                if det.restarted_at is None and node.name not in det.seen:
                    det.seen[node.name] = self.now - det.crashed_at
            elif self._is_false_death(node.name, c.node):
                self.false_deaths.append(FalseDeath(self.now, node.name, c.node))

    def _is_false_death(self, observer: str, node: str) -> bool:
        """Dead, though it never crashed nor left, and the observer could reach it lately."""
        if node in self._ever_crashed:
            return False
        target = self.nodes[self._by_name[node]]
        if target.left or target.core.members[node].status == LEFT:
            return False
        a, b = self._by_name[observer], target.index
        now = self.now
        return not any(p.group[a] != p.group[b] and (p.end is None or now - p.end < self.partition_grace)
                       for p in self._partitions)


def _sent(core: Membership) -> dict[str, int]:
    """What ``core`` sent, per message type: its own counters (every message it returns is sent)."""
    return {k[4:]: c for k, c in core.counters.items() if c and k.startswith("out:")}


# --------------------------------------------------------------------------- reporting


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in 0..100."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def scenario(nodes: int, minutes: float, *, seed: int = 1, loss: float = 0.0, latency: float = 0.001,
             jitter: float = 0.002, crash: int = 1, stall: float = 0.0, stall_every: float = 10.0,
             stall_nodes: int | None = None, settings: GossipSettings | None = None,
             warm: bool = False, compiled: bool | None = None, compiled_core: bool | None = None) -> dict[str, Any]:
    """Join ``nodes`` through 3 seeds, let it settle, crash ``crash`` of them at once (never the
    first), run to ``minutes``; measured from the crash on: messages per node per second, detection.

    With ``stall`` > 0 every node (or ``stall_nodes`` random ones) stalls that long once
    every ``stall_every`` seconds. With ``warm`` the cluster starts joined (every node knows
    every other, no news pending) and the crash comes after 5 s. ``compiled`` and
    ``compiled_core``: as for :class:`Simulator` (the same run either way, only the real
    time differs).
    """
    started, cpu = time.perf_counter(), time.process_time()
    sim = Simulator(nodes, seed=seed, settings=settings, network=NetworkSettings(loss, latency, jitter), warm=warm,
                    compiled=compiled, compiled_core=compiled_core)
    total = minutes * 60
    if stall > 0:
        stalling = None if stall_nodes is None else sim.rng.sample(sim.names, min(stall_nodes, nodes))
        sim.periodic_stalls(stall, stall_every, total, stalling)
    joined = 0.0 if warm else sim.run_until(sim.converged, total, check_every=1.0)
    # the join's own dissemination dies down (a warm start has none: its probes get going)
    sim.run_for(min(5.0 if warm else 30.0, max(0.0, total - sim.now)))
    window = sim.now
    before = sim.sent_by_type()
    victims = sim.rng.sample(sim.names[1:], min(crash, nodes - 1))
    for v in victims:
        sim.crash(v)
    sim.run_for(max(0.0, total - sim.now))
    span = max(1e-9, sim.now - window)
    after = sim.sent_by_type()
    rates = {t: (after[t] - before.get(t, 0)) / (nodes * span) for t in sorted(after)}
    detections = []
    for v in victims:
        det = sim.detections[v]
        lat = list(det.seen.values())
        detections.append({"node": v, "at": round(det.crashed_at, 3), "seen_by": len(lat),
                           "survivors": len(det.survivors), "p50": percentile(lat, 50), "p99": percentile(lat, 99),
                           "all": det.latency})
    return {
        "nodes": nodes, "minutes": minutes, "seed": seed, "loss": loss, "latency": latency, "jitter": jitter,
        "warm": warm, "stall": stall, "stall_every": stall_every if stall > 0 else None,
        "stall_nodes": (nodes if stall_nodes is None else min(stall_nodes, nodes)) if stall > 0 else 0,
        "joined": joined, "window": [window, sim.now],
        "messages_per_node_per_s": sum(rates.values()), "by_type": rates,
        "detections": detections, "false_deaths": len(sim.false_deaths),
        "false_death_examples": [(round(f.time, 3), f.observer, f.node) for f in sim.false_deaths[:5]],
        "converged_at_end": sim.converged(), "events": sim.events,
        "real_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu, "compiled": sim.compiled,
        "compiled_core": sim.compiled_core,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gossip_sim",
                                description="Simulate N membership cores in virtual time and report.")
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--loss", type=float, default=0.0, help="probability that a message is lost")
    p.add_argument("--latency", type=float, default=0.001, help="one-way base latency, seconds")
    p.add_argument("--jitter", type=float, default=0.002, help="plus uniform(0, jitter) seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--crash", type=int, default=1, help="nodes crashed at once after the join settled")
    p.add_argument("--stall", type=float, default=0.0, help="each node stalls this long ...")
    p.add_argument("--stall-every", type=float, default=10.0, help="... once every this many seconds")
    p.add_argument("--stall-nodes", type=int, default=None, help="only this many random nodes stall (default: all)")
    p.add_argument("--warm", action="store_true",
                   help="start joined (every node knows every other) instead of joining through 3 seeds")
    p.add_argument("--python-loop", action="store_true",
                   help="run the event loop in Python even where the C one is built (same run, slower)")
    p.add_argument("--interpreted-core", action="store_true",
                   help="run membership.py interpreted even where its mypyc build is current (same run, slower)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the text report")
    args = p.parse_args(argv)
    if args.crash >= args.nodes:
        p.error("--crash must leave at least one node running")
    r = scenario(args.nodes, args.minutes, seed=args.seed, loss=args.loss, latency=args.latency, jitter=args.jitter,
                 crash=args.crash, stall=args.stall, stall_every=args.stall_every, stall_nodes=args.stall_nodes,
                 warm=args.warm, compiled=False if args.python_loop else None,
                 compiled_core=False if args.interpreted_core else None)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['nodes']} nodes, {r['minutes']:g} min simulated, loss {r['loss']:.0%}, "
          f"latency {r['latency'] * 1000:g}+{r['jitter'] * 1000:g} ms, seed {r['seed']}"
          + (f", {r['stall_nodes']} node(s) stalled {r['stall']:g} s every {r['stall_every']:g} s"
             if r["stall"] else ""))
    if r["warm"]:
        print("joined: started joined (--warm)")
    else:
        print(f"joined: all alive everywhere after {r['joined']:.1f} s" if r["joined"] is not None
              else "joined: never all alive everywhere at once")
    a, b = r["window"]
    by_type = ", ".join(f"{t} {v:.2f}" for t, v in r["by_type"].items())
    print(f"messages per node per second, {a:.0f}..{b:.0f} s: {r['messages_per_node_per_s']:.2f} ({by_type})")
    for d in r["detections"]:
        every = f"{d['all']:.2f} s" if d["all"] is not None else "not yet"
        print(f"crash of {d['node']} at {d['at']:.0f} s: dead on {d['seen_by']}/{d['survivors']} survivors; "
              f"p50 {d['p50']:.2f} s, p99 {d['p99']:.2f} s, all {every}")
    print(f"false deaths: {r['false_deaths']}" + (f" e.g. {r['false_death_examples']}" if r["false_deaths"] else ""))
    print(f"converged at the end: {'yes' if r['converged_at_end'] else 'no'}")
    print(f"real time {r['real_s']:.1f} s (cpu {r['cpu_s']:.1f} s), {r['events']} events, "
          f"event loop in {'C' if r['compiled'] else 'Python'}, "
          f"core {'compiled by mypyc' if r['compiled_core'] else 'interpreted'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
