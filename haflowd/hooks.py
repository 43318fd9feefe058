"""Hooks: a command run on each event of the types it asks for (``[[hook]]``).

A hook never touches supervision: each runs in its own asyncio task, one run at a time,
from a bounded queue (an overflow is dropped and counted); its process runs in a session
of its own, is killed with its group at its timeout, and whatever it forked out of the
group is found by a token in its environment and killed too. The /proc scan for those runs
on the hooks' own thread, never on the supervisor's workers. Output is read bounded; its
last lines are logged, rate-limited.

``HookQueue`` and ``route`` are the pure part (tested without processes).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, Metric

from haflowd import events
from haflowd.clock import SYSTEM_CLOCK, Clock
from haflowd.config import HookConfig, user_ids
from haflowd.events import Event, EventBus
from haflowd.logs import REDACTOR
from haflowd.supervisor.child import LineLimiter, OutputTail, child_environment, kill_marked, open_pipe

log = structlog.get_logger()

HOOK_ENV = "HAFLOWD_HOOK"  # one token per run: what a run leaves behind is provably its own
QUEUE_LIMIT = 100
OUTPUT_MAX = 64 * 1024
OUTPUT_LINES_LOGGED = 5
LOG_RATE = 5  # hook_run lines per second per hook
KILL_WAIT_S = 10.0
RESULTS = ("ok", "failed", "timeout", "dropped", "error")


class HookQueue:
    """One hook's pending events: at most ``limit``; an event that finds it full is dropped
    (the newest, so a burst does not starve what was queued first) and counted."""

    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self.limit = max(1, limit)
        self._items: collections.deque[Event] = collections.deque()
        self.dropped = 0

    def offer(self, event: Event) -> bool:
        if len(self._items) >= self.limit:
            self.dropped += 1
            return False
        self._items.append(event)
        return True

    def take(self) -> Event | None:
        return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        return len(self._items)


def route(hooks: Iterable[HookConfig], event: Event) -> list[str]:
    """The names of the hooks that want this event."""
    return [h.name for h in hooks if events.matches(h.on, event.type)]


def hook_environment(base: dict[str, str], event: Event, token: str) -> dict[str, str]:
    return {**base, "HAFLOWD_EVENT_TYPE": event.type, "HAFLOWD_EVENT_SUBJECT": event.subject,
            "HAFLOWD_EVENT_NODE": event.node, HOOK_ENV: token}


class _Hook:
    def __init__(self, cfg: HookConfig, clock: Clock) -> None:
        self.cfg = cfg
        self.queue = HookQueue()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.limiter = LineLimiter(LOG_RATE, clock)


class HookRunner:
    name = "hooks"

    def __init__(self, hooks: Sequence[HookConfig], bus: EventBus, marker: str,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.bus = bus
        self.marker = marker
        self.clock = clock
        self._configs = tuple(hooks)
        self._hooks: dict[str, _Hook] = {}
        self.runs: collections.Counter[tuple[str, str]] = collections.Counter()
        self._wake = asyncio.Event()
        self._follower: events.Follower | None = None
        self._task: asyncio.Task[None] | None = None
        self._seq = 0
        # the /proc scan for a run's leftovers: a thread of the hooks' own, never shared
        self._scanner = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="haflowd-hooks")

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._follower = self.bus.subscribe(limit=10 * QUEUE_LIMIT,
                                            wake=lambda: loop.call_soon_threadsafe(self._wake.set))
        self.set_hooks(self._configs)
        self._task = asyncio.create_task(self._dispatch(), name="hooks")

    def set_hooks(self, hooks: Sequence[HookConfig]) -> None:
        """Reload: a changed or removed hook's worker ends (a run in flight finishes under
        its own timeout); new ones start; unchanged ones keep their queue."""
        self._configs = tuple(hooks)
        wanted = {h.name: h for h in hooks}
        for name, h in list(self._hooks.items()):
            if wanted.get(name) != h.cfg:
                if h.task is not None:
                    h.task.cancel()
                del self._hooks[name]
        for name, cfg in wanted.items():
            if name not in self._hooks:
                h = _Hook(cfg, self.clock)
                h.task = asyncio.create_task(self._work(h), name=f"hook:{name}")
                self._hooks[name] = h
                for r in RESULTS:
                    self.runs.setdefault((name, r), 0)

    async def close(self) -> None:
        tasks = [t for t in [self._task, *(h.task for h in self._hooks.values())] if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):  # never a reason to fail a stop
                await t
        if self._follower is not None:
            self._follower.close()
        self._scanner.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ dispatch

    async def _dispatch(self) -> None:
        assert self._follower is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, lost = self._follower.drain()
            if lost:
                log.warning("hook_events_lost", count=lost, detail="the hooks' dispatcher fell behind")
            for event in batch:
                self.offer(event)

    def offer(self, event: Event) -> None:
        for h in list(self._hooks.values()):
            if not events.matches(h.cfg.on, event.type):
                continue
            if h.queue.offer(event):
                h.wake.set()
            else:
                self.runs[(h.cfg.name, "dropped")] += 1
                if h.limiter.allow()[0]:
                    log.warning("hook_dropped", hook=h.cfg.name, event_type=event.type,
                                detail=f"its queue is full ({h.queue.limit} events)")

    async def _work(self, h: _Hook) -> None:
        while True:
            event = h.queue.take()
            if event is None:
                h.wake.clear()
                await h.wake.wait()
                continue
            try:
                result, detail = await self.run_once(h.cfg, event)
            except Exception as e:  # a bug here must not end the hook's worker
                result, detail = "error", {"error": f"{type(e).__name__}: {e}"}
            self.runs[(h.cfg.name, result)] += 1
            ok, dropped = h.limiter.allow()
            if ok or result != "ok":
                level = log.info if result == "ok" else log.warning
                level("hook_run", hook=h.cfg.name, event_type=event.type, subject=event.subject, result=result,
                      **detail, **({"log_lines_suppressed": dropped} if dropped else {}))

    # ------------------------------------------------------------------ one run

    async def run_once(self, cfg: HookConfig, event: Event) -> tuple[str, dict[str, Any]]:
        """Run the hook once for ``event``: (result, what to log). Never raises but for
        cancellation (then the run's group and leftovers are killed all the same)."""
        self._seq += 1
        token = f"{self.marker}:hook:{cfg.name}:{os.getpid()}:{self._seq}"
        kwargs: dict[str, Any] = {}
        env = child_environment(os.environ)
        if cfg.user:
            try:
                uid, gid, groups, home = user_ids(cfg.user)
            except KeyError:
                return "error", {"error": f"no such user {cfg.user!r}"}
            kwargs.update(user=uid, group=gid, extra_groups=groups)
            env.update(HOME=home, USER=cfg.user, LOGNAME=cfg.user)
        env = hook_environment(env, event, token)
        since = time.clock_gettime(time.CLOCK_BOOTTIME) - 1.0
        payload = (json.dumps(event.as_dict(), default=str) + "\n").encode()
        t0 = self.clock.monotonic()
        try:
            out_w, out, out_t = await open_pipe()
        except OSError as e:
            return "error", {"error": f"{type(e).__name__}: {e}"}
        try:
            proc = await asyncio.create_subprocess_exec(
                *cfg.command, stdin=asyncio.subprocess.PIPE, stdout=out_w, stderr=out_w, env=env,
                start_new_session=True, **kwargs)
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            out_t.close()
            return "error", {"error": REDACTOR.scrub(f"{type(e).__name__}: {e}")}
        finally:
            os.close(out_w)
        tail = OutputTail(OUTPUT_MAX)
        reader = asyncio.create_task(tail.drain(out))
        result = "error"
        try:
            async with asyncio.timeout(cfg.timeout):
                await self._feed(proc, payload)
                await proc.wait()
                result = "ok" if proc.returncode == 0 else "failed"
                await asyncio.wait({reader}, timeout=0.2)  # its last output; a forked writer keeps the pipe
        except TimeoutError:
            result = "timeout"
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            out_t.close()
            leftovers = await self._kill_leftovers(token, since)
        detail: dict[str, Any] = {"duration_s": round(self.clock.monotonic() - t0, 3)}
        if result == "timeout":
            detail["timeout_s"] = cfg.timeout
        else:
            detail["code"] = proc.returncode
        if leftovers:
            detail["leftovers_killed"] = leftovers
        lines = tail.buf.decode(errors="replace").splitlines()[-OUTPUT_LINES_LOGGED:]
        if lines:
            detail["output"] = [REDACTOR.scrub(x.strip()[:500]) for x in lines]
        return result, detail

    @staticmethod
    async def _feed(proc: asyncio.subprocess.Process, payload: bytes) -> None:
        """The event on stdin; a hook that does not read it is no error."""
        if proc.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(payload)
            await proc.stdin.drain()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.close()

    async def _kill_leftovers(self, token: str, since: float) -> int:
        loop = asyncio.get_running_loop()
        try:
            fut = loop.run_in_executor(self._scanner, kill_marked, {HOOK_ENV: token}, frozenset(), since)
            return await asyncio.wait_for(fut, KILL_WAIT_S)
        except Exception as e:  # timed out, /proc unreadable, shut down: never supervision's problem
            log.warning("hook_leftovers_not_checked", error=f"{type(e).__name__}: {e}")
            return 0

    # ------------------------------------------------------------------ views

    def snapshot(self) -> dict[str, Any]:
        return {name: {"queued": len(h.queue), "on": list(h.cfg.on),
                       "runs": {r: self.runs[(name, r)] for r in RESULTS}}
                for name, h in self._hooks.items()}

    def collect(self) -> Iterator[Metric]:
        c = CounterMetricFamily("haflowd_hook_runs", "Hook runs by result (ok, failed, timeout, dropped, error)",
                                labels=["hook", "result"])
        for (hook, result), n in sorted(self.runs.items()):
            c.add_metric([hook, result], n)
        yield c

