"""The set of supervised components: start order, reload, leftovers, resource use."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import structlog

from haflowd.clock import SYSTEM_CLOCK, Clock
from haflowd.config import ComponentConfig, start_order
from haflowd.health import CheckRegistry
from haflowd.supervisor.child import COMPONENT_ENV, MARKER_ENV, Child, Usage

STATE_FILE = "children.json"
SAMPLE_INTERVAL_S = 5.0
LEFTOVER_WAIT_S = 3.0
KICK_DELAY_S = 0.5

log = structlog.get_logger()


class Supervisor:
    def __init__(
        self,
        components: Iterable[ComponentConfig],
        *,
        node: str,
        data_dir: Path,
        registry: CheckRegistry,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        sample_interval: float = SAMPLE_INTERVAL_S,
    ) -> None:
        self.node = node
        self.data_dir = data_dir
        self.registry = registry
        self.clock = clock
        self.rng = rng or random.Random()
        self.sample_interval = sample_interval
        self.marker = f"{node}:{data_dir.resolve()}"
        self.configs = list(components)
        self.children: dict[str, Child] = {}
        self._changed = asyncio.Event()
        self._kick = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._cpu_prev: dict[str, tuple[float, float]] = {}
        for cfg in start_order(self.configs):  # visible in the API before they start
            self.children[cfg.name] = self._make(cfg)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        killed = await asyncio.to_thread(self.reap_leftovers)
        if killed:
            log.warning("leftovers_from_earlier_run_killed", count=killed)
        for child in self.children.values():
            child.start()
        self._sampler = asyncio.create_task(self._sample_loop(), name="resource-sampler")

    async def stop_all(self) -> None:
        """Stop every component in reverse start order, each completely."""
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        for child in reversed(list(self.children.values())):
            await child.close()
        self.children.clear()
        self._write_state()
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def reload(self, components: Iterable[ComponentConfig]) -> dict[str, list[str]]:
        """Unchanged components keep running; changed restart; removed stop; new start.
        Fatal ones get another chance."""
        new = {c.name: c for c in start_order(list(components))}
        result: dict[str, list[str]] = {"unchanged": [], "restarted": [], "stopped": [], "started": []}
        for name in reversed(list(self.children)):
            if name not in new:
                await self.children.pop(name).close()
                result["stopped"].append(name)
        for name, cfg in new.items():
            old = self.children.get(name)
            if old is not None and old.cfg == cfg:
                if old.state == "fatal":
                    old.start()
                    result["restarted"].append(name)
                else:
                    result["unchanged"].append(name)
                continue
            if old is not None:
                await old.close()
                result["restarted"].append(name)
            else:
                result["started"].append(name)
            self.children[name] = self._make(cfg)
        # keep start order for the next stop_all
        self.children = {name: self.children[name] for name in new}
        self.configs = list(new.values())
        for name in result["restarted"] + result["started"]:
            self.children[name].start()
        return result

    def _make(self, cfg: ComponentConfig) -> Child:
        return Child(
            cfg,
            marker=self.marker,
            registry=self.registry,
            http=self.http,
            deps_ready=self.deps_ready,
            on_change=self._on_change,
            on_spawn=self._on_spawn,
            clock=self.clock,
            rng=self.rng,
        )

    def _on_spawn(self, _child: Child) -> None:
        self._write_state()
        self._kick.set()  # measure the new tree soon, not a whole interval later

    def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, limit=0),
                headers={"User-Agent": "haflowd-probe"},
            )
        return self._http

    # ------------------------------------------------------------------ start_after

    def _on_change(self, _child: Child) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def ready(self, name: str) -> bool:
        c = self.children.get(name)
        if c is not None and c.cfg.oneshot:
            return c.completed
        return c is not None and c.state == "running" and c.healthy is not False

    async def deps_ready(self, cfg: ComponentConfig) -> None:
        while not all(self.ready(d) for d in cfg.start_after if d in self.children):
            await self._changed.wait()

    # ------------------------------------------------------------------ views

    def get(self, name: str) -> Child | None:
        return self.children.get(name)

    def snapshot(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.children.values()]

    # ------------------------------------------------------------------ leftovers

    def _write_state(self) -> None:
        state = {
            "daemon_pid": os.getpid(),
            "marker": self.marker,
            "children": {
                c.name: {"guard_pid": c.guard.pid if c.guard else None, "pid": c.pid}
                for c in self.children.values()
            },
        }
        path = self.data_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(state))
            tmp.replace(path)
        except OSError as e:
            log.warning("state_write_failed", path=str(path), error=str(e))

    def reap_leftovers(self) -> int:
        """Kill processes left by an earlier run of this daemon (same node and data_dir):
        those carrying our marker in their environment, and those in the sessions we
        recorded. Runs in a thread."""
        sessions: set[int] = set()
        try:
            state = json.loads((self.data_dir / STATE_FILE).read_text())
            if state.get("marker") == self.marker and state.get("daemon_pid") != os.getpid():
                for rec in state.get("children", {}).values():
                    if isinstance(rec.get("pid"), int):
                        sessions.add(rec["pid"])
        except (OSError, ValueError, AttributeError):
            pass
        me = os.getpid()
        ours = self._our_pids()
        victims: list[psutil.Process] = []
        for p in psutil.process_iter(["pid"]):
            if p.pid == me:
                continue
            try:
                hit = False
                if sessions and os.getsid(p.pid) in sessions:
                    hit = p.pid not in ours
                if not hit:
                    env = p.environ()
                    hit = env.get(MARKER_ENV) == self.marker and p.pid not in ours
                if hit:
                    victims.append(p)
            except (psutil.Error, OSError):
                continue
        for p in victims:
            with contextlib.suppress(psutil.Error):
                log.warning("leftover_killed", pid=p.pid, component=_env_component(p), cmd=_cmd(p))
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(victims, timeout=LEFTOVER_WAIT_S)
        return len(victims)

    def _our_pids(self) -> set[int]:
        pids: set[int] = set()
        for c in self.children.values():
            if c.guard is not None:
                pids.add(c.guard.pid)
                with contextlib.suppress(psutil.Error):
                    pids.update(p.pid for p in psutil.Process(c.guard.pid).children(recursive=True))
        return pids

    # ------------------------------------------------------------------ resources

    async def _sample_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.sample_interval)
            if self._kick.is_set():
                await asyncio.sleep(KICK_DELAY_S)  # let the new tree form
                self._kick.clear()
            await self.sample()

    async def sample(self) -> None:
        """Sum CPU and memory over each component's whole tree, in a thread."""
        guards = {n: (c.guard.pid if c.guard else None, c.cpu_base) for n, c in self.children.items()}
        usage = await asyncio.to_thread(_measure, guards)
        now = self.clock.monotonic()
        for name, u in usage.items():
            child = self.children.get(name)
            if child is None:
                continue
            prev = self._cpu_prev.get(name)
            if prev is not None and now > prev[0]:
                u.cpu_percent = max(0.0, (u.cpu_seconds - prev[1]) / (now - prev[0]) * 100)
            u.cpu_seconds = max(u.cpu_seconds, child.usage.cpu_seconds)  # a counter never goes back
            self._cpu_prev[name] = (now, u.cpu_seconds)
            child.usage = u


def _measure(guards: dict[str, tuple[int | None, float]]) -> dict[str, Usage]:
    """One pass over /proc for the parent map, then each guard's tree from it."""
    kids: dict[int, list[int]] = {}
    for p in psutil.process_iter(["ppid"]):
        ppid = p.info.get("ppid")
        if ppid:
            kids.setdefault(ppid, []).append(p.pid)
    out: dict[str, Usage] = {}
    for name, (gpid, base) in guards.items():
        u = Usage(cpu_seconds=base)
        out[name] = u
        if gpid is None:
            continue
        try:
            t = psutil.Process(gpid).cpu_times()
        except psutil.Error:
            continue
        total = t.children_user + t.children_system  # whatever the guard has reaped
        stack = list(kids.get(gpid, ()))
        while stack:
            pid = stack.pop()
            stack.extend(kids.get(pid, ()))
            try:
                p = psutil.Process(pid)
                with p.oneshot():
                    ct = p.cpu_times()
                    total += ct.user + ct.system + ct.children_user + ct.children_system
                    u.rss_bytes += p.memory_info().rss
                    u.processes += 1
            except psutil.Error:
                continue
        u.cpu_seconds = base + total
    return out


def _env_component(p: psutil.Process) -> str | None:
    try:
        return p.environ().get(COMPONENT_ENV)
    except psutil.Error:
        return None


def _cmd(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())[:200]
    except psutil.Error:
        return "?"
