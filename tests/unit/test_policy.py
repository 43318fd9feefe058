"""RestartPolicy: restart modes, stable runs, exponential backoff with jitter, crash loops."""

from __future__ import annotations

import random

import pytest

from haflowd.supervisor.policy import JITTER, Action, ExitInfo, PolicySettings, RestartPolicy
from haflowd.testing import FakeClock

QUICK = 0.5  # seconds of uptime: well below the default stable_after
CLEAN = ExitInfo(uptime=QUICK, code=0)
FAILED = ExitInfo(uptime=QUICK, code=1)
KILLED = ExitInfo(uptime=QUICK, signal=9)
LOST = ExitInfo(uptime=QUICK)
UNHEALTHY_CLEAN = ExitInfo(uptime=QUICK, code=0, unhealthy=True)
UNHEALTHY_SIGNAL = ExitInfo(uptime=QUICK, signal=15, unhealthy=True)
SPAWN_FAILED = ExitInfo(uptime=0.0, spawn_failed=True)

EXITS = {
    "clean": CLEAN,
    "failed": FAILED,
    "killed": KILLED,
    "lost": LOST,
    "unhealthy-exit-0": UNHEALTHY_CLEAN,
    "unhealthy-signal": UNHEALTHY_SIGNAL,
    "spawn-failed": SPAWN_FAILED,
}


class FixedJitter(random.Random):
    """A random source whose ``uniform`` always answers one end (or the middle) of its range."""

    def __init__(self, where: str) -> None:
        super().__init__(0)
        self.where = where

    def uniform(self, a: float, b: float) -> float:
        return {"low": a, "mid": (a + b) / 2, "high": b}[self.where]


def policy(rng: random.Random | None = None, **settings: object) -> RestartPolicy:
    return RestartPolicy(PolicySettings(**settings), rng or random.Random(1))  # type: ignore[arg-type]


def nominal(n: int, initial: float = 1.0, maximum: float = 60.0) -> float:
    """The un-jittered delay before restart number ``n`` of a run of quick failures."""
    return min(maximum, initial * 2.0 ** (n - 1))


def assert_jittered(delay: float, n: int, initial: float = 1.0, maximum: float = 60.0) -> None:
    base = nominal(n, initial, maximum)
    assert base * (1 - JITTER) - 1e-9 <= delay <= min(maximum, base * (1 + JITTER)) + 1e-9, (n, delay)


# =========================================================================== ExitInfo


@pytest.mark.parametrize(
    ("name", "clean"),
    [
        ("clean", True),
        ("failed", False),
        ("killed", False),
        ("lost", False),
        ("unhealthy-exit-0", False),
        ("unhealthy-signal", False),
        ("spawn-failed", False),
    ],
)
def test_exit_info_clean(name: str, clean: bool) -> None:
    assert EXITS[name].clean is clean


# =========================================================================== restart modes


@pytest.mark.parametrize(
    ("mode", "name", "action"),
    [
        ("always", "clean", Action.RESTART),
        ("always", "failed", Action.RESTART),
        ("always", "killed", Action.RESTART),
        ("always", "lost", Action.RESTART),
        ("always", "unhealthy-exit-0", Action.RESTART),
        ("always", "unhealthy-signal", Action.RESTART),
        ("always", "spawn-failed", Action.RESTART),
        ("on-failure", "clean", Action.STOP),
        ("on-failure", "failed", Action.RESTART),
        ("on-failure", "killed", Action.RESTART),
        ("on-failure", "lost", Action.RESTART),
        # we killed it for failing its probe: a failure even if it then exited 0
        ("on-failure", "unhealthy-exit-0", Action.RESTART),
        ("on-failure", "unhealthy-signal", Action.RESTART),
        ("on-failure", "spawn-failed", Action.RESTART),
        ("never", "clean", Action.STOP),
        ("never", "failed", Action.STOP),
        ("never", "killed", Action.STOP),
        ("never", "lost", Action.STOP),
        ("never", "unhealthy-exit-0", Action.STOP),
        ("never", "unhealthy-signal", Action.STOP),
        ("never", "spawn-failed", Action.STOP),
    ],
)
def test_restart_mode(mode: str, name: str, action: Action) -> None:
    p = policy(restart=mode)
    decision = p.on_exit(1000.0, EXITS[name])
    assert decision.action is action
    assert decision.reason
    if action is Action.RESTART:
        assert_jittered(decision.delay, 1)
    else:
        assert decision.delay == 0.0


@pytest.mark.parametrize(("mode", "name"), [("never", "failed"), ("never", "clean"), ("on-failure", "clean")])
def test_a_stop_spends_no_crash_loop_budget(mode: str, name: str) -> None:
    p = policy(restart=mode, crash_loop_failures=2)
    for _ in range(10):
        assert p.on_exit(1000.0, EXITS[name]).action is Action.STOP
    assert len(p.failures) == 0
    assert p.consecutive == 0


# =========================================================================== stable runs


@pytest.mark.parametrize(
    ("stable_after", "uptime", "stable"),
    [
        (10.0, 10.0, True),  # exactly stable_after counts as stable
        (10.0, 9.99, False),
        (10.0, 0.0, False),
        (10.0, 3600.0, True),
        (2.0, 2.5, True),
        (30.0, 29.0, False),
    ],
)
def test_stable_run_restarts_at_once(stable_after: float, uptime: float, stable: bool) -> None:
    p = policy(stable_after=stable_after)
    decision = p.on_exit(1000.0, ExitInfo(uptime=uptime, code=1))
    assert decision.action is Action.RESTART
    if stable:
        assert decision.delay == 0.0
        assert "stable" in decision.reason
        assert p.consecutive == 0
    else:
        assert_jittered(decision.delay, 1)
        assert p.consecutive == 1


def test_stable_run_resets_the_backoff() -> None:
    clock = FakeClock()
    p = policy(crash_loop_failures=100)
    for n in (1, 2, 3, 4):
        d = p.on_exit(clock.monotonic(), FAILED)
        assert_jittered(d.delay, n)
        clock.advance(d.delay + QUICK)
    assert p.consecutive == 4

    clock.advance(60)
    d = p.on_exit(clock.monotonic(), ExitInfo(uptime=60.0, code=1))
    assert (d.action, d.delay, p.consecutive) == (Action.RESTART, 0.0, 0)

    d = p.on_exit(clock.monotonic(), FAILED)
    assert_jittered(d.delay, 1)  # starts again from backoff_initial
    assert p.consecutive == 1


def test_a_spawn_failure_is_never_a_stable_run() -> None:
    p = policy()
    d = p.on_exit(1000.0, ExitInfo(uptime=3600.0, spawn_failed=True))
    assert d.action is Action.RESTART
    assert_jittered(d.delay, 1)
    assert p.consecutive == 1


# =========================================================================== backoff


@pytest.mark.parametrize(
    ("initial", "maximum", "n", "base"),
    [
        (1.0, 60.0, 1, 1.0),
        (1.0, 60.0, 2, 2.0),
        (1.0, 60.0, 3, 4.0),
        (1.0, 60.0, 4, 8.0),
        (1.0, 60.0, 5, 16.0),
        (1.0, 60.0, 6, 32.0),
        (1.0, 60.0, 7, 60.0),
        (1.0, 60.0, 8, 60.0),
        (1.0, 60.0, 100, 60.0),
        (0.5, 5.0, 1, 0.5),
        (0.5, 5.0, 2, 1.0),
        (0.5, 5.0, 4, 4.0),
        (0.5, 5.0, 5, 5.0),
        (2.0, 2.0, 1, 2.0),
        (2.0, 2.0, 9, 2.0),
    ],
)
@pytest.mark.parametrize(("where", "factor"), [("low", 1 - JITTER), ("mid", 1.0), ("high", 1 + JITTER)])
def test_backoff_doubles_to_the_cap_with_jitter(
    initial: float, maximum: float, n: int, base: float, where: str, factor: float
) -> None:
    p = policy(FixedJitter(where), backoff_initial=initial, backoff_max=maximum)
    assert p.backoff(n) == pytest.approx(min(maximum, base * factor))


def test_backoff_of_zero_or_less_is_the_initial_delay() -> None:
    p = policy(FixedJitter("mid"), backoff_initial=3.0)
    assert p.backoff(0) == pytest.approx(3.0)
    assert p.backoff(-5) == pytest.approx(3.0)


@pytest.mark.parametrize(("initial", "maximum"), [(1.0, 60.0), (0.1, 5.0), (5.0, 300.0), (7.0, 10.0)])
def test_backoff_stays_within_jitter_and_cap_for_any_seed(initial: float, maximum: float) -> None:
    for seed in range(300):
        p = policy(random.Random(seed), backoff_initial=initial, backoff_max=maximum)
        for n in range(1, 16):
            d = p.backoff(n)
            assert d <= maximum
            assert_jittered(d, n, initial, maximum)


def test_jitter_spreads_a_fleet() -> None:
    first = {policy(random.Random(seed)).backoff(1) for seed in range(50)}
    assert len(first) > 40  # no lock-step restarts
    assert min(first) < 0.9 and max(first) > 1.1


def test_same_seed_same_delays() -> None:
    a, b = policy(random.Random(7)), policy(random.Random(7))
    assert [a.backoff(n) for n in range(1, 10)] == [b.backoff(n) for n in range(1, 10)]


@pytest.mark.parametrize("seed", [0, 1, 2, 42, 1234])
def test_quick_failures_back_off_exponentially(seed: int) -> None:
    clock = FakeClock()
    p = policy(random.Random(seed), crash_loop_failures=1000)
    for n in range(1, 12):
        d = p.on_exit(clock.monotonic(), FAILED)
        assert d.action is Action.RESTART
        assert f"failure {n} in a row" == d.reason
        assert_jittered(d.delay, n)
        clock.advance(d.delay + QUICK)


# =========================================================================== crash loops


@pytest.mark.parametrize(
    ("failures", "window", "spacing", "fatal_at"),
    [
        (5, 120.0, 1.0, 5),
        (5, 120.0, 29.0, 5),
        (5, 120.0, 30.0, 5),  # the fifth exit lands exactly at the window's edge: still inside
        (5, 120.0, 31.0, None),  # the oldest always falls out before the fifth arrives
        (1, 120.0, 1.0, 1),
        (3, 10.0, 1.0, 3),
        (3, 10.0, 5.0, 3),
        (3, 10.0, 5.5, None),
        (10, 60.0, 0.0, 10),
    ],
)
def test_crash_loop(failures: int, window: float, spacing: float, fatal_at: int | None) -> None:
    clock = FakeClock()
    p = policy(crash_loop_failures=failures, crash_loop_window=window)
    actions = []
    for _ in range(12):
        actions.append(p.on_exit(clock.monotonic(), FAILED))
        if actions[-1].action is Action.FATAL:
            break
        clock.advance(spacing)
    if fatal_at is None:
        assert all(d.action is Action.RESTART for d in actions)
    else:
        assert len(actions) == fatal_at
        assert all(d.action is Action.RESTART for d in actions[:-1])
        assert actions[-1].action is Action.FATAL
        assert actions[-1].reason == f"crash loop: {failures} exits within {window:g}s"


@pytest.mark.parametrize("name", ["clean", "failed", "killed", "unhealthy-signal", "spawn-failed"])
def test_every_exit_counts_towards_a_crash_loop_under_always(name: str) -> None:
    clock = FakeClock()
    p = policy(crash_loop_failures=3)
    assert p.on_exit(clock.monotonic(), EXITS[name]).action is Action.RESTART
    clock.advance(1)
    assert p.on_exit(clock.monotonic(), EXITS[name]).action is Action.RESTART
    clock.advance(1)
    assert p.on_exit(clock.monotonic(), EXITS[name]).action is Action.FATAL


def test_stable_runs_still_count_towards_a_crash_loop() -> None:
    clock = FakeClock()
    p = policy(crash_loop_failures=3, crash_loop_window=120.0, stable_after=10.0)
    stable = ExitInfo(uptime=20.0, code=1)
    assert p.on_exit(clock.monotonic(), stable).delay == 0.0
    clock.advance(20)
    assert p.on_exit(clock.monotonic(), stable).delay == 0.0
    clock.advance(20)
    assert p.on_exit(clock.monotonic(), stable).action is Action.FATAL


def test_failures_older_than_the_window_are_forgotten() -> None:
    clock = FakeClock()
    p = policy(crash_loop_failures=5, crash_loop_window=120.0)
    for _ in range(4):
        assert p.on_exit(clock.monotonic(), FAILED).action is Action.RESTART
        clock.advance(1)
    clock.advance(121)
    for _ in range(4):
        assert p.on_exit(clock.monotonic(), FAILED).action is Action.RESTART
        clock.advance(1)
    assert len(p.failures) == 4
    assert p.on_exit(clock.monotonic(), FAILED).action is Action.FATAL


def test_reset_gives_a_fresh_budget() -> None:
    clock = FakeClock()
    p = policy(crash_loop_failures=3)
    for _ in range(2):
        p.on_exit(clock.monotonic(), FAILED)
    assert p.on_exit(clock.monotonic(), FAILED).action is Action.FATAL

    p.reset()
    assert (p.consecutive, len(p.failures)) == (0, 0)
    first = p.on_exit(clock.monotonic(), FAILED)
    assert first.action is Action.RESTART
    assert_jittered(first.delay, 1)
    assert p.on_exit(clock.monotonic(), FAILED).action is Action.RESTART
    assert p.on_exit(clock.monotonic(), FAILED).action is Action.FATAL


# =========================================================================== regressions


def test_backoff_after_very_many_failures_is_the_cap() -> None:
    p = policy(FixedJitter("mid"))
    assert p.backoff(1025) == pytest.approx(60.0)


def test_endless_quick_failures_keep_backing_off_at_the_cap() -> None:
    clock = FakeClock()
    # a valid config (crash_loop_failures may be up to 10000): at a 60 s cap, never 10000 exits within 120 s
    p = policy(crash_loop_failures=10000, crash_loop_window=120.0)
    for _ in range(1100):
        d = p.on_exit(clock.monotonic(), FAILED)
        assert d.action is Action.RESTART
        assert d.delay <= 60.0
        clock.advance(d.delay + QUICK)


def test_unhealthy_kill_backs_off_even_after_a_long_run() -> None:
    """A child that goes unhealthy on every start must not be restarted at once for ever."""
    clock = FakeClock()
    p = policy(crash_loop_failures=1000)
    delays = []
    for _ in range(4):
        d = p.on_exit(clock.monotonic(), ExitInfo(uptime=3600.0, code=None, signal=15, unhealthy=True))
        delays.append(d.delay)
        clock.advance(d.delay + 3600)
    assert all(x > 0 for x in delays) and delays[-1] > delays[0]
