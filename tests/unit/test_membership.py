"""Membership (SWIM + Lifeguard): probes, suspicion, refutation, precedence, dissemination.

One core at a time, driven by a FakeClock; its peers are played by a tiny in-memory
responder (``Peers``) that answers pings and ping-reqs at once, as healthy peers would.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import pytest

from haflowd.gossip.membership import (
    ALIVE,
    DEAD,
    LAST_CHANCES,
    LEFT,
    MAX_LHM,
    NACK_FRACTION,
    PROTOCOL_VERSION,
    REAP_CHECK_INTERVAL,
    REAPED,
    SUSPECT,
    GossipSettings,
    Membership,
    Message,
    Outgoing,
    Summary,
    UnknownType,
    Update,
    expected_confirmations,
    push_pull_scale,
    retransmit_limit,
    shuffle,
    suspicion_min,
    suspicion_timeout,
)
from haflowd.testing import FakeClock, MemoryNetwork

S = GossipSettings()
PEERS = ("b", "c", "d", "e", "f")


def addr(name: str) -> str:
    return f"{name}:7946"


def name_of(address: str) -> str:
    return address.split(":")[0]


def core(name: str = "a", peers: Iterable[str] = PEERS, clock: FakeClock | None = None,
         incarnation: int = 0, settings: GossipSettings = S, seed: int = 1) -> Membership:
    """A core that already knows ``peers`` alive at incarnation 0."""
    m = Membership(name, addr(name), clock or FakeClock(), settings, incarnation, rng=random.Random(seed))
    ups = tuple(Update(ALIVE, p, 0, addr(p)) for p in peers)
    if ups:
        m.handle(gossip("z", *ups))
    m.drain_changes()
    return m


def gossip(source: str, *updates: Update, summaries: tuple[Summary, ...] = ()) -> Message:
    return Message("gossip", source, addr(source), updates=updates, summaries=summaries)


def of_type(out: Iterable[Outgoing], type_: str) -> list[Outgoing]:
    return [o for o in out if o.message.type == type_]


def only(out: Iterable[Outgoing], type_: str) -> Outgoing:
    found = of_type(out, type_)
    assert len(found) == 1, f"expected one {type_}, got {[o.message.type for o in out]}"
    return found[0]


def status(m: Membership, node: str) -> tuple[str, int]:
    member = m.members[node]
    return member.status, member.incarnation


class Peers:
    """Healthy peers around one core: every ping is acked and every ping-req answered at
    once (ack if the target is up, else nack), except from nodes in ``down``. ``silent``
    helpers take ping-reqs and say nothing. Everything the core sent is kept in ``sent``."""

    def __init__(self, m: Membership, clock: FakeClock, down: Iterable[str] = (), silent: Iterable[str] = ()):
        self.m, self.clock = m, clock
        self.down, self.silent = set(down), set(silent)
        self.sent: list[Outgoing] = []
        self.sent_at: list[tuple[float, Outgoing]] = []

    def deliver(self, out: list[Outgoing]) -> None:
        self.sent += out
        self.sent_at += [(self.clock.now, o) for o in out]
        for o in out:
            peer, msg = name_of(o.address), o.message
            if peer in self.down:
                continue
            if msg.type == "ping":
                self.deliver(self.m.handle(Message("ack", peer, o.address, seq=msg.seq)))
            elif msg.type == "ping-req" and peer not in self.silent:
                answer = "nack" if msg.target in self.down else "ack"
                self.deliver(self.m.handle(Message(answer, peer, o.address, seq=msg.seq)))

    def run(self, seconds: float) -> None:
        """Tick the core at each of its wake-ups for ``seconds``."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            due = min(end, max(self.m.next_wakeup(), self.clock.now + 1e-4))
            self.clock.advance(due - self.clock.now)
            self.deliver(self.m.tick())


EPS = 1e-6  # past a deadline by a hair (float sums of timeouts are not exact)


def first_probe(m: Membership, clock: FakeClock) -> Outgoing:
    """Advance to the first probe (it starts at a random offset within an interval)."""
    clock.advance(S.probe_interval + EPS)
    return only(m.tick(), "ping")


# =========================================================================== probes


@pytest.mark.parametrize("size", [0, 1, 2, 3, 7, 64, 300, 1000])
def test_shuffle_is_random_shuffle_draw_for_draw(size: int) -> None:
    """The core's shuffle gives what random.Random.shuffle gives, and leaves the generator
    where it leaves it: the simulator's runs do not depend on which one ran."""
    for seed in range(20):
        ours, theirs = random.Random(seed), random.Random(seed)
        a, b = [f"n{i}" for i in range(size)], [f"n{i}" for i in range(size)]
        shuffle(ours, a)
        theirs.shuffle(b)
        assert a == b
        assert ours.getstate() == theirs.getstate()


def test_probe_acked_keeps_the_target_alive() -> None:
    clock = FakeClock()
    a = core(clock=clock)
    ping = first_probe(a, clock)
    assert ping.message.target in PEERS and ping.address == addr(ping.message.target)
    a.handle(Message("ack", ping.message.target, ping.address, seq=ping.message.seq))
    clock.advance(S.probe_interval)
    out = a.tick()
    assert not of_type(out, "ping-req")
    assert all(status(a, p) == (ALIVE, 0) for p in PEERS)
    assert a.lhm == 0 and a.drain_changes() == []


def test_no_ack_asks_helpers_and_an_indirect_ack_keeps_it_alive() -> None:
    clock = FakeClock()
    a = core(clock=clock)
    ping = first_probe(a, clock)
    target = ping.message.target
    clock.advance(S.probe_timeout + EPS)
    reqs = of_type(a.tick(), "ping-req")
    assert len(reqs) == S.indirect_checks
    assert {name_of(r.address) for r in reqs} <= set(PEERS) - {target}
    assert all(r.message.target == target and r.message.seq == ping.message.seq for r in reqs)
    helper = name_of(reqs[0].address)
    a.handle(Message("ack", helper, addr(helper), seq=ping.message.seq))  # the relayed ack
    clock.advance(S.probe_interval)
    a.tick()
    assert status(a, target) == (ALIVE, 0)
    assert a.drain_changes() == []


def test_no_ack_at_all_suspects_then_declares_dead_after_the_suspicion_timeout() -> None:
    clock = FakeClock()
    a = core(clock=clock)
    ping = first_probe(a, clock)
    target = ping.message.target
    peers = Peers(a, clock, down={target})
    peers.deliver([ping])
    peers.run(S.probe_interval)
    assert status(a, target) == (SUSPECT, 0)
    suspected_at = a.suspect_since(target)
    assert suspected_at is not None
    n = len(PEERS) + 1
    lo = suspicion_min(S.suspicion_mult, n, S.probe_interval)
    timeout = suspicion_timeout(lo, lo * S.suspicion_max_mult, expected_confirmations(S.suspicion_mult, n), 0)
    assert timeout == pytest.approx(lo * S.suspicion_max_mult)  # nobody confirmed it
    peers.run(suspected_at + timeout - clock.now - 0.01)
    assert status(a, target)[0] == SUSPECT
    peers.run(0.02)
    assert status(a, target) == (DEAD, 0)
    changes = [(c.node, c.new) for c in a.drain_changes()]
    assert changes == [(target, SUSPECT), (target, DEAD)]
    assert a.lhm == 0  # the helpers' nacks said the problem was not ours


def test_independent_confirmations_shorten_the_suspicion() -> None:
    clock = FakeClock()
    a = core(clock=clock)
    a.handle(gossip("c", Update(SUSPECT, "b", 0, addr("b"), "c")))
    start = a.suspect_since("b")
    assert start is not None
    a.handle(gossip("d", Update(SUSPECT, "b", 0, addr("b"), "d")))
    a.handle(gossip("e", Update(SUSPECT, "b", 0, addr("b"), "e")))
    a.handle(gossip("e", Update(SUSPECT, "b", 0, addr("b"), "e")))  # the same one twice counts once
    lo = suspicion_min(S.suspicion_mult, len(PEERS) + 1, S.probe_interval)
    assert a.next_wakeup() <= start + lo + 1e-9
    peers = Peers(a, clock, down={"b"})
    peers.run(start + lo - clock.now + 0.001)
    assert status(a, "b") == (DEAD, 0)


def confirmed_suspicion(clock: FakeClock) -> tuple[Membership, float]:
    """``a`` suspects b, confirmed by two others: it falls due after the floor timeout."""
    a = core(clock=clock)
    for accuser in ("c", "d", "e"):
        a.handle(gossip(accuser, Update(SUSPECT, "b", 0, addr("b"), accuser)))
    start = a.suspect_since("b")
    assert start is not None
    return a, start + suspicion_min(S.suspicion_mult, len(PEERS) + 1, S.probe_interval)


def test_a_suspect_is_pinged_twice_more_just_before_it_is_declared_dead() -> None:
    clock = FakeClock()
    a, deadline = confirmed_suspicion(clock)
    peers = Peers(a, clock, down={"b"})
    peers.run(deadline - clock.now + 0.01)
    pings = {round(t, 6): o for t, o in peers.sent_at if o.message.type == "ping" and o.address == addr("b")}
    for k in range(1, LAST_CHANCES + 1):
        ping = pings.get(round(deadline - k * S.probe_timeout, 6))
        assert ping is not None, f"no ping {k} probe timeouts before the deadline"
        assert ping.message.target == "b" and Update(SUSPECT, "b", 0, addr("b"), "a") in ping.message.updates
    assert status(a, "b") == (DEAD, 0)  # silent: condemned on time


def test_the_last_ping_saves_a_suspect_whose_refutation_we_missed() -> None:
    clock = FakeClock()
    a, deadline = confirmed_suspicion(clock)
    b = core("b", ("a",), clock, incarnation=1)  # b refuted already; the news never reached a
    peers = Peers(a, clock, down={"b"})
    peers.run(deadline - S.probe_timeout - clock.now + 1e-6)
    ping = [o for o in peers.sent if o.address == addr("b") and o.message.type == "ping"][-1]
    ack = only(b.handle(ping.message), "ack")
    a.handle(ack.message)
    peers.run(1.0)
    assert status(a, "b") == (ALIVE, 1)


def test_a_deadline_that_passed_while_we_were_stalled_gives_the_last_chances_first() -> None:
    """Our own stall swallowed the last-chance pings: no verdict on waking, the pings go out
    now, and a suspect that stays silent is dead two probe timeouts later."""
    clock = FakeClock()
    a, deadline = confirmed_suspicion(clock)
    clock.advance(deadline + 0.5 - clock.now)
    woke = clock.now
    out = a.tick()
    assert status(a, "b") == (SUSPECT, 0)
    ping = only([o for o in out if o.address == addr("b")], "ping")
    assert Update(SUSPECT, "b", 0, addr("b"), "a") in ping.message.updates
    Peers(a, clock, down={"b"}).run(LAST_CHANCES * S.probe_timeout + 0.01)
    assert status(a, "b") == (DEAD, 0)
    assert a.members["b"].since - woke == pytest.approx(LAST_CHANCES * S.probe_timeout, abs=0.011)


def test_our_own_stall_does_not_count_against_the_suspects() -> None:
    clock = FakeClock()
    a, deadline = confirmed_suspicion(clock)
    a.note_lag(1.0)
    assert a.lhm == 1
    Peers(a, clock, down={"b"}).run(deadline - clock.now + 0.5)
    assert status(a, "b") == (SUSPECT, 0)
    Peers(a, clock, down={"b"}).run(0.51)
    assert status(a, "b") == (DEAD, 0)


def test_a_failed_probe_tells_the_suspect_at_once() -> None:
    """Buddy system without waiting for our next probe of it: the suspect may be about to
    stall, and a refutation it sends now beats one it sends after."""
    clock = FakeClock()
    a = core(clock=clock)
    ping = first_probe(a, clock)
    target = ping.message.target
    clock.advance(S.probe_timeout + EPS)
    a.tick()  # ping-reqs, which nobody answers
    clock.advance(S.probe_interval - S.probe_timeout)
    told = [o for o in a.tick() if o.address == addr(target)]
    assert status(a, target) == (SUSPECT, 0)
    assert Update(SUSPECT, target, 0, addr(target), "a") in only(told, "ping").message.updates
    b = core(target, ("a",), clock)
    a.handle(only(b.handle(only(told, "ping").message), "ack").message)
    assert status(a, target) == (ALIVE, 1)


# =========================================================================== refutation


def test_a_suspected_node_refutes_and_the_suspecter_sees_it_alive_again() -> None:
    clock = FakeClock()
    a, b = core("a", ("b", "c"), clock), core("b", ("a", "c"), clock)
    a.handle(gossip("c", Update(SUSPECT, "b", 0, addr("b"), "c")))
    assert status(a, "b") == (SUSPECT, 0)
    out = b.handle(gossip("a", Update(SUSPECT, "b", 0, addr("b"), "a")))
    assert b.incarnation == 1 and b.lhm == 1
    told = only(out, "gossip")
    assert told.address == addr("a")
    assert Update(ALIVE, "b", 1, addr("b")) in told.message.updates
    a.handle(told.message)
    assert status(a, "b") == (ALIVE, 1)
    assert a.suspect_since("b") is None
    assert [c.reason for c in a.drain_changes()][-1] == "refuted"


def test_probing_a_suspect_carries_the_suspicion_so_it_refutes_at_once() -> None:
    clock = FakeClock()
    a, b = core("a", ("b",), clock), core("b", ("a",), clock)
    a.handle(gossip("z", Update(SUSPECT, "b", 0, addr("b"), "z")))
    ping = first_probe(a, clock)
    assert ping.message.target == "b"
    assert Update(SUSPECT, "b", 0, addr("b"), "a") in ping.message.updates
    ack = only(b.handle(ping.message), "ack")
    assert b.incarnation == 1
    assert Update(ALIVE, "b", 1, addr("b")) in ack.message.updates
    a.handle(ack.message)
    assert status(a, "b") == (ALIVE, 1)


def test_a_stale_suspicion_is_answered_with_the_current_incarnation() -> None:
    """The suspect already refuted, but the prober missed it: the ack tells it."""
    clock = FakeClock()
    b = core("b", ("a", "c"), clock, incarnation=3)
    ping = Message("ping", "a", addr("a"), seq=7, target="b", updates=(Update(SUSPECT, "b", 2, addr("b"), "a"),))
    ack = only(b.handle(ping), "ack")
    assert Update(ALIVE, "b", 3, addr("b")) in ack.message.updates
    assert b.incarnation == 3 and b.lhm == 0  # nothing to refute: no new incarnation
    out = b.handle(gossip("c", Update(DEAD, "b", 1, addr("b"), "c")))
    assert only(out, "gossip").address == addr("c")
    assert only(out, "gossip").message.updates == (Update(ALIVE, "b", 3, addr("b")),)


def test_a_suspicion_others_saw_refuted_is_corrected_in_their_ack() -> None:
    """We missed b's refutation: our probes keep asking, and whoever knows better answers."""
    clock = FakeClock()
    a = core("a", PEERS, clock)
    suspicion = Update(SUSPECT, "b", 0, addr("b"), "z")
    a.handle(gossip("z", suspicion))
    watch = Peers(a, clock)
    watch.run(3.0)  # long after the suspicion's own retransmissions, before its timeout
    assert status(a, "b") == (SUSPECT, 0)
    watch.sent.clear()
    watch.run(S.probe_interval * 3)
    pings = [o for o in of_type(watch.sent, "ping") if o.message.target != "b"]
    assert pings and all(suspicion in p.message.updates for p in pings)

    c_clock = FakeClock()
    c = core("c", ("a", "b"), c_clock)
    c.handle(gossip("b", Update(ALIVE, "b", 1, addr("b"))))
    Peers(c, c_clock).run(3.0)  # c's own retransmissions are over too
    ping = Message("ping", "a", addr("a"), seq=99, target="c", updates=pings[-1].message.updates)  # as if to c
    ack = only(c.handle(ping), "ack")
    assert ack.message.updates == (Update(ALIVE, "b", 1, addr("b")),)
    a.handle(ack.message)
    assert status(a, "b") == (ALIVE, 1)


# =========================================================================== precedence

# current status of x (at incarnation 5) → update kind → result for incarnation 4 / 5 / 6
PRECEDENCE: dict[str, dict[str, tuple[tuple[str, int], tuple[str, int], tuple[str, int]]]] = {
    ALIVE: {
        ALIVE: ((ALIVE, 5), (ALIVE, 5), (ALIVE, 6)),
        SUSPECT: ((ALIVE, 5), (SUSPECT, 5), (SUSPECT, 6)),
        DEAD: ((ALIVE, 5), (DEAD, 5), (DEAD, 6)),
        LEFT: ((ALIVE, 5), (LEFT, 5), (LEFT, 6)),
    },
    SUSPECT: {
        ALIVE: ((SUSPECT, 5), (SUSPECT, 5), (ALIVE, 6)),
        SUSPECT: ((SUSPECT, 5), (SUSPECT, 5), (SUSPECT, 6)),
        DEAD: ((SUSPECT, 5), (DEAD, 5), (DEAD, 6)),
        LEFT: ((SUSPECT, 5), (LEFT, 5), (LEFT, 6)),
    },
    DEAD: {
        ALIVE: ((DEAD, 5), (DEAD, 5), (ALIVE, 6)),
        SUSPECT: ((DEAD, 5), (DEAD, 5), (DEAD, 5)),
        DEAD: ((DEAD, 5), (DEAD, 5), (DEAD, 5)),
        LEFT: ((DEAD, 5), (LEFT, 5), (LEFT, 6)),
    },
    LEFT: {  # final for its incarnation; only an alive with a higher one rejoins
        ALIVE: ((LEFT, 5), (LEFT, 5), (ALIVE, 6)),
        SUSPECT: ((LEFT, 5), (LEFT, 5), (LEFT, 5)),
        DEAD: ((LEFT, 5), (LEFT, 5), (LEFT, 5)),
        LEFT: ((LEFT, 5), (LEFT, 5), (LEFT, 5)),
    },
}
PRECEDENCE_CASES = [
    (current, kind, inc, PRECEDENCE[current][kind][inc - 4])
    for current in PRECEDENCE for kind in PRECEDENCE[current] for inc in (4, 5, 6)
]


QUIET = 10.0  # seconds without a word from x: longer than any suspicion timeout here


def with_x(current: str) -> Membership:
    """``a`` sees x in ``current`` at incarnation 5, and has not heard from x lately."""
    clock = FakeClock()
    a = core("a", ("c", "d"), clock)
    a.handle(gossip("c", Update(ALIVE, "x", 5, addr("x"))))
    clock.advance(QUIET)
    if current != ALIVE:
        a.handle(gossip("c", Update(current, "x", 5, addr("x"), "c")))
    assert status(a, "x") == (current, 5)
    a.drain_changes()
    return a


@pytest.mark.parametrize(("current", "kind", "inc", "expected"), PRECEDENCE_CASES,
                         ids=[f"{c}-gets-{k}@{i}" for c, k, i, _ in PRECEDENCE_CASES])
def test_incarnation_precedence(current: str, kind: str, inc: int, expected: tuple[str, int]) -> None:
    a = with_x(current)
    a.handle(gossip("d", Update(kind, "x", inc, addr("x"), "d")))
    assert status(a, "x") == expected
    renewed = current == kind == SUSPECT and inc == 6  # a suspicion of the newer incarnation: a new timer
    changed = [c.new for c in a.drain_changes()]
    assert changed == ([expected[0]] if expected[0] != current or renewed else [])


def test_a_dead_verdict_about_a_member_we_heard_from_lately_is_only_a_suspicion() -> None:
    clock = FakeClock()
    a = core("a", ("c", "x"), clock)
    clock.advance(QUIET)
    a.handle(Message("ping", "x", addr("x"), seq=1, target="a"))  # x spoke to us just now
    a.handle(gossip("c", Update(DEAD, "x", 0, addr("x"), "c")))
    assert status(a, "x") == (SUSPECT, 0)  # x gets its chance to refute
    a.handle(gossip("c", Update(DEAD, "x", 0, addr("x"), "c")))
    assert status(a, "x") == (SUSPECT, 0)  # a second copy of the verdict changes nothing
    window = suspicion_min(S.suspicion_mult, 3, S.probe_interval)

    b = core("b", ("c", "x"), clock)
    clock.advance(QUIET)
    b.handle(Message("ping", "x", addr("x"), seq=1, target="b"))
    clock.advance(window + 0.01)
    b.handle(gossip("c", Update(DEAD, "x", 0, addr("x"), "c")))
    assert status(b, "x") == (DEAD, 0)  # heard from too long ago: the verdict stands


def test_a_verdict_by_a_member_we_hold_dead_is_only_a_suspicion_and_confirms_nothing() -> None:
    """After a partition heals, the far side's verdicts about our side arrive: its members
    are dead to us, and they held everyone here dead. At scale we have not heard from most
    of the accused lately, so only the accuser's standing stops those verdicts killing."""
    clock = FakeClock()
    a = core("a", ("c", "e", "m", "x"), clock)
    clock.advance(QUIET)
    a.handle(gossip("c", Update(DEAD, "m", 0, addr("m"), "c")))
    assert status(a, "m") == (DEAD, 0)
    a.handle(gossip("c", Update(DEAD, "x", 0, addr("x"), "m")))  # relayed by c, made by m
    assert status(a, "x") == (SUSPECT, 0)
    s = a._suspicions["x"]
    before = s.deadline()
    a.handle(gossip("c", Update(SUSPECT, "x", 0, addr("x"), "m2")))  # a stranger's word: no confirmation
    assert a._suspicions["x"].deadline() == before
    a.handle(gossip("c", Update(SUSPECT, "x", 0, addr("x"), "e")))  # a live member's: the timeout shrinks
    assert a._suspicions["x"].deadline() < before


def test_a_member_back_from_the_dead_is_heard_out_before_its_verdicts_count() -> None:
    clock = FakeClock()
    a = core("a", ("c", "m", "x", "y"), clock)
    clock.advance(QUIET)
    a.handle(gossip("c", Update(DEAD, "m", 0, addr("m"), "c")))
    out = a.handle(gossip("m", Update(ALIVE, "m", 1, addr("m"))))  # m refutes, to us directly
    assert status(a, "m") == (ALIVE, 1)
    pp = only(out, "push-pull")  # its state may hide verdicts as stale as ours were: exchange at once
    assert pp.address == addr("m") and not pp.message.reply
    a.handle(gossip("m", Update(DEAD, "x", 0, addr("x"), "m")))
    assert status(a, "x") == (SUSPECT, 0)  # m came back just now: not yet trusted to kill
    window = suspicion_min(S.suspicion_mult, a.cluster_size(), S.probe_interval) * S.suspicion_max_mult
    clock.advance(window)
    a.handle(gossip("m", Update(DEAD, "y", 0, addr("y"), "m")))
    assert status(a, "y") == (DEAD, 0)  # trusted again after a longest suspicion timeout


def test_left_is_final_for_its_incarnation_but_a_higher_alive_rejoins() -> None:
    a = with_x(LEFT)
    for kind in (ALIVE, SUSPECT, DEAD):
        a.handle(gossip("d", Update(kind, "x", 5, addr("x"), "d")))
    assert status(a, "x") == (LEFT, 5)
    a.handle(gossip("d", Update(ALIVE, "x", 6, addr("x"))))
    assert status(a, "x") == (ALIVE, 6)
    assert [c.reason for c in a.drain_changes()] == ["came back"]


def test_a_new_alive_member_joins_and_is_passed_on() -> None:
    a = core("a", ("b",))
    a.handle(gossip("b", Update(ALIVE, "x", 0, addr("x"))))
    assert status(a, "x") == (ALIVE, 0)
    assert [(c.node, c.old, c.new, c.reason) for c in a.drain_changes()] == [("x", None, ALIVE, "joined")]
    a.handle(gossip("b", Update(SUSPECT, "y", 0, addr("y"), "b")))  # claims about strangers are ignored
    assert "y" not in a.members


# =========================================================================== push-pull


def test_push_pull_merge_turns_a_remote_dead_into_a_local_suspect_and_answers() -> None:
    a = core("a", ("b", "x"))
    state = (Update(ALIVE, "b", 0, addr("b")), Update(DEAD, "x", 0, addr("x")), Update(ALIVE, "y", 2, addr("y")))
    out = a.handle(Message("push-pull", "b", addr("b"), updates=state))
    assert status(a, "x") == (SUSPECT, 0)  # another node's verdict: x gets the chance to refute
    assert status(a, "y") == (ALIVE, 2)
    reply = only(out, "push-pull")
    assert reply.address == addr("b") and reply.message.reply
    assert {(u.node, u.kind, u.incarnation) for u in reply.message.updates} >= {("a", ALIVE, 0), ("x", SUSPECT, 0)}
    assert a.handle(Message("push-pull", "b", addr("b"), updates=state, reply=True)) == []  # a reply is not answered


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [((1, 4), (1, 5)), ((1, 5), (1, 5)), ((1, 6), (1, 6)), ((2, 0), (2, 0)), ((0, 99), (1, 5))],
    ids=["older", "same", "newer", "after-restart", "before-restart"],
)
def test_summaries_with_newer_versions_win(incoming: tuple[int, int], kept: tuple[int, int]) -> None:
    a = core("a", ("b",))
    a.handle(gossip("b", summaries=(Summary("b", (1, 5), {"v": "old"}),)))
    for type_ in ("push-pull", "gossip"):
        a.handle(Message(type_, "b", addr("b"), summaries=(Summary("b", incoming, {"v": "new"}),), reply=True))
        assert a.summaries["b"].version == kept


def test_own_summary_is_versioned_by_incarnation_and_only_sent_when_changed() -> None:
    a = core("a", ("b",), incarnation=3)
    a.set_summary({"status": "ok"})
    a.set_summary({"status": "ok"})
    assert a.summaries["a"].version == (3, 1)
    a.set_summary({"status": "degraded"})
    assert a.summaries["a"].version == (3, 2)


# =========================================================================== formulas


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, 1.2), (3, 1.2), (10, 1.2), (20, 4 * 1.30103 * 0.3), (100, 2.4), (1000, 3.6)],
)
def test_suspicion_min_grows_with_log10_of_the_cluster(n: int, expected: float) -> None:
    assert suspicion_min(4, n, 0.3) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("n", "lhm", "expected"),
    [(3, 0, 1.2), (3, 1, 2.4), (3, 3, 4.8), (3, MAX_LHM, 10.8), (100, 0, 2.4), (100, 2, 7.2), (1000, 1, 7.2)],
)
def test_suspicion_min_is_lhm_plus_one_times_longer(n: int, lhm: int, expected: float) -> None:
    """Lifeguard's local health stretches the suspicion as it stretches the probes: a node
    that knows it is unhealthy waits (lhm + 1) times as long before it condemns; at lhm 0
    nothing changes."""
    assert suspicion_min(4, n, 0.3, lhm) == pytest.approx(expected, rel=1e-5)
    assert suspicion_min(4, n, 0.3, lhm) == pytest.approx((1 + lhm) * suspicion_min(4, n, 0.3))


@pytest.mark.parametrize(
    ("k", "confirmations", "expected"),
    [(2, 0, 6.0), (2, 1, 6.0 - 5.0 * 0.6309298), (2, 2, 1.0), (2, 3, 1.0), (0, 0, 1.0), (4, 0, 6.0), (4, 4, 1.0),
     (4, 1, 6.0 - 5.0 * 0.4306766)],
)
def test_suspicion_timeout_falls_from_max_to_min_with_confirmations(k: int, confirmations: int,
                                                                    expected: float) -> None:
    assert suspicion_timeout(1.0, 6.0, k, confirmations) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("mult", "n", "expected"),
    [(4, 1, 0), (4, 2, 0), (4, 3, 0), (4, 4, 2), (4, 100, 2), (6, 5, 0), (6, 6, 4), (2, 3, 0)],
)
def test_expected_confirmations(mult: int, n: int, expected: int) -> None:
    assert expected_confirmations(mult, n) == expected


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, 4), (1, 4), (3, 4), (9, 4), (10, 8), (99, 8), (100, 12), (999, 12), (1000, 16)],
)
def test_retransmit_limit_grows_with_log10(n: int, expected: int) -> None:
    assert retransmit_limit(4, n) == expected


@pytest.mark.parametrize(("n", "expected"), [(1, 30), (32, 30), (33, 60), (64, 60), (65, 90), (1000, 180)])
def test_push_pull_interval_scales_above_32_nodes(n: int, expected: float) -> None:
    assert push_pull_scale(30, n) == expected


# =========================================================================== Lifeguard: local health


@pytest.mark.parametrize(("nacks", "grows"), [(0, 3), (1, 2), (2, 1), (3, 0)])
def test_lhm_grows_by_the_nacks_that_did_not_come(nacks: int, grows: int) -> None:
    clock = FakeClock()
    a = core(clock=clock)
    ping = first_probe(a, clock)
    clock.advance(S.probe_timeout + EPS)
    reqs = of_type(a.tick(), "ping-req")
    for r in reqs[:nacks]:
        a.handle(Message("nack", name_of(r.address), r.address, seq=r.message.seq))
    clock.advance(S.probe_interval - S.probe_timeout)
    a.tick()
    assert status(a, ping.message.target)[0] == SUSPECT
    assert a.lhm == grows


def test_lhm_grows_on_a_failed_probe_without_helpers() -> None:
    clock = FakeClock()
    a = core("a", ("b",), clock)
    first_probe(a, clock)
    clock.advance(S.probe_timeout + EPS)
    assert of_type(a.tick(), "ping-req") == []
    clock.advance(S.probe_interval - S.probe_timeout)
    a.tick()
    assert status(a, "b")[0] == SUSPECT
    assert a.lhm == 1


def test_lhm_grows_when_refuting() -> None:
    b = core("b", ("a",))
    b.handle(gossip("a", Update(SUSPECT, "b", 0, addr("b"), "a")))
    assert b.lhm == 1


def test_a_stalled_timer_abandons_the_probe_without_suspicion_and_grows_lhm() -> None:
    clock = FakeClock()
    a = core(clock=clock)
    ping = first_probe(a, clock)
    clock.advance(S.probe_timeout + S.probe_timeout + 0.05)  # we were frozen past the direct deadline
    out = a.tick()
    assert of_type(out, "ping-req") == []
    assert a.lhm == 1
    assert status(a, ping.message.target) == (ALIVE, 0)
    assert only(out, "ping").message.seq != ping.message.seq  # a fresh probe right away


@pytest.mark.parametrize(("lag", "grows"), [(0.01, 0), (S.probe_timeout, 0), (S.probe_timeout + 0.01, 1), (5.0, 1)])
def test_lhm_grows_on_a_late_event_loop(lag: float, grows: int) -> None:
    a = core()
    a.note_lag(lag)
    assert a.lhm == grows


def test_lhm_shrinks_on_a_good_probe_and_stays_within_bounds() -> None:
    clock = FakeClock()
    a = core(clock=clock)
    for i in range(MAX_LHM + 5):
        a.handle(gossip("c", Update(SUSPECT, "a", i, addr("a"), "c")))
    assert a.lhm == MAX_LHM
    peers = Peers(a, clock)
    peers.run(S.probe_interval * (MAX_LHM + 1) * (MAX_LHM + 4))
    assert a.lhm == 0
    peers.run(S.probe_interval * 5)
    assert a.lhm == 0


def test_lhm_scales_the_probe_interval_and_timeout() -> None:
    clock = FakeClock()
    a = core(clock=clock)
    a.note_lag(1.0)
    a.note_lag(1.0)
    assert a.lhm == 2
    ping = first_probe(a, clock)
    started = clock.now
    clock.advance(3 * S.probe_timeout - 0.01)
    assert of_type(a.tick(), "ping-req") == []
    clock.advance(0.02)
    reqs = of_type(a.tick(), "ping-req")
    assert len(reqs) == S.indirect_checks and reqs[0].message.target == ping.message.target
    for r in reqs:
        a.handle(Message("nack", name_of(r.address), r.address, seq=r.message.seq))
    clock.advance(started + 3 * S.probe_interval - 0.01 - clock.now)
    assert of_type(a.tick(), "ping") == []
    clock.advance(0.02)
    pings = of_type(a.tick(), "ping")
    assert len([p for p in pings if p.address != ping.address]) == 1  # the next round, 3 intervals after the last
    assert status(a, ping.message.target)[0] == SUSPECT
    assert a.lhm == 2  # every helper answered: the failure was not ours


def suspicion_length(m: Membership, node: str) -> float:
    """How long ``m``'s suspicion of ``node`` runs as things stand (no stall in it)."""
    since = m.suspect_since(node)
    assert since is not None
    return m._suspicions[node].deadline() - since


@pytest.mark.parametrize(("nacks", "lhm"), [(3, 0), (2, 1), (1, 2), (0, 3)])
def test_a_suspicion_raised_with_nacks_missing_runs_lhm_plus_one_times_longer(nacks: int, lhm: int) -> None:
    """The helpers' answers did not come back: the fault may be ours (our link), so the
    suspicion our failed probe raises runs on our less healthy clock; every nack in, lhm 0,
    the timeout is what it always was."""
    clock = FakeClock()
    a = core(clock=clock)
    ping = first_probe(a, clock)
    target = ping.message.target
    clock.advance(S.probe_timeout + EPS)
    reqs = of_type(a.tick(), "ping-req")
    for r in reqs[:nacks]:
        a.handle(Message("nack", name_of(r.address), r.address, seq=r.message.seq))
    clock.advance(S.probe_interval - S.probe_timeout)
    a.tick()
    assert a.lhm == lhm
    n = len(PEERS) + 1
    lo = suspicion_min(S.suspicion_mult, n, S.probe_interval)
    longest = suspicion_timeout(lo, lo * S.suspicion_max_mult, expected_confirmations(S.suspicion_mult, n), 0)
    assert suspicion_length(a, target) == pytest.approx((1 + lhm) * longest)


def test_with_nobody_to_ask_the_suspicion_runs_on_the_clock_it_always_had() -> None:
    """Two nodes: a failed probe has no helper, so nothing said the fault is ours. LHM grows
    (memberlist's penalty, it slows our probes) after the suspicion began, which keeps its
    timeout: the survivor of two detects a crash as fast as before."""
    clock = FakeClock()
    a = core("a", ("b",), clock)
    first_probe(a, clock)
    clock.advance(S.probe_timeout + EPS)
    assert of_type(a.tick(), "ping-req") == []
    clock.advance(S.probe_interval - S.probe_timeout)
    a.tick()
    assert status(a, "b")[0] == SUSPECT and a.lhm == 1
    assert suspicion_length(a, "b") == pytest.approx(suspicion_min(S.suspicion_mult, 2, S.probe_interval))
    start = a.suspect_since("b")
    assert start is not None
    Peers(a, clock, down={"b"}).run(start + suspicion_length(a, "b") + 0.01 - clock.now)
    assert status(a, "b") == (DEAD, 0)
    assert a.members["b"].since - start == pytest.approx(suspicion_min(S.suspicion_mult, 2, S.probe_interval),
                                                          abs=0.011)


def test_worse_health_stretches_pending_suspicions_and_better_health_does_not_shorten_them() -> None:
    clock = FakeClock()
    a, _ = confirmed_suspicion(clock)
    lo = suspicion_min(S.suspicion_mult, len(PEERS) + 1, S.probe_interval)
    assert suspicion_length(a, "b") == pytest.approx(lo)
    a.handle(gossip("c", Update(SUSPECT, "a", 0, addr("a"), "c")))  # we had to refute: lhm 1
    a.handle(gossip("c", Update(SUSPECT, "a", 1, addr("a"), "c")))  # and again: lhm 2
    assert a.lhm == 2
    assert suspicion_length(a, "b") == pytest.approx(3 * lo)
    a.handle(gossip("d", Update(SUSPECT, "x", 0, addr("x"), "d")))  # unknown: ignored
    a.handle(gossip("d", Update(SUSPECT, "c", 0, addr("c"), "d")))  # raised now, on the clock we have now
    assert suspicion_length(a, "c") == pytest.approx(3 * suspicion_timeout(
        lo, lo * S.suspicion_max_mult, expected_confirmations(S.suspicion_mult, len(PEERS) + 1), 0))
    Peers(a, clock, down={"b"}).run(3 * S.probe_interval * 3)  # good probes: lhm back toward 0
    assert a.lhm < 2
    assert suspicion_length(a, "b") == pytest.approx(3 * lo)  # the accusation's chances did not grow


def test_an_unhealthy_node_spaces_its_last_chances_as_it_spaces_its_probes() -> None:
    clock = FakeClock()
    a, _ = confirmed_suspicion(clock)
    a.handle(gossip("c", Update(SUSPECT, "a", 0, addr("a"), "c")))
    assert a.lhm == 1
    start = a.suspect_since("b")
    assert start is not None
    deadline = start + 2 * suspicion_min(S.suspicion_mult, len(PEERS) + 1, S.probe_interval)
    peers = Peers(a, clock, down={"b"})
    peers.run(deadline - clock.now + 0.01)
    pings = {round(t, 6) for t, o in peers.sent_at if o.message.type == "ping" and o.address == addr("b")
             and Update(SUSPECT, "b", 0, addr("b"), "a") in o.message.updates}
    for k in range(1, LAST_CHANCES + 1):
        assert round(deadline - k * 2 * S.probe_timeout, 6) in pings, f"no last chance {k} scaled timeouts before"
    assert status(a, "b") == (DEAD, 0)
    assert a.members["b"].since == pytest.approx(deadline, abs=0.011)


# =========================================================================== Lifeguard: a slow accuser

TRIO = ("n1", "n2", "n3")


def slow_accuser(seed: int, rate: float, longest_wait: float, crash: str | None = None
                 ) -> tuple[list[tuple[str, str, float]], dict[str, float]]:
    """Three cores on a MemoryNetwork; n3's outbound link is a ``tc tbf`` (``rate`` bytes/s,
    ``longest_wait`` s of queue, what waits longer is dropped), every node's summary is
    about 1.5 KB and changes every second (as check outputs do), and n3 is stalled for 2 s
    (SIGSTOP) after 3 s. On waking, n3 answers all that queued up while its link is busy.
    With ``crash``, that node is killed 2 to 2.5 s after the stall ended.

    Returns the dead verdicts about n1 or n2 while they run (observer, node, seconds since
    that observer began to suspect it) and, per survivor, how long after the crash it
    saw the crashed node dead."""
    clock = FakeClock()
    rng = random.Random(seed)
    net = MemoryNetwork(clock, random.Random(rng.getrandbits(64)))
    cores: dict[str, Membership] = {}
    for x in TRIO:
        cores[x] = Membership(x, addr(x), clock, S, rng=random.Random(rng.getrandbits(64)))
        cores[x].assume([Update(ALIVE, y, 0, addr(y)) for y in TRIO])
        net.add(cores[x])
    net.limit_rate("n3", rate, longest_wait)
    suspected: dict[tuple[str, str], float] = {}
    false: list[tuple[str, str, float]] = []
    seen: dict[str, float] = {}
    crashed_at = [0.0]

    def watch(name: str) -> None:
        for c in cores[name].drain_changes():
            if c.new == SUSPECT:
                suspected[(name, c.node)] = clock.now
            elif c.new == DEAD and c.node == crash and c.node in net.crashed:
                seen.setdefault(name, clock.now - crashed_at[0])
            elif c.new == DEAD and c.node != name:
                false.append((name, c.node, round(clock.now - suspected.get((name, c.node), clock.now), 3)))

    net.on_event = watch
    pad = "x" * 1500
    second = 0

    def run_second() -> None:
        nonlocal second
        for x, m in cores.items():
            if net.stalled_until.get(x, 0.0) <= clock.now and x not in net.crashed:
                m.set_summary({"status": "passing", "second": second, "checks": pad})
        second += 1
        net.run_for(1.0)

    for _ in range(3):
        run_second()
    net.run_for(rng.random() * S.probe_interval)
    net.stall("n3", 2.0)
    for _ in range(4):
        run_second()
    if crash is not None:
        net.run_for(rng.random() * 0.5)
        net.crash(crash)
        crashed_at[0] = clock.now
        for _ in range(30):
            run_second()
            if len(seen) == len(TRIO) - 1:
                break
    else:
        for _ in range(4):
            run_second()
    # n3 is the faulty node (stalled, then its link too slow): its death is what SWIM is for
    return [f for f in false if f[1] != "n3"], seen


@pytest.mark.parametrize(("rate", "longest_wait", "seeds"), [(16_000, 0.1, 80), (8_000, 0.2, 20)],
                         ids=["128kbit-100ms", "64kbit-200ms"])
def test_an_accuser_on_a_slow_link_after_a_stall_does_not_condemn_a_healthy_peer(
        rate: float, longest_wait: float, seeds: int) -> None:
    """The fault campaign's false death (scripts/soak, seed 3): n3, behind a tbf of 128 kbit/s,
    its link busy right after a 2 s SIGSTOP, suspected n2 and declared it dead 1.2 s later,
    the suspicion's floor, while its accusation could not get out for n2 to refute it.
    Its local health said it was the unhealthy one: its suspicions now run on that clock."""
    false = []
    for seed in range(seeds):
        false += [(seed, *f) for f in slow_accuser(seed, rate, longest_wait)[0]]
    assert false == [], "(seed, observer, declared dead, seconds after it suspected it)"


def test_a_crash_is_still_detected_while_the_slow_accuser_is_unhealthy() -> None:
    """The same slow n3, and n2 really crashes: both survivors see it dead, within the
    longest a survivor's local health can stretch a probe round and a suspicion."""
    bound = (1 + MAX_LHM) * (len(TRIO) * S.probe_interval + suspicion_min(S.suspicion_mult, 3, S.probe_interval))
    worst = 0.0
    for seed in range(20):
        false, seen = slow_accuser(seed, 16_000, 0.1, crash="n2")
        assert false == [], seed
        assert set(seen) == {"n1", "n3"}, seed
        assert max(seen.values()) <= bound, (seed, seen)
        worst = max(worst, *seen.values())
    print(f"crash of n2 seen dead by both survivors within {worst:.2f} s (bound {bound:.1f} s)")


# =========================================================================== indirect probes (helper side)


def test_a_helper_relays_the_ack_or_nacks_in_time_for_the_requester() -> None:
    clock = FakeClock()
    h = core("h", ("a", "t"), clock)
    req = Message("ping-req", "a", addr("a"), seq=42, target="t", target_addr=addr("t"))
    ping = only(h.handle(req), "ping")
    assert ping.address == addr("t") and ping.message.target == "t"
    relayed = only(h.handle(Message("ack", "t", addr("t"), seq=ping.message.seq)), "ack")
    assert relayed.address == addr("a") and relayed.message.seq == 42

    ping = only(h.handle(req), "ping")
    clock.advance(NACK_FRACTION * S.probe_timeout - 0.001)
    assert of_type(h.tick(), "nack") == []
    clock.advance(0.002)
    nack = only(h.tick(), "nack")
    assert nack.address == addr("a") and nack.message.seq == 42
    assert NACK_FRACTION * S.probe_timeout < S.probe_interval - S.probe_timeout  # inside the requester's wait


# =========================================================================== dissemination


@pytest.mark.parametrize("peers", [3, 12, 120])
def test_each_update_is_sent_retransmit_limit_times(peers: int) -> None:
    clock = FakeClock()
    names = [f"p{i}" for i in range(peers)]
    a = core("a", names, clock)
    news = Update(ALIVE, "x", 7, addr("x"))
    a.handle(gossip("p0", news))
    watch = Peers(a, clock)
    watch.run(S.push_pull_interval - 5)  # before a push-pull would repeat the full state
    copies = sum(o.message.updates.count(news) for o in watch.sent)
    n = peers + 2  # the peers, x and a
    assert copies == retransmit_limit(S.retransmit_mult, n)
    assert copies == S.retransmit_mult * (1 if n < 10 else 2 if n < 100 else 3)


def test_gossip_goes_out_only_while_updates_are_pending() -> None:
    clock = FakeClock()
    a = core(clock=clock)
    watch = Peers(a, clock)
    watch.run(30.0)
    watch.sent.clear()
    watch.run(10.0)
    assert of_type(watch.sent, "gossip") == []
    a.handle(gossip("b", Update(ALIVE, "x", 0, addr("x"))))
    counted = a.counters.get("out:gossip", 0)
    watch.run(S.gossip_interval * 1.5)
    gossips = of_type(watch.sent, "gossip")
    assert 0 < len(gossips) <= S.gossip_nodes * 2
    assert all(o.message.updates for o in gossips)
    assert a.counters["out:gossip"] - counted == len(gossips)  # counted when sent, only


# =========================================================================== leave


def test_a_graceful_leave_shows_left_not_dead() -> None:
    clock = FakeClock()
    a, b = core("a", ("b", "c"), clock), core("b", ("a", "c"), clock)
    out = b.leave()
    assert {o.address for o in out} == {addr("a"), addr("c")}
    a.handle(only([o for o in out if o.address == addr("a")], "gossip").message)
    assert status(a, "b") == (LEFT, 0)
    assert [(c.node, c.new, c.reason) for c in a.drain_changes()] == [("b", LEFT, "left gracefully")]
    peers = Peers(a, clock, down={"b"})
    peers.run(60.0)
    assert status(a, "b") == (LEFT, 0)
    assert not [o for o in peers.sent if o.address == addr("b") and o.message.type in ("ping", "ping-req")]


def test_a_leaving_node_does_not_refute_or_probe_and_its_timers_move_on() -> None:
    clock = FakeClock()
    b = core("b", ("a", "c"), clock)
    b.leave()
    assert b.handle(gossip("a", Update(DEAD, "b", 0, addr("b"), "a"))) == []
    assert b.incarnation == 0
    for _ in range(20):
        clock.advance(max(0.0, b.next_wakeup() - clock.now))
        assert of_type(b.tick(), "ping") == []
        assert b.next_wakeup() > clock.now


# =========================================================================== reconnect


def reconnects_to(dead: int, alive: int, intervals: int, seed: int = 1) -> int:
    """Push-pulls a core sends to its ``dead`` dead members in ``intervals`` reconnect
    intervals, with ``alive`` healthy peers answering its probes."""
    clock = FakeClock()
    down = [f"d{i}" for i in range(dead)]
    a = core("a", [f"p{i}" for i in range(alive)] + down, clock, seed=seed)
    clock.advance(60.0)  # so long unheard of that a dead verdict is taken as it stands
    for d in down:
        a.handle(gossip("p0", Update(DEAD, d, 0, addr(d), "p0")))
    assert all(status(a, d) == (DEAD, 0) for d in down)
    watch = Peers(a, clock, down=set(down))
    watch.run(intervals * S.reconnect_interval)
    return len([o for o in watch.sent if o.message.type == "push-pull" and name_of(o.address) in down])


def test_a_large_cluster_retries_a_dead_member_about_once_per_interval_not_once_per_node() -> None:
    # Serf's rule: each node tries with probability dead / live, so 100 live nodes make
    # about one attempt per interval between them, not a hundred full states to nowhere
    tries = reconnects_to(dead=1, alive=99, intervals=2000)
    assert 5 <= tries <= 45  # 20 expected (p = 1/100); a node trying every time would send 2000


def test_the_side_that_sees_as_many_dead_as_live_retries_every_interval() -> None:
    # of two sides of a partition one always counts at least as many dead as live: that
    # side keeps calling the other, so a healed partition always heals the membership
    tries = reconnects_to(dead=3, alive=2, intervals=40)  # 3 dead, 3 live (the core too)
    assert tries >= 39  # one per interval (the first interval may start late)


# =========================================================================== warm start


def test_assume_knows_members_without_news_to_spread() -> None:
    clock = FakeClock()
    a = Membership("a", addr("a"), clock, S, rng=random.Random(1))
    everyone = [Update(ALIVE, n, 0, addr(n)) for n in ("a", *PEERS)]
    a.assume(everyone)
    assert {n: status(a, n) for n in PEERS} == dict.fromkeys(PEERS, (ALIVE, 0))
    assert a.drain_changes() == [] and a.cluster_size() == len(PEERS) + 1
    watch = Peers(a, clock)
    watch.run(5 * S.probe_interval)
    assert {name_of(o.address) for o in of_type(watch.sent, "ping")} <= set(PEERS)
    assert of_type(watch.sent, "gossip") == []  # nothing was queued
    state = a._state_msg(reply=False)
    assert {u.node for u in state.updates} == {"a", *PEERS}


# =========================================================================== wire format


GOOD: dict[str, Any] = {"type": "ping", "from": "a", "addr": "a:7946", "seq": 3, "target": "b", "target_addr": "b:7946",
                        "updates": [{"kind": "suspect", "node": "c", "inc": 2, "addr": "c:7946", "from": "a"}],
                        "summaries": [{"node": "a", "version": [1, 2], "data": {"status": "ok"}}]}


def bad(**changes: Any) -> dict[str, Any]:
    d = dict(GOOD)
    for k, v in changes.items():
        if v is ...:
            d.pop(k)
        else:
            d[k] = v
    return d


def bad_update(**changes: Any) -> dict[str, Any]:
    u = dict(GOOD["updates"][0])
    u.update(changes)
    return bad(updates=[u])


def bad_summary(**changes: Any) -> dict[str, Any]:
    s = dict(GOOD["summaries"][0])
    s.update(changes)
    return bad(summaries=[s])


MALFORMED: dict[str, Any] = {
    "not-an-object": [GOOD],
    "a-string": "ping",
    "null": None,
    "no-type": bad(type=...),
    "unknown-type": bad(type="pong"),
    "type-not-a-string": bad(type=1),
    "no-sender": bad(**{"from": ...}),
    "empty-sender": bad(**{"from": ""}),
    "sender-not-a-string": bad(**{"from": 5}),
    "sender-too-long": bad(**{"from": "x" * 129}),
    "addr-not-a-string": bad(addr=5),
    "addr-too-long": bad(addr="x" * 301),
    "seq-negative": bad(seq=-1),
    "seq-bool": bad(seq=True),
    "seq-float": bad(seq=1.5),
    "seq-string": bad(seq="1"),
    "seq-huge": bad(seq=2**62),
    "target-number": bad(target=5),
    "target-zero": bad(target=0),
    "target-list": bad(target=[]),
    "target-too-long": bad(target="x" * 129),
    "target-addr-not-a-string": bad(target_addr=None),
    "updates-not-a-list": bad(updates={}),
    "update-not-an-object": bad(updates=["alive"]),
    "update-unknown-kind": bad_update(kind="zombie"),
    "update-no-node": bad_update(node=None),
    "update-negative-inc": bad_update(inc=-1),
    "update-bool-inc": bad_update(inc=True),
    "update-float-inc": bad_update(inc=1.0),
    "update-addr-not-a-string": bad_update(addr=5),
    "update-sender-not-a-string": bad_update(**{"from": 5}),
    "update-sender-too-long": bad_update(**{"from": "x" * 129}),
    "summaries-not-a-list": bad(summaries="x"),
    "summary-not-an-object": bad(summaries=[1]),
    "summary-no-node": bad_summary(node=...),
    "summary-data-not-an-object": bad_summary(data=[1]),
    "summary-version-short": bad_summary(version=[1]),
    "summary-version-long": bad_summary(version=[1, 2, 3]),
    "summary-version-string": bad_summary(version=["1", 2]),
    "summary-version-negative": bad_summary(version=[-1, 0]),
    "summary-version-not-a-list": bad_summary(version="1.2"),
    "reply-not-a-bool": bad(reply="yes"),
    "too-many-updates": bad(updates=[GOOD["updates"][0]] * 10_001),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_messages_raise_value_error(case: str) -> None:
    with pytest.raises(ValueError):
        Message.from_json(MALFORMED[case])


def test_messages_round_trip_through_json() -> None:
    msg = Message.from_json(GOOD)
    assert msg.updates == (Update(SUSPECT, "c", 2, "c:7946", "a"),)
    assert msg.summaries == (Summary("a", (1, 2), {"status": "ok"}),)
    assert Message.from_json(msg.to_json()) == msg
    minimal = Message.from_json({"type": "ack", "from": "b"})
    assert (minimal.seq, minimal.target, minimal.updates, minimal.reply) == (0, "", (), False)


# --------------------------------------------------------------------------- lifecycle: reap, force-leave


HOUR = 3600.0

REAP_CASES = [  # (status, hours since the change, forgotten?) with the defaults: reap_after 72 h, tombstone 24 h
    (DEAD, 1.0, False),
    (DEAD, 24.5, False),
    (DEAD, 71.9, False),
    (DEAD, 72.1, True),
    (LEFT, 23.9, False),
    (LEFT, 24.1, True),
]


@pytest.mark.parametrize(("current", "hours", "forgotten"), REAP_CASES,
                         ids=[f"{c}-{h}h" for c, h, _ in REAP_CASES])
def test_a_member_dead_for_reap_after_or_left_for_tombstone_is_forgotten(current: str, hours: float,
                                                                         forgotten: bool) -> None:
    a = with_x(current)
    a.handle(gossip("c", summaries=(Summary("x", (5, 1), {"status": "passing"}),)))
    assert "x" in a.summaries
    a.clock.advance(hours * HOUR)  # type: ignore[attr-defined]
    a.tick()
    a.clock.advance(REAP_CHECK_INTERVAL)  # type: ignore[attr-defined]
    a.tick()
    assert ("x" not in a.members) == forgotten
    changes = [(c.node, c.old, c.new) for c in a.drain_changes() if c.node == "x"]
    assert changes == ([("x", current, REAPED)] if forgotten else [])
    if forgotten:
        assert "x" not in a.summaries
        assert "x" not in [u.node for u in a._state_msg(reply=True).updates]
        assert a.cluster_size() == 3 and a.live_count() == 3


def reaped_x() -> Membership:
    a = with_x(DEAD)
    a.clock.advance(72 * HOUR + 2 * REAP_CHECK_INTERVAL)  # type: ignore[attr-defined]
    a.tick()
    assert "x" not in a.members
    a.drain_changes()
    return a


@pytest.mark.parametrize("kind", [DEAD, SUSPECT, LEFT])
def test_a_slower_nodes_stale_claims_never_bring_a_reaped_member_back(kind: str) -> None:
    """c reaps later on its own clock (or is an older haflowd that never reaps): its gossip and
    its full state still hold x dead. No claim but alive creates a record, so x stays forgotten."""
    a = reaped_x()
    for _ in range(3):
        a.handle(gossip("c", Update(kind, "x", 5, addr("x"), "c")))
        a.handle(Message("push-pull", "c", addr("c"), updates=(Update(kind, "x", 5, addr("x")),), reply=True))
        a.clock.advance(24 * HOUR)  # type: ignore[attr-defined]
        a.tick()
    assert "x" not in a.members
    assert [c for c in a.drain_changes() if c.node == "x"] == []


@pytest.mark.parametrize(("source", "inc"), [("x", 6), ("x", 0), ("c", 6)],
                         ids=["restarted", "fresh-data-dir", "told-by-a-peer"])
def test_a_reaped_member_that_comes_back_joins_normally(source: str, inc: int) -> None:
    a = reaped_x()
    a.handle(gossip(source, Update(ALIVE, "x", inc, addr("x"))))
    assert status(a, "x") == (ALIVE, inc)
    assert [(c.node, c.new, c.reason) for c in a.drain_changes()] == [("x", ALIVE, "joined")]


def test_reaping_spans_hours_of_ticks_and_only_the_dead_go() -> None:
    """72 h of ticks, one every 10 minutes: x (dead) goes after 72 h, the live stay."""
    a = with_x(DEAD)
    clock = a.clock
    gone_at = None
    for i in range(1, 80 * 6):
        clock.advance(600)  # type: ignore[attr-defined]
        for p in ("c", "d"):
            a.handle(Message("ack", p, addr(p), a._probe.seq if a._probe else 0))
            a.members[p].last_seen = clock.monotonic()
        a.tick()
        if gone_at is None and "x" not in a.members:
            gone_at = i / 6
    assert gone_at is not None and 72 <= gone_at <= 72.2, gone_at
    assert set(a.members) == {"a", "c", "d"}


def test_short_reap_settings_forget_in_seconds() -> None:
    clock = FakeClock()
    a = core("a", ("c", "d", "x", "y"), clock, settings=GossipSettings(reap_after=3.0, tombstone=2.0))
    clock.advance(QUIET)
    a.handle(gossip("c", Update(DEAD, "x", 0, addr("x"), "c"), Update(LEFT, "y", 0, addr("y"), "y")))
    assert (status(a, "x"), status(a, "y")) == ((DEAD, 0), (LEFT, 0))
    clock.advance(2.5)
    a.tick()
    assert "y" not in a.members and "x" in a.members
    clock.advance(1.0)
    a.tick()
    assert "x" not in a.members


FORCE_CASES = [  # (x's status here, result or the error)
    (SUSPECT, "left (was suspect)"),
    (DEAD, "left (was dead)"),
    (LEFT, "already left"),
    (ALIVE, ValueError),
]


@pytest.mark.parametrize(("current", "expected"), FORCE_CASES, ids=[c for c, _ in FORCE_CASES])
def test_force_leave(current: str, expected: Any) -> None:
    a = with_x(current)
    if isinstance(expected, type):
        with pytest.raises(expected, match="alive here"):
            a.force_leave("x")
        assert status(a, "x") == (current, 5)
        return
    result, out = a.force_leave("x")
    assert result == expected
    assert status(a, "x") == (LEFT, 5)
    if current == LEFT:
        assert out == [] and a.drain_changes() == []
        return
    assert {name_of(o.address) for o in out} == {"c", "d"}
    for o in out:
        assert [(u.kind, u.node, u.incarnation, u.sender) for u in o.message.updates] == [(LEFT, "x", 5, "a")]
    assert [(c.old, c.new, c.reason) for c in a.drain_changes()] == [(current, LEFT, "forced to leave by a")]
    assert a.live_count() == 3 and a.cluster_size() == 3


def test_force_leave_refuses_an_unknown_member_and_this_node() -> None:
    a = core("a", ("c",))
    with pytest.raises(LookupError):
        a.force_leave("nobody")
    with pytest.raises(ValueError, match="haflowctl leave"):
        a.force_leave("a")


def test_a_forced_leave_spreads_as_left_and_a_live_member_refutes_it() -> None:
    clock = FakeClock()
    a = with_x(DEAD)
    b = core("b", ("a", "x"), clock)
    b.handle(gossip("a", Update(ALIVE, "x", 5, addr("x"))))
    _, out = a.force_leave("x")
    msg = next(o.message for o in out if name_of(o.address) == "c")
    b.handle(Message("gossip", "a", addr("a"), updates=msg.updates))
    assert status(b, "x") == (LEFT, 5)
    assert [c.reason for c in b.drain_changes() if c.node == "x"] == ["forced to leave by a"]
    # x was alive after all (a partition): it hears the claim and refutes, and that wins everywhere
    x = core("x", ("a", "b"), FakeClock(), incarnation=5)
    refutation = x.handle(Message("gossip", "b", addr("b"), updates=msg.updates))
    assert x.incarnation == 6 and x.members["x"].status == ALIVE
    b.handle(Message("gossip", "x", addr("x"), updates=tuple(u for o in refutation for u in o.message.updates)
                     or (Update(ALIVE, "x", 6, addr("x")),)))
    assert status(b, "x") == (ALIVE, 6)


def test_a_left_member_forgotten_after_its_tombstone_rejoins_with_a_fresh_join() -> None:
    a = with_x(DEAD)
    a.force_leave("x")
    a.clock.advance(24 * HOUR + 2 * REAP_CHECK_INTERVAL)  # type: ignore[attr-defined]
    a.tick()
    assert "x" not in a.members
    a.handle(gossip("x", Update(ALIVE, "x", 1, addr("x"))))
    assert status(a, "x") == (ALIVE, 1)


# --------------------------------------------------------------------------- protocol versions


def test_every_message_carries_the_protocol_version() -> None:
    assert Message("ping", "a", addr("a")).to_json()["pv"] == PROTOCOL_VERSION == 1
    assert Message.from_json(Message("ping", "a", addr("a")).to_json()).type == "ping"


def test_a_newer_message_is_read_for_what_this_version_knows() -> None:
    newer = {"pv": PROTOCOL_VERSION + 1, "type": "gossip", "from": "b", "addr": addr("b"), "hops": 3,
             "updates": [{"kind": "zombie", "node": "x", "inc": 1}, {"kind": ALIVE, "node": "y", "inc": 2,
                                                                    "addr": addr("y"), "zone": "eu"}],
             "summaries": [{"node": "y", "version": [2, 1], "data": {"status": "degraded"}, "sig": "?"}]}
    msg = Message.from_json(newer)
    assert [(u.kind, u.node) for u in msg.updates] == [(ALIVE, "y")]
    a = core("a", ("b",))
    a.handle(msg)
    assert status(a, "y") == (ALIVE, 2) and a.summaries["y"].data == {"status": "degraded"}
    with pytest.raises(UnknownType):
        Message.from_json({**newer, "type": "rumour"})


def test_our_own_version_with_an_unknown_kind_or_type_is_still_malformed() -> None:
    for pv in (0, PROTOCOL_VERSION):
        with pytest.raises(ValueError) as e:
            Message.from_json({"pv": pv, "type": "rumour", "from": "b", "addr": addr("b")})
        assert not isinstance(e.value, UnknownType)
        with pytest.raises(ValueError):
            Message.from_json({"pv": pv, "type": "gossip", "from": "b", "updates": [{"kind": "zombie",
                                                                                    "node": "x", "inc": 1}]})
