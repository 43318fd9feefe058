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
  probe interval and timeout, so the slow node slows down instead of accusing healthy
  ones; (2) suspicion timeouts that start long and shrink with independent
  confirmations; (3) a probe of a suspect carries the suspicion, so it refutes at once.
- **Dissemination** piggybacks updates on every message, each retransmitted
  ``retransmit_mult * ceil(log10(n + 1))`` times; a **push-pull** full-state exchange
  runs at a longer interval; dead members and seeds are re-contacted periodically so a
  healed partition always heals the membership.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from haflowd.clock import Clock

ALIVE, SUSPECT, DEAD, LEFT = "alive", "suspect", "dead", "left"
STATUSES = (ALIVE, SUSPECT, DEAD, LEFT)
MAX_LHM = 8
MAX_PIGGYBACK = 24


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
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


# --------------------------------------------------------------------------- pure formulas


def suspicion_min(mult: int, n: int, interval: float) -> float:
    """memberlist's floor: the timeout grows with log10 of the cluster size."""
    return mult * max(1.0, math.log10(max(1, n))) * interval


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


def push_pull_scale(interval: float, n: int) -> float:
    """Above 32 nodes, push-pull less often so its cost per node stays flat."""
    if n <= 32:
        return interval
    return interval * (math.ceil(math.log2(n) - math.log2(32)) + 1)


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Update:
    """A claim about one member; ``sender`` is who made a suspect/dead claim."""

    kind: str
    node: str
    incarnation: int
    address: str = ""
    sender: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "node": self.node, "inc": self.incarnation, "addr": self.address,
                "from": self.sender}

    @staticmethod
    def from_json(d: Any) -> Update:
        if not isinstance(d, dict):
            raise ValueError("update is not an object")
        kind, node, inc = d.get("kind"), d.get("node"), d.get("inc")
        addr, sender = d.get("addr", ""), d.get("from", "")
        if kind not in STATUSES or not _is_name(node) or not isinstance(inc, int) or not _is_inc(inc):
            raise ValueError("bad update")
        if not isinstance(addr, str) or not isinstance(sender, str) or len(addr) > 300 or len(sender) > 128:
            raise ValueError("bad update")
        return Update(str(kind), str(node), int(inc), addr, sender)


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "from": self.source, "addr": self.source_addr}
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
        """Strict: anything malformed raises ValueError (the transport answers 400)."""
        if not isinstance(d, dict):
            raise ValueError("message is not an object")
        t = d.get("type")
        if t not in MESSAGE_TYPES:
            raise ValueError(f"unknown message type {t!r}")
        source, addr = d.get("from"), d.get("addr", "")
        if not _is_name(source) or not isinstance(addr, str) or len(addr) > 300:
            raise ValueError("bad sender")
        seq = d.get("seq", 0)
        if not _is_inc(seq):
            raise ValueError("bad seq")
        target, taddr = d.get("target", ""), d.get("target_addr", "")
        if (target and not _is_name(target)) or not isinstance(taddr, str) or len(taddr) > 300:
            raise ValueError("bad target")
        ups, sums = d.get("updates", []), d.get("summaries", [])
        if not isinstance(ups, list) or not isinstance(sums, list) or len(ups) > 10_000 or len(sums) > 10_000:
            raise ValueError("bad updates")
        return Message(
            type=str(t), source=str(source), source_addr=addr, seq=int(seq), target=target or "", target_addr=taddr,
            updates=tuple(Update.from_json(u) for u in ups),
            summaries=tuple(Summary.from_json(s) for s in sums),
            reply=bool(d.get("reply", False)),
        )


MESSAGE_TYPES = ("ping", "ack", "nack", "ping-req", "gossip", "push-pull")


def _is_name(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 128


def _is_inc(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**62


@dataclass(frozen=True)
class Outgoing:
    address: str
    message: Message


@dataclass(frozen=True)
class Change:
    """A status change of a member, for logs and metrics."""

    node: str
    old: str | None
    new: str
    incarnation: int
    reason: str


# --------------------------------------------------------------------------- state


@dataclass
class Member:
    name: str
    address: str
    incarnation: int
    status: str
    since: float  # monotonic time of the last status change
    last_seen: float | None = None  # monotonic time we last heard from it directly
    rtt: float | None = None


@dataclass
class Suspicion:
    start: float
    lo: float
    hi: float
    k: int
    confirmers: set[str] = field(default_factory=set)

    def deadline(self) -> float:
        return self.start + suspicion_timeout(self.lo, self.hi, self.k, max(0, len(self.confirmers) - 1))


@dataclass
class Probe:
    target: str
    seq: int
    sent: float
    direct_deadline: float
    end: float
    indirect: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass
class _Relay:
    requester: str  # address
    seq: int  # the requester's seq
    deadline: float


@dataclass
class _Broadcast:
    key: tuple[str, str]
    update: Update | None
    summary: Summary | None
    transmits: int = 0
    urgent: bool = False


class Membership:
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
        self.members: dict[str, Member] = {name: Member(name, address, incarnation, ALIVE, now, now)}
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
        self._next_probe = now + self.rng.uniform(0, self.s.probe_interval)
        self._next_gossip = now
        self._next_push_pull = now + self.s.push_pull_interval
        self._next_reconnect = now + self.s.join_retry
        self.counters: dict[str, int] = {}

    # ------------------------------------------------------------------ views

    @property
    def incarnation(self) -> int:
        return self.members[self.name].incarnation

    def live_count(self) -> int:
        return sum(1 for m in self.members.values() if m.status in (ALIVE, SUSPECT))

    def cluster_size(self) -> int:
        return sum(1 for m in self.members.values() if m.status != LEFT)

    def scaled(self, seconds: float) -> float:
        return seconds * (1 + self.lhm)

    def next_wakeup(self) -> float:
        times = [self._next_probe, self._next_gossip, self._next_push_pull, self._next_reconnect]
        if self._probe is not None:
            times.append(self._probe.end if self._probe.indirect else self._probe.direct_deadline)
        times += [r.deadline for r in self._relays.values()]
        times += [s.deadline() for s in self._suspicions.values()]
        return min(times)

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
        """The driver saw its event loop late by ``seconds``: we are the slow one."""
        if seconds > self.s.probe_timeout:
            self._lhm(+1)

    def start(self) -> list[Outgoing]:
        """Join: announce ourselves and pull the state of every seed."""
        self._enqueue(Update(ALIVE, self.name, self.incarnation, self.address), urgent=True)
        return [self._push_pull_to(a) for a in self.seeds]

    def leave(self) -> list[Outgoing]:
        """Graceful leave: peers mark us ``left``, not ``dead``."""
        self.leaving = True
        me = self.members[self.name]
        me.status = LEFT
        u = Update(LEFT, self.name, me.incarnation, self.address, self.name)
        self._queue.clear()
        self._enqueue(u, urgent=True)
        others = [m for m in self.members.values() if m.name != self.name and m.status in (ALIVE, SUSPECT)]
        targets = others if len(others) <= 10 else self.rng.sample(others, 10)
        return [Outgoing(m.address, self._msg("gossip", updates=(u,))) for m in targets]

    # ------------------------------------------------------------------ messages in

    def handle(self, msg: Message) -> list[Outgoing]:
        self._count("in", msg.type)
        now = self.clock.monotonic()
        out: list[Outgoing] = []
        if msg.source == self.name:
            if msg.source_addr and msg.source_addr != self.address:
                out += self._conflict(msg.source_addr)
            return out
        src = self.members.get(msg.source)
        if src is not None and src.status in (ALIVE, SUSPECT):
            src.last_seen = now
        t = msg.type
        if t != "push-pull":
            for u in msg.updates:
                out += self._apply(u, now, from_push_pull=False)
            for s in msg.summaries:
                self._apply_summary(s)
        if t == "ping":
            if msg.target and msg.target != self.name:
                return out
            out.append(Outgoing(msg.source_addr, self._msg("ack", seq=msg.seq, piggyback=True)))
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
            self._relays[seq] = _Relay(msg.source_addr, msg.seq, now + self.scaled(self.s.probe_timeout))
            out.append(Outgoing(msg.target_addr, self._msg("ping", seq=seq, target=msg.target,
                                                            target_addr=msg.target_addr, piggyback=True)))
        elif t == "push-pull":
            out += self._merge_state(msg, now)
            if not msg.reply:
                out.append(Outgoing(msg.source_addr, self._state_msg(reply=True)))
        return out

    def _on_ack(self, msg: Message, now: float) -> list[Outgoing]:
        relay = self._relays.pop(msg.seq, None)
        if relay is not None:  # we probed on someone's behalf: pass the good news on
            return [Outgoing(relay.requester, self._msg("ack", seq=relay.seq))]
        p = self._probe
        if p is None or p.seq != msg.seq:
            return []
        m = self.members.get(p.target)
        if m is not None:
            m.last_seen = now
            if not p.indirect:
                m.rtt = now - p.sent
        self._lhm(-1)
        self._probe = None
        return []

    # ------------------------------------------------------------------ timers

    def tick(self) -> list[Outgoing]:
        now = self.clock.monotonic()
        out: list[Outgoing] = []
        late = self.s.probe_timeout  # a timer seen this late means *we* were stalled
        for seq, r in list(self._relays.items()):
            if now >= r.deadline:
                del self._relays[seq]
                out.append(Outgoing(r.requester, self._msg("nack", seq=r.seq)))
        p = self._probe
        if p is not None and not p.indirect and now >= p.direct_deadline:
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
        if self._probe is None and now >= self._next_probe and not self.leaving:
            out += self._start_probe(now)
        for node, s in list(self._suspicions.items()):
            if now >= s.deadline():
                out += self._declare_dead(node, now)
        if now >= self._next_gossip:
            self._next_gossip = now + self.s.gossip_interval
            out += self._gossip(now)
        if now >= self._next_push_pull:
            self._next_push_pull = now + push_pull_scale(self.s.push_pull_interval, self.cluster_size())
            peers = [m for m in self.members.values() if m.name != self.name and m.status == ALIVE]
            if peers:
                out.append(self._push_pull_to(self.rng.choice(peers).address))
        if now >= self._next_reconnect:
            out += self._reconnect()
        return out

    def _abandon_probe(self) -> None:
        """Our own stall made this probe meaningless: no suspicion, but we are less healthy."""
        self._probe = None
        self._lhm(+1)
        self._next_probe = self.clock.monotonic()

    def _start_probe(self, now: float) -> list[Outgoing]:
        target = self._next_target()
        interval = self.scaled(self.s.probe_interval)
        self._next_probe = now + interval
        if target is None:
            return []
        seq = self._next_seq()
        self._probe = Probe(target.name, seq, now, now + self.scaled(self.s.probe_timeout), now + interval)
        extra: tuple[Update, ...] = ()
        if target.status == SUSPECT:  # Lifeguard: tell the suspect, so it refutes at once
            extra = (Update(SUSPECT, target.name, target.incarnation, target.address, self.name),)
        return [Outgoing(target.address, self._msg("ping", seq=seq, target=target.name,
                                                   target_addr=target.address, piggyback=True, extra=extra))]

    def _next_target(self) -> Member | None:
        for _ in range(2):
            while self._order:
                name = self._order.pop()
                m = self.members.get(name)
                if m is not None and m.status in (ALIVE, SUSPECT) and name != self.name:
                    return m
            self._order = [n for n, m in self.members.items() if n != self.name and m.status in (ALIVE, SUSPECT)]
            self.rng.shuffle(self._order)
        return None

    def _go_indirect(self, p: Probe) -> list[Outgoing]:
        p.indirect = True
        target = self.members.get(p.target)
        if target is None:
            self._probe = None
            return []
        helpers = [m for m in self.members.values()
                   if m.name not in (self.name, p.target) and m.status == ALIVE]
        chosen = self.rng.sample(helpers, min(self.s.indirect_checks, len(helpers)))
        p.expected_nacks = len(chosen)
        return [Outgoing(h.address, self._msg("ping-req", seq=p.seq, target=target.name,
                                              target_addr=target.address, piggyback=True)) for h in chosen]

    def _probe_failed(self, p: Probe, now: float) -> list[Outgoing]:
        self._probe = None
        # Lifeguard: missing nacks mean the problem may be ours, not the target's
        self._lhm(+(p.expected_nacks - p.nacks) if p.expected_nacks else +1)
        m = self.members.get(p.target)
        if m is None or m.status not in (ALIVE, SUSPECT):
            return []
        return self._apply(Update(SUSPECT, m.name, m.incarnation, m.address, self.name), now, False)

    def _declare_dead(self, node: str, now: float) -> list[Outgoing]:
        m = self.members.get(node)
        self._suspicions.pop(node, None)
        if m is None or m.status != SUSPECT:
            return []
        return self._apply(Update(DEAD, node, m.incarnation, m.address, self.name), now, False)

    def _gossip(self, now: float) -> list[Outgoing]:
        if not self._queue:
            return []
        targets = [m for m in self.members.values() if m.name != self.name and (
            m.status in (ALIVE, SUSPECT) or (m.status == DEAD and now - m.since < self.s.gossip_to_dead))]
        if not targets:
            return []
        chosen = self.rng.sample(targets, min(self.s.gossip_nodes, len(targets)))
        out = []
        for m in chosen:
            msg = self._msg("gossip", piggyback=True)
            if msg.updates or msg.summaries:
                out.append(Outgoing(m.address, msg))
        return out

    def _reconnect(self) -> list[Outgoing]:
        """Re-contact one dead member or unanswered seed: what heals a healed partition."""
        known_alive = {m.address for m in self.members.values() if m.status in (ALIVE, SUSPECT)}
        dead = [m.address for m in self.members.values() if m.status == DEAD]
        seeds = [a for a in self.seeds if a not in known_alive]
        alone = self.live_count() <= 1
        self._next_reconnect = self.clock.monotonic() + (self.s.join_retry if alone else self.s.reconnect_interval)
        if alone and seeds:
            return [self._push_pull_to(a) for a in seeds]
        candidates = dead + seeds
        return [self._push_pull_to(self.rng.choice(candidates))] if candidates else []

    # ------------------------------------------------------------------ merging

    def _apply(self, u: Update, now: float, from_push_pull: bool) -> list[Outgoing]:
        if u.node == self.name:
            return self._about_me(u)
        m = self.members.get(u.node)
        old = m.status if m else None
        if u.kind == ALIVE:
            if m is None:
                if not u.address:
                    return []
                self.members[u.node] = Member(u.node, u.address, u.incarnation, ALIVE, now, now)
                self._order.insert(self.rng.randint(0, len(self._order)), u.node)
                self._changed(u.node, None, ALIVE, u.incarnation, "joined")
            elif u.incarnation > m.incarnation:
                m.incarnation = u.incarnation
                if u.address:
                    m.address = u.address
                self._suspicions.pop(u.node, None)
                if m.status != ALIVE:
                    m.status, m.since = ALIVE, now
                    self._changed(u.node, old, ALIVE, u.incarnation,
                                  "refuted" if old == SUSPECT else "came back")
            else:
                return []
        elif u.kind == SUSPECT:
            if m is None or u.incarnation < m.incarnation or m.status in (DEAD, LEFT):
                return []
            if m.status == SUSPECT and u.incarnation == m.incarnation:
                s = self._suspicions.get(u.node)
                if s is None or u.sender in s.confirmers or not u.sender:
                    return []
                s.confirmers.add(u.sender)  # an independent confirmation: the timeout shrinks
            else:
                m.status, m.incarnation, m.since = SUSPECT, u.incarnation, now
                n = self.cluster_size()
                lo = suspicion_min(self.s.suspicion_mult, n, self.s.probe_interval)
                self._suspicions[u.node] = Suspicion(
                    now, lo, lo * self.s.suspicion_max_mult,
                    expected_confirmations(self.s.suspicion_mult, n), {u.sender or self.name})
                self._changed(u.node, old, SUSPECT, u.incarnation, f"suspected by {u.sender or self.name}")
        elif u.kind == DEAD:
            if m is None or u.incarnation < m.incarnation or m.status in (DEAD, LEFT):
                return []
            if from_push_pull:  # another node's verdict: suspect first, let it refute
                return self._apply(Update(SUSPECT, u.node, u.incarnation, u.address, u.sender), now, False)
            m.status, m.incarnation, m.since = DEAD, u.incarnation, now
            self._suspicions.pop(u.node, None)
            self._changed(u.node, old, DEAD, u.incarnation, f"declared dead by {u.sender or self.name}")
        elif u.kind == LEFT:
            if m is None or u.incarnation < m.incarnation or m.status == LEFT:
                return []
            m.status, m.incarnation, m.since = LEFT, u.incarnation, now
            self._suspicions.pop(u.node, None)
            self._changed(u.node, old, LEFT, u.incarnation, "left gracefully")
        self._enqueue(u)
        return []

    def _about_me(self, u: Update) -> list[Outgoing]:
        me = self.members[self.name]
        if u.kind == ALIVE:
            if u.address and u.address != self.address and u.incarnation >= me.incarnation:
                return self._conflict(u.address)
            return []
        if self.leaving or u.incarnation < me.incarnation:
            return []
        # suspect, dead or left about us, at our incarnation or later: refute
        me.incarnation = u.incarnation + 1
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
        for u in msg.updates:
            out += self._apply(u, now, from_push_pull=True)
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
        self._queue[("m", u.node)] = _Broadcast(("m", u.node), u, None, urgent=urgent)
        if urgent:
            self._next_gossip = self.clock.monotonic()

    def _enqueue_summary(self, s: Summary) -> None:
        self._queue[("s", s.node)] = _Broadcast(("s", s.node), None, s)

    def _take(self) -> tuple[tuple[Update, ...], tuple[Summary, ...]]:
        if not self._queue:
            return (), ()
        limit = retransmit_limit(self.s.retransmit_mult, self.cluster_size())
        items = sorted(self._queue.values(), key=lambda b: (not b.urgent, b.transmits))[:MAX_PIGGYBACK]
        ups, sums = [], []
        for b in items:
            b.transmits += 1
            b.urgent = False
            if b.update is not None:
                ups.append(b.update)
            elif b.summary is not None:
                sums.append(b.summary)
            if b.transmits >= limit:
                self._queue.pop(b.key, None)
        return tuple(ups), tuple(sums)

    def _msg(self, type_: str, *, seq: int = 0, target: str = "", target_addr: str = "",
             piggyback: bool = False, updates: Iterable[Update] = (), extra: tuple[Update, ...] = ()) -> Message:
        ups, sums = self._take() if piggyback else ((), ())
        self._count("out", type_)
        return Message(type_, self.name, self.address, seq=seq, target=target, target_addr=target_addr,
                       updates=(*extra, *updates, *ups), summaries=sums)

    def _state_msg(self, reply: bool) -> Message:
        ups = tuple(Update(m.status, m.name, m.incarnation, m.address) for m in self.members.values())
        self._count("out", "push-pull")
        return Message("push-pull", self.name, self.address, updates=ups,
                       summaries=tuple(self.summaries.values()), reply=reply)

    def _push_pull_to(self, address: str) -> Outgoing:
        return Outgoing(address, self._state_msg(reply=False))

    # ------------------------------------------------------------------ helpers

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _lhm(self, delta: int) -> None:
        self.lhm = max(0, min(MAX_LHM, self.lhm + delta))

    def _changed(self, node: str, old: str | None, new: str, inc: int, reason: str) -> None:
        self.changes.append(Change(node, old, new, inc, reason))

    def _count(self, direction: str, type_: str) -> None:
        key = f"{direction}:{type_}"
        self.counters[key] = self.counters.get(key, 0) + 1

    def drain_changes(self) -> list[Change]:
        out, self.changes = self.changes, []
        return out
