"""Properties of the sync scheduler (haflowd/sync/schedule.py) under any mix of triggers.

A driver plays sync/service.py's loop on a FakeClock: when idle it calls ``start_run``
and sleeps until ``wake_at``; a run takes a drawn time and ends with drawn outcomes per
peer; file changes, requests and gossip statuses arrive at drawn times, also during runs.

What the module docstring and docs/sync.md promise, checked at every step:

- one run at a time: no plan while one is going, and no ``wake_at`` then either;
- an idle driver is never owed a run: a change is run (a full run, reason ``watch``,
  starting after it) by ``debounce_max`` after it, or at the end of the run going then;
  a request by the next idle moment, against every peer not gone, backoff or not; the
  schedule at most ``interval`` x (1 + jitter) after the last full run; a retry when it
  comes due; a peer gossip sees come back (not yet synced) at once. And an idle driver
  never spins: ``wake_at`` is later than now;
- a full run goes to every peer that is not gone and not waiting for its own retry, and
  tries no peer that gossip says is gone;
- a failed peer's retry comes ``retry_initial`` x 2^(attempts - 1) (capped at
  ``retry_max``) ± jitter after the failure, never later than ``retry_max``, never before;
- a peer in backoff never delays the others: with runs that take no time, the runs of
  every other peer are the same whether that peer always fails or always succeeds.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from haflowd.sync.schedule import (
    ALIVE,
    DEAD,
    GONE,
    LEFT,
    OK,
    SUSPECT,
    Outcome,
    PeerResult,
    RunPlan,
    ScheduleSettings,
    SyncSchedule,
)
from haflowd.testing import FakeClock

# derandomize: the same examples on every run and in CI; no explain phase: it traces every line,
# which costs minutes on a failure in a long run
PROPS = settings(max_examples=150, deadline=None, derandomize=True, phases=set(Phase) - {Phase.explain})
PEERS = ("b", "c", "d")
MEMBERS = (*PEERS, "e")  # with dynamic peers, gossip brings every member: "e" only that way
REL = 1e-9  # float slack, relative
FAILURES = (Outcome.UNREACHABLE, Outcome.REFUSED, Outcome.ERROR, Outcome.TIMEOUT)
OUTCOMES = (Outcome.SYNCED, Outcome.SYNCED, Outcome.CONFLICT, *FAILURES)


class HeldJitter(random.Random):
    """``uniform(a, b)`` always lands at the same fraction ``t`` of its range."""

    def __init__(self, t: float) -> None:
        super().__init__(0)
        self.t = t

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.t


@st.composite
def schedule_settings(draw: st.DrawFn) -> ScheduleSettings:
    debounce = draw(st.floats(min_value=0.0, max_value=5.0))
    initial = draw(st.floats(min_value=1.0, max_value=20.0))
    return ScheduleSettings(
        interval=draw(st.floats(min_value=5.0, max_value=120.0)),
        debounce=debounce,
        debounce_max=debounce + draw(st.floats(min_value=0.0, max_value=10.0)),
        retry_initial=initial,
        retry_max=min(120.0, initial * draw(st.floats(min_value=1.0, max_value=30.0))),
        jitter=draw(st.sampled_from([0.0, 0.1, 0.1, 0.5])),
    )


@dataclass
class Trigger:
    gap: float  # seconds after the previous one
    kind: str  # "change", "request", "member"
    peer: str = ""
    status: str = ""


triggers = st.lists(st.one_of(
    st.builds(Trigger, st.floats(0.0, 30.0), st.just("change")),
    st.builds(Trigger, st.floats(0.0, 30.0), st.just("request")),
    st.builds(Trigger, st.floats(0.0, 30.0), st.just("member"), st.sampled_from(MEMBERS),
              st.sampled_from([ALIVE, SUSPECT, DEAD, LEFT])),
), min_size=1, max_size=30)

Outcomes = Callable[[str, int], PeerResult]  # (peer, its attempt number) -> what it gets
Durations = Callable[[int], float]  # run number -> how long it takes


@dataclass
class Driver:
    core: SyncSchedule
    clock: FakeClock
    s: ScheduleSettings
    outcomes: Outcomes
    durations: Durations
    plans: list[RunPlan] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    members: dict[str, str] = field(default_factory=dict)
    # what an idle driver must not still owe when its time has come
    changes: list[float] = field(default_factory=list)  # times of changes no watch run covered yet
    requested: bool = False
    schedule_due: float = 0.0
    comeback: dict[str, float] = field(default_factory=dict)  # peer -> when gossip saw it back
    retries: dict[str, float] = field(default_factory=dict)  # peer -> its retry time

    def gone(self, peer: str) -> bool:
        return self.members.get(peer) in GONE

    def trigger(self, t: Trigger) -> None:
        now = self.clock.now
        if t.kind == "change":
            self.core.file_changed()
            self.changes.append(now)
        elif t.kind == "request":
            self.core.request()
            self.requested = True
        else:
            if t.peer not in self.core.peers and not self.core.dynamic:
                return  # not configured: gossip news of it changes nothing
            new = t.peer not in self.core.peers
            old = self.members.get(t.peer)
            self.members[t.peer] = t.status
            self.core.set_members({k: v for k, v in self.members.items() if self.core.dynamic or k in PEERS})
            p = self.core.peers[t.peer]
            if new and t.status not in GONE:
                self.comeback[t.peer] = now  # a new member: synced at once
            if t.status in GONE:
                self.comeback.pop(t.peer, None)
                self.retries.pop(t.peer, None)  # not tried while gone: by design
                assert p.retry_at is None
            elif old in GONE and (p.state != OK or (p.pending_files or 0) > 0 or p.attempts):
                self.comeback[t.peer] = now

    def start(self) -> RunPlan | None:
        """What the service's loop does when idle: start a run, or check that none is owed."""
        now = self.clock.now
        waiting = {n for n, p in self.core.peers.items() if p.retry_at is not None and p.retry_at > now}
        plan = self.core.start_run()
        if plan is None:
            self.check_idle(now)
            return None
        assert plan.started_mono == now
        assert not self.plans or plan.id > self.plans[-1].id
        assert self.core.start_run() is None and self.core.wake_at() is None  # one run at a time
        assert not any(self.gone(p) for p in plan.peers), plan  # gone peers are not tried
        if plan.full:
            expected = {p for p in self.core.peers if not self.gone(p) and p not in waiting}
            assert expected <= set(plan.peers), (plan, waiting)  # a backoff holds back only its own peer
            assert set(plan.down) == {p for p in self.core.peers if self.gone(p)}
            self.schedule_due = now + self.s.interval * (1 + self.s.jitter) * (1 + REL)
            if "watch" in plan.reasons:
                self.changes = [t for t in self.changes if t > now]
        if plan.manual:
            assert set(plan.peers) == {p for p in self.core.peers if not self.gone(p)}, plan
            self.requested = False
        for p in plan.peers:
            self.comeback.pop(p, None)
            self.retries.pop(p, None)
        self.plans.append(plan)
        return plan

    def check_idle(self, now: float) -> None:
        assert not self.requested, "a request waits while idle"
        assert not [t for t in self.changes if t + self.s.debounce_max <= now], (self.changes, now)
        assert now < self.schedule_due, ("the schedule is late", now, self.schedule_due)
        assert not self.comeback, ("a peer that came back waits", self.comeback)
        assert not [p for p, t in self.retries.items() if t <= now], ("a retry waits", self.retries, now)
        wake = self.core.wake_at()
        assert wake is not None and wake > now, ("an idle loop would spin", wake, now)
        owed = [self.schedule_due, *(t + self.s.debounce_max for t in self.changes), *self.retries.values()]
        assert wake <= min(owed), ("the loop would sleep past something due", wake, owed)

    def finish(self, plan: RunPlan) -> None:
        now = self.clock.now
        results = {}
        for p in plan.peers:
            self.attempts[p] = self.attempts.get(p, 0) + 1
            results[p] = self.outcomes(p, self.attempts[p])
        self.core.finish_run(results)
        for p, r in results.items():
            state = self.core.peers[p]
            if r.outcome in (Outcome.SYNCED, Outcome.CONFLICT):
                assert state.retry_at is None and state.attempts == 0
                self.comeback.pop(p, None)  # synced: caught up, whenever it came back
                continue
            if p in self.comeback:  # it came back during this run, after the attempt perhaps: at once
                assert state.retry_at is not None and state.retry_at <= now, (p, state.retry_at, now)
                continue
            if self.gone(p):
                assert state.retry_at is None  # gossip saw it go during the run: it waits for gossip
                continue
            assert state.retry_at is not None
            delay = state.retry_at - now
            base = min(self.s.retry_max, self.s.retry_initial * 2.0 ** min(state.attempts - 1, 60))
            lo, hi = base * (1 - self.s.jitter) * (1 - REL), min(self.s.retry_max, base * (1 + self.s.jitter))
            assert 0.0 <= lo <= delay <= hi * (1 + REL), (p, state.attempts, delay, base)
            self.retries[p] = state.retry_at

    def run(self, inputs: list[Trigger]) -> None:
        t0 = self.clock.now
        self.schedule_due = t0  # the startup run is owed at once
        times = []
        t = t0
        for trig in inputs:
            t += trig.gap
            times.append(t)
        horizon = t + 2 * self.s.interval * (1 + self.s.jitter) + self.s.retry_max * 2 + self.s.debounce_max
        i = 0
        running: tuple[RunPlan, float] | None = None
        for _ in range(10_000):
            if running is None:
                plan = self.start()
                if plan is not None:
                    running = (plan, self.clock.now + self.durations(plan.id))
                    continue
            # the next event: an input, the end of the run, or the core's wake-up
            nxt = [times[i]] if i < len(times) else []
            if running is not None:
                nxt.append(running[1])
            else:
                wake = self.core.wake_at()
                assert wake is not None
                nxt.append(wake)
            when = min(nxt)
            if when > horizon:
                return
            self.clock.now = max(self.clock.now, when)
            if i < len(times) and times[i] <= self.clock.now:
                self.trigger(inputs[i])
                i += 1
                if running is not None:  # what comes in during a run waits for its end
                    assert self.core.start_run() is None and self.core.wake_at() is None
                continue  # inputs at one instant all go in before the loop looks again
            if running is not None and running[1] <= self.clock.now:
                self.finish(running[0])
                running = None
        raise AssertionError("more than 10,000 steps: the schedule runs far too often")


def driver(s: ScheduleSettings, rng: random.Random, outcomes: Outcomes, durations: Durations,
           dynamic: bool = False) -> Driver:
    clock = FakeClock()
    return Driver(SyncSchedule(clock, s, () if dynamic else PEERS, dynamic=dynamic, rng=rng), clock, s, outcomes,
                  durations)


@PROPS
@given(schedule_settings(), triggers, st.integers(0, 2**32 - 1),
       st.lists(st.sampled_from(OUTCOMES), min_size=1, max_size=12),
       st.lists(st.floats(0.0, 20.0), min_size=1, max_size=8), st.booleans())
def test_any_mix_of_triggers_outcomes_and_run_times(s: ScheduleSettings, inputs: list[Trigger], seed: int,
                                                    outcomes: list[Outcome], durations: list[float],
                                                    dynamic: bool) -> None:
    def got(peer: str, n: int) -> PeerResult:
        return PeerResult(outcomes[(n + MEMBERS.index(peer)) % len(outcomes)], "drawn")

    d = driver(s, random.Random(seed), got, lambda run: durations[run % len(durations)], dynamic)
    d.run(inputs)
    assert d.plans and "startup" in d.plans[0].reasons


@PROPS
@given(schedule_settings(), triggers, st.floats(0.0, 1.0), st.sampled_from(PEERS),
       st.sampled_from(FAILURES), st.lists(st.sampled_from(OUTCOMES), min_size=1, max_size=12))
def test_a_peer_in_backoff_never_delays_the_others(s: ScheduleSettings, inputs: list[Trigger], jitter: float,
                                                   victim: str, failure: Outcome, outcomes: list[Outcome]) -> None:
    def world(victim_fails: bool) -> tuple[list[float], dict[str, list[float]]]:
        def got(peer: str, n: int) -> PeerResult:
            if peer == victim:
                return PeerResult(failure if victim_fails else Outcome.SYNCED, "drawn")
            return PeerResult(outcomes[(n + PEERS.index(peer)) % len(outcomes)], "drawn")

        d = driver(s, HeldJitter(jitter), got, lambda run: 0.0)
        d.run(inputs)
        full = [p.started_mono for p in d.plans if p.full]
        others = {q: [p.started_mono for p in d.plans if q in p.peers] for q in PEERS if q != victim}
        return full, others

    assert world(victim_fails=True) == world(victim_fails=False)


def test_a_peer_that_comes_back_during_a_run_is_retried_at_once_after_it() -> None:
    """Found by test_a_peer_in_backoff_never_delays_the_others: a peer that gossip saw die and
    come back while a run was trying it got that run's failure (an attempt made while it was
    away) and a backoff of minutes, instead of the retry at once that its comeback promised."""
    clock = FakeClock()
    s = ScheduleSettings(interval=10_000, retry_initial=2, retry_max=300)
    core = SyncSchedule(clock, s, ("b", "c"), rng=random.Random(7))
    core.set_members({"b": ALIVE, "c": ALIVE})
    plan = core.start_run()
    assert plan is not None
    core.finish_run({"b": PeerResult(Outcome.UNREACHABLE), "c": PeerResult(Outcome.SYNCED)})
    for _ in range(6):  # attempts 2..7: the next retry is minutes away
        clock.now = core.peers["b"].retry_at  # type: ignore[assignment]
        plan = core.start_run()
        assert plan is not None and plan.peers == ("b",)
        if _ == 5:  # the last attempt hangs; meanwhile b restarts: gossip sees it die and come back
            clock.advance(100)
            core.set_members({"b": DEAD, "c": ALIVE})
            clock.advance(10)
            core.set_members({"b": ALIVE, "c": ALIVE})
            clock.advance(10)
        core.finish_run({"b": PeerResult(Outcome.TIMEOUT)})
    plan = core.start_run()
    assert plan is not None and plan.peers == ("b",) and "alive" in plan.reasons
