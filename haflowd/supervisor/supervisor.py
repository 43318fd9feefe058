"""The set of supervised components: start order, reload, leftovers, resource use."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import structlog

from haflowd import workers
from haflowd.clock import SYSTEM_CLOCK, Clock
from haflowd.config import ComponentConfig, start_order
from haflowd.health import CheckRegistry
from haflowd.supervisor.child import COMPONENT_ENV, MARKER_ENV, Child, Usage

STATE_FILE = "children.json"
STATE_VERSION = 2
STATE_MAX_BYTES = 1 << 20  # ours is a few hundred bytes a component
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
START_TIME_SLACK_S = 0.05  # create_time comes from clock ticks since boot: equal within this
SAMPLE_INTERVAL_S = 5.0
LEFTOVER_WAIT_S = 3.0
KICK_DELAY_S = 0.5
DRAINED_NOTE = "drained for maintenance"

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
        self._state_write_failing = False
        self._boot_id = boot_id()
        self.drained = False  # maintenance: only on_drain = "keep" components run (haflowd/maintenance.py)
        for cfg in start_order(self.configs):  # visible in the API before they start
            self.children[cfg.name] = self._make(cfg)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            log.warning("data_dir_unusable", path=str(self.data_dir), error=str(e),
                        detail="supervising without a record of the children")
        try:
            killed = await workers.budget(workers.SUPERVISOR).call(self.reap_leftovers, timeout=60.0)
        except (workers.WorkerBusy, TimeoutError) as e:
            log.warning("leftovers_not_reaped", error=str(e) or "timed out")
            killed = 0
        if killed:
            log.warning("leftovers_from_earlier_run_killed", count=killed)
        for child in self.children.values():
            if self.runs(child):
                child.start()
            else:
                await child.stop(DRAINED_NOTE)  # never started: only its state and note change
        self._sampler = asyncio.create_task(self._sample_loop(), name="resource-sampler")

    # ------------------------------------------------------------------ drain (maintenance)

    def runs(self, child: Child) -> bool:
        """Whether ``child`` may run now: always, unless the node is drained and it is to stop."""
        return not self.drained or child.cfg.on_drain == "keep"

    def to_drain(self) -> list[Child]:
        """The components a drain stops, in the order it stops them (reverse start order)."""
        return [c for c in reversed(list(self.children.values())) if c.cfg.on_drain == "stop"]

    async def drain_one(self, child: Child) -> bool:
        """Stop one component for a drain, warmly (its stop_signal, its stop_timeout). False when
        the drain was called off meanwhile or the component is already stopped."""
        if not self.drained or self.children.get(child.name) is not child:
            return False
        if child.state == "stopped" and not child.active:
            return False  # stopped already (by an operator, or a oneshot that ended): undrain leaves it so
        await child.stop(DRAINED_NOTE)
        return True

    def undrain(self) -> list[str]:
        """Start again, in start order, what a drain stopped (not what an operator stopped
        before); their start_after still applies."""
        self.drained = False
        started = []
        for child in self.children.values():
            if not child.active and child.state == "stopped" and child.note == DRAINED_NOTE:
                child.start()
                started.append(child.name)
        return started

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
                if old.state == "fatal" and self.runs(old):
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
            if old is not None:  # its ring outlives a change of config, as it outlives its runs
                self.children[name].output = old.output
        # keep start order for the next stop_all
        self.children = {name: self.children[name] for name in new}
        self.configs = list(new.values())
        for name in result["restarted"] + result["started"]:
            child = self.children[name]
            if self.runs(child):
                child.start()
            else:
                await child.stop(DRAINED_NOTE)
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
        """Record what we started, with the proof that a pid is still that process: the
        boot and each process's start time. A failure costs the record, never supervision."""
        state = {
            "version": STATE_VERSION,
            "boot_id": self._boot_id,
            "daemon_pid": os.getpid(),
            "marker": self.marker,
            "children": {
                c.name: {"guard_pid": c.guard.pid if c.guard else None,
                         "guard_start": _start_time(c.guard.pid) if c.guard else None,
                         "pid": c.pid, "pid_start": _start_time(c.pid) if c.pid else None}
                for c in self.children.values()
            },
        }
        path = self.data_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(state))
            tmp.replace(path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if not self._state_write_failing:  # once, not once per spawn
                log.warning("state_write_failed", path=str(path), error=str(e),
                            detail="supervision goes on; leftovers of this run are still found by their marker")
            self._state_write_failing = True
        else:
            if self._state_write_failing:
                log.info("state_write_recovered", path=str(path))
            self._state_write_failing = False

    def read_state(self) -> tuple[dict[int, float], str | None]:
        """The recorded children that are provably still the processes we started (this
        boot, same start time): {pid: start time}, and why the file was ignored, if it was."""
        path = self.data_dir / STATE_FILE
        try:
            with path.open("rb") as f:
                data = f.read(STATE_MAX_BYTES + 1)
        except FileNotFoundError:
            return {}, None
        except OSError as e:
            return {}, f"cannot be read: {e.strerror or e}"
        if len(data) > STATE_MAX_BYTES:
            return {}, f"larger than {STATE_MAX_BYTES} bytes"
        return parse_state(data.decode(errors="replace"), self.marker, self._boot_id, os.getpid())

    def reap_leftovers(self) -> int:
        """Kill processes left by an earlier run of this daemon (same node and data_dir).

        Only what is provably ours dies: a process must carry our marker in its
        environment. A recorded pid is only a hint: after a reboot or a crash the same
        number may lead anybody's session, so a record counts only for the same boot and
        the same start time, and even then the marker is required. Runs in a thread."""
        recorded, why = self.read_state()
        if why is not None:
            log.warning("state_file_ignored", path=str(self.data_dir / STATE_FILE), reason=why,
                        detail="nothing recorded in it is killed; leftovers are found by their marker only")
        me = os.getpid()
        ours = self._our_pids()
        victims: list[psutil.Process] = []
        for p in psutil.process_iter(["pid"]):
            if p.pid == me or p.pid in ours:
                continue
            try:
                if p.environ().get(MARKER_ENV) != self.marker:
                    continue
                sid = os.getsid(p.pid)
            except (psutil.Error, OSError):
                continue
            victims.append(p)
            how = "in a recorded session" if sid in recorded else "by its marker"
            log.warning("leftover_killed", pid=p.pid, component=_env_component(p), cmd=_cmd(p), found=how)
        for p in victims:
            with contextlib.suppress(psutil.Error):
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
        try:
            usage, stopped = await workers.budget(workers.SUPERVISOR).call(
                _measure, guards, key="sample", timeout=max(self.sample_interval, 5.0))
        except (workers.WorkerBusy, TimeoutError):
            return  # the previous pass is still reading /proc: skip this one
        for name, gpid in stopped.items():
            # a stopped guard reaps nothing and answers nothing: nobody else has a reason to stop it
            log.warning("guard_resumed", component=name, guard_pid=gpid, detail="the guard was stopped (SIGSTOP)")
            with contextlib.suppress(ProcessLookupError):
                os.kill(gpid, signal.SIGCONT)
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


def _measure(guards: dict[str, tuple[int | None, float]]) -> tuple[dict[str, Usage], dict[str, int]]:
    """One pass over /proc for the parent map, then each guard's tree from it; and the
    guards found stopped."""
    stopped: dict[str, int] = {}
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
            gp = psutil.Process(gpid)
            t = gp.cpu_times()
            if gp.status() == psutil.STATUS_STOPPED:
                stopped[name] = gpid
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
    return out, stopped


def boot_id() -> str | None:
    try:
        return BOOT_ID_FILE.read_text().strip() or None
    except OSError:
        return None


def _start_time(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def parse_state(text: str, marker: str, boot: str | None, me: int,
                start_time: Callable[[int], float | None] = _start_time) -> tuple[dict[int, float], str | None]:
    """Pure but for ``start_time``: the records of ``text`` (children.json) that still name the
    process we started, as {pid: start time}, and why the file is ignored (or None)."""
    try:
        state = json.loads(text)
    except (ValueError, RecursionError):
        return {}, "not valid JSON"
    if not isinstance(state, dict):
        return {}, "not a JSON object"
    if state.get("marker") != marker:
        return {}, f"written by another node or data_dir ({str(state.get('marker'))[:100]!r})"
    if state.get("daemon_pid") == me:
        return {}, None
    children = state.get("children")
    if not isinstance(children, dict) or not all(isinstance(r, dict) for r in children.values()):
        return {}, "children is not an object of records"
    if state.get("version") != STATE_VERSION:
        return {}, "an older format, without boot and start times to prove a pid is still ours"
    if boot is None or state.get("boot_id") != boot:
        return {}, "written before the last reboot"
    out: dict[int, float] = {}
    for rec in children.values():
        for pid_key, start_key in (("pid", "pid_start"), ("guard_pid", "guard_start")):
            pid, start = rec.get(pid_key), rec.get(start_key)
            if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
                continue
            if not isinstance(start, int | float) or isinstance(start, bool):
                continue
            now = start_time(pid)
            if now is not None and abs(now - start) <= START_TIME_SLACK_S:
                out[pid] = float(start)
    return out, None


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
