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

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "haflowd read-only API", "version": "0"},
    "paths": {
        "/liveness": _get("Is the daemon's event loop turning", _json(
            {"type": "object", "required": ["status"], "properties": {
                "status": {"type": "string"}, "loop_lag_s": {"type": "number"}}}, "turning"),
            {"503": _json({"type": "object"}, "stalled")}),
        "/readiness": _get("Is this node not critical", _json(_HEALTH, "not critical"),
                           {"503": _json(_HEALTH, "critical")}),
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
    }},
}
