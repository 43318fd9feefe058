"""The daemon's lifecycle: start subsystems in order, signals, sd_notify, reload, shutdown.

The daemon is also the state the API reads: it implements :class:`~haflowd.api.state.StateView`
(the read API, /metrics) and :class:`~haflowd.api.state.Controls` (the control socket), and
hands itself to them; ``api/`` never imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from aiohttp import web

from haflowd import __version__, events, maintenance, secrets, tls
from haflowd import config as configmod
from haflowd.api import limits
from haflowd.api.control import ControlApi, bind_unix
from haflowd.api.server import ReadApi
from haflowd.api.state import GossipMetrics
from haflowd.clock import SYSTEM_CLOCK, Clock
from haflowd.config import Config
from haflowd.errors import ConfigError, HaflowdError
from haflowd.health import CheckRegistry, Status
from haflowd.hooks import HookRunner
from haflowd.logs import REDACTOR
from haflowd.notify import SystemdNotifier
from haflowd.supervisor.supervisor import Supervisor

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from haflowd.checks.postgres import PostgresChecker
    from haflowd.checks.rabbitmq import RabbitChecker
    from haflowd.gossip.transport import GossipNode
    from haflowd.supervisor.child import Child
    from haflowd.sync.service import SyncService

TICK_S = 0.25


class StartupError(HaflowdError):
    """The daemon cannot start (a port is taken, another daemon owns the socket)."""


def secrets_of(cfg: Config) -> list[str]:
    """Every secret the config holds, and the passwords inside DSNs and URLs, for the
    log redactor: whatever prints one (a child, a driver's error) prints ``***``."""
    return secrets.config_secrets(cfg)


class Service(Protocol):
    """A background part that publishes a check and a snapshot: the checkers and sync.
    ``run`` until cancelled (never raises), then ``close`` once."""

    @property
    def name(self) -> str: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...

    def snapshot(self) -> dict[str, Any]: ...

    def collect(self) -> Iterator[Metric]: ...


class Daemon:
    LIVENESS_MAX_LAG_S = 5.0

    def __init__(self, cfg: Config, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = cfg
        self.clock = clock
        self.node = cfg.node.name
        self.log = structlog.get_logger()
        self.registry = CheckRegistry(clock)
        self.supervisor = Supervisor(
            cfg.components, node=self.node, data_dir=cfg.node.data_dir, registry=self.registry, clock=clock
        )
        self.gossip: GossipNode | None = None
        if cfg.gossip is not None:
            from haflowd.gossip.transport import GossipNode  # a cluster of one carries no gossip code

            self.gossip = GossipNode(cfg.gossip, self.node, cfg.node.data_dir, clock, summary=self.summary)
        self.rabbitmq: RabbitChecker | None = None
        self.postgres: PostgresChecker | None = None
        self.sync: SyncService | None = None
        if cfg.rabbitmq is not None:
            from haflowd.checks.rabbitmq import RabbitChecker  # aio-pika is imported only where it is used

            self.rabbitmq = RabbitChecker(cfg.rabbitmq, self.registry, clock)
        if cfg.postgres is not None:
            from haflowd.checks.postgres import PostgresChecker

            self.postgres = PostgresChecker(cfg.postgres, self.registry, clock)
        if cfg.sync is not None:
            from haflowd.sync.service import SyncService  # watchdog is imported only where it is used

            self.sync = SyncService(cfg.sync, self.node, cfg.node.data_dir, self.registry, clock,
                                    gossip=cfg.gossip is not None)
        # one task each; their snapshots in /status, their metrics in /metrics, in this order
        self.services: list[Service] = [s for s in (self.rabbitmq, self.postgres, self.sync) if s is not None]
        self.notifier = SystemdNotifier()
        self.started_wall = clock.wall()
        self._tick = clock.monotonic()
        self._stop = asyncio.Event()
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        # one change to the components at a time: a control action on a component and a
        # reload that replaces it must not both act on it (one of them on a stale child)
        self.operations_lock = asyncio.Lock()
        self._boot_config = cfg  # what the checkers, sync and gossip were built from
        REDACTOR.set(secrets_of(cfg))
        self.events = events.BUS
        self.events.node = self.node
        self.hooks = HookRunner(cfg.hooks, self.events, f"{self.supervisor.marker}:hooks", clock)
        self._check_statuses: dict[str, str] = {}
        self._split_brain = False
        self.maintenance, why = maintenance.load(cfg.node.data_dir)
        if why is not None:
            self.log.warning("maintenance_file_damaged", path=str(cfg.node.data_dir / maintenance.STATE_FILE),
                             reason=why)
        self.supervisor.drained = self.maintenance.on
        self._maintenance_check()
        self._drain_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ views (api.state.StateView, Controls)

    @property
    def liveness_max_lag_s(self) -> float:
        return self.LIVENESS_MAX_LAG_S

    def loop_lag(self) -> float:
        return max(0.0, self.clock.monotonic() - self._tick - TICK_S)

    def components(self) -> list[Child]:
        return list(self.supervisor.children.values())

    def component(self, name: str) -> Child | None:
        return self.supervisor.get(name)

    def published(self) -> Sequence[Service | HookRunner]:
        return [*self.services, self.hooks]

    def gossip_metrics(self) -> GossipMetrics | None:
        g = self.gossip
        if g is None:
            return None
        return GossipMetrics(messages=g.message_counts(), rejected=dict(g.rejected), local_health=g.core.lhm)

    def peers(self) -> list[dict[str, Any]]:
        """Every member, this node included; without [gossip], a cluster of one."""
        if self.gossip is not None:
            return self.gossip.peers()
        return [{"name": self.node, "address": str(self.config.api.listen), "status": "alive", "incarnation": 0,
                 "last_seen_s": 0.0, "rtt_ms": None, "suspect_since": None, "self": True,
                 "maintenance": self.maintenance.on, "version": __version__}]

    def summary(self) -> dict[str, Any]:
        """What this node tells the others about itself (no timestamps: it changes only on news)."""
        health = self.registry.to_json(self.node)
        return {
            "version": __version__,
            "status": health["status"],
            "checks": [{k: c[k] for k in ("name", "status", "output")} for c in health["checks"]],
            "components": [{"name": c.name, "state": c.state, "healthy": c.healthy}
                           for c in self.supervisor.children.values()],
            "maintenance": self.maintenance.on,
        }

    def cluster_health(self) -> dict[str, Any]:
        """200 when every alive node is passing/warning and no peer is dead."""
        own = self.summary()
        if self.gossip is not None:
            nodes = self.gossip.cluster(own)
        else:
            nodes = [{"name": self.node, "member_status": "alive", "status": own["status"], "stale": False,
                      "checks": own["checks"], "components": own["components"], "version": own["version"],
                      "maintenance": own["maintenance"]}]
        ok = all(n["status"] != "critical" for n in nodes)
        rank = {"passing": 0, "warning": 1, "critical": 2}  # peers' statuses arrive normalized (gossip/summary.py)
        worst = max((n["status"] for n in nodes), key=lambda s: rank.get(s, 1), default="passing")
        return {"status": worst, "ok": ok, "nodes": nodes}

    async def leave(self) -> dict[str, Any]:
        if self.gossip is None:
            return {"ok": False, "error": "this node has no [gossip] section: it is a cluster of one"}
        if self.gossip.left:
            return {"ok": True, "result": "already left"}
        await self.gossip.leave()
        return {"ok": True, "result": f"left the cluster (incarnation {self.gossip.core.incarnation}); "
                                      "peers now show this node as left"}

    async def force_leave(self, name: str) -> dict[str, Any]:
        if self.gossip is None:
            return {"ok": False, "status": 409, "error": "this node has no [gossip] section: it is a cluster of one"}
        return self.gossip.force_leave(name)

    # ------------------------------------------------------------------ drain (maintenance)

    def maintenance_view(self) -> dict[str, Any]:
        """The drain state and, while drained, what is still to stop."""
        out = self.maintenance.to_json()
        if self.maintenance.on:
            out["to_stop"] = [c.name for c in self.supervisor.to_drain()]
            out["still_running"] = [c.name for c in self.supervisor.to_drain()
                                    if c.active or c.state not in ("stopped", "fatal")]
        return out

    def may_run(self, name: str) -> bool:
        child = self.supervisor.get(name)
        return child is None or self.supervisor.runs(child)

    def _maintenance_check(self) -> None:
        if self.maintenance.on:
            status, output = self.maintenance.check()
            self.registry.set(maintenance.CHECK_NAME, status, output)
        else:
            self.registry.remove(maintenance.CHECK_NAME)

    async def drain(self) -> dict[str, Any]:
        """Record the drain (a file in data_dir: it survives a restart), then stop the
        on_drain = "stop" components in reverse start order, in the background."""
        new = self.maintenance.drain(self.clock.wall())
        if new is not self.maintenance:
            try:
                await asyncio.to_thread(maintenance.save, self.config.node.data_dir, new)
            except OSError as e:
                return {"ok": False, "error": f"cannot record the drain in {self.config.node.data_dir}: "
                                              f"{e.strerror or e}; nothing changed"}
            self.maintenance = new
            self.supervisor.drained = True
            self._maintenance_check()
            self.log.warning("maintenance_on", since=new.since, detail="draining: components stop, "
                             "/readiness answers 503")
            events.emit("maintenance-on", self.node, {"since": new.since})
            result = "draining"
        else:
            result = "already drained"
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.create_task(self._drain(), name="drain")
        return {"ok": True, "result": result, **self.maintenance_view()}

    async def _drain(self) -> None:
        for child in self.supervisor.to_drain():
            async with self.operations_lock:  # one at a time with control actions and reloads
                if not self.maintenance.on:
                    return
                if await self.supervisor.drain_one(child):
                    self.log.info("drained", component=child.name)

    async def undrain(self) -> dict[str, Any]:
        if not self.maintenance.on:
            return {"ok": True, "result": "not drained", **self.maintenance_view()}
        try:
            await asyncio.to_thread(maintenance.save, self.config.node.data_dir, self.maintenance.undrain())
        except OSError as e:
            return {"ok": False, "error": f"cannot remove the drain record in {self.config.node.data_dir}: "
                                          f"{e.strerror or e}; still drained"}
        self.maintenance = self.maintenance.undrain()
        async with self.operations_lock:
            started = self.supervisor.undrain()
        self._maintenance_check()
        self.log.info("maintenance_off", started=started)
        events.emit("maintenance-off", self.node, {"started": started})
        return {"ok": True, "result": "undrained", "started": started, **self.maintenance_view()}

    def _gossip_check(self) -> None:
        g = self.gossip
        if g is None:
            return
        if g.core.name_conflict:
            self.registry.set("gossip", Status.CRITICAL,
                              f"another live node uses the name {self.node!r} at {g.core.name_conflict}")
        elif g.left:
            self.registry.set("gossip", Status.WARNING, "this node has left the cluster")
        elif g.core.lhm >= 4:
            self.registry.set("gossip", Status.WARNING,
                              f"this node is slow (local health multiplier {g.core.lhm}); it probes less")
        else:
            live = g.core.live_count()
            self.registry.set("gossip", Status.PASSING, f"{live} of {len(g.core.members)} members alive")

    def status(self) -> dict[str, Any]:
        health = self.registry.to_json(self.node)
        return {
            "node": self.node,
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(self.clock.wall() - self.started_wall, 3),
            "status": health["status"],
            "checks": health["checks"],
            "components": self.supervisor.snapshot(),
            "peers": self.peers(),
            "maintenance": self.maintenance_view(),
            "sync": {"enabled": False} if self.config.sync is None else {"enabled": self.config.sync.enabled},
            **{c.name: c.snapshot() for c in self.services},
        }

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        try:
            await self._start_servers()
        except StartupError as e:
            self.log.error("startup_failed", error=str(e))
            await self._close_servers()
            raise
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        await self.hooks.start()  # before the components: their first events reach the hooks
        self._tasks.append(asyncio.create_task(self._ticker(), name="ticker"))
        if self.gossip is not None:
            try:
                await self.gossip.start()
            except OSError as e:
                await self._close_servers()
                raise StartupError(f"cannot listen on {self.config.gossip.listen if self.config.gossip else '?'} "
                                   f"([gossip] listen): {e.strerror or e}") from None
        for service in self.services:
            self._tasks.append(asyncio.create_task(service.run(), name=f"check:{service.name}"))
        await self.supervisor.start()
        self.log.info("started", version=__version__, api=str(self.config.api.listen),
                      control_socket=str(self.config.api.control_socket),
                      components=[c.name for c in self.config.components])
        self.notifier.ready(self._status_line())
        await self._stop.wait()
        self.notifier.stopping()
        self.log.info("stopping")
        if self.gossip is not None and self.config.gossip is not None and self.config.gossip.leave_on_terminate:
            await self.gossip.leave()
        if self._drain_task is not None:  # a drain in progress stops what stop_all would: let it end first
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._drain_task
        await self.supervisor.stop_all()
        if self.gossip is not None:
            await self.gossip.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for service in self.services:
            await service.close()
        await self.hooks.close()
        await self._close_servers()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        self.log.info("stopped")
        return 0

    def request_stop(self, sig: int | None = None) -> None:
        first = not self._stop.is_set()
        self._stop.set()  # before the log line: shutdown never depends on the log
        if first:
            self.log.info("signal", signal=signal.Signals(sig).name if sig else None, action="stop")

    async def _start_servers(self) -> None:
        api = self.config.api
        if _socket_answers(str(api.control_socket)):
            raise StartupError(f"another haflowd answers on {api.control_socket}")
        read_api = ReadApi(self)
        read_runner = web.AppRunner(read_api.app(), access_log=None, handle_signals=False,
                                    **limits.runner_options(lambda remote: read_api.refuse("bad_request", remote)))
        await read_runner.setup()
        self._runners.append(read_runner)
        try:
            site = limits.GuardedSite(read_runner, api.listen.host, api.listen.port,
                                      on_busy=lambda remote: read_api.refuse("busy", remote))
            await site.start()
        except OSError as e:
            raise StartupError(f"cannot listen on {api.listen} ([api] listen): {e.strerror or e}") from None
        ctl_runner = web.AppRunner(ControlApi(self).app(), access_log=None, handle_signals=False)
        await ctl_runner.setup()
        self._runners.append(ctl_runner)
        try:
            sock = bind_unix(api.control_socket)
        except OSError as e:
            raise StartupError(
                f"cannot create {api.control_socket} ([api] control_socket): {e.strerror or e}") from None
        await web.SockSite(ctl_runner, sock).start()

    async def _close_servers(self) -> None:
        for r in reversed(self._runners):
            await r.cleanup()
        self._runners.clear()
        with contextlib.suppress(OSError):
            if self.config.api.control_socket.is_socket():
                self.config.api.control_socket.unlink()

    async def _ticker(self) -> None:
        """Proves the loop turns: liveness reads the last tick; the watchdog is fed from here
        only, so a stalled loop stops feeding it and systemd restarts us."""
        wd = self.notifier.watchdog_interval()
        next_wd = 0.0
        last_status = ""
        while True:
            now = self.clock.monotonic()
            self._tick = now
            self._gossip_check()
            self._check_events()
            if self.sync is not None and self.gossip is not None:
                self.sync.set_members({p["name"]: p["status"] for p in self.gossip.peers() if not p["self"]})
            if wd and now >= next_wd:
                self.notifier.watchdog()
                next_wd = now + wd / 2
            line = self._status_line()
            if line != last_status:
                self.notifier.status(line)
                last_status = line
            await asyncio.sleep(TICK_S)

    def _check_events(self) -> None:
        """check-changed when a check's status moves (staleness included); split-brain when
        the PostgreSQL check starts seeing more than one primary."""
        now = {r.name: r.status.label for r in self.registry.results()}
        for name, status in now.items():
            old = self._check_statuses.get(name)
            if old is not None and old != status:
                self.events.emit("check-changed", name, {"from": old, "to": status})
        self._check_statuses = now
        if self.postgres is not None:
            split = bool(self.postgres.snapshot().get("split_brain"))
            if split and not self._split_brain:
                self.events.emit("split-brain", "postgres", {"output": self.postgres.snapshot().get("output")})
            self._split_brain = split

    def _status_line(self) -> str:
        kids = self.supervisor.children.values()
        running = sum(1 for c in kids if c.state == "running")
        bad = [c.name for c in kids if c.state in ("fatal", "backoff")]
        line = f"{self.registry.status().label}; {running}/{len(kids)} components running"
        return line + (f"; failing: {', '.join(bad)}" if bad else "")

    async def reload(self) -> tuple[bool, dict[str, Any]]:
        """Re-read the config; a bad one changes nothing and says why."""
        async with self.operations_lock:
            self.notifier.reloading()
            self.log.info("reload_requested", path=str(self.config.path))
            try:
                new = await asyncio.to_thread(configmod.load, self.config.path)
            except ConfigError as e:
                for line in e.lines:
                    self.log.error("reload_rejected", error=line)
                self.notifier.ready(self._status_line())
                return False, {"error": "config rejected; nothing changed", "errors": e.lines}
            # the components' probes change now; [rabbitmq] waits for a restart, which loads OpenSSL
            refusal = tls.reload_refusal(new.components) if tls.blocked() else None
            if refusal is not None:
                line = f"{new.path}: {refusal}"
                self.log.error("reload_rejected", error=line)
                self.notifier.ready(self._status_line())
                return False, {"error": "config rejected; nothing changed", "errors": [line]}
            notes: list[str] = []
            for section in ("node", "api"):
                if getattr(new, section) != getattr(self.config, section):
                    notes.append(f"[{section}] changed: takes effect at the next restart of haflowd")
            if self.gossip is not None and new.gossip is not None:
                self.gossip.set_keys(new.gossip)  # key rotation needs no restart
                old_g = dataclasses.replace(self.config.gossip, keys=()) if self.config.gossip else None
                if dataclasses.replace(new.gossip, keys=()) != old_g:
                    notes.append("[gossip] changed: keys are in use now; the rest takes effect at the next restart")
            elif (self.gossip is None) != (new.gossip is None):
                notes.append("[gossip] added or removed: takes effect at the next restart of haflowd")
            for section in ("sync", "postgres", "rabbitmq"):
                if getattr(new, section) != getattr(self.config, section):
                    notes.append(f"[{section}] changed: takes effect at the next restart of haflowd")
            for n in notes:
                self.log.warning("reload_partial", detail=n)
            if notes:
                new = dataclasses.replace(new, node=self.config.node, api=self.config.api)
            result = await self.supervisor.reload(new.components)
            self.hooks.set_hooks(new.hooks)
            # every secret a live part still uses stays masked: the checkers, sync and gossip keep
            # their boot-time sections until restart; a child being replaced may still print
            REDACTOR.set(secrets_of(self._boot_config) + secrets_of(self.config) + secrets_of(new))
            self.config = new
            self.log.info("reloaded", **result)
            self.events.emit("config-reloaded", str(new.path), {"components": result, "notes": notes})
            self.notifier.ready(self._status_line())
            return True, {"components": result, "notes": notes}


def _socket_answers(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()
