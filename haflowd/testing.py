"""Test doubles for the pure cores: a clock that moves only when told to."""

from __future__ import annotations


class FakeClock:
    """A Clock for unit tests: ``advance`` moves both monotonic and wall time."""

    __slots__ = ("now", "wall_offset")  # the simulator sets ``now`` for every event

    def __init__(self, start: float = 1000.0, wall_offset: float = 1_700_000_000.0) -> None:
        self.now = start
        self.wall_offset = wall_offset

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self.wall_offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self.now += seconds
