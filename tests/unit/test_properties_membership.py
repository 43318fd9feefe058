"""Properties of the SWIM + Lifeguard core (haflowd/gossip/membership.py) under drawn faults.

Three to eight cores that know each other (a cluster that has run a while: ``assume``) run
on one FakeClock through :class:`haflowd.testing.MemoryNetwork`. Hypothesis draws a program
of phases; in each, some links drop some or all messages or are slow, some nodes stall (a
blocked event loop, handled after it in either order), some crash and may restart. The
nodes no fault ever touches are *clean*: they answer every probe. Then every link is clean
for a while. Checked after every event:

- a clean node is never declared dead, by anyone (the module docstring: Lifeguard exists so
  that "the slow node slows down instead of accusing healthy ones");
- incarnations never go down: a node's own, and every node's view of every other;
- no node declares a death of its own before the suspicion timeout's floor,
  ``suspicion_min(suspicion_mult, n, probe_interval)`` after it began to suspect;
- once the traffic is clean, every node sees every node alive within ``CONVERGE_S``
  (``suspicion_max_mult`` longest suspicions, for the verdicts under way to run out and be
  refuted, plus two push-pull intervals, the full-state exchange that heals what gossip
  missed), and they stay so.

Not promised, so not checked: that a node which was faulty is never declared dead (that is
the point of the protocol), nor any bound on convergence while faults last.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from haflowd.gossip.membership import ALIVE, DEAD, SUSPECT, GossipSettings, Membership, Update, suspicion_min
from haflowd.testing import FakeClock, MemoryNetwork

# derandomize: the same examples on every run and in CI; no explain phase: it traces every line,
# which costs minutes on a failure in a long run
PROPS = settings(max_examples=200, deadline=None, derandomize=True, phases=set(Phase) - {Phase.explain})
S = GossipSettings()
LONGEST_SUSPICION = suspicion_min(S.suspicion_mult, 8, S.probe_interval) * S.suspicion_max_mult
CONVERGE_S = LONGEST_SUSPICION + 2 * S.push_pull_interval


def addr(name: str) -> str:
    return f"{name}:7946"


@dataclass
class Fault:
    links: list[tuple[int, int, float, bool]]  # (from, to, loss probability, both ways)
    stalls: list[tuple[int, float, float]]  # (node, after seconds, for seconds)
    duration: float
    crashes: list[tuple[int, bool]] = field(default_factory=list)  # (node, restarted when the phase ends)
    slow: list[tuple[int, int, float]] = field(default_factory=list)  # (from, to, seconds of extra delay)


faults = st.builds(
    Fault,
    st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7), st.sampled_from([0.3, 0.7, 1.0]), st.booleans()),
             max_size=8),
    st.lists(st.tuples(st.integers(0, 7), st.floats(0.0, 3.0), st.floats(0.01, 4.0)), max_size=3),
    st.floats(0.5, 8.0),
    st.lists(st.tuples(st.integers(0, 7), st.booleans()), max_size=2),
    st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7), st.floats(0.05, 2.0)), max_size=3),
)


@dataclass
class Watch:
    """Everything checked after every event, and what it needs to remember."""

    cores: dict[str, Membership]
    clock: FakeClock
    clean: set[str]
    incarnations: dict[tuple[str, str], int] = field(default_factory=dict)  # (observer, node) -> last seen
    suspected_at: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)  # -> (when, floor)
    verdicts: int = 0  # own dead verdicts seen: the floor was checked this often
    clean_suspected: int = 0  # suspicions of clean nodes (by stalled observers): refuted in time

    def __call__(self, name: str) -> None:
        core = self.cores[name]
        now = self.clock.now
        for other, m in core.members.items():
            key = (name, other)
            assert m.incarnation >= self.incarnations.get(key, 0), (key, m.incarnation, self.incarnations[key])
            self.incarnations[key] = m.incarnation
        for c in core.drain_changes():
            if c.new == SUSPECT:
                self.clean_suspected += c.node in self.clean
                self.suspected_at[(name, c.node)] = (now, suspicion_min(S.suspicion_mult, core.cluster_size(),
                                                                        S.probe_interval))
            elif c.new == DEAD:
                assert c.node not in self.clean, f"{name} declared clean {c.node} dead: {c.reason}"
                if c.reason == f"declared dead by {name}":  # its own verdict, not one passed on
                    self.verdicts += 1
                    since, floor = self.suspected_at[(name, c.node)]
                    assert now - since >= floor - 1e-9, (name, c.node, now - since, floor)  # float slack


def cluster(n: int, seed: int) -> tuple[MemoryNetwork, dict[str, Membership], FakeClock]:
    clock = FakeClock()
    rng = random.Random(seed)
    net = MemoryNetwork(clock, random.Random(rng.getrandbits(64)))
    names = [f"n{i}" for i in range(n)]
    everyone = [Update(ALIVE, x, 0, addr(x)) for x in names]
    cores = {}
    for x in names:
        core = Membership(x, addr(x), clock, S, rng=random.Random(rng.getrandbits(64)))
        core.assume(everyone)
        cores[x] = core
        net.add(core)
    return net, cores, clock


def converged(cores: dict[str, Membership], crashed: set[str]) -> bool:
    """Every running node sees every running node alive, and no crashed one alive or suspect: dead,
    or not known at all (a node that joined after the crash never hears of it: news of the death
    of a member it does not know is dropped, by design)."""
    for name, c in cores.items():
        if name in crashed:
            continue
        for x in cores:
            m = c.members.get(x)
            if x in crashed and m is not None and m.status != DEAD:
                return False
            if x not in crashed and (m is None or m.status != ALIVE):
                return False
    return True


@PROPS
@given(st.integers(3, 8), st.lists(faults, min_size=1, max_size=4), st.integers(0, 2**32 - 1))
def test_faults_never_kill_a_clean_node_and_clean_traffic_converges(
        n: int, program: list[Fault], seed: int) -> None:
    net, cores, clock = cluster(n, seed)
    names = list(cores)
    touched = {names[i % n] for f in program for a, b, _, _ in f.links for i in (a, b) if a % n != b % n}
    touched |= {names[i % n] for f in program for i, _, _ in f.stalls}
    touched |= {names[i % n] for f in program for i, _ in f.crashes}
    touched |= {names[i % n] for f in program for a, b, _ in f.slow for i in (a, b) if a % n != b % n}
    watch = Watch(cores, clock, set(names) - touched)
    net.on_event = watch
    net.run_for(2.0)
    for f in program:
        net.heal()
        for i, _ in f.crashes:
            net.crash(names[i % n])
        for a, b, seconds in f.slow:
            net.delay[(names[a % n], names[b % n])] = seconds
        for a, b, p, both in f.links:
            if a % n != b % n:
                net.loss[(names[a % n], names[b % n])] = p
                if both:
                    net.loss[(names[b % n], names[a % n])] = p
        elapsed = 0.0
        for i, after, length in sorted(f.stalls, key=lambda s: s[1]):
            if after < f.duration:
                net.run_for(after - elapsed)
                elapsed = after
                net.stall(names[i % n], length)
        net.run_for(f.duration - elapsed)
        for i, restart in f.crashes:
            if restart and names[i % n] in net.crashed:
                x = names[i % n]
                cores[x] = Membership(x, addr(x), clock, S, incarnation=cores[x].incarnation + 1,
                                      seeds=[addr(y) for y in names if y != x], rng=random.Random(seed + i))
                net.restart(cores[x])
    net.heal()
    net.run_for(max((u - clock.now for u in net.stalled_until.values()), default=0.0))  # the last stalls end
    step = 1.0
    waited = 0.0
    while not converged(cores, net.crashed):
        assert waited < CONVERGE_S, ({x: {m.name: m.status for m in c.members.values()}
                                      for x, c in cores.items() if x not in net.crashed}, net.crashed)
        net.run_for(step)
        waited += step
    net.run_for(2 * S.push_pull_interval)
    assert converged(cores, net.crashed)


@PROPS
@given(st.integers(3, 6), st.integers(12_000, 64_000), st.sampled_from([0.05, 0.1, 0.2, 0.3]),
       st.floats(0.0, 3.0), st.sampled_from([0, 500, 1500]), st.integers(0, 2**32 - 1))
def test_a_node_on_a_slow_link_never_condemns_a_healthy_one(
        n: int, rate: int, longest_wait: float, stall: float, summary: int, seed: int) -> None:
    """One node's outbound link is a ``tc tbf`` (``rate`` bytes/s, ``longest_wait`` of queue,
    what waits longer is dropped), it may be stalled first, and every node's summary changes
    every second: the slow node's local health stretches its suspicions, so it gives none of
    the healthy nodes, all clean, a false death (scripts/soak, seed 3). Its own death is fair."""
    net, cores, clock = cluster(n, seed)
    names = list(cores)
    slow = names[seed % n]
    watch = Watch(cores, clock, set(names) - {slow})
    net.on_event = watch
    net.limit_rate(slow, rate, longest_wait)
    pad = "x" * summary
    for second in range(12):
        for x, c in cores.items():
            if net.stalled_until.get(x, 0.0) <= clock.now:
                c.set_summary({"status": "passing", "second": second, "checks": pad})
        if second == 2 and stall:
            net.stall(slow, stall)
        net.run_for(1.0)
