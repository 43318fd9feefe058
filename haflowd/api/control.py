"""The control API: mutations over HTTP on a UNIX socket (mode 0600).

Only someone who can open the socket (root, or the daemon's user) can restart,
stop, start or reload; the TCP API stays read-only.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import structlog
from aiohttp import web

from haflowd.api.server import errors_middleware, json_response
from haflowd.api.state import Controls

log = structlog.get_logger()


class ControlApi:
    def __init__(self, controls: Controls) -> None:
        self.controls = controls

    def app(self) -> web.Application:
        app = web.Application(middlewares=[errors_middleware])
        r = app.router
        r.add_post("/components/{name}/{action:restart|stop|start}", self.component)
        r.add_post("/reload", self.reload)
        r.add_post("/leave", self.leave)
        r.add_post("/sync", self.sync)
        r.add_get("/components", self.components)
        return app

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

    async def reload(self, request: web.Request) -> web.Response:
        ok, detail = await self.controls.reload()
        return json_response({"ok": ok, **detail}, 200 if ok else 422)

    async def leave(self, request: web.Request) -> web.Response:
        result = await self.controls.leave()
        return json_response(result, 200 if result["ok"] else 409)

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
