"""Restart decisions: pure, given the exit, the time and a random source.

- A child that ran longer than ``stable_after`` is restarted at once: it was healthy
  and a single crash should cost milliseconds, not a backoff.
- Quick failures back off exponentially (``backoff_initial`` doubling to
  ``backoff_max``) with ±20 % jitter, so a fleet does not restart in lock-step.
- ``crash_loop_failures`` failures within ``crash_loop_window`` is a crash loop:
  ``fatal``. Unlike supervisord's FATAL it is not a dead end: ``start`` or a reload
  calls :meth:`RestartPolicy.reset` and the child gets a fresh budget.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from haflowd.config.schema import default_of

JITTER = 0.2


class Action(StrEnum):
    RESTART = "restart"
    STOP = "stop"
    FATAL = "fatal"


@dataclass(frozen=True)
class ExitInfo:
    """What ended a run of the child."""

    uptime: float
    code: int | None = None  # exit code, None if killed by a signal or never started
    signal: int | None = None
    unhealthy: bool = False  # we killed it because its health probe failed
    spawn_failed: bool = False

    @property
    def clean(self) -> bool:
        return self.code == 0 and not self.unhealthy and not self.spawn_failed


@dataclass(frozen=True)
class Decision:
    action: Action
    delay: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class PolicySettings:
    """Defaults: the config schema's, declared once there."""

    restart: str = default_of("component.restart")
    backoff_initial: float = default_of("component.backoff_initial")
    backoff_max: float = default_of("component.backoff_max")
    stable_after: float = default_of("component.stable_after")
    crash_loop_failures: int = default_of("component.crash_loop_failures")
    crash_loop_window: float = default_of("component.crash_loop_window")


class RestartPolicy:
    def __init__(self, settings: PolicySettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.rng = rng or random.Random()
        self.consecutive = 0
        self.failures: deque[float] = deque()

    def reset(self) -> None:
        self.consecutive = 0
        self.failures.clear()

    def backoff(self, consecutive: int) -> float:
        """Delay before restart number ``consecutive`` of a run of quick failures (1-based)."""
        s = self.settings
        base: float = min(s.backoff_max, s.backoff_initial * 2.0 ** min(max(0, consecutive - 1), 60))
        jittered = base * (1 + self.rng.uniform(-JITTER, JITTER))
        return min(s.backoff_max, max(0.0, jittered))

    def on_exit(self, now: float, info: ExitInfo) -> Decision:
        s = self.settings
        if s.restart == "never":
            return Decision(Action.STOP, reason="restart = never")
        if s.restart == "on-failure" and info.clean:
            return Decision(Action.STOP, reason="exited cleanly (restart = on-failure)")
        self.failures.append(now)
        while self.failures and self.failures[0] < now - s.crash_loop_window:
            self.failures.popleft()
        if len(self.failures) >= s.crash_loop_failures:
            return Decision(
                Action.FATAL,
                reason=f"crash loop: {len(self.failures)} exits within {s.crash_loop_window:g}s",
            )
        # an unhealthy kill is no proof of stability: a child that goes unhealthy on every
        # start must back off, not be restarted at once for ever
        if info.uptime >= s.stable_after and not info.spawn_failed and not info.unhealthy:
            self.consecutive = 0
            return Decision(Action.RESTART, 0.0, reason="was stable; restarting at once")
        self.consecutive += 1
        delay = self.backoff(self.consecutive)
        return Decision(Action.RESTART, delay, reason=f"failure {self.consecutive} in a row")
