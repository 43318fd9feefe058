#!/usr/bin/env python3
"""Writes haflowd-dashboard.json, the Grafana dashboard of contrib/ (issue 17).

The panels are declared here, once, as (title, unit, queries); the JSON is generated so the
layout stays regular and tests/unit/test_contrib_dashboard.py can hold the file equal to this
script's output. Run it after editing: ``python3 contrib/grafana/make_dashboard.py``.

Conventions: node-local series filter on ``$instance`` (the haflowd node, as the scrape config
of contrib/prometheus names it); series every node exports about the same cluster (PostgreSQL,
RabbitMQ) are shown once per subject with ``max by (node)``; rates use ``$__rate_interval``.
Standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("haflowd-dashboard.json")
SEL = 'job="haflowd", instance=~"$instance"'
DS = {"type": "prometheus", "uid": "${datasource}"}

# (row title, [(panel title, panel type, unit, [(expr, legend), ...]), ...])
Panel = tuple[str, str, str, list[tuple[str, str]]]
ROWS: list[tuple[str, list[Panel]]] = [
    ("Nodes", [
        ("haflowd up", "stat", "none", [(f"up{{{SEL}}}", "{{instance}}")]),
        ("Node status (0 passing, 1 warning, 2 critical)", "stat", "none",
         [(f"haflowd_node_status{{{SEL}}}", "{{instance}}")]),
        ("Checks (0 passing, 1 warning, 2 critical)", "timeseries", "none",
         [(f"haflowd_check_status{{{SEL}}}", "{{instance}} {{check}}")]),
        ("Version", "stat", "none", [(f"haflowd_build_info{{{SEL}}}", "{{instance}} {{version}}")]),
    ]),
    ("Components", [
        ("Components running", "timeseries", "none",
         [(f"haflowd_component_up{{{SEL}}}", "{{instance}} {{component}}")]),
        ("Components healthy", "timeseries", "none",
         [(f"haflowd_component_healthy{{{SEL}}}", "{{instance}} {{component}}")]),
        ("Components fatal or in backoff", "timeseries", "none",
         [(f'haflowd_component_state{{{SEL}, state=~"fatal|backoff"}} == 1', "{{instance}} {{component}} {{state}}")]),
        ("Restarts (15 min)", "timeseries", "none",
         [(f"increase(haflowd_component_restarts_total{{{SEL}}}[15m])", "{{instance}} {{component}}")]),
        ("Component CPU", "timeseries", "percentunit",
         [(f"rate(haflowd_component_cpu_seconds_total{{{SEL}}}[$__rate_interval])", "{{instance}} {{component}}")]),
        ("Component memory (RSS, whole tree)", "timeseries", "bytes",
         [(f"haflowd_component_memory_rss_bytes{{{SEL}}}", "{{instance}} {{component}}")]),
        ("Component processes", "timeseries", "none",
         [(f"haflowd_component_processes{{{SEL}}}", "{{instance}} {{component}}")]),
    ]),
    ("Peers and gossip", [
        ("Peers alive (as each node sees them)", "timeseries", "none",
         [(f"haflowd_peer_up{{{SEL}}}", "{{instance}} sees {{peer}}")]),
        ("Peers not alive", "timeseries", "none",
         [(f'haflowd_peer_status{{{SEL}, status!="alive"}} == 1', "{{instance}} sees {{peer}} {{status}}")]),
        ("Lifeguard local health (0 healthy)", "timeseries", "none",
         [(f"haflowd_gossip_local_health{{{SEL}}}", "{{instance}}")]),
        ("Gossip messages", "timeseries", "reqps",
         [(f"sum by (instance, direction) (rate(haflowd_gossip_messages_total{{{SEL}}}[$__rate_interval]))",
           "{{instance}} {{direction}}")]),
        ("Gossip requests refused", "timeseries", "reqps",
         [(f"sum by (instance, reason) (rate(haflowd_gossip_rejected_total{{{SEL}}}[$__rate_interval])) > 0",
           "{{instance}} {{reason}}")]),
    ]),
    ("DAG sync", [
        ("Files pending per peer", "timeseries", "none",
         [(f"haflowd_sync_peer_pending_files{{{SEL}}}", "{{instance}} to {{peer}}")]),
        ("Since the last successful sync", "timeseries", "s",
         [(f"time() - haflowd_sync_peer_last_success_timestamp_seconds{{{SEL}}} > 0", "{{instance}} to {{peer}}")]),
        ("Peers failing", "timeseries", "none",
         [(f'haflowd_sync_peer_state{{{SEL}, state="failing"}}', "{{instance}} to {{peer}}")]),
        ("Runs by result (1 h)", "timeseries", "none",
         [(f"increase(haflowd_sync_runs_total{{{SEL}}}[1h])", "{{instance}} {{result}}")]),
        ("Run duration p95", "timeseries", "s",
         [(f"histogram_quantile(0.95, sum by (instance, le) "
           f"(rate(haflowd_sync_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))", "{{instance}}")]),
        ("Files in conflict", "timeseries", "none",
         [(f"haflowd_sync_conflicts_files{{{SEL}}}", "{{instance}}"),
          (f"increase(haflowd_sync_conflicts_resolved_total{{{SEL}}}[1h])", "{{instance}} resolved (1 h)")]),
    ]),
    ("PostgreSQL", [
        ("Primary", "timeseries", "none",
         [('max by (node) (haflowd_postgres_is_primary{job="haflowd"})', "{{node}}")]),
        ("Up", "timeseries", "none", [('max by (node) (haflowd_postgres_up{job="haflowd"})', "{{node}}")]),
        ("Split brain", "stat", "none", [('max(haflowd_postgres_split_brain{job="haflowd"})', "split brain")]),
        ("Replication lag (bytes)", "timeseries", "bytes",
         [('max by (node) (haflowd_postgres_replication_lag_bytes{job="haflowd"})', "{{node}}")]),
        ("Replication lag (time)", "timeseries", "s",
         [('max by (node) (haflowd_postgres_replication_lag_seconds{job="haflowd"})', "{{node}}")]),
        ("Timeline", "timeseries", "none",
         [('max by (node) (haflowd_postgres_timeline{job="haflowd"})', "{{node}}")]),
        ("Since the last check", "timeseries", "s",
         [(f"time() - haflowd_postgres_last_check_timestamp_seconds{{{SEL}}}", "{{instance}}")]),
    ]),
    ("RabbitMQ", [
        ("Nodes running", "timeseries", "none",
         [('max by (node) (haflowd_rabbitmq_node_running{job="haflowd"})', "{{node}}")]),
        ("Partitions", "timeseries", "none",
         [('max by (node) (haflowd_rabbitmq_partitions{job="haflowd"})', "{{node}}")]),
        ("Alarms", "timeseries", "none",
         [('max by (node, alarm) (haflowd_rabbitmq_alarm{job="haflowd"}) == 1', "{{node}} {{alarm}}")]),
        ("AMQP round trip", "timeseries", "s",
         [(f"haflowd_rabbitmq_amqp_roundtrip_seconds{{{SEL}}}", "{{instance}}")]),
        ("AMQP round trip succeeds", "timeseries", "none",
         [(f"haflowd_rabbitmq_amqp_up{{{SEL}}}", "{{instance}}")]),
        ("File descriptors and sockets used", "timeseries", "percentunit",
         [('max by (node) (haflowd_rabbitmq_fd_used{job="haflowd"} / haflowd_rabbitmq_fd_limit{job="haflowd"})',
           "{{node}} fds"),
          ('max by (node) (haflowd_rabbitmq_sockets_used{job="haflowd"}'
           ' / haflowd_rabbitmq_sockets_limit{job="haflowd"})',
           "{{node}} sockets")]),
        ("Queues", "timeseries", "none",
         [('max by (queue) (haflowd_rabbitmq_queue_messages{job="haflowd"})', "{{queue}} messages"),
          ('max by (queue) (haflowd_rabbitmq_queue_consumers{job="haflowd"})', "{{queue}} consumers")]),
    ]),
    ("The daemon itself", [
        ("CPU", "timeseries", "percentunit",
         [(f"rate(haflowd_process_cpu_seconds_total{{{SEL}}}[$__rate_interval])", "{{instance}}")]),
        ("Memory (RSS)", "timeseries", "bytes",
         [(f"haflowd_process_resident_memory_bytes{{{SEL}}}", "{{instance}}")]),
        ("Open file descriptors (of the limit)", "timeseries", "percentunit",
         [(f"haflowd_process_open_fds{{{SEL}}} / haflowd_process_max_fds{{{SEL}}}", "{{instance}}")]),
        ("Worker pools in flight (of the budget)", "timeseries", "percentunit",
         [(f"haflowd_worker_in_flight{{{SEL}}} / haflowd_worker_max{{{SEL}}}", "{{instance}} {{pool}}")]),
        ("Worker refusals and timeouts", "timeseries", "ops",
         [(f"rate(haflowd_worker_busy_refusals_total{{{SEL}}}[$__rate_interval])", "{{instance}} {{pool}} busy"),
          (f"rate(haflowd_worker_timeouts_total{{{SEL}}}[$__rate_interval])", "{{instance}} {{pool}} timeout")]),
        ("Read API refusals", "timeseries", "reqps",
         [(f"rate(haflowd_api_refused_total{{{SEL}}}[$__rate_interval])", "{{instance}} {{reason}}")]),
        ("Log lines lost", "timeseries", "ops",
         [(f"rate(haflowd_log_dropped_total{{{SEL}}}[$__rate_interval])", "{{instance}} {{reason}}"),
          (f"haflowd_log_queue_lines{{{SEL}}}", "{{instance}} queued")]),
    ]),
]


def panel(pid: int, title: str, kind: str, unit: str, queries: list[tuple[str, str]], x: int, y: int) -> dict[str, Any]:
    return {
        "id": pid, "type": kind, "title": title, "datasource": DS,
        "gridPos": {"h": 7, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
        if kind == "timeseries" else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(queries)],
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row_title, row in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        for i, (title, kind, unit, queries) in enumerate(row):
            panels.append(panel(pid, title, kind, unit, queries, x=(i % 3) * 8, y=y + (i // 3) * 7))
            pid += 1
        y += ((len(row) + 2) // 3) * 7
    return {
        "title": "haflowd", "uid": "haflowd", "tags": ["haflowd", "airflow"], "editable": True,
        "schemaVersion": 38, "version": 1, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
        "timezone": "", "graphTooltip": 1, "annotations": {"list": []}, "links": [],
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"},
            {"name": "instance", "label": "node", "type": "query", "datasource": DS,
             "query": {"query": 'label_values(haflowd_build_info{job="haflowd"}, instance)', "refId": "instance"},
             "definition": 'label_values(haflowd_build_info{job="haflowd"}, instance)',
             "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*", "current": {}, "sort": 1},
        ]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
