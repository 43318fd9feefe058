"""The read-only HTTP API: every route of the TCP listener, rendered from state the daemon
already holds (:class:`~haflowd.api.state.StateView`).

No handler here waits on a database, a broker, csync2 or a peer; every GET route
also answers HEAD (aiohttp's ``allow_head``), for load balancers' ``httpchk HEAD``.
The checks and sync publish snapshots and verdicts; the routes for them (``/postgres*``,
``/rabbitmq``, ``/sync``) are added here when their section is configured.
The listener may face the network: the limits of api/limits.py apply (deadlines,
connection caps), and at most ``MAX_INFLIGHT`` requests (``MAX_INFLIGHT_PER_REMOTE`` per
address) are handled at once; past that the answer is 503 ``{"error": "busy"}``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from haflowd import __version__
from haflowd.api import limits, metrics, page
from haflowd.api.openapi import OPENAPI
from haflowd.api.state import PostgresView, Published, StateView, Verdict
from haflowd.config import parse_size
from haflowd.maintenance import CHECK_NAME as MAINTENANCE_CHECK

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
    def __init__(self, state: StateView) -> None:
        self.state = state
        self.refused: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        self.registry = metrics.make_registry(state, api_refused=self.refused)
        self.inflight = limits.InflightLimit(MAX_INFLIGHT, MAX_INFLIGHT_PER_REMOTE)
        self.refusals = limits.RefusalLog("api_refused", state.clock)

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
        r.add_get("/", self.page)
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
        s = self.state
        if s.rabbitmq is not None:
            r.add_get("/rabbitmq", _snapshot_route(s.rabbitmq))  # always 200: the body says how it is
        if s.postgres is not None:
            pg = PostgresRoutes(s.postgres)
            r.add_get("/postgres", pg.state)
            r.add_get("/postgres/primary", pg.primary)
            r.add_get("/postgres/replica", pg.replica)
            r.add_get("/postgres/read-only", pg.read_only)
        if s.sync is not None:
            r.add_get("/sync", _snapshot_route(s.sync))
        return app

    async def page(self, request: web.Request) -> web.Response:
        """The status page (HTML), rendered from the same state as the JSON routes."""
        return web.Response(text=page.render(self.state), content_type="text/html", charset="utf-8",
                            headers=page.HEADERS)

    async def liveness(self, request: web.Request) -> web.Response:
        lag = self.state.loop_lag()
        ok = lag < self.state.liveness_max_lag_s
        return json_response(
            {"status": "ok" if ok else "stalled", "loop_lag_s": round(lag, 3)},
            status=200 if ok else 503,
        )

    def _health_body(self) -> dict[str, Any]:
        return self.state.registry.to_json(self.state.node)

    async def readiness(self, request: web.Request) -> web.Response:
        """503 when critical, and while drained (the "maintenance" check is on): load
        balancers take the node out; /health stays a warning, so nobody is paged."""
        body = self._health_body()
        drained = any(c["name"] == MAINTENANCE_CHECK and c["status"] != "passing" for c in body["checks"])
        return json_response(body, 503 if body["status"] == "critical" or drained else 200)

    async def health(self, request: web.Request) -> web.Response:
        body = self._health_body()
        strict = "strict" in request.query and _truthy(request.query.get("strict"))
        bad = {"critical", "warning"} if strict else {"critical"}
        return json_response(body, 503 if body["status"] in bad else 200)

    async def health_cluster(self, request: web.Request) -> web.Response:
        body = self.state.cluster_health()
        return json_response(body, 200 if body["ok"] else 503)

    async def peers(self, request: web.Request) -> web.Response:
        return json_response(self.state.peers())

    async def components(self, request: web.Request) -> web.Response:
        return json_response([c.to_json() for c in self.state.components()])

    async def component(self, request: web.Request) -> web.Response:
        child = self.state.component(request.match_info["name"])
        if child is None:
            return json_response({"error": f"no component named {request.match_info['name']!r}"}, 404)
        return json_response(child.to_json())

    async def status(self, request: web.Request) -> web.Response:
        return json_response(self.state.status())

    async def metrics(self, request: web.Request) -> web.Response:
        body = metrics.render(self.registry)
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})

    async def openapi(self, request: web.Request) -> web.Response:
        doc = dict(OPENAPI)
        doc["info"] = {**doc["info"], "version": __version__}
        return json_response(doc)



def _snapshot_route(source: Published) -> Handler:
    async def snapshot(request: web.Request) -> web.Response:
        return json_response(source.snapshot())
    return snapshot


class PostgresRoutes:
    """``/postgres`` (always 200) and the load balancers' checks: 200 when this host's node
    may serve as the role, 503 when not (or the last round is stale), 400 for a bad ``lag``."""

    def __init__(self, pg: PostgresView) -> None:
        self.pg = pg

    def _answer(self, verdict: Verdict) -> web.Response:
        body = self.pg.snapshot()
        body["ok"] = verdict.ok
        body["reason"] = verdict.reason
        return json_response(body, 200 if verdict.ok else 503)

    def _lag(self, request: web.Request) -> int | web.Response:
        text = request.query.get("lag")
        if text is None:
            return self.pg.max_lag_bytes
        try:
            return parse_size(int(text) if text.isdigit() else text)
        except ValueError:
            return json_response({"error": f'lag: expected a size such as 1048576 or "16MiB"; got {text[:40]!r}'},
                                 400)

    async def state(self, request: web.Request) -> web.Response:
        return json_response(self.pg.snapshot())

    async def primary(self, request: web.Request) -> web.Response:
        return self._answer(self.pg.primary_verdict())

    async def replica(self, request: web.Request) -> web.Response:
        lag = self._lag(request)
        if isinstance(lag, web.Response):
            return lag
        return self._answer(self.pg.replica_verdict(lag))

    async def read_only(self, request: web.Request) -> web.Response:
        lag = self._lag(request)
        if isinstance(lag, web.Response):
            return lag
        return self._answer(self.pg.read_only_verdict(lag))
