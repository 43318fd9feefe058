"""SWIM membership with Lifeguard: a pure state machine, no sockets.

The core takes messages and the time and returns messages to send; a driver (the
aiohttp transport, or the simulator) moves them. Everything about *who is alive* is
decided here:

- **Probe** one member per interval (randomised round-robin); no ack within the probe
  timeout → ask ``indirect_checks`` others to probe it; nothing by the end of the
  interval → **suspect**. A suspect that does not refute within the suspicion timeout
  is **dead**. A node refutes a suspicion of itself by raising its incarnation.
- **Lifeguard**: (1) a local health multiplier (LHM) that grows when this node misses
  acks without receiving the nacks it expected, has to refute a suspicion, or notices
  it was stalled (a timer seen long after it was due), and stretches this node's own
  probe interval and timeout and the suspicion timeouts it runs, so the slow node slows
  down instead of accusing healthy ones; (2) suspicion timeouts that start long and
  shrink with independent confirmations; (3) a probe of a suspect carries the suspicion,
  so it refutes at once.
- **Dissemination** piggybacks updates on every message, each retransmitted
  ``retransmit_mult * ceil(log10(n + 1))`` times; a **push-pull** full-state exchange
  runs at a longer interval; dead members and seeds are re-contacted periodically so a
  healed partition always heals the membership.
- **Lifecycle**: a member dead for ``reap_after`` or left for ``tombstone`` is forgotten
  (*reaped*), each node on its own clock. No claim but ``alive`` ever creates a record, so
  a slower node's stale dead or left gossip about a reaped member cannot bring it back;
  the member itself, restarted, comes back with a join (docs/gossip.md). An operator's
  **force-leave** turns a dead or suspect member ``left`` with a leave claim at its
  incarnation: a live member refutes it as it refutes a suspicion.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from haflowd.clock import Clock

ALIVE, SUSPECT, DEAD, LEFT = "alive", "suspect", "dead", "left"
STATUSES = (ALIVE, SUSPECT, DEAD, LEFT)
MAX_LHM = 8
MAX_PIGGYBACK = 24
NACK_FRACTION = 0.8  # a helper nacks within this share of the probe timeout, so the nack is in time
LAST_CHANCES = 2  # pings to a suspect, a probe timeout apart, that end just before it is declared dead
REAPED = "reaped"  # a Change's ``new`` when a member is forgotten; never a member's status
PROTOCOL_VERSION = 1
"""Sent as ``"pv"`` in every message. Version 0 (no ``pv``) is haflowd before it. A node reads
the fields it knows of a message of any version and skips update kinds it does not know."""
REAP_CHECK_INTERVAL = 1.0


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class GossipSettings:
    """Defaults are chosen for a LAN of 3 to 100 nodes: see the README (gossip)."""

    probe_interval: float = 0.3
    probe_timeout: float = 0.15
    indirect_checks: int = 3
    suspicion_mult: int = 4
    suspicion_max_mult: int = 6
    retransmit_mult: int = 4
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    gossip_to_dead: float = 30.0
    push_pull_interval: float = 30.0
    reconnect_interval: float = 5.0
    join_retry: float = 1.0
    reap_after: float = 72 * 3600.0  # a member dead this long is forgotten
    tombstone: float = 24 * 3600.0  # a member left this long is forgotten


# --------------------------------------------------------------------------- pure formulas


def suspicion_min(mult: int, n: int, interval: float, lhm: int = 0) -> float:
    """memberlist's floor: the timeout grows with log10 of the cluster size; a node whose
    local health multiplier is ``lhm`` waits ``lhm + 1`` times as long (docs/gossip.md)."""
    return mult * max(1.0, math.log10(max(1, n))) * interval * (1 + lhm)


def suspicion_timeout(lo: float, hi: float, k: int, confirmations: int) -> float:
    """Lifeguard: start at ``hi``, fall toward ``lo`` as independent confirmations come in."""
    if k < 1:
        return lo
    frac = math.log(confirmations + 1) / math.log(k + 1)
    return max(lo, hi - (hi - lo) * frac)


def expected_confirmations(mult: int, n: int) -> int:
    """k = mult - 2, but no confirmations are expected where too few nodes could send them."""
    k = mult - 2
    return 0 if n - 2 < k else k


def retransmit_limit(mult: int, n: int) -> int:
    return mult * max(1, math.ceil(math.log10(n + 1)))


# written out, not rng.shuffle: the simulator's mypyc build compiles it (random.py's was a tenth of its work)
def shuffle(rng: random.Random, x: list[str]) -> None:
    """``rng.shuffle(x)``: the same draws, the same order (CPython's Fisher-Yates, each
    position drawn by rejection from ``getrandbits``). tests/unit/test_membership.py checks
    it against ``random.Random.shuffle``."""
    getrandbits = rng.getrandbits
    for i in range(len(x) - 1, 0, -1):
        n = i + 1
        k = n.bit_length()
        j = getrandbits(k)
        while j >= n:
            j = getrandbits(k)
        x[i], x[j] = x[j], x[i]


def push_pull_scale(interval: float, n: int) -> float:
    """Above 32 nodes, push-pull less often so its cost per node stays flat."""
    if n <= 32:
        return interval
    return interval * (math.ceil(math.log2(n) - math.log2(32)) + 1)


# --------------------------------------------------------------------------- messages
#
# Never changed once built, yet not frozen: a frozen dataclass costs 3x to build, and the simulator builds millions.


@dataclass(slots=True, init=False)
class Update:
    """A claim about one member; ``sender`` is who made a suspect/dead claim."""

    kind: str
    node: str
    incarnation: int
    address: str = ""
    sender: str = ""

    # written out (init=False): the simulator's mypyc build compiles it, not a dataclass's own
    def __init__(self, kind: str, node: str, incarnation: int, address: str = "", sender: str = "") -> None:
        self.kind, self.node, self.incarnation, self.address, self.sender = kind, node, incarnation, address, sender

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "node": self.node, "inc": self.incarnation, "addr": self.address,
                "from": self.sender}

    @staticmethod
    def from_json(d: Any) -> Update:
        if not isinstance(d, dict):
            raise ValueError("update is not an object")
        kind, node, inc = d.get("kind"), d.get("node"), d.get("inc")
        if isinstance(kind, str) and kind not in STATUSES and 0 < len(kind) <= 32:
            raise UnknownKind(kind)
        addr, sender = d.get("addr", ""), d.get("from", "")
        if kind not in STATUSES or not _is_name(node) or not isinstance(inc, int) or not _is_inc(inc):
            raise ValueError("bad update")
        if not isinstance(addr, str) or not isinstance(sender, str) or len(addr) > 300 or len(sender) > 128:
            raise ValueError("bad update")
        return Update(str(kind), str(node), int(inc), addr, sender)


class UnknownKind(ValueError):
    """An update of a kind a newer version added: skipped, the rest of its message is read."""


@dataclass(slots=True)
class Summary:
    """A node's own state (health, components, ...) riding along with the gossip."""

    node: str
    version: tuple[int, int]  # (incarnation, counter): newer after a restart too
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "version": list(self.version), "data": self.data}

    @staticmethod
    def from_json(d: Any) -> Summary:
        if not isinstance(d, dict) or not _is_name(d.get("node")) or not isinstance(d.get("data"), dict):
            raise ValueError("bad summary")
        v = d.get("version")
        if not isinstance(v, list) or len(v) != 2 or not all(_is_inc(x) for x in v):
            raise ValueError("bad summary version")
        return Summary(d["node"], (v[0], v[1]), d["data"])


@dataclass(slots=True, init=False)
class Message:
    """One gossip message. ``type``: ping, ack, nack, ping-req, gossip, push-pull."""

    type: str
    source: str
    source_addr: str
    seq: int = 0
    target: str = ""
    target_addr: str = ""
    updates: tuple[Update, ...] = ()
    summaries: tuple[Summary, ...] = ()
    reply: bool = False

    # written out (init=False): the simulator's mypyc build compiles it, not a dataclass's own
    def __init__(self, type: str, source: str, source_addr: str, seq: int = 0, target: str = "",
                 target_addr: str = "", updates: tuple[Update, ...] = (), summaries: tuple[Summary, ...] = (),
                 reply: bool = False) -> None:
        self.type, self.source, self.source_addr, self.seq = type, source, source_addr, seq
        self.target, self.target_addr, self.updates, self.summaries = target, target_addr, updates, summaries
        self.reply = reply

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pv": PROTOCOL_VERSION, "type": self.type, "from": self.source,
                               "addr": self.source_addr}
        if self.seq:
            out["seq"] = self.seq
        if self.target:
            out["target"] = self.target
            out["target_addr"] = self.target_addr
        if self.updates:
            out["updates"] = [u.to_json() for u in self.updates]
        if self.summaries:
            out["summaries"] = [s.to_json() for s in self.summaries]
        if self.reply:
            out["reply"] = True
        return out

    @staticmethod
    def from_json(d: Any) -> Message:
        """Strict: anything malformed raises ValueError (the transport answers 400). What a
        newer protocol version (``pv``) may add is not malformed: unknown keys are ignored
        (from any version), and from a higher ``pv`` an update of an unknown kind is skipped
        and a message of an unknown type raises :class:`UnknownType` (the transport answers
        it with nothing). From our version or an older one, those are malformed."""
        if not isinstance(d, dict):
            raise ValueError("message is not an object")
        pv = d.get("pv", 0)
        newer = _is_inc(pv) and pv > PROTOCOL_VERSION
        t = d.get("type")
        if t not in MESSAGE_TYPES:
            if newer and isinstance(t, str) and 0 < len(t) <= 32 and _is_name(d.get("from")):
                raise UnknownType(t)
            raise ValueError(f"unknown message type {t!r}")
        source, addr = d.get("from"), d.get("addr", "")
        if not _is_name(source) or not isinstance(addr, str) or len(addr) > 300:
            raise ValueError("bad sender")
        seq = d.get("seq", 0)
        if not _is_inc(seq):
            raise ValueError("bad seq")
        target, taddr = d.get("target", ""), d.get("target_addr", "")
        if (target != "" and not _is_name(target)) or not isinstance(taddr, str) or len(taddr) > 300:
            raise ValueError("bad target")
        ups, sums, reply = d.get("updates", []), d.get("summaries", []), d.get("reply", False)
        if not isinstance(reply, bool):
            raise ValueError("bad reply flag")
        if not isinstance(ups, list) or not isinstance(sums, list) or len(ups) > 10_000 or len(sums) > 10_000:
            raise ValueError("bad updates")
        return Message(
            type=str(t), source=str(source), source_addr=addr, seq=int(seq), target=target or "", target_addr=taddr,
            updates=tuple(_known_updates(ups)) if newer else tuple(Update.from_json(u) for u in ups),
            summaries=tuple(Summary.from_json(s) for s in sums),
            reply=reply,
        )


MESSAGE_TYPES = ("ping", "ack", "nack", "ping-req", "gossip", "push-pull")


class UnknownType(ValueError):
    """A well-formed message of a type a newer version added: nothing this node can act on."""


def _known_updates(items: list[Any]) -> Iterable[Update]:
    for u in items:
        try:
            yield Update.from_json(u)
        except UnknownKind:
            continue

_NOBODY = Update(ALIVE, "-", 0)  # a placeholder, never sent
_IN_KEYS = {t: f"in:{t}" for t in MESSAGE_TYPES}
_OUT_KEYS = {t: f"out:{t}" for t in MESSAGE_TYPES}


def _is_name(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 128


def _is_inc(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**62


@dataclass(slots=True, init=False)
class Outgoing:
    address: str
    message: Message

    # written out (init=False): the simulator's mypyc build compiles it, not a dataclass's own
    def __init__(self, address: str, message: Message) -> None:
        self.address, self.message = address, message


@dataclass(slots=True)
class Change:
    """A status change of a member, for logs and metrics."""

    node: str
    old: str | None
    new: str
    incarnation: int
    reason: str


# --------------------------------------------------------------------------- state


@dataclass(slots=True, init=False)
class Member:
    name: str
    address: str
    incarnation: int
    status: str
    since: float  # monotonic time of the last status change
    # monotonic time we last heard from it directly; -inf (never), not None: unboxed in the simulator's mypyc build
    last_seen: float = -math.inf
    rtt: float | None = None
    revived: float = -math.inf  # monotonic time it last came back from dead or left; -inf: never

    # written out (init=False): the simulator's mypyc build compiles it, not a dataclass's own
    def __init__(self, name: str, address: str, incarnation: int, status: str, since: float,
                 last_seen: float = -math.inf, rtt: float | None = None, revived: float = -math.inf) -> None:
        self.name, self.address, self.incarnation, self.status = name, address, incarnation, status
        self.since, self.last_seen, self.rtt, self.revived = since, last_seen, rtt, revived


@dataclass(slots=True)
class Suspicion:
    start: float
    lo: float
    hi: float
    k: int
    confirmers: set[str] = field(default_factory=set)
    accuser: str = ""  # who raised it first: named when we pass the suspicion on
    asked: int = 0  # last-chance pings we sent the suspect ourselves
    grace: float = 0.0  # our own stalls, and time for last chances the deadline came before
    # our local health multiplier when it began, or the highest it reached since: the
    # timeouts (and the last chances' spacing) are (lhm + 1) times as long; never lowered
    lhm: int = 0

    def deadline(self) -> float:
        timeout = suspicion_timeout(self.lo, self.hi, self.k, max(0, len(self.confirmers) - 1))
        return self.start + self.grace + timeout * (1 + self.lhm)


@dataclass(slots=True, init=False)
class Probe:
    member: Member  # the target's record (never replaced; removed only long after it stopped being probed)
    seq: int
    sent: float
    direct_deadline: float
    end: float
    indirect: bool = False
    expected_nacks: int = 0
    nacks: int = 0

    # written out (init=False): the simulator's mypyc build compiles it, not a dataclass's own
    def __init__(self, member: Member, seq: int, sent: float, direct_deadline: float, end: float,
                 indirect: bool = False, expected_nacks: int = 0, nacks: int = 0) -> None:
        self.member, self.seq, self.sent = member, seq, sent
        self.direct_deadline, self.end, self.indirect = direct_deadline, end, indirect
        self.expected_nacks, self.nacks = expected_nacks, nacks


@dataclass(slots=True)
class _Relay:
    requester: str  # address
    seq: int  # the requester's seq
    deadline: float


@dataclass(slots=True)
class _Broadcast:
    key: tuple[str, str]
    update: Update | None
    summary: Summary | None


class Membership:
    # slots: the simulator's 1,000 cores are cold in the CPU's cache; a slot array misses less than a dict
    __slots__ = ("_dead", "_gone", "_left", "_live", "_live_addrs", "_live_at", "_next_gossip", "_next_probe",
                 "_next_push_pull", "_next_reap", "_next_reconnect", "_order", "_probe", "_queue", "_relays",
                 "_replaced", "_seq", "_stale", "_state", "_summary_counter", "_suspicions", "_tiers", "address",
                 "changes", "clock", "counters", "leaving", "lhm", "members", "name", "name_conflict", "rng", "s",
                 "seeds", "summaries")

    def __init__(
        self,
        name: str,
        address: str,
        clock: Clock,
        settings: GossipSettings | None = None,
        incarnation: int = 0,
        seeds: Sequence[str] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.address = address
        self.clock = clock
        self.s = settings or GossipSettings()
        self.rng = rng or random.Random()
        self.seeds = [a for a in seeds if a != address]
        now = clock.monotonic()
        self.members: dict[str, Member] = {}
        # indices kept in step with every member change, so no timer scans all members
        self._live: list[str] = []  # alive or suspect members other than us, in no order
        self._live_at: dict[str, int] = {}  # name → its position in _live
        self._dead: dict[str, None] = {}  # dead members, oldest death first
        self._left = 0  # members that left, us included
        self._gone: dict[str, None] = {}  # members other than us that left, oldest first
        self._live_addrs: dict[str, int] = {}  # address → alive or suspect members there, us included
        self._state: dict[str, Update] = {}  # each member as our push-pull state tells it
        self._stale: set[str] = set()  # members changed since _state last told them
        self._add(Member(name, address, incarnation, ALIVE, now, now))
        self.lhm = 0
        self.leaving = False
        self.name_conflict: str | None = None  # the address of another live node with our name
        self.changes: list[Change] = []
        self.summaries: dict[str, Summary] = {}
        self._summary_counter = 0
        self._seq = 0
        self._probe: Probe | None = None
        self._order: list[str] = []
        self._relays: dict[int, _Relay] = {}
        self._suspicions: dict[str, Suspicion] = {}
        self._queue: dict[tuple[str, str], _Broadcast] = {}
        # the queue by rank (-1 urgent, else transmits so far), oldest first, in batches that
        # were sent together and move on together; a broadcast replaced in _queue stays here
        # until it comes up, and is skipped then
        self._tiers: dict[int, deque[list[_Broadcast]]] = {}
        self._replaced = 0  # replaced broadcasts still in _tiers: none, and nothing needs skipping
        self._next_probe = now + self.rng.uniform(0, self.s.probe_interval)
        self._next_gossip = now
        self._next_push_pull = now + self.s.push_pull_interval
        self._next_reconnect = now + self.s.join_retry
        self._next_reap = now + REAP_CHECK_INTERVAL
        self.counters: dict[str, int] = dict.fromkeys((*_IN_KEYS.values(), *_OUT_KEYS.values()), 0)

    # ------------------------------------------------------------------ views

    @property
    def incarnation(self) -> int:
        return self.members[self.name].incarnation

    def live_count(self) -> int:
        return len(self._live) + (self.members[self.name].status in (ALIVE, SUSPECT))

    def cluster_size(self) -> int:
        return len(self.members) - self._left

    def scaled(self, seconds: float) -> float:
        return seconds * (1 + self.lhm)

    def next_wakeup(self) -> float:
        """When ``tick`` has something to do; it can move earlier after ``handle``."""
        t = self._next_probe
        if self._next_push_pull < t:
            t = self._next_push_pull
        if self._next_reconnect < t:
            t = self._next_reconnect
        if self._queue and self._next_gossip < t:  # gossip rounds only while updates are pending
            t = self._next_gossip
        p = self._probe
        if p is not None:
            d = p.end if p.indirect else p.direct_deadline
            if d < t:
                t = d
        if self._relays:
            for r in self._relays.values():
                if r.deadline < t:
                    t = r.deadline
        if self._suspicions:
            timeout = self.s.probe_timeout
            for s in self._suspicions.values():
                d = s.deadline() - (LAST_CHANCES - s.asked) * timeout * (1 + s.lhm)
                if d < t:
                    t = d
        return t

    def suspect_since(self, node: str) -> float | None:
        s = self._suspicions.get(node)
        return s.start if s else None

    # ------------------------------------------------------------------ own state

    def set_summary(self, data: dict[str, Any]) -> None:
        """Our node's summary; a new version is gossiped only when it changed."""
        current = self.summaries.get(self.name)
        if current is not None and current.data == data:
            return
        self._summary_counter += 1
        summary = Summary(self.name, (self.incarnation, self._summary_counter), data)
        self.summaries[self.name] = summary
        self._enqueue_summary(summary)

    def note_lag(self, seconds: float) -> None:
        """The driver saw its event loop late by ``seconds``: we are the slow one. Our
        suspicions get that much longer: while we stood still we could neither pass them on
        nor hear a refutation, so the time does not count against the suspects."""
        if seconds > self.s.probe_timeout:
            self._lhm(+1, stretch=False)  # the stall's own time is given back exactly, below
            for s in self._suspicions.values():
                s.grace += seconds

    def start(self) -> list[Outgoing]:
        """Join: announce ourselves and pull the state of every seed."""
        self._enqueue(Update(ALIVE, self.name, self.incarnation, self.address), urgent=True)
        return [self._push_pull_to(a) for a in self.seeds]

    def assume(self, members: Iterable[Update]) -> None:
        """Take these alive members as known for long: the state after a join whose news has
        died down. Nothing is queued or reported. For the simulator's warm start, which
        measures a running cluster without paying for its join."""
        now = self.clock.monotonic()
        for u in members:
            if u.kind == ALIVE and u.node != self.name and u.node not in self.members:
                self._add(Member(u.node, u.address, u.incarnation, ALIVE, now, now))
                self._state[u.node] = u  # what our push-pull state tells of it: this very claim
                self._stale.discard(u.node)
        self._order = list(self._live)
        shuffle(self.rng, self._order)
        # in a cluster that has run for a while, push-pulls are spread over their interval
        self._next_push_pull = now + self.rng.uniform(0, push_pull_scale(self.s.push_pull_interval,
                                                                          self.cluster_size()))

    def leave(self) -> list[Outgoing]:
        """Graceful leave: peers mark us ``left``, not ``dead``."""
        self.leaving = True
        me = self.members[self.name]
        self._unindex(me)
        me.status = LEFT
        self._index(me)
        u = Update(LEFT, self.name, me.incarnation, self.address, self.name)
        self._queue.clear()
        self._tiers.clear()
        self._replaced = 0
        self._enqueue(u, urgent=True)
        others = [self.members[n] for n in self._live]
        targets = others if len(others) <= 10 else self.rng.sample(others, 10)
        return [Outgoing(m.address, self._msg("gossip", updates=(u,))) for m in targets]

    def force_leave(self, node: str) -> tuple[str, list[Outgoing]]:
        """An operator's verdict that a dead or suspect ``node`` is gone for good: it becomes
        ``left`` here, and the claim is gossiped like a leave at its incarnation, so a node
        that is in fact alive refutes it. Refused (ValueError, the reason) for us, for an
        unknown node, and for one we see alive. Returns (what was done, messages)."""
        m = self.members.get(node)
        if node == self.name:
            raise ValueError(f"{node} is this node: use `haflowctl leave`")
        if m is None:
            raise LookupError(f"no member named {node!r}")
        if m.status == LEFT:
            return "already left", []
        if m.status == ALIVE:
            raise ValueError(f"{node} is alive here (incarnation {m.incarnation}): "
                             "only a dead or suspect member can be forced to leave")
        was = m.status
        u = Update(LEFT, node, m.incarnation, m.address, self.name)
        self._apply(u, self.clock.monotonic(), False)
        self._enqueue(u, urgent=True)
        targets = [self.members[n] for n in self._live]
        targets = targets if len(targets) <= 10 else self.rng.sample(targets, 10)
        return f"left (was {was})", [Outgoing(t.address, self._msg("gossip", updates=(u,))) for t in targets]

    # ------------------------------------------------------------------ messages in

    def handle(self, msg: Message) -> list[Outgoing]:
        t = msg.type
        try:
            self.counters[_IN_KEYS[t]] += 1
        except KeyError:
            self._count("in", t)
        now = self.clock.monotonic()
        if msg.source == self.name:
            if msg.source_addr and msg.source_addr != self.address:
                return self._conflict(msg.source_addr)
            return []
        members = self.members
        src = members.get(msg.source)
        if src is not None and (src.status == ALIVE or src.status == SUSPECT):
            src.last_seen = now
        if not msg.updates and not msg.summaries:  # most pings and acks: nothing to merge
            if t == "ack":
                return self._on_ack(msg, now)
            if t == "ping":
                if msg.target and msg.target != self.name:
                    return []
                if not self._queue:  # nothing to piggyback: what _msg would build, without its cost
                    self.counters["out:ack"] += 1
                    return [Outgoing(msg.source_addr, Message("ack", self.name, self.address, msg.seq))]
                return [Outgoing(msg.source_addr, self._msg("ack", seq=msg.seq, piggyback=True))]
        out: list[Outgoing] = []
        fixes: tuple[Update, ...] = ()
        if t != "push-pull":
            ups = msg.updates
            if ups:
                fixes = self._corrections(ups)
                name = self.name
                for u in ups:
                    if u.kind == ALIVE:
                        m = members.get(u.node)
                        if m is not None and u.incarnation <= m.incarnation and u.node != name:
                            continue  # the commonest news: nothing new (what _apply would conclude)
                    out += self._apply(u, now, from_push_pull=False, source=msg.source)
            if msg.summaries:
                for s in msg.summaries:
                    self._apply_summary(s)
            if fixes and t != "ping" and any(u.node == self.name for u in fixes):  # it spreads a refuted claim
                out.append(Outgoing(msg.source_addr, self._msg("gossip", updates=fixes)))
        if t == "ping":
            if msg.target and msg.target != self.name:
                return out
            out.append(Outgoing(msg.source_addr, self._msg("ack", seq=msg.seq, piggyback=True, extra=fixes)))
        elif t == "ack":
            out += self._on_ack(msg, now)
        elif t == "nack":
            p = self._probe
            if p is not None and p.seq == msg.seq:
                p.nacks += 1
        elif t == "ping-req":
            if self.leaving:
                return out
            seq = self._next_seq()
            self._relays[seq] = _Relay(msg.source_addr, msg.seq, now + NACK_FRACTION * self.s.probe_timeout)
            out.append(Outgoing(msg.target_addr, self._msg("ping", seq=seq, target=msg.target,
                                                            target_addr=msg.target_addr, piggyback=True)))
        elif t == "push-pull":
            out += self._merge_state(msg, now)
            if not msg.reply:
                out.append(Outgoing(msg.source_addr, self._state_msg(reply=True)))
        return out

    def _corrections(self, updates: Iterable[Update]) -> tuple[Update, ...]:
        """Suspect/dead/left claims older than a member's alive incarnation we know (refuted
        claims the sender missed): our newer view, to send back so the sender does not condemn."""
        out: dict[str, Update] = {}
        for u in updates:
            if u.kind != ALIVE and u.node not in out:
                m = self.members.get(u.node)
                if m is not None and m.status == ALIVE and m.incarnation > u.incarnation:
                    out[u.node] = Update(ALIVE, m.name, m.incarnation, m.address)
        return tuple(out.values())

    def _on_ack(self, msg: Message, now: float) -> list[Outgoing]:
        relay = self._relays.pop(msg.seq, None) if self._relays else None
        if relay is not None:  # we probed on someone's behalf: pass the good news on
            return [Outgoing(relay.requester, self._msg("ack", seq=relay.seq))]
        p = self._probe
        if p is None or p.seq != msg.seq:
            return []
        m = p.member
        m.last_seen = now
        if not p.indirect:
            m.rtt = now - p.sent
        if self.lhm > 0:  # Lifeguard: a good probe, we are a little healthier
            self.lhm -= 1
        self._probe = None
        return []

    # ------------------------------------------------------------------ timers

    def tick(self) -> list[Outgoing]:
        now = self.clock.monotonic()
        out: list[Outgoing] = []
        late = self.s.probe_timeout  # a timer seen this late means *we* were stalled
        if self._relays:
            for seq, r in list(self._relays.items()):
                if now >= r.deadline:
                    del self._relays[seq]
                    out.append(Outgoing(r.requester, self._msg("nack", seq=r.seq)))
        p = self._probe
        if p is not None:
            if not p.indirect and now >= p.direct_deadline:
                if now - p.direct_deadline > late:
                    self._abandon_probe()
                else:
                    out += self._go_indirect(p)
            p = self._probe
            if p is not None and p.indirect and now >= p.end:
                if now - p.end > late:
                    self._abandon_probe()
                else:
                    out += self._probe_failed(p, now)
        if self._probe is None and now >= self._next_probe:
            out += self._start_probe(now)
        if self._suspicions:
            for node, s in list(self._suspicions.items()):
                timeout = self.s.probe_timeout * (1 + s.lhm)  # a last chance's wait, as our probes wait
                deadline = s.deadline()
                if now >= deadline and s.asked < LAST_CHANCES:
                    # the last chances were due while we were stalled (or confirmations moved
                    # the deadline past them): no verdict before the suspect had them
                    s.grace += now - deadline + (LAST_CHANCES - s.asked) * timeout
                    deadline = s.deadline()
                if now >= deadline:
                    out += self._declare_dead(node, now)
                elif now >= deadline - (LAST_CHANCES - s.asked) * timeout:
                    s.asked += 1
                    out += self._last_chance(node)
        if self._queue and now >= self._next_gossip:
            self._next_gossip = now + self.s.gossip_interval
            out += self._gossip(now)
        if now >= self._next_push_pull:
            self._next_push_pull = now + push_pull_scale(self.s.push_pull_interval, self.cluster_size())
            peers = self._sample_alive(1, exclude=self.name)
            if peers:
                out.append(self._push_pull_to(peers[0].address))
        if now >= self._next_reconnect:
            out += self._reconnect()
        if now >= self._next_reap:
            self._next_reap = now + REAP_CHECK_INTERVAL
            self._reap(now)
        return out

    def _reap(self, now: float) -> None:
        """Forget members dead for ``reap_after`` or left for ``tombstone`` (oldest first:
        both indices are in the order of the status change, so the first young one ends it)."""
        for index, keep in ((self._dead, self.s.reap_after), (self._gone, self.s.tombstone)):
            for _ in range(len(index)):
                name = next(iter(index))
                m = self.members[name]
                if now - m.since < keep:
                    break
                self._forget(m, f"{m.status} for {now - m.since:.0f} s")

    def _forget(self, m: Member, reason: str) -> None:
        self._unindex(m)
        del self.members[m.name]
        self._state.pop(m.name, None)
        self._stale.discard(m.name)
        self._suspicions.pop(m.name, None)
        self.summaries.pop(m.name, None)
        self._changed(m.name, m.status, REAPED, m.incarnation, reason)

    def _abandon_probe(self) -> None:
        """Our own stall made this probe meaningless: no suspicion, but we are less healthy."""
        self._probe = None
        self._lhm(+1)
        self._next_probe = self.clock.monotonic()

    def _start_probe(self, now: float) -> list[Outgoing]:
        scale = 1 + self.lhm
        interval = self.s.probe_interval * scale
        self._next_probe = now + interval  # also while leaving: next_wakeup must not stay in the past
        target = None if self.leaving else self._next_target()
        if target is None:
            return []
        seq = self._seq = self._seq + 1
        self._probe = Probe(target, seq, now, now + self.s.probe_timeout * scale, now + interval)
        if target.status != SUSPECT and not self._suspicions:
            if not self._queue:  # nothing to piggyback: what _msg would build, without its cost
                self.counters["out:ping"] += 1
                return [Outgoing(target.address, Message("ping", self.name, self.address, seq, target.name,
                                                         target.address))]
            return [Outgoing(target.address, self._msg("ping", seq=seq, target=target.name,
                                                       target_addr=target.address, piggyback=True))]
        extra: list[Update] = []
        if target.status == SUSPECT:  # Lifeguard: tell the suspect, so it refutes at once
            extra.append(Update(SUSPECT, target.name, target.incarnation, target.address, self.name))
        for node, s in self._suspicions.items():  # and ask whoever we probe whether it was refuted
            m = self.members.get(node)
            if node != target.name and m is not None and m.status == SUSPECT and len(extra) < MAX_PIGGYBACK:
                extra.append(Update(SUSPECT, node, m.incarnation, m.address, s.accuser))
        return [Outgoing(target.address, self._msg("ping", seq=seq, target=target.name,
                                                   target_addr=target.address, piggyback=True, extra=tuple(extra)))]

    def _next_target(self) -> Member | None:
        members, me = self.members, self.name
        for _ in range(2):
            order = self._order
            while order:
                name = order.pop()
                m = members.get(name)
                if m is not None and (m.status == ALIVE or m.status == SUSPECT) and name != me:
                    return m
            self._order = list(self._live)
            shuffle(self.rng, self._order)
        return None

    def _go_indirect(self, p: Probe) -> list[Outgoing]:
        p.indirect = True
        target = p.member
        chosen = self._sample_alive(self.s.indirect_checks, exclude=target.name)
        p.expected_nacks = len(chosen)
        return [Outgoing(h.address, self._msg("ping-req", seq=p.seq, target=target.name,
                                              target_addr=target.address, piggyback=True)) for h in chosen]

    def _probe_failed(self, p: Probe, now: float) -> list[Outgoing]:
        self._probe = None
        m = p.member
        if p.expected_nacks:
            # Lifeguard: missing nacks mean the problem may be ours, not the target's; the
            # suspicion this probe raises runs on that less healthy clock (not a longer one
            # for failing again: a dead suspect would stretch its own timeout)
            self._lhm(p.expected_nacks - p.nacks, spare=m.name)
        if m.status not in (ALIVE, SUSPECT):
            if not p.expected_nacks:
                self._lhm(+1, stretch=False)
            return []
        out = self._apply(Update(SUSPECT, m.name, m.incarnation, m.address, self.name), now, False)
        if not p.expected_nacks:
            # nobody to ask (memberlist counts that as +1 too), so nothing told us the fault is
            # ours: raised after the suspicion began, as memberlist does, it slows our probes
            # but stretches no suspicion (the survivor of two detects as fast as before)
            self._lhm(+1, stretch=False)
        # Lifeguard's buddy system, at once rather than at our next probe of it: the suspect
        # hears of the suspicion now, while it may still refute before a stall of its own
        return out + self._last_chance(m.name)

    def _last_chance(self, node: str) -> list[Outgoing]:
        """Before condemning a suspect, ping it with the suspicion: alive, it answers with its
        refutation, or with the newer incarnation of one we missed (lost, or we were stalled)."""
        m = self.members.get(node)
        if m is None or m.status != SUSPECT or self.leaving:
            return []
        claim = Update(SUSPECT, m.name, m.incarnation, m.address, self.name)
        return [Outgoing(m.address, self._msg("ping", seq=self._next_seq(), target=m.name, target_addr=m.address,
                                              piggyback=True, extra=(claim,)))]

    def _declare_dead(self, node: str, now: float) -> list[Outgoing]:
        m = self.members.get(node)
        self._suspicions.pop(node, None)
        if m is None or m.status != SUSPECT:
            return []
        return self._apply(Update(DEAD, node, m.incarnation, m.address, self.name), now, False)

    def _gossip(self, now: float) -> list[Outgoing]:
        """To ``gossip_nodes`` random members: alive, suspect, or dead for less than ``gossip_to_dead``."""
        if not self._queue:
            return []
        recent = []
        for name in reversed(self._dead):
            if now - self.members[name].since >= self.s.gossip_to_dead:
                break
            recent.append(name)
        live = self._live
        total = len(live) + len(recent)
        out: list[Outgoing] = []
        for i in self.rng.sample(range(total), min(self.s.gossip_nodes, total)):
            if not self._queue:  # drained by the previous target: nothing left to send (or count)
                break
            m = self.members[live[i] if i < len(live) else recent[i - len(live)]]
            out.append(Outgoing(m.address, self._msg("gossip", piggyback=True)))
        return out

    def _sample_alive(self, k: int, exclude: str) -> list[Member]:
        """Up to ``k`` distinct random alive members (not suspect), never us or ``exclude``.

        Draws positions in ``_live`` at random and skips the ineligible, which is a uniform
        choice among the eligible; only when that keeps missing (mostly suspects) it scans.
        """
        live, members = self._live, self.members
        n = len(live)
        if n > 4 * k + 8:
            chosen: list[Member] = []
            seen: set[int] = set()
            for _ in range(8 * k + 16):
                i = self.rng.randrange(n)
                if i in seen:
                    continue
                seen.add(i)
                m = members[live[i]]
                if m.status == ALIVE and m.name != exclude:
                    chosen.append(m)
                    if len(chosen) == k:
                        return chosen
        pool = [members[x] for x in live if x != exclude and members[x].status == ALIVE]
        return self.rng.sample(pool, min(k, len(pool)))

    def _reconnect(self) -> list[Outgoing]:
        """Re-contact one dead member or unanswered seed: what heals a healed partition.

        As Serf does, only with probability (dead + unanswered seeds) / live, so the whole
        cluster makes about one attempt per interval however large it is (a full state to
        an unreachable address is not free at 1,000 nodes). Healing still always happens:
        of two sides of a partition, one counts at least as many dead as live, and tries
        every interval.
        """
        seeds = [a for a in self.seeds if not self._live_addrs.get(a)]
        live = self.live_count()
        alone = live <= 1
        self._next_reconnect = self.clock.monotonic() + (self.s.join_retry if alone else self.s.reconnect_interval)
        if alone and seeds:
            return [self._push_pull_to(a) for a in seeds]
        n = len(self._dead) + len(seeds)
        if not n or (n < live and self.rng.random() * live >= n):
            return []
        i = self.rng.randrange(n)
        if i < len(seeds):
            return [self._push_pull_to(seeds[i])]
        name = next(itertools.islice(self._dead, i - len(seeds), None))  # without listing them all
        return [self._push_pull_to(self.members[name].address)]

    # ------------------------------------------------------------------ merging

    def _apply(self, u: Update, now: float, from_push_pull: bool, source: str = "") -> list[Outgoing]:
        if u.node == self.name:
            return self._about_me(u)
        out: list[Outgoing] = []
        m = self.members.get(u.node)
        old = m.status if m else None
        if u.kind == ALIVE:
            if m is None:
                if not u.address:
                    return []
                self._add(Member(u.node, u.address, u.incarnation, ALIVE, now, now))
                self._order.insert(int(self.rng.random() * (len(self._order) + 1)), u.node)
                self._changed(u.node, None, ALIVE, u.incarnation, "joined")
            elif u.incarnation > m.incarnation:
                self._unindex(m)
                m.incarnation = u.incarnation
                if u.address:
                    m.address = u.address
                self._suspicions.pop(u.node, None)
                changed = m.status != ALIVE
                revived = changed and (old == DEAD or old == LEFT)
                if changed:
                    if revived:
                        m.revived = now
                    m.status, m.since = ALIVE, now
                self._index(m)
                if changed:
                    self._changed(u.node, old, ALIVE, u.incarnation,
                                  "refuted" if old == SUSPECT else "came back")
                if revived and not from_push_pull and (source == u.node or self.rng.random() * self.live_count() < 2):
                    # back from the dead, after a partition most likely: it may hold verdicts
                    # as stale as ours were, about members who never heard they were accused
                    # and so never refuted. A full-state exchange now brings those to light
                    # (they become suspicions here, which the accused refute). Done by the
                    # node it told itself, and about two others at random, not by everyone.
                    out.append(self._push_pull_to(m.address))
            else:
                return []
        elif u.kind == SUSPECT:
            if m is None or u.incarnation < m.incarnation or m.status in (DEAD, LEFT):
                return []
            if m.status == SUSPECT and u.incarnation == m.incarnation:
                s = self._suspicions.get(u.node)
                if s is None or u.sender in s.confirmers or not u.sender or not self._trusted(u.sender, now):
                    return []
                s.confirmers.add(u.sender)  # an independent confirmation: the timeout shrinks
            else:
                self._unindex(m)
                m.status, m.incarnation, m.since = SUSPECT, u.incarnation, now
                self._index(m)
                n = self.cluster_size()
                lo = suspicion_min(self.s.suspicion_mult, n, self.s.probe_interval)
                accuser = u.sender or source or self.name  # a full state names none: its sender
                self._suspicions[u.node] = Suspicion(
                    now, lo, lo * self.s.suspicion_max_mult,
                    expected_confirmations(self.s.suspicion_mult, n), {accuser}, accuser, lhm=self.lhm)
                self._changed(u.node, old, SUSPECT, u.incarnation, f"suspected by {accuser}")
        elif u.kind == DEAD:
            if m is None or u.incarnation < m.incarnation or m.status in (DEAD, LEFT):
                return []
            # another node's verdict about a member we heard from ourselves within a
            # suspicion timeout (a stale verdict after a healed partition, or a full-state
            # merge): suspect it first and let it refute, rather than kill a live node
            heard_lately = now - m.last_seen < suspicion_min(
                self.s.suspicion_mult, self.cluster_size(), self.s.probe_interval)  # suspect too: copies repeat
            if u.sender != self.name and (from_push_pull or heard_lately or not self._trusted(u.sender, now)):
                # a full state names no accuser: the one who sent it is, so its standing counts
                return self._apply(Update(SUSPECT, u.node, u.incarnation, u.address, u.sender or source), now, False)
            self._unindex(m)
            m.status, m.incarnation, m.since = DEAD, u.incarnation, now
            self._index(m)
            self._suspicions.pop(u.node, None)
            self._changed(u.node, old, DEAD, u.incarnation, f"declared dead by {u.sender or self.name}")
        elif u.kind == LEFT:
            if m is None or u.incarnation < m.incarnation or m.status == LEFT:
                return []
            self._unindex(m)
            m.status, m.incarnation, m.since = LEFT, u.incarnation, now
            self._index(m)
            self._suspicions.pop(u.node, None)
            self._changed(u.node, old, LEFT, u.incarnation, "left gracefully" if u.sender in ("", u.node)
                          else f"forced to leave by {u.sender}")
        self._enqueue(u)
        return out

    def _trusted(self, accuser: str, now: float) -> bool:
        """Whether a suspect or dead claim by ``accuser`` may confirm a suspicion or kill.

        Not when we hold the accuser dead, or it came back from the dead within a longest
        suspicion timeout: its verdicts may be stale ones from the far side of a healed
        partition, where everyone on our side was unreachable. At scale a node hears from
        most members too seldom for ``heard_lately`` to catch those, and every one of them
        would kill a live node. Such a claim only starts a suspicion, which the accused
        refutes; a real death we find out by probing it ourselves."""
        if accuser == self.name:
            return True
        m = self.members.get(accuser)
        if m is None or not (m.status == ALIVE or m.status == SUSPECT):
            return False
        if m.revived == -math.inf:
            return True
        window = suspicion_min(self.s.suspicion_mult, self.cluster_size(), self.s.probe_interval)
        return now - m.revived >= window * self.s.suspicion_max_mult

    def _about_me(self, u: Update) -> list[Outgoing]:
        me = self.members[self.name]
        if u.kind == ALIVE:
            if u.address and u.address != self.address and u.incarnation >= me.incarnation:
                return self._conflict(u.address)
            return []
        if self.leaving or u.incarnation < me.incarnation:
            return []
        # suspect, dead or left about us, at our incarnation or later: refute
        self._unindex(me)
        me.incarnation = u.incarnation + 1
        self._index(me)
        self._lhm(+1)
        refute = Update(ALIVE, self.name, me.incarnation, self.address)
        self._enqueue(refute, urgent=True)
        self._changed(self.name, u.kind, ALIVE, me.incarnation, f"refuted {u.kind} from {u.sender or '?'}")
        accuser = self.members.get(u.sender)
        if accuser is not None and accuser.name != self.name:
            return [Outgoing(accuser.address, self._msg("gossip", updates=(refute,)))]
        return []

    def _merge_state(self, msg: Message, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        members = self.members
        for u in msg.updates:
            m = members.get(u.node)
            if m is not None and u.kind == ALIVE and u.incarnation <= m.incarnation and u.node != self.name:
                continue  # nothing new (what _apply would conclude)
            out += self._apply(u, now, from_push_pull=True, source=msg.source)
        for s in msg.summaries:
            self._apply_summary(s)
        return out

    def _apply_summary(self, s: Summary) -> None:
        if s.node == self.name:
            return
        cur = self.summaries.get(s.node)
        if cur is None or s.version > cur.version:
            self.summaries[s.node] = s
            self._enqueue_summary(s)

    def _conflict(self, other: str) -> list[Outgoing]:
        """Two live nodes with one name: loud on both, never a silent flap. We tell the
        other one directly, so it raises the same alarm."""
        if self.name_conflict == other:
            return []
        self.name_conflict = other
        self._changed(self.name, None, "conflict", self.incarnation,
                      f"another live node uses the name {self.name!r} at {other}")
        me = Update(ALIVE, self.name, self.incarnation, self.address)
        return [Outgoing(other, self._msg("gossip", updates=(me,)))]

    # ------------------------------------------------------------------ dissemination

    def _enqueue(self, u: Update, urgent: bool = False) -> None:
        self._put(_Broadcast(("m", u.node), u, None), urgent)
        if urgent:
            self._next_gossip = self.clock.monotonic()

    def _enqueue_summary(self, s: Summary) -> None:
        self._put(_Broadcast(("s", s.node), None, s), False)

    def _put(self, b: _Broadcast, urgent: bool) -> None:
        """Queue ``b`` in place of an older broadcast about the same node."""
        if not self._queue:  # gossip rounds resume on their old beat: the next one after now
            now, interval = self.clock.monotonic(), self.s.gossip_interval
            if self._next_gossip < now and interval > 0:
                self._next_gossip += math.ceil((now - self._next_gossip) / interval) * interval
        if b.key in self._queue:
            self._replaced += 1
        self._queue[b.key] = b
        rank = -1 if urgent else 0
        tier = self._tiers.get(rank)
        if tier is None:
            self._tiers[rank] = deque([[b]])
        elif len(tier[-1]) < MAX_PIGGYBACK:
            tier[-1].append(b)  # the last batch of rank 0 or -1 was never sent: it can grow
        else:
            tier.append([b])

    def _take(self) -> tuple[tuple[Update, ...], tuple[Summary, ...]]:
        """Up to MAX_PIGGYBACK broadcasts, urgent first, then the least sent (oldest first)."""
        queue = self._queue
        if not queue:
            return (), ()
        limit = retransmit_limit(self.s.retransmit_mult, self.cluster_size())
        tiers = self._tiers
        room = MAX_PIGGYBACK
        taken: list[tuple[int, list[_Broadcast]]] = []  # by the transmits they will have
        for rank in sorted(tiers):
            tier = tiers[rank]
            while tier and room:
                batch = tier.popleft()
                if self._replaced:
                    size = len(batch)
                    batch = [b for b in batch if queue.get(b.key) is b]  # else replaced by a newer one
                    self._replaced -= size - len(batch)
                if len(batch) > room:
                    tier.appendleft(batch[room:])
                    del batch[room:]
                if batch:
                    room -= len(batch)
                    taken.append((rank + 1 if rank > 0 else 1, batch))
            if not tier:
                del tiers[rank]
            if not room:
                break
        ups: list[Update] = []
        sums: list[Summary] = []
        for sent, batch in taken:
            had = len(ups)
            ups += [b.update for b in batch if b.update is not None]
            if len(ups) - had < len(batch):
                sums += [b.summary for b in batch if b.summary is not None]
            if sent >= limit:
                for b in batch:
                    del queue[b.key]
            else:  # batches that move on together merge, so a tier stays a few long batches
                later = tiers.get(sent)
                if later is None:
                    tiers[sent] = deque([batch])
                elif len(later[-1]) + len(batch) <= MAX_PIGGYBACK:
                    later[-1].extend(batch)
                else:
                    later.append(batch)
        return tuple(ups), tuple(sums)

    def _msg(self, type_: str, *, seq: int = 0, target: str = "", target_addr: str = "",
             piggyback: bool = False, updates: Iterable[Update] = (), extra: tuple[Update, ...] = ()) -> Message:
        try:
            self.counters[_OUT_KEYS[type_]] += 1
        except KeyError:
            self._count("out", type_)
        if not extra and not updates and not (piggyback and self._queue):
            return Message(type_, self.name, self.address, seq, target, target_addr)
        ups: tuple[Update, ...] = ()
        sums: tuple[Summary, ...] = ()
        if piggyback and self._queue:
            ups, sums = self._take()
            if extra and ups:
                ups = tuple(u for u in ups if u not in extra)
        if extra or updates:
            ups = (*extra, *updates, *ups)
        return Message(type_, self.name, self.address, seq, target, target_addr, ups, sums)

    def _state_msg(self, reply: bool) -> Message:
        for name in self._stale:
            m = self.members[name]
            self._state[name] = Update(m.status, m.name, m.incarnation, m.address)
        self._stale.clear()
        self._count("out", "push-pull")
        return Message("push-pull", self.name, self.address, updates=tuple(self._state.values()),
                       summaries=tuple(self.summaries.values()), reply=reply)

    def _push_pull_to(self, address: str) -> Outgoing:
        return Outgoing(address, self._state_msg(reply=False))

    # ------------------------------------------------------------------ indices

    def _add(self, m: Member) -> None:
        self.members[m.name] = m
        self._state[m.name] = _NOBODY  # its place in the state's order; told at the next _state_msg
        self._index(m)

    def _index(self, m: Member) -> None:
        """Count ``m`` in the indices under its current status and address."""
        self._stale.add(m.name)
        if m.status in (ALIVE, SUSPECT):
            self._live_addrs[m.address] = self._live_addrs.get(m.address, 0) + 1
            if m.name != self.name:
                self._live_at[m.name] = len(self._live)
                self._live.append(m.name)
        elif m.status == DEAD:
            self._dead[m.name] = None
        else:
            self._left += 1
            if m.name != self.name:
                self._gone[m.name] = None

    def _unindex(self, m: Member) -> None:
        """Take ``m`` out of the indices before its status, incarnation or address changes."""
        if m.status in (ALIVE, SUSPECT):
            left = self._live_addrs[m.address] - 1
            if left:
                self._live_addrs[m.address] = left
            else:
                del self._live_addrs[m.address]
            if m.name != self.name:
                i = self._live_at.pop(m.name)
                last = self._live.pop()
                if last != m.name:
                    self._live[i] = last
                    self._live_at[last] = i
        elif m.status == DEAD:
            del self._dead[m.name]
        else:
            self._left -= 1
            self._gone.pop(m.name, None)

    # ------------------------------------------------------------------ helpers

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _lhm(self, delta: int, spare: str = "", stretch: bool = True) -> None:
        """Our local health multiplier moves by ``delta``. Worse health also stretches every
        pending suspicion (but ``spare``'s) to it: we may have missed their refutations, or
        failed to pass the accusations on. Better health shortens none: it does not tell
        us that the accusations got out."""
        lhm = self.lhm = max(0, min(MAX_LHM, self.lhm + delta))
        if delta > 0 and stretch and self._suspicions:
            for node, s in self._suspicions.items():
                if s.lhm < lhm and node != spare:
                    s.lhm = lhm

    def _changed(self, node: str, old: str | None, new: str, inc: int, reason: str) -> None:
        self.changes.append(Change(node, old, new, inc, reason))

    def _count(self, direction: str, type_: str) -> None:
        key = (_IN_KEYS if direction == "in" else _OUT_KEYS).get(type_) or f"{direction}:{type_}"
        self.counters[key] = self.counters.get(key, 0) + 1

    def drain_changes(self) -> list[Change]:
        out, self.changes = self.changes, []
        return out
