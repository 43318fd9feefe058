"""Prometheus metrics: a collector that reads the daemon's state at scrape time.

Nothing is counted twice: the same objects that answer the API answer the scrape
(:class:`~haflowd.api.state.StateView`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from haflowd import __version__, logs, workers
from haflowd.api.state import StateView
from haflowd.maintenance import CHECK_NAME as MAINTENANCE_CHECK
from haflowd.supervisor.child import STATES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class DaemonCollector(Collector):
    def __init__(self, state: StateView, api_refused: Mapping[str, int] | None = None) -> None:
        self.state = state
        self.api_refused = api_refused

    def collect(self) -> Iterator[Metric]:
        d = self.state
        info = GaugeMetricFamily("haflowd_build_info", "haflowd version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info

        drained = GaugeMetricFamily("haflowd_node_maintenance", "1 while this node is drained (haflowctl drain)")
        drained.add_metric([], 1 if any(r.name == MAINTENANCE_CHECK for r in d.registry.results()) else 0)
        yield drained

        peers = d.peers()
        up = GaugeMetricFamily("haflowd_peer_up", "1 when the peer is alive", labels=["peer"])
        st = GaugeMetricFamily("haflowd_peer_status", "1 for the peer's current status",
                               labels=["peer", "status"])
        for p in peers:
            up.add_metric([p["name"]], 1 if p["status"] == "alive" else 0)
            for s in ("alive", "suspect", "dead", "left"):
                st.add_metric([p["name"], s], 1 if p["status"] == s else 0)
        yield up
        yield st

        msgs = CounterMetricFamily("haflowd_gossip_messages", "gossip messages by direction and type",
                                   labels=["direction", "type"])
        rejected = CounterMetricFamily("haflowd_gossip_rejected", "gossip requests refused, by reason",
                                       labels=["reason"])
        gossip = d.gossip_metrics()
        if gossip is not None:
            for (direction, type_), n in sorted(gossip.messages.items()):
                msgs.add_metric([direction, type_], n)
            for reason, n in sorted(gossip.rejected.items()):
                rejected.add_metric([reason], n)
            lhm = GaugeMetricFamily("haflowd_gossip_local_health", "Lifeguard local health multiplier (0 healthy)")
            lhm.add_metric([], gossip.local_health)
            yield lhm
        yield msgs
        yield rejected

        comp_up = GaugeMetricFamily("haflowd_component_up", "1 when the component is running",
                                    labels=["component"])
        healthy = GaugeMetricFamily("haflowd_component_healthy",
                                    "1 when running and its health probe passes (or it has none)",
                                    labels=["component"])
        state = GaugeMetricFamily("haflowd_component_state", "1 for the component's current state",
                                  labels=["component", "state"])
        restarts = CounterMetricFamily("haflowd_component_restarts", "restarts since the daemon started",
                                       labels=["component"])
        cpu = CounterMetricFamily("haflowd_component_cpu_seconds",
                                  "CPU seconds used by the component's whole process tree",
                                  labels=["component"])
        rss = GaugeMetricFamily("haflowd_component_memory_rss_bytes",
                                "resident memory of the component's whole process tree",
                                labels=["component"])
        procs = GaugeMetricFamily("haflowd_component_processes",
                                  "processes in the component's tree", labels=["component"])
        for c in d.components():
            running = c.state == "running"
            comp_up.add_metric([c.name], 1 if running else 0)
            healthy.add_metric([c.name], 1 if running and c.healthy is not False else 0)
            for s in STATES:
                state.add_metric([c.name, s], 1 if c.state == s else 0)
            restarts.add_metric([c.name], c.restarts)
            cpu.add_metric([c.name], c.usage.cpu_seconds)
            rss.add_metric([c.name], c.usage.rss_bytes)
            procs.add_metric([c.name], c.usage.processes)
        yield from (comp_up, healthy, state, restarts, cpu, rss, procs)

        for published in d.published():
            yield from published.collect()

        checks = GaugeMetricFamily("haflowd_check_status", "0 passing, 1 warning, 2 critical",
                                   labels=["check"])
        for r in d.registry.results():
            checks.add_metric([r.name], int(r.status))
        yield checks
        status = GaugeMetricFamily("haflowd_node_status", "this node: 0 passing, 1 warning, 2 critical")
        status.add_metric([], int(d.registry.status()))
        yield status
        yield from log_metrics()
        yield from workers.collect()
        yield task_metrics()
        if self.api_refused is not None:
            yield api_metrics(self.api_refused)


def api_metrics(refused: Mapping[str, int]) -> Metric:
    """The read API's refusals (ReadApi counts them; every reason is present from the start)."""
    family = CounterMetricFamily("haflowd_api_refused", "read API requests or connections turned away, by reason: "
                                 "busy (past the in-flight or connection caps), bad_request (unparsable HTTP)",
                                 labels=["reason"])
    for reason, n in sorted(refused.items()):
        family.add_metric([reason], n)
    return family


def task_metrics() -> Metric:
    """The event loop's live tasks: a mechanism that leaks tasks shows as a rising count."""
    family = GaugeMetricFamily("haflowd_asyncio_tasks", "asyncio tasks alive in the daemon's event loop")
    try:
        family.add_metric([], len(asyncio.all_tasks()))
    except RuntimeError:  # rendered outside the loop (a test): no loop, no tasks
        family.add_metric([], 0)
    return family


def log_metrics() -> Iterator[Metric]:
    """The log's own health: a closed, full or slow stdout loses lines, counted here."""
    sink = logs.SINK
    errors = CounterMetricFamily("haflowd_log_write_errors", "failed writes of the log to stdout, by errno",
                                 labels=["error"])
    for name, n in sorted(sink.write_errors.items()):
        errors.add_metric([name], n)
    dropped = CounterMetricFamily("haflowd_log_dropped", "log lines lost: queue_full (a slow output), "
                                  "write_error (a closed or full one)", labels=["reason"])
    for reason in ("queue_full", "write_error"):
        dropped.add_metric([reason], sink.dropped[reason])
    for reason, n in sorted(sink.dropped.items()):
        if reason not in ("queue_full", "write_error"):
            dropped.add_metric([reason], n)
    queued = GaugeMetricFamily("haflowd_log_queue_lines", "log lines waiting for stdout")
    queued.add_metric([], sink.pending())
    yield from (errors, dropped, queued)


def make_registry(state: StateView, api_refused: Mapping[str, int] | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(state, api_refused))
    ProcessCollector(namespace="haflowd", registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
