"""The control API: mutations over HTTP on a UNIX socket (mode 0600).

Only someone who can open the socket (root, or the daemon's user) can restart,
stop, start or reload; the TCP API stays read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from haflowd.api.server import errors_middleware, json_response
from haflowd.api.state import Controls
from haflowd.events import LOG_LINES

log = structlog.get_logger()


class ControlApi:
    def __init__(self, controls: Controls) -> None:
        self.controls = controls
        self._closing = False
        self._streams: dict[asyncio.Event, web.Request] = {}  # each follow, for the shutdown

    def app(self) -> web.Application:
        app = web.Application(middlewares=[errors_middleware])
        r = app.router
        r.add_post("/components/{name}/{action:restart|stop|start}", self.component)
        r.add_post("/reload", self.reload)
        r.add_post("/leave", self.leave)
        r.add_post("/peers/{name}/force-leave", self.force_leave)
        r.add_post("/drain", self.drain)
        r.add_post("/undrain", self.undrain)
        r.add_post("/sync", self.sync)
        r.add_get("/components", self.components)
        r.add_get("/components/{name}/logs", self.logs)
        r.add_get("/events", self.events)
        app.on_shutdown.append(self._end_streams)
        return app

    async def _end_streams(self, _app: web.Application) -> None:
        """A stopping daemon ends every follow at once: aiohttp would otherwise wait for the
        streams (a ``haflowctl events -f`` left open) for its whole shutdown timeout."""
        self._closing = True
        for wake, request in list(self._streams.items()):
            wake.set()
            transport = request.transport
            if transport is not None:  # a follower that does not read would hold a write forever
                transport.close()

    async def components(self, request: web.Request) -> web.Response:
        return json_response([c.to_json() for c in self.controls.components()])

    async def component(self, request: web.Request) -> web.Response:
        """One action at a time with reloads (``Controls.operations_lock``): a request that
        waited for a reload acts on the child the reload left, never on the one it replaced."""
        name, action = request.match_info["name"], request.match_info["action"]
        async with self.controls.operations_lock:
            child = self.controls.component(name)
            if child is None:
                return json_response({"ok": False, "error": f"no component named {name!r}"}, 404)
            if action == "stop":
                if child.state == "stopped":
                    return json_response({"ok": True, "result": "already stopped", "component": child.to_json()})
                await child.stop("stopped by request")
                result = "stopped"
            elif not self.controls.may_run(name):
                # a start (or a restart, which starts) would undo the drain behind its back
                return json_response({"ok": False, "error": f"this node is drained for maintenance: {name} "
                                      "stays stopped until `haflowctl undrain` (or give it on_drain = \"keep\")",
                                      "component": child.to_json()}, 409)
            elif action == "start":
                if child.active:
                    return json_response({"ok": True, "result": f"already {child.state}",
                                          "component": child.to_json()})
                was = child.state
                child.start()
                result = f"started (was {was})"
            else:
                await child.restart()
                result = "restarted"
        log.info("control", action=action, component=name, result=result)
        return json_response({"ok": True, "result": result, "component": child.to_json()})

    async def logs(self, request: web.Request) -> web.StreamResponse:
        """The component's last lines (JSON lines), then, with follow=1, new ones until the
        client goes away. Works in any state: the ring outlives the component's runs."""
        name = request.match_info["name"]
        child = self.controls.component(name)
        if child is None:
            return json_response({"ok": False, "error": f"no component named {name!r}"}, 404)
        q = request.query
        stream = q.get("stream") or None
        if stream not in (None, "stdout", "stderr"):
            return json_response({"ok": False, "error": "stream must be stdout or stderr"}, 400)
        try:
            n = max(0, min(int(q.get("lines", "100")), LOG_LINES))
        except ValueError:
            return json_response({"ok": False, "error": "lines must be an integer"}, 400)
        ring = child.output
        follow = q.get("follow") in ("1", "true", "yes")
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        follower = ring.subscribe(wake=lambda: loop.call_soon_threadsafe(wake.set)) if follow else None
        if follow and follower is None:
            return json_response({"ok": False, "error": "too many followers"}, 503)
        try:
            resp = await self._open_stream(request)
            for x in ring.tail(n, stream):
                await resp.write(_line(x.as_dict()))
            if follower is not None:
                await self._pump(request, resp, wake, follower.drain,
                                 lambda x: stream is None or x.stream == stream, "lines")
            await resp.write_eof()
            return resp
        except ConnectionError:  # the client went away: nothing to answer
            return web.Response(status=499)
        finally:
            if follower is not None:
                follower.close()

    async def events(self, request: web.Request) -> web.StreamResponse:
        """The event ring (JSON lines), the last ``since`` seconds of it if given; with
        follow=1, new events until the client goes away."""
        bus = self.controls.events
        try:
            since_s = float(request.query["since"]) if "since" in request.query else None
            if since_s is not None and not 0 <= since_s < float("inf"):
                raise ValueError(since_s)
        except ValueError:
            return json_response({"ok": False, "error": "since must be a number of seconds"}, 400)
        follow = request.query.get("follow") in ("1", "true", "yes")
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        follower = bus.subscribe(wake=lambda: loop.call_soon_threadsafe(wake.set)) if follow else None
        if follow and follower is None:
            return json_response({"ok": False, "error": "too many followers"}, 503)
        try:
            resp = await self._open_stream(request)
            since = None if since_s is None else self.controls.clock.wall() - since_s
            for e in bus.recent(since):
                await resp.write(_line(e.as_dict()))
            if follower is not None:
                await self._pump(request, resp, wake, follower.drain, lambda _e: True, "events")
            await resp.write_eof()
            return resp
        except ConnectionError:
            return web.Response(status=499)
        finally:
            if follower is not None:
                follower.close()

    @staticmethod
    async def _open_stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        return resp

    async def _pump(self, request: web.Request, resp: web.StreamResponse, wake: asyncio.Event,
                    drain: Callable[[], tuple[list[Any], int]], keep: Callable[[Any], bool], what: str) -> None:
        """Until the client goes away or the daemon stops: each wake, write what came, and a
        marker for what this slow follower lost."""
        self._streams[wake] = request
        try:
            while not self._closing:
                transport = request.transport
                if transport is None or transport.is_closing():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), 1.0)
                wake.clear()
                items, lost = drain()
                if lost:
                    note = f"{lost} {what} dropped: this follower was too slow"
                    await resp.write(_line({"lost": lost, "note": note}))
                for x in items:
                    if keep(x):
                        await resp.write(_line(x.as_dict()))
        finally:
            self._streams.pop(wake, None)

    async def reload(self, request: web.Request) -> web.Response:
        ok, detail = await self.controls.reload()
        return json_response({"ok": ok, **detail}, 200 if ok else 422)

    async def leave(self, request: web.Request) -> web.Response:
        result = await self.controls.leave()
        return json_response(result, 200 if result["ok"] else 409)

    async def force_leave(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        result = await self.controls.force_leave(name)
        status = result.pop("status", 200 if result.get("ok") else 409)
        log.info("control", action="force-leave", peer=name, result=result.get("result", result.get("error")))
        return json_response(result, status)

    async def drain(self, request: web.Request) -> web.Response:
        """Answers at once; the components stop in the background (``GET /status``'s
        ``maintenance.still_running`` says which are left)."""
        result = await self.controls.drain()
        log.info("control", action="drain", result=result.get("result", result.get("error")))
        return json_response(result, 200 if result["ok"] else 500)

    async def undrain(self, request: web.Request) -> web.Response:
        result = await self.controls.undrain()
        log.info("control", action="undrain", result=result.get("result", result.get("error")))
        return json_response(result, 200 if result["ok"] else 500)

    async def sync(self, request: web.Request) -> web.Response:
        """Run a sync now; answer when it is done, with what each peer got."""
        svc = self.controls.sync
        if svc is None:
            return json_response({"ok": False, "error": "this node has no [sync] section"}, 409)
        if not svc.enabled:
            return json_response({"ok": False, "error": "sync is disabled ([sync] enabled = false)"}, 409)
        body = await svc.sync_now()
        log.info("control", action="sync", result=body.get("result"))
        return json_response(body, 200 if "peers" in body else 503)


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, default=str) + "\n").encode()


def bind_unix(path: Path) -> socket.socket:
    """A listening UNIX socket that is 0600 from the moment it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.is_socket():
            path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(64)
    sock.setblocking(False)
    return sock
