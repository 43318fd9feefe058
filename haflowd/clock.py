"""The one source of time. Pure cores take a Clock so tests can drive time by hand."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; for timers and durations."""
        ...

    def wall(self) -> float:
        """UNIX seconds; for timestamps shown to people and other nodes."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


SYSTEM_CLOCK = SystemClock()
