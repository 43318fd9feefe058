"""The read-only HTTP API: answers come from state the daemon already holds.

No handler here waits on a database, a broker, csync2 or a peer; every GET route
also answers HEAD (aiohttp's ``allow_head``), for load balancers' ``httpchk HEAD``.
The listener may face the network: the limits of api/limits.py apply (deadlines,
connection caps), and at most ``MAX_INFLIGHT`` requests (``MAX_INFLIGHT_PER_REMOTE`` per
address) are handled at once; past that the answer is 503 ``{"error": "busy"}``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from haflowd import __version__
from haflowd.api import limits, metrics
from haflowd.api.openapi import OPENAPI

if TYPE_CHECKING:
    from haflowd.daemon import Daemon

log = structlog.get_logger()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_INFLIGHT = 32
MAX_INFLIGHT_PER_REMOTE = 8
REFUSAL_REASONS = ("busy", "bad_request")


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), default=str)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An unexpected error is a 500 with one line, logged, never a traceback to the client."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return json_response({"error": e.reason}, status=e.status)  # every body is JSON
    except Exception as e:
        log.exception("api_error", path=request.path)
        return json_response({"error": f"internal error: {type(e).__name__}"}, status=500)


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes", "on", "")


class ReadApi:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.registry = metrics.make_registry(daemon)
        self.inflight = limits.InflightLimit(MAX_INFLIGHT, MAX_INFLIGHT_PER_REMOTE)
        self.refused: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        self.refusals = limits.RefusalLog("api_refused", daemon.clock)

    def refuse(self, reason: str, remote: str) -> None:
        """Count and log (rate-limited) a request or connection turned away."""
        self.refused[reason] = self.refused.get(reason, 0) + 1
        self.refusals.refused(reason, remote)

    @web.middleware
    async def inflight_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        remote = request.remote or "?"
        self.refusals.flush()
        if not self.inflight.try_enter(remote):
            self.refuse("busy", remote)
            resp = json_response({"error": "busy"}, status=503)
            resp.force_close()
            return resp
        try:
            return await handler(request)
        finally:
            self.inflight.leave(remote)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.inflight_middleware, errors_middleware])
        r = app.router
        r.add_get("/liveness", self.liveness)
        r.add_get("/readiness", self.readiness)
        r.add_get("/health", self.health)
        r.add_get("/health/cluster", self.health_cluster)
        r.add_get("/peers", self.peers)
        r.add_get("/components", self.components)
        r.add_get("/components/{name}", self.component)
        r.add_get("/status", self.status)
        r.add_get("/metrics", self.metrics)
        r.add_get("/openapi.json", self.openapi)
        for checker in self.d.checkers:
            app.add_routes(checker.routes())
        return app

    async def liveness(self, request: web.Request) -> web.Response:
        lag = self.d.loop_lag()
        ok = lag < self.d.LIVENESS_MAX_LAG_S
        return json_response(
            {"status": "ok" if ok else "stalled", "loop_lag_s": round(lag, 3)},
            status=200 if ok else 503,
        )

    def _health_body(self) -> dict[str, Any]:
        return self.d.registry.to_json(self.d.node)

    async def readiness(self, request: web.Request) -> web.Response:
        body = self._health_body()
        return json_response(body, 503 if body["status"] == "critical" else 200)

    async def health(self, request: web.Request) -> web.Response:
        body = self._health_body()
        strict = "strict" in request.query and _truthy(request.query.get("strict"))
        bad = {"critical", "warning"} if strict else {"critical"}
        return json_response(body, 503 if body["status"] in bad else 200)

    async def health_cluster(self, request: web.Request) -> web.Response:
        body = self.d.cluster_health()
        return json_response(body, 200 if body["ok"] else 503)

    async def peers(self, request: web.Request) -> web.Response:
        return json_response(self.d.peers())

    async def components(self, request: web.Request) -> web.Response:
        return json_response(self.d.supervisor.snapshot())

    async def component(self, request: web.Request) -> web.Response:
        child = self.d.supervisor.get(request.match_info["name"])
        if child is None:
            return json_response({"error": f"no component named {request.match_info['name']!r}"}, 404)
        return json_response(child.to_json())

    async def status(self, request: web.Request) -> web.Response:
        return json_response(self.d.status())

    async def metrics(self, request: web.Request) -> web.Response:
        body = metrics.render(self.registry)
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})

    async def openapi(self, request: web.Request) -> web.Response:
        doc = dict(OPENAPI)
        doc["info"] = {**doc["info"], "version": __version__}
        return json_response(doc)

