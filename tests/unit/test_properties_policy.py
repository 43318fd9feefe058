"""Properties of the restart policy (haflowd/supervisor/policy.py) over any sequence of exits.

What the module docstring and docs/reference.md promise, for any settings the config
accepts (durations > 0, backoff_max >= backoff_initial, crash_loop_failures >= 1):

- no delay is negative or longer than ``backoff_max``;
- a run that lasted ``stable_after`` (and was neither a failed spawn nor an unhealthy
  kill) is restarted at once and ends the crash streak: the next quick failure waits
  ``backoff_initial`` again;
- within a streak of quick failures the nominal delay doubles up to ``backoff_max``; each
  delay is that nominal delay with at most ±20 % jitter. With the jitter held still the
  delays never go down. With real jitter they may: once at the cap, two draws in a row
  land anywhere in [0.8, 1] x backoff_max. That is the point of jitter, not a defect;
- ``crash_loop_failures`` counted exits within ``crash_loop_window`` (the window's edge
  included) is FATAL, and nothing else is; ``reset`` (start, reload) forgets them all;
- ``restart = "never"`` stops on every exit; ``"on-failure"`` stops on a clean exit (code 0,
  not killed as unhealthy, spawned), and neither counts such an exit anywhere.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from haflowd.supervisor.policy import Action, ExitInfo, PolicySettings, RestartPolicy

# derandomize: the same examples on every run and in CI; no explain phase: it traces every line,
# which costs minutes on a failure in a long run
PROPS = settings(max_examples=200, deadline=None, derandomize=True, phases=set(Phase) - {Phase.explain})
JITTER = 0.2  # the module docstring's ±20 %; not the module's constant, so a change to it shows


class HeldJitter(random.Random):
    """``uniform(a, b)`` always lands at the same fraction ``t`` of its range."""

    def __init__(self, t: float) -> None:
        super().__init__(0)
        self.t = t

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.t


@st.composite
def policy_settings(draw: st.DrawFn, restart: str | None = None) -> PolicySettings:
    initial = draw(st.floats(min_value=0.001, max_value=100.0))
    return PolicySettings(
        restart=restart or draw(st.sampled_from(["always", "on-failure", "never"])),
        backoff_initial=initial,
        backoff_max=initial * draw(st.floats(min_value=1.0, max_value=1000.0)),
        stable_after=draw(st.floats(min_value=0.001, max_value=600.0)),
        crash_loop_failures=draw(st.integers(min_value=1, max_value=12)),
        crash_loop_window=draw(st.floats(min_value=0.001, max_value=3600.0)),
    )


@st.composite
def exits(draw: st.DrawFn) -> ExitInfo:
    how = draw(st.sampled_from(["code", "signal", "lost", "spawn"]))
    if how == "spawn":
        return ExitInfo(uptime=0.0, spawn_failed=True)
    uptime = draw(st.floats(min_value=0.0, max_value=1200.0))
    unhealthy = draw(st.booleans())
    if how == "code":
        return ExitInfo(uptime, code=draw(st.sampled_from([0, 0, 1, 2, 127, 255])), unhealthy=unhealthy)
    if how == "signal":
        return ExitInfo(uptime, signal=draw(st.sampled_from([9, 15, 6])), unhealthy=unhealthy)
    return ExitInfo(uptime, unhealthy=unhealthy)


@dataclass
class Step:
    gap: float  # seconds since the previous step
    info: ExitInfo | None  # None: an operator's start (or a reload): reset


steps = st.lists(
    st.builds(Step, st.floats(min_value=0.0, max_value=300.0), st.one_of(exits(), exits(), exits(), st.none())),
    max_size=40,
)


def nominal(s: PolicySettings, n: int) -> float:
    return float(min(s.backoff_max, s.backoff_initial * 2.0 ** min(n - 1, 60)))


def is_stable(s: PolicySettings, info: ExitInfo) -> bool:
    return info.uptime >= s.stable_after and not info.spawn_failed and not info.unhealthy


def is_clean(info: ExitInfo) -> bool:
    return info.code == 0 and not info.unhealthy and not info.spawn_failed


def replay(s: PolicySettings, rng: random.Random, seq: list[Step]) -> None:
    """Feed ``seq`` to a policy and check every decision against a model of the rules."""
    p = RestartPolicy(s, rng)
    now = 1000.0
    counted: list[float] = []  # the model: times of exits that count toward a crash loop
    streak = 0
    last_delay = 0.0
    for step in seq:
        now += step.gap
        if step.info is None:
            p.reset()
            counted, streak, last_delay = [], 0, 0.0
            continue
        info = step.info
        d = p.on_exit(now, info)
        assert 0.0 <= d.delay <= s.backoff_max, d
        if s.restart == "never" or (s.restart == "on-failure" and is_clean(info)):
            assert (d.action, d.delay) == (Action.STOP, 0.0), (s.restart, info, d)
            continue
        counted.append(now)
        in_window = [t for t in counted if t >= now - s.crash_loop_window]
        if len(in_window) >= s.crash_loop_failures:
            assert d.action is Action.FATAL, (in_window, d)
            continue
        assert d.action is Action.RESTART, (in_window, d)
        if is_stable(s, info):
            assert d.delay == 0.0, d
            streak, last_delay = 0, 0.0
            continue
        streak += 1
        base = nominal(s, streak)
        assert base * (1 - JITTER) * (1 - 1e-9) <= d.delay <= min(s.backoff_max, base * (1 + JITTER)) * (1 + 1e-9), \
            (streak, base, d)
        if isinstance(rng, HeldJitter):
            assert d.delay >= last_delay * (1 - 1e-12), (streak, last_delay, d)  # non-decreasing in a streak
        last_delay = d.delay


@PROPS
@given(policy_settings(), steps, st.integers(0, 2**32 - 1))
def test_any_sequence_of_exits_with_real_jitter(s: PolicySettings, seq: list[Step], seed: int) -> None:
    replay(s, random.Random(seed), seq)


@PROPS
@given(policy_settings(), steps, st.floats(min_value=0.0, max_value=1.0))
def test_any_sequence_of_exits_with_the_jitter_held(s: PolicySettings, seq: list[Step], t: float) -> None:
    replay(s, HeldJitter(t), seq)


@PROPS
@given(policy_settings(restart="always"), st.integers(min_value=1, max_value=80), st.floats(0.0, 1.0))
def test_a_long_streak_reaches_the_cap_and_stays_there(s: PolicySettings, n: int, t: float) -> None:
    s = PolicySettings(s.restart, s.backoff_initial, s.backoff_max, s.stable_after, 10_000, s.crash_loop_window)
    p = RestartPolicy(s, HeldJitter(t))
    delays = [p.on_exit(1000.0 + 1000.0 * s.crash_loop_window * i, ExitInfo(0.0, code=1)).delay for i in range(n)]
    assert delays == sorted(delays)
    assert all(d <= s.backoff_max for d in delays)
    if n > 1 and s.backoff_initial * 2.0 ** (n - 1) >= s.backoff_max:
        assert delays[-1] >= s.backoff_max * (1 - JITTER) * (1 - 1e-9)


@PROPS
@given(policy_settings(restart="always"), st.integers(min_value=1, max_value=12))
def test_exactly_the_nth_exit_within_the_window_is_fatal(s: PolicySettings, spare: int) -> None:
    """``crash_loop_failures`` exits spread evenly over exactly the window: the last one is FATAL;
    spread a little wider, none is."""
    window = max(1, round(s.crash_loop_window * 1024)) / 1024  # exact in binary: the edge is the edge
    s = PolicySettings(s.restart, s.backoff_initial, s.backoff_max, s.stable_after, s.crash_loop_failures, window)
    k = s.crash_loop_failures
    gap = s.crash_loop_window / max(1, k - 1)
    tight = RestartPolicy(s, random.Random(0))
    actions = [tight.on_exit(1000.0 + min(i * gap, s.crash_loop_window), ExitInfo(0.0, code=1)).action
               for i in range(k)]
    assert actions[:-1] == [Action.RESTART] * (k - 1)
    assert actions[-1] is Action.FATAL
    if k > 1:
        wide = RestartPolicy(s, random.Random(0))
        wider = (s.crash_loop_window * 1.001 + 1e-6) / (k - 1)
        for i in range(k + spare):
            assert wide.on_exit(1000.0 + i * wider, ExitInfo(0.0, code=1)).action is Action.RESTART
