"""Check results, staleness and aggregation: the one place health is decided.

Every subsystem puts its results here; the API, the metrics, haflowctl and the
gossiped node summary all read them from here. Statuses follow Consul's order:
critical > warning > passing, and an aggregate is the worst of its parts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

from haflowd.clock import SYSTEM_CLOCK, Clock

STALE_AFTER_INTERVALS = 3


class Status(IntEnum):
    PASSING = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Status:
        return cls[text.upper()]


def worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, default=Status.PASSING)


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    output: str
    checked_at: float  # wall clock, for people and other nodes
    checked_mono: float  # monotonic, for staleness
    interval: float | None = None  # None: the result is event-driven and never stale

    def effective(self, now_mono: float) -> CheckResult:
        """This result with staleness applied: too old a result counts as critical."""
        if self.interval is None:
            return self
        age = now_mono - self.checked_mono
        if age <= STALE_AFTER_INTERVALS * self.interval:
            return self
        return replace(
            self,
            status=Status.CRITICAL,
            output=f"stale: last checked {age:.0f}s ago (every {self.interval:g}s); was: {self.output}",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.label,
            "output": self.output,
            "checked_at": self.checked_at,
        }


class CheckRegistry:
    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._results: dict[str, CheckResult] = {}

    def set(self, name: str, status: Status, output: str, interval: float | None = None) -> None:
        self._results[name] = CheckResult(
            name=name,
            status=status,
            output=output,
            checked_at=self.clock.wall(),
            checked_mono=self.clock.monotonic(),
            interval=interval,
        )

    def remove(self, name: str) -> None:
        self._results.pop(name, None)

    def remove_prefix(self, prefix: str) -> None:
        for name in [n for n in self._results if n.startswith(prefix)]:
            del self._results[name]

    def results(self) -> list[CheckResult]:
        now = self.clock.monotonic()
        return [r.effective(now) for _, r in sorted(self._results.items())]

    def status(self) -> Status:
        return worst(r.status for r in self.results())

    def to_json(self, node: str) -> dict[str, Any]:
        results = self.results()
        return {
            "status": worst(r.status for r in results).label,
            "node": node,
            "checks": [r.to_json() for r in results],
        }
