"""Checks of the cluster's stateful services (PostgreSQL, RabbitMQ).

Each checker probes on its own schedule, in the background, bounded by its timeout,
and keeps its last result; the API, the metrics, the check registry and the gossiped
summary read that result. A request never waits on a probe. Checkers publish plain data
(snapshots, verdicts, metric families) and know nothing of HTTP: the routes that render
them are in ``haflowd/api/server.py``.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import Metric

from haflowd.clock import Clock
from haflowd.health import CheckRegistry


class Checker(abc.ABC):
    """One service's checker: ``run`` loops for ever; the rest are views of its last result."""

    name: str

    def __init__(self, registry: CheckRegistry, clock: Clock) -> None:
        self.registry = registry
        self.clock = clock

    @abc.abstractmethod
    async def run(self) -> None:
        """Probe every interval until cancelled; never raises (errors are results)."""

    @abc.abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """The body of ``GET /<name>``: the last result, with ``checked_at``."""

    @abc.abstractmethod
    def collect(self) -> Iterator[Metric]:
        """Prometheus metrics from the last result."""

    async def close(self) -> None:
        """Release connections; called once at shutdown after ``run`` was cancelled."""
        return None
