"""What the API may read and do: two narrow views of the daemon, declared here.

The read API and the metrics see the daemon only through :class:`StateView`, the control
socket only through :class:`Controls`; ``daemon.py`` implements both (structurally), so
``api/`` imports nothing of it. The checks and sync publish plain data (a snapshot dict, a
verdict, metric families) and know nothing of HTTP: the routes that render them live in
``api/server.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.core import Metric

from haflowd.clock import Clock
from haflowd.events import EventBus, OutputRing
from haflowd.health import CheckRegistry


class Verdict(Protocol):
    """A yes/no answer with its reason (``pg_topology.Verdict``)."""

    @property
    def ok(self) -> bool: ...

    @property
    def reason(self) -> str: ...


class Published(Protocol):
    """A check's published state: ``GET /<name>``'s body and its metric families."""

    @property
    def name(self) -> str: ...

    def snapshot(self) -> dict[str, Any]: ...

    def collect(self) -> Iterator[Metric]: ...


class PostgresView(Published, Protocol):
    """The PostgreSQL checker's verdicts on this host's node, from its last round."""

    @property
    def max_lag_bytes(self) -> int: ...

    def primary_verdict(self) -> Verdict: ...

    def replica_verdict(self, max_lag: int) -> Verdict: ...

    def read_only_verdict(self, max_lag: int) -> Verdict: ...


class SyncView(Published, Protocol):
    """DAG sync: its snapshot, and a run on request (the control socket's POST /sync)."""

    @property
    def enabled(self) -> bool: ...

    async def sync_now(self) -> dict[str, Any]: ...


class UsageView(Protocol):
    @property
    def cpu_seconds(self) -> float: ...

    @property
    def rss_bytes(self) -> int: ...

    @property
    def processes(self) -> int: ...


class ComponentView(Protocol):
    """One supervised component as the read API and the metrics see it."""

    @property
    def name(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def healthy(self) -> bool | None: ...

    @property
    def restarts(self) -> int: ...

    @property
    def usage(self) -> UsageView: ...

    def to_json(self) -> dict[str, Any]: ...


class ComponentControl(ComponentView, Protocol):
    """What the control socket may do to a component."""

    @property
    def active(self) -> bool: ...

    def start(self) -> None: ...

    async def stop(self, reason: str = ...) -> None: ...

    async def restart(self) -> None: ...

    @property
    def output(self) -> OutputRing:
        """The component's last output lines (``haflowctl logs``)."""
        ...


@dataclass(frozen=True)
class GossipMetrics:
    """Gossip's counters at scrape time (plain data)."""

    messages: Mapping[tuple[str, str], int]  # (direction, type) → count
    rejected: Mapping[str, int]  # reason → count, every reason present
    local_health: int  # Lifeguard's multiplier


class StateView(Protocol):
    """Everything the read API's routes and ``/metrics`` read, and nothing else."""

    @property
    def node(self) -> str: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def registry(self) -> CheckRegistry: ...

    @property
    def liveness_max_lag_s(self) -> float: ...

    def loop_lag(self) -> float: ...

    def peers(self) -> list[dict[str, Any]]: ...

    def cluster_health(self) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...

    def components(self) -> Sequence[ComponentView]: ...

    def component(self, name: str) -> ComponentView | None: ...

    def gossip_metrics(self) -> GossipMetrics | None:
        """None without ``[gossip]``."""
        ...

    def published(self) -> Sequence[Published]:
        """Every check that publishes a snapshot and metrics (rabbitmq, postgres, sync)."""
        ...

    @property
    def postgres(self) -> PostgresView | None: ...

    @property
    def rabbitmq(self) -> Published | None: ...

    @property
    def sync(self) -> SyncView | None: ...


class Controls(Protocol):
    """The control socket's actions, one at a time with reloads (``operations_lock``)."""

    @property
    def operations_lock(self) -> asyncio.Lock: ...

    def components(self) -> Sequence[ComponentControl]: ...

    def component(self, name: str) -> ComponentControl | None: ...

    async def reload(self) -> tuple[bool, dict[str, Any]]: ...

    async def leave(self) -> dict[str, Any]: ...

    async def force_leave(self, name: str) -> dict[str, Any]:
        """A dead or suspect member becomes ``left`` everywhere; ``status``: 200, 404 (no such
        member), 409 (alive here, this node, or no gossip)."""
        ...

    async def drain(self) -> dict[str, Any]: ...

    async def undrain(self) -> dict[str, Any]: ...

    def may_run(self, name: str) -> bool:
        """False while the node is drained and the component is to stop (on_drain = "stop")."""
        ...

    @property
    def sync(self) -> SyncView | None: ...

    @property
    def events(self) -> EventBus:
        """The node's event ring (``haflowctl events``)."""
        ...

    @property
    def clock(self) -> Clock: ...
