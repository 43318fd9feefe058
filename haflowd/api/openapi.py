"""The OpenAPI document of the read-only API (served at /openapi.json)."""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _get(summary: str, ok: dict[str, Any], extra: dict[str, Any] | None = None,
         params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok, **(extra or {})}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    return {"get": op, "head": {"summary": summary + " (status only)", "responses": {
        code: {"description": r["description"]} for code, r in responses.items()}}}


_HEALTH = _ref("Health")
_STATUS = {"type": "string", "enum": ["passing", "warning", "critical"]}

_LAG = {"name": "lag", "in": "query", "required": False, "description": "bytes, or a size such as 16MiB",
        "schema": {"type": "string"}}
_NULLABLE_INT = {"type": "integer", "nullable": True}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "haflowd read-only API", "version": "0"},
    "paths": {
        "/": _get("The status page: what this node sees, as HTML (no script; reloads itself every 5 s)", {
            "description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}}),
        "/liveness": _get("Is the daemon's event loop turning", _json(
            {"type": "object", "required": ["status"], "properties": {
                "status": {"type": "string"}, "loop_lag_s": {"type": "number"}}}, "turning"),
            {"503": _json({"type": "object"}, "stalled")}),
        "/readiness": _get("Is this node not critical and not drained", _json(_HEALTH, "not critical, not drained"),
                           {"503": _json(_HEALTH, "critical, or drained for maintenance (haflowctl drain)")}),
        "/health": _get("This node's checks", _json(_HEALTH, "passing or warning"),
                        {"503": _json(_HEALTH, "critical (or warning with strict=1)")},
                        [{"name": "strict", "in": "query", "required": False,
                          "schema": {"type": "string"}}]),
        "/health/cluster": _get("Every node's checks", _json(_ref("ClusterHealth"), "all good"),
                                {"503": _json(_ref("ClusterHealth"), "a node is critical or dead")}),
        "/peers": _get("Cluster members, this node included",
                       _json({"type": "array", "items": _ref("Peer")}, "members")),
        "/components": _get("Supervised components",
                            _json({"type": "array", "items": _ref("Component")}, "components")),
        "/components/{name}": {
            **_get("One component", _json(_ref("Component"), "the component"),
                   {"404": _json({"type": "object"}, "no such component")},
                   [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]),
        },
        "/status": _get("Everything about this node on one page", _json({"type": "object"}, "status")),
        "/metrics": {"get": {"summary": "Prometheus text format 0.0.4", "responses": {"200": {
            "description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": _get("This document", _json({"type": "object"}, "OpenAPI 3")),
        "/sync": _get("DAG sync: last run, and each peer's state", _json({"type": "object", "required": [
            "enabled", "last_run", "last_success", "running", "peers"], "properties": {
            "enabled": {"type": "boolean"}, "last_run": {"type": "number", "nullable": True},
            "last_success": {"type": "number", "nullable": True}, "running": {"type": "boolean"},
            "peers": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                "state": {"type": "string", "enum": ["ok", "pending", "failing", "skipped"]},
                "last_success": {"type": "number", "nullable": True}, "attempts": {"type": "integer"},
                "next_retry": {"type": "number", "nullable": True},
                "last_error": {"type": "string", "nullable": True}}}}}}, "always")),
        "/rabbitmq": _get("RabbitMQ nodes, alarms, partitions, AMQP round trip and queues (last check)",
                          _json(_ref("RabbitMQ"), "always")),
        "/postgres": _get("PostgreSQL nodes, roles, lag and split brain (last probe)",
                          _json(_ref("Postgres"), "always")),
        "/postgres/primary": _get("Is this host's node the one primary, with no split brain",
                                  _json(_ref("Postgres"), "yes"), {"503": _json(_ref("Postgres"), "no, or stale")}),
        "/postgres/replica": _get("Is this host's node a streaming standby within the lag",
                                  _json(_ref("Postgres"), "yes"), {"503": _json(_ref("Postgres"), "no, or stale"),
                                                                   "400": _json({"type": "object"}, "bad lag")},
                                  [_LAG]),
        "/postgres/read-only": _get("Is this host's node the primary or a standby within the lag",
                                    _json(_ref("Postgres"), "yes"), {"503": _json(_ref("Postgres"), "no, or stale"),
                                                                     "400": _json({"type": "object"}, "bad lag")},
                                    [_LAG]),
    },
    "components": {"schemas": {
        "Check": {"type": "object", "required": ["name", "status", "output"], "properties": {
            "name": {"type": "string"}, "status": _STATUS, "output": {"type": "string"},
            "checked_at": {"type": "number", "nullable": True}}},
        "Health": {"type": "object", "required": ["status", "node", "checks"], "properties": {
            "status": _STATUS, "node": {"type": "string"},
            "checks": {"type": "array", "items": _ref("Check")}}},
        "ClusterHealth": {"type": "object", "required": ["status", "nodes"], "properties": {
            "status": _STATUS, "nodes": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "status": _STATUS,
                "checks": {"type": "array", "items": _ref("Check")}}}}}},
        "Peer": {"type": "object", "required": ["name", "address", "status", "incarnation", "last_seen_s"],
                 "properties": {
                     "name": {"type": "string"}, "address": {"type": "string"},
                     "status": {"type": "string", "enum": ["alive", "suspect", "dead", "left"]},
                     "incarnation": {"type": "integer"},
                     "last_seen_s": {"type": "number", "nullable": True}}},
        "Component": {"type": "object", "required": [
            "name", "state", "pid", "uptime_s", "restarts", "healthy", "cpu_percent", "rss_bytes",
            "last_exit_code"], "properties": {
            "name": {"type": "string"},
            "state": {"type": "string", "enum": [
                "starting", "running", "backoff", "stopping", "stopped", "fatal"]},
            "pid": {"type": "integer", "nullable": True},
            "uptime_s": {"type": "number", "nullable": True},
            "restarts": {"type": "integer"},
            "healthy": {"type": "boolean", "nullable": True},
            "cpu_percent": {"type": "number"},
            "rss_bytes": {"type": "integer"},
            "last_exit_code": {"type": "integer", "nullable": True}}},
        "Postgres": {"type": "object", "required": ["status", "split_brain", "checked_at", "nodes"], "properties": {
            "status": _STATUS, "output": {"type": "string"}, "split_brain": {"type": "boolean"},
            "stale": {"type": "boolean"}, "checked_at": {"type": "number", "nullable": True},
            "primary": {"type": "string", "nullable": True},
            "ok": {"type": "boolean"}, "reason": {"type": "string"},
            "nodes": {"type": "array", "items": {"type": "object", "required": [
                "name", "up", "role", "lag_bytes", "lag_seconds", "timeline", "error"], "properties": {
                "name": {"type": "string"}, "up": {"type": "boolean"},
                "role": {"type": "string", "enum": ["primary", "standby"], "nullable": True},
                "lag_bytes": _NULLABLE_INT, "lag_seconds": {"type": "number", "nullable": True},
                "timeline": _NULLABLE_INT,
                "system_identifier": {"type": "string", "nullable": True, "description": "64-bit, as a string"},
                "error": {"type": "string", "nullable": True},
                "checked_at": {"type": "number", "nullable": True}}}}}},
        "RabbitMQ": {"type": "object", "required": ["status", "checked_at", "nodes", "amqp_roundtrip_ms", "error"],
                     "properties": {
            "status": _STATUS, "checked_at": {"type": "number", "nullable": True}, "stale": {"type": "boolean"},
            "output": {"type": "string"}, "amqp_roundtrip_ms": {"type": "number", "nullable": True},
            "amqp_error": {"type": "string", "nullable": True}, "error": {"type": "string", "nullable": True},
            "problems": {"type": "array", "items": {"type": "object", "properties": {
                "status": _STATUS, "text": {"type": "string"}}}},
            "queues": {"type": "array", "items": {"type": "object", "required": ["name", "exists"], "properties": {
                "name": {"type": "string"}, "exists": {"type": "boolean", "nullable": True},
                "messages": {"type": "integer", "nullable": True}, "consumers": {"type": "integer", "nullable": True},
                "type": {"type": "string", "nullable": True}, "warning": {"type": "string", "nullable": True}}}},
            "nodes": {"type": "array", "items": {"type": "object", "required": [
                "name", "running", "partitions", "alarms", "fd_used", "fd_total", "sockets_used", "sockets_total",
                "cluster_view", "error"], "properties": {
                "name": {"type": "string"}, "status": _STATUS, "running": {"type": "boolean", "nullable": True},
                "reachable": {"type": "boolean"},
                "partitions": {"type": "array", "items": {"type": "string"}},
                "alarms": {"type": "array", "items": {"type": "string", "enum": ["memory", "disk"]}},
                "fd_used": {"type": "integer", "nullable": True}, "fd_total": {"type": "integer", "nullable": True},
                "sockets_used": {"type": "integer", "nullable": True},
                "sockets_total": {"type": "integer", "nullable": True},
                "cluster_view": {"type": "array", "items": {"type": "string"}, "nullable": True},
                "amqp_roundtrip_ms": {"type": "number", "nullable": True},
                "error": {"type": "string", "nullable": True}}}}}},
    }},
}
