"""One supervised component: its guard process, its runs, its probes, its output.

The restart *decisions* are RestartPolicy's; this module only carries them out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from haflowd import events, workers
from haflowd.airflow import jobs as airflow_jobs
from haflowd.clock import SYSTEM_CLOCK, Clock
from haflowd.config import ComponentConfig, HealthConfig, user_ids
from haflowd.errors import SpawnError
from haflowd.health import CheckRegistry, Status
from haflowd.logs import REDACTOR
from haflowd.supervisor.policy import Action, ExitInfo, PolicySettings, RestartPolicy

GUARD = Path(__file__).with_name("guard.py")
MARKER_ENV = "HAFLOWD_SUPERVISOR"
COMPONENT_ENV = "HAFLOWD_COMPONENT"
PROBE_ENV = "HAFLOWD_PROBE"  # one token per health-command run: what it leaves behind is provably its own
KILL_WAIT_S = 10.0
SPAWN_TIMEOUT_S = 10.0  # a guard forks and execs at once; one that says nothing for this long is lost
GUARD_ANSWER_S = 3.0  # a guard answers a kill within its reap deadline; after this it is killed itself
GUARD_EXIT_GRACE_S = 0.5  # after a guard's exit, how long its last events may take to arrive
PROBE_OUTPUT_MAX = 64 * 1024  # of a health command's output only the tail is kept
PROBE_DRAIN_S = 0.2  # after a probe exits, how long its output pipe may stay open (a forked writer)
MAX_LINE = 4096
UNHEALTHY_WORDS = {"unhealthy", "down", "fail", "failed", "failing", "error", "critical", "dead"}

STATES = ("starting", "running", "backoff", "stopping", "stopped", "fatal")


@dataclass
class Usage:
    cpu_percent: float = 0.0
    rss_bytes: int = 0
    cpu_seconds: float = 0.0
    processes: int = 0


class LineLimiter:
    """A token bucket for a child's output lines: a chatty child cannot flood the log."""

    def __init__(self, rate: int, clock: Clock) -> None:
        self.rate = rate
        self.clock = clock
        self.tokens = float(rate)
        self.last = clock.monotonic()
        self.dropped = 0

    def allow(self) -> tuple[bool, int]:
        """(may this line be logged, lines dropped since the last allowed one)."""
        if self.rate <= 0:
            return True, 0
        now = self.clock.monotonic()
        self.tokens = min(float(self.rate), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            dropped, self.dropped = self.dropped, 0
            return True, dropped
        self.dropped += 1
        return False, 0


class Guard:
    """The daemon's end of one guard process (see guard.py)."""

    def __init__(self, proc: asyncio.subprocess.Process, events: asyncio.StreamReader) -> None:
        self.proc = proc
        self.events = events
        # set when its events pipe reaches EOF (it died: ``returncode`` is still None until
        # the wait is processed) or when it stopped answering: never used again
        self.lost = False
        self.gone = False  # its end was seen and handled
        self.closing = False
        self.readers: list[asyncio.Task[None]] = []
        self.pipes: list[asyncio.BaseTransport] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def usable(self) -> bool:
        return not self.lost and not self.closing and self.proc.returncode is None

    def send(self, **msg: Any) -> bool:
        if not self.usable or self.proc.stdin is None or self.proc.stdin.is_closing():
            return False
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        return True

    def kill(self) -> None:
        """SIGKILL the guard itself (its child follows by PDEATHSIG; orphans need a scan)."""
        self.lost = True
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    async def close(self) -> None:
        """EOF tells the guard to kill whatever is left and exit; a lost one is killed."""
        self.closing = True
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 0.1 if self.lost else KILL_WAIT_S)
        except TimeoutError:
            self.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), KILL_WAIT_S)
        for t in self.readers:
            t.cancel()
        for t in self.readers:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self.readers.clear()
        for p in self.pipes:  # an orphan may still hold the other end
            p.close()
        self.pipes.clear()


class Child:
    def __init__(
        self,
        cfg: ComponentConfig,
        *,
        marker: str,
        registry: CheckRegistry,
        http: Callable[[], aiohttp.ClientSession],
        deps_ready: Callable[[ComponentConfig], Awaitable[None]],
        on_change: Callable[[Child], None],
        on_spawn: Callable[[Child], None],
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.marker = marker
        self.registry = registry
        self.http = http
        self.deps_ready = deps_ready
        self.on_change = on_change
        self.on_spawn = on_spawn
        self.clock = clock
        self.policy = RestartPolicy(_settings(cfg), rng)
        self.log = structlog.get_logger().bind(component=cfg.name)
        self.state = "starting"
        self.note = "queued"
        self.pid: int | None = None
        self.started_mono: float | None = None
        self.started_wall: float | None = None
        self.restarts = 0
        self.healthy: bool | None = None
        self.completed = False  # a oneshot that exited 0
        self.last_exit_code: int | None = None
        self.last_exit_signal: int | None = None
        self.next_start_at: float | None = None
        self.usage = Usage()
        self.cpu_base = 0.0  # CPU seconds of earlier guards
        self.guard: Guard | None = None
        self._task: asyncio.Task[None] | None = None
        self._spawned: asyncio.Future[tuple[int | None, str]] | None = None
        self._exited: asyncio.Future[dict[str, Any]] | None = None
        self._unhealthy = False
        self._probe_seq = 0
        self.output = events.OutputRing(clock, scrub=REDACTOR.scrub)  # outlives the runs: `haflowctl logs`
        self._publish()

    # ------------------------------------------------------------------ public

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def active(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start (or restart from fatal/backoff); a fresh crash-loop budget."""
        if self.active:
            return
        self.policy.reset()
        self._task = asyncio.create_task(self._lifecycle(), name=f"child:{self.name}")
        self._task.add_done_callback(self._lifecycle_done)

    def _lifecycle_done(self, task: asyncio.Task[None]) -> None:
        """A bug in the lifecycle must show as a fatal component, not vanish silently."""
        if task.cancelled() or task.exception() is None:
            return
        err = task.exception()
        self.log.error("lifecycle_crashed", error=f"{type(err).__name__}: {err}")
        self._set("fatal", f"internal error: {type(err).__name__}: {err}")

    async def stop(self, reason: str = "stopped by request") -> None:
        """Stop in order: stop_signal to the group, then SIGKILL to the tree."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._spawned is not None and not self._spawned.done():
            await asyncio.wait({self._spawned}, timeout=SPAWN_TIMEOUT_S)  # a spawn in flight
        await self._terminate(self.cfg.stop_timeout)
        exited = self._exited
        if self.pid is not None and exited is not None and exited.done():
            # the cancelled lifecycle never saw this exit: record how the child ended
            ev = exited.result()
            self.last_exit_code, self.last_exit_signal = ev.get("code"), ev.get("signal")
            self.log.info("child_stopped", pid=self.pid, code=self.last_exit_code,
                          signal=_signame(self.last_exit_signal), reason=reason)
        self.pid = None
        self.next_start_at = None
        self._set("stopped", reason)

    async def restart(self) -> None:
        await self.stop("restarting by request")
        self.start()

    async def close(self) -> None:
        await self.stop("daemon stopping")
        await self._retire_guard()
        self.registry.remove(self.check_name)

    @property
    def check_name(self) -> str:
        return f"component:{self.name}"

    def uptime(self) -> float | None:
        if self.started_mono is None or self.pid is None:
            return None
        return max(0.0, self.clock.monotonic() - self.started_mono)

    def to_json(self) -> dict[str, Any]:
        up = self.uptime()
        return {
            "name": self.name,
            "state": self.state,
            "pid": self.pid,
            "guard_pid": self.guard.pid if self.guard else None,
            "uptime_s": round(up, 3) if up is not None else None,
            "started_at": self.started_wall if self.pid is not None else None,
            "restarts": self.restarts,
            "healthy": self.healthy,
            "oneshot": self.cfg.oneshot,
            "completed": self.completed if self.cfg.oneshot else None,
            "cpu_percent": round(self.usage.cpu_percent, 2),
            "rss_bytes": self.usage.rss_bytes,
            "cpu_seconds": round(self.usage.cpu_seconds, 3),
            "processes": self.usage.processes,
            "last_exit_code": self.last_exit_code,
            "last_exit_signal": self.last_exit_signal,
            "next_start_in_s": (
                round(max(0.0, self.next_start_at - self.clock.monotonic()), 3)
                if self.next_start_at is not None else None
            ),
            "note": self.note,
        }

    # ------------------------------------------------------------------ state

    def _set(self, state: str, note: str) -> None:
        changed = (state, note) != (self.state, self.note)
        self.state, self.note = state, note
        if changed:
            self._publish()
            self.on_change(self)

    def _publish(self) -> None:
        if self.state == "fatal":
            status = Status.CRITICAL
        elif self.state == "running":
            status = Status.WARNING if self.healthy is False else Status.PASSING
        elif self.state == "stopped":
            failed = self.last_exit_code not in (None, 0) or self.last_exit_signal is not None
            status = Status.CRITICAL if failed and self.note.startswith("exited") else (
                Status.PASSING if self.note.startswith("exited") else Status.WARNING)
        else:
            status = Status.WARNING
        self.registry.set(self.check_name, status, f"{self.state}: {self.note}")

    # ------------------------------------------------------------------ the lifecycle

    async def _lifecycle(self) -> None:
        if self.cfg.start_after:
            self._set("starting", "waiting for " + ", ".join(self.cfg.start_after))
            await self.deps_ready(self.cfg)
        while True:
            self._unhealthy = False
            self.healthy = None
            self.completed = False
            self._set("starting", "spawning")
            info = await self._run_once()
            decision = self.policy.on_exit(self.clock.monotonic(), info)
            self.log.info(
                "child_exited", pid=self.last_pid, code=info.code, signal=_signame(info.signal),
                uptime_s=round(info.uptime, 3), unhealthy=info.unhealthy,
                decision=decision.action.value, delay_s=round(decision.delay, 3), reason=decision.reason,
            )
            events.emit("component-exited", self.name, {
                "code": info.code, "signal": _signame(info.signal), "uptime_s": round(info.uptime, 3),
                "unhealthy": info.unhealthy, "decision": decision.action.value, "reason": decision.reason})
            if decision.action is Action.STOP:
                self.completed = self.cfg.oneshot and info.code == 0 and info.signal is None
                what = "completed" if self.completed else decision.reason
                self._set("stopped", f"exited: {_describe_exit(info)}; {what}")
                if self.completed:
                    events.emit("component-completed", self.name, {"uptime_s": round(info.uptime, 3)})
                return
            if decision.action is Action.FATAL:
                self._set("fatal", f"{decision.reason}; last: {_describe_exit(info)}")
                self.log.error("child_fatal", reason=decision.reason)
                events.emit("component-fatal", self.name, {"reason": decision.reason, "last": _describe_exit(info)})
                return
            if decision.delay > 0:
                self.next_start_at = self.clock.monotonic() + decision.delay
                self._set("backoff", f"restarting in {decision.delay:.2f}s after {_describe_exit(info)}")
                await asyncio.sleep(decision.delay)
                self.next_start_at = None
            self.restarts += 1

    async def _run_once(self) -> ExitInfo:
        try:
            pid = await self._spawn()
        except SpawnError as e:
            self.last_exit_code, self.last_exit_signal = None, None
            self.last_pid = None
            self.log.error("spawn_failed", error=str(e))
            return ExitInfo(uptime=0.0, spawn_failed=True)
        self.last_pid = pid
        probe = asyncio.create_task(self._probe_loop()) if self.cfg.health else None
        if probe is None:
            self.healthy = None
            self._set("running", "running once, must exit 0" if self.cfg.oneshot else "process alive (no health check)")
        try:
            assert self._exited is not None
            ev = await asyncio.shield(self._exited)
        finally:
            if probe is not None:
                probe.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probe
        uptime = self.uptime() or 0.0
        self.pid = None
        self.last_exit_code, self.last_exit_signal = ev.get("code"), ev.get("signal")
        if ev.get("guard_lost"):
            await self._kill_orphans()
        if ev.get("leftovers"):
            self.log.warning("leftovers_killed", count=ev["leftovers"],
                             detail="processes left in the child's tree were killed before restart")
        return ExitInfo(uptime=uptime, code=ev.get("code"), signal=ev.get("signal"),
                        unhealthy=self._unhealthy)

    async def _spawn(self) -> int:
        guard = await self._ensure_guard()
        spec = self._spawn_spec()
        loop = asyncio.get_running_loop()
        self._spawned = loop.create_future()
        self._exited = loop.create_future()
        spawned = self._spawned
        guard.send(op="spawn", **spec)
        try:
            pid, error = await asyncio.wait_for(asyncio.shield(spawned), SPAWN_TIMEOUT_S)
        except TimeoutError:
            self.log.error("guard_unresponsive", guard_pid=guard.pid, op="spawn", timeout_s=SPAWN_TIMEOUT_S,
                           detail="killing the guard and its tree")
            guard.kill()
            if not spawned.done():
                spawned.set_result((None, ""))
            await self._retire_guard()
            raise SpawnError(f"the guard did not answer within {SPAWN_TIMEOUT_S:g}s") from None
        if pid is None:
            raise SpawnError(error)
        self.pid = pid
        self.started_mono = self.clock.monotonic()
        self.started_wall = self.clock.wall()
        self.log.info("child_started", pid=pid, restarts=self.restarts)
        events.emit("component-started", self.name, {"pid": pid, "restarts": self.restarts})
        self.on_spawn(self)
        return pid

    def _spawn_spec(self) -> dict[str, Any]:
        env = child_environment(os.environ)
        spec: dict[str, Any] = {"argv": list(self.cfg.command), "cwd": None, "uid": None, "gid": None}
        if self.cfg.user:
            try:
                uid, gid, groups, home = user_ids(self.cfg.user)
            except KeyError:
                raise SpawnError(f"no such user {self.cfg.user!r}") from None
            spec.update(uid=uid, gid=gid, groups=groups)
            env.update(HOME=home, USER=self.cfg.user, LOGNAME=self.cfg.user)
        env.update(self.cfg.environment)
        env[MARKER_ENV] = self.marker
        env[COMPONENT_ENV] = self.name
        spec["env"] = env
        if self.cfg.working_dir:
            spec["cwd"] = str(self.cfg.working_dir)
        return spec

    async def _retire_guard(self) -> None:
        """Close the current guard; if it was lost, kill what its tree left behind."""
        guard, self.guard = self.guard, None
        if guard is None:
            return
        lost = guard.lost
        await guard.close()
        self.cpu_base = self.usage.cpu_seconds
        if lost:
            await self._kill_orphans()

    async def _kill_orphans(self) -> int:
        """A lost guard's grandchildren were re-parented away from it: find them by our marker
        and this component's name in their environment (provably ours) and kill them."""
        keep = frozenset({self.guard.pid}) if self.guard is not None and self.guard.usable else frozenset()
        try:
            n = await workers.budget(workers.SUPERVISOR).call(
                kill_marked, {MARKER_ENV: self.marker, COMPONENT_ENV: self.name}, keep, timeout=KILL_WAIT_S)
        except Exception as e:  # busy, timed out, or /proc unreadable: say so, supervise on
            self.log.warning("orphans_not_killed", error=f"{type(e).__name__}: {e}")
            return 0
        if n:
            self.log.warning("orphans_killed", count=n, detail="left by a lost guard")
        return n

    async def _ensure_guard(self) -> Guard:
        if self.guard is not None and self.guard.usable:
            return self.guard
        await self._retire_guard()
        env = child_environment(os.environ)
        env[MARKER_ENV] = self.marker
        env[COMPONENT_ENV] = self.name
        # our own pipes, not asyncio's: the child and its orphans share the guard's stdout and
        # stderr, and asyncio's wait() for a process waits for its pipes to close as well
        ev_w, events, ev_t = await open_pipe(2**20)
        out_w, out, out_t = await open_pipe()
        err_w, err, err_t = await open_pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", str(GUARD), str(ev_w),
                stdin=asyncio.subprocess.PIPE,
                stdout=out_w,
                stderr=err_w,
                pass_fds=(ev_w,),
                env=env,
            )
        except BaseException:
            for t in (ev_t, out_t, err_t):
                t.close()
            raise
        finally:
            for fd in (ev_w, out_w, err_w):
                os.close(fd)
        guard = self.guard = Guard(proc, events)
        guard.pipes = [ev_t, out_t, err_t]
        guard.readers = [
            asyncio.create_task(self._read_events(guard)),
            asyncio.create_task(self._read_output(out, "stdout")),
            asyncio.create_task(self._read_output(err, "stderr")),
        ]
        guard.readers.append(asyncio.create_task(self._watch_guard(guard)))
        return guard

    async def _read_events(self, guard: Guard) -> None:
        while True:
            try:
                line = await guard.events.readline()
            except ValueError:  # an over-long line: not the guard's
                continue
            if not line:
                break
            if guard is not self.guard:
                continue  # a retired guard's last words are not about the current run
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            kind = ev.get("ev")
            if kind == "started" and self._spawned and not self._spawned.done():
                self._spawned.set_result((int(ev["pid"]), ""))
            elif kind == "spawn_failed" and self._spawned and not self._spawned.done():
                self._spawned.set_result((None, str(ev.get("error"))))
            elif kind == "exited" and self._exited and not self._exited.done():
                self._exited.set_result(ev)
        self._guard_gone(guard)

    async def _watch_guard(self, guard: Guard) -> None:
        """The other sign of a dead guard: its exit, in case something else holds its events
        pipe open. Its last events get a moment to arrive first."""
        await guard.proc.wait()
        reader = guard.readers[0] if guard.readers else None
        if reader is not None:
            await asyncio.wait({reader}, timeout=GUARD_EXIT_GRACE_S)
        self._guard_gone(guard)

    def _guard_gone(self, guard: Guard) -> None:
        """The guard is gone: its child died with it (PR_SET_PDEATHSIG); orphans did not."""
        if guard.gone:
            return
        guard.gone = guard.lost = True
        if guard is not self.guard:
            return
        if not guard.closing:
            self.log.warning("guard_lost", guard_pid=guard.pid, pid=self.pid,
                             detail="a new guard is started; what the old one's tree left is killed")
        if self._spawned and not self._spawned.done():
            self._spawned.set_result((None, "guard process exited"))
        if self._exited and not self._exited.done():
            self._exited.set_result({"code": None, "signal": None, "guard_lost": True})

    async def _read_output(self, stream: asyncio.StreamReader, name: str) -> None:
        limiter = LineLimiter(self.cfg.log_rate_limit, self.clock)
        while True:
            try:
                if limiter.dropped:  # say how much was dropped even if the child goes quiet
                    line = await asyncio.wait_for(read_line(stream), 1.0)
                else:
                    line = await read_line(stream)
            except TimeoutError:
                self.log.warning("output_suppressed", stream=name, lines=limiter.dropped,
                                 detail=f"more than {self.cfg.log_rate_limit} lines/s")
                limiter.dropped = 0
                continue
            if not line:
                return
            self.output.append(name, line.decode(errors="replace").rstrip("\n"))
            ok, dropped = limiter.allow()
            if dropped:
                self.log.warning("output_suppressed", stream=name, lines=dropped,
                                 detail=f"more than {self.cfg.log_rate_limit} lines/s")
            if ok:
                text = line.decode(errors="replace").rstrip("\n")
                self.log.info("output", stream=name, line=text[:MAX_LINE])

    async def _terminate(self, timeout: float) -> None:
        """stop_signal to the child's group, SIGKILL to its whole tree after ``timeout``."""
        guard, exited = self.guard, self._exited
        if guard is None or exited is None or exited.done():
            return
        self._set("stopping", f"sent {_signame(self.cfg.stop_signal)}")
        guard.send(op="signal", sig=self.cfg.stop_signal)
        done, _ = await asyncio.wait({exited}, timeout=timeout)
        if not done:
            self.log.warning("stop_timeout", timeout_s=timeout, detail="killing the whole process tree")
            guard.send(op="kill")
            done, _ = await asyncio.wait({exited}, timeout=GUARD_ANSWER_S)
        if not done:  # a stopped or hung guard: kill it, then what its tree left
            self.log.error("guard_unresponsive", guard_pid=guard.pid, op="stop", timeout_s=GUARD_ANSWER_S,
                           detail="killing the guard and its tree")
            guard.kill()
            await asyncio.wait({exited}, timeout=GUARD_ANSWER_S)
            if not exited.done():
                exited.set_result({"code": None, "signal": None, "guard_lost": True})
            await self._kill_orphans()

    # ------------------------------------------------------------------ health

    async def _probe_loop(self) -> None:
        h = self.cfg.health
        assert h is not None
        started = self.clock.monotonic()
        failures = 0
        ever_healthy = False
        while True:
            t0 = self.clock.monotonic()
            ok, output = await self.probe(h)
            in_grace = t0 - started < h.start_period and not ever_healthy
            if ok:
                failures = 0
                ever_healthy = True
                if self.healthy is not True:
                    self.log.info("child_healthy", output=output)
                self.healthy = True
                self._set("running", f"healthy: {output}")
            elif not in_grace:
                failures += 1
                self.healthy = False
                self.log.warning("probe_failed", output=output, failures=failures, threshold=h.failures)
                self._publish()
                if self.state == "running":
                    self._set("running", f"unhealthy ({failures}/{h.failures}): {output}")
                elif self.state == "starting":  # alive but never healthy: say why, not "spawning"
                    self._set("starting", f"not healthy yet ({failures}/{h.failures}): {output}")
                if failures >= h.failures:
                    self._unhealthy = True
                    self.log.error("child_unhealthy", detail="restarting", output=output)
                    events.emit("component-unhealthy", self.name, {"output": output, "failures": failures})
                    await self._terminate(self.cfg.stop_timeout)
                    return
            elif self.state == "starting":
                self._set("starting", f"in start_period, probe failing: {output}")
            every = h.interval
            if h.start_interval and not ever_healthy and self.clock.monotonic() - started < h.start_period:
                every = h.start_interval  # starting: notice the first success soon
            await asyncio.sleep(max(0.0, every - (self.clock.monotonic() - t0)))

    async def probe(self, h: HealthConfig) -> tuple[bool, str]:
        try:
            if h.http:
                return await asyncio.wait_for(self._probe_http(h.http, h.expect), h.timeout)
            if h.airflow_job:
                return await airflow_jobs.probe(h, self.name)  # its own timeout: it cuts the connection
            if h.celery_ping and h.broker is not None:
                from haflowd.airflow import celery_ping

                return await asyncio.wait_for(celery_ping.ping(h.broker.reveal(), h.celery_ping, h.timeout),
                                              h.timeout + 1)
            assert h.command is not None
            return await self._probe_command(h.command, h.timeout)
        except TimeoutError:
            return False, f"timed out after {h.timeout:g}s"
        except (aiohttp.ClientError, OSError) as e:
            return False, f"{type(e).__name__}: {e}"

    async def _probe_http(self, url: str, expect: Mapping[str, str]) -> tuple[bool, str]:
        async with self.http().get(url, allow_redirects=False) as resp:
            body = await resp.content.read(65536)
            if not 200 <= resp.status < 300:
                return False, f"HTTP {resp.status}"
            data = _json_or_none(body)
            summary = _status_summary(data)
            detail = f"HTTP {resp.status}" + (f" ({summary})" if summary else "")
            verdict = _json_verdict(data, expect)
            if verdict is not None:
                return False, f"HTTP {resp.status} but {verdict}" + (f" ({summary})" if summary else "")
            return True, detail

    async def _probe_command(self, command: tuple[str, ...], timeout: float) -> tuple[bool, str]:
        """Run a health command in a session of its own; keep the last ``PROBE_OUTPUT_MAX``
        bytes of its output; kill its group when it ends or times out, and whatever it
        forked out of the group (found by this run's token in its environment)."""
        spec = self._spawn_spec()
        kwargs: dict[str, Any] = {}
        if spec["uid"] is not None:
            kwargs.update(user=spec["uid"], group=spec["gid"], extra_groups=spec["groups"])
        self._probe_seq += 1
        token = f"{self.marker}:{self.name}:{os.getpid()}:{self._probe_seq}"
        env = {**spec["env"], PROBE_ENV: token}
        deadline = asyncio.get_running_loop().time() + timeout
        since = time.clock_gettime(time.CLOCK_BOOTTIME) - 1.0  # start times count in clock ticks: a margin
        out_w, out, out_t = await open_pipe()  # our own: asyncio's wait() would wait for it to close
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out_w,
                stderr=out_w,
                env=env,
                cwd=spec["cwd"],
                start_new_session=True,
                **kwargs,
            )
        except BaseException:
            out_t.close()
            raise
        finally:
            os.close(out_w)
        tail = OutputTail(PROBE_OUTPUT_MAX)
        reader = asyncio.create_task(tail.drain(out))
        try:
            await asyncio.wait_for(proc.wait(), timeout)
            # a child that forked a writer keeps the pipe open: do not wait for it
            left = max(0.0, deadline - asyncio.get_running_loop().time())
            await asyncio.wait({reader}, timeout=min(PROBE_DRAIN_S, left))
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever the probe left in its group
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            out_t.close()
            await self._kill_probe_leftovers(token, since)
        last = tail.last_line()
        return proc.returncode == 0, f"exit {proc.returncode}" + (f": {last}" if last else "")

    async def _kill_probe_leftovers(self, token: str, since: float) -> None:
        n = 0
        for _ in range(3):  # probes of several components may end together: the budget is small
            try:
                n = await workers.budget(workers.SUPERVISOR).call(kill_marked, {PROBE_ENV: token}, frozenset(),
                                                                  since, timeout=KILL_WAIT_S)
                break
            except workers.WorkerBusy:
                await asyncio.sleep(0.05)
            except Exception as e:  # timed out, or /proc unreadable: never the probe's verdict
                self.log.warning("probe_leftovers_not_checked", error=f"{type(e).__name__}: {e}")
                return
        else:
            self.log.warning("probe_leftovers_not_checked", detail="the supervisor's workers were busy")
        if n:
            self.log.warning("probe_leftovers_killed", count=n,
                             detail="the health command left processes outside its process group")

    last_pid: int | None = None


async def read_line(stream: asyncio.StreamReader) -> bytes:
    """The next line with its newline; b"" at the end. A line longer than the stream's limit
    comes in pieces of what is buffered, each taken exactly, so the lines after it stay
    lines (``readline`` drops a long line's buffer and ``read`` would take the next lines
    with it as one)."""
    try:
        return await stream.readuntil(b"\n")
    except asyncio.IncompleteReadError as e:  # the end: the last line had no newline
        return e.partial
    except asyncio.LimitOverrunError as e:  # left in the buffer: take it exactly
        # "Separator is found, but chunk is longer than limit": consumed is where the newline
        # is, so take it too; otherwise consumed is what is buffered (the tests pin both)
        ends = "is found" in str(e)
        return await stream.readexactly(e.consumed + 1 if ends else max(1, e.consumed))


async def open_pipe(limit: int = 2**16) -> tuple[int, asyncio.StreamReader, asyncio.BaseTransport]:
    """A pipe whose read end the event loop reads: (write fd for a child, reader, transport)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    reader = asyncio.StreamReader(limit=limit)
    try:
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(r, "rb", 0))
    except BaseException:
        os.close(w)
        raise
    return w, reader, transport


class OutputTail:
    """The last ``limit`` bytes of a stream read to its end: bounded memory, whatever it prints."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.buf += chunk
        if len(self.buf) > self.limit:
            del self.buf[: len(self.buf) - self.limit]

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.feed(chunk)

    def last_line(self) -> str:
        lines = self.buf.decode(errors="replace").strip().splitlines()
        return lines[-1].strip()[:200] if lines else ""


def kill_marked(want: Mapping[str, str], keep_under: frozenset[int] = frozenset(), since: float = 0.0) -> int:
    """SIGKILL every process whose environment has all of ``want`` (provably ours: the values
    name this daemon's node and data_dir, and a component or a probe run), except this
    daemon, its direct children (guards, probes in flight), what lives under ``keep_under``,
    and what started before ``since`` (seconds since boot, CLOCK_BOOTTIME: the cheap first
    filter). Reads /proc directly: a probe's scan must stay cheap. Blocking: run it in a
    worker thread. Returns how many were killed."""
    me = os.getpid()
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    candidates: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            pid, ppid, started = int(name), int(fields[1]), int(fields[19]) / ticks
        except (OSError, IndexError, ValueError):
            continue
        parents[pid] = ppid
        if started >= since and fields[0] != b"Z":
            candidates.append(pid)
    wanted = {f"{k}={v}".encode() for k, v in want.items()}
    victims = []
    for pid in candidates:
        if pid == me or parents.get(pid) == me or _under(pid, keep_under, parents):
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = set(f.read().split(b"\0"))
        except OSError:
            continue
        if wanted <= env:
            victims.append(pid)
    killed = []
    for pid in victims:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    count = len(killed)
    deadline = time.monotonic() + 3.0
    while killed and time.monotonic() < deadline:  # until dead, or a zombie nobody reaped yet
        killed = [pid for pid in killed if _running(pid)]
        if killed:
            time.sleep(0.01)
    return count


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _under(pid: int, tops: frozenset[int], parents: Mapping[int, int]) -> bool:
    for _ in range(4096):  # a bounded walk up the tree
        if pid in tops:
            return True
        pid = parents.get(pid, 0)
        if pid <= 1:
            return False
    return False


DAEMON_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")
"""What addresses the daemon alone: systemd's notify socket and watchdog, and the journal
stream naming the daemon's stdout (a child's stdout is a pipe to the daemon)."""


def child_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The daemon's environment as a guard or a child gets it."""
    return {k: v for k, v in base.items() if k not in DAEMON_ONLY_ENV}


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _lookup(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _json_verdict(data: Any, expect: Mapping[str, str] | None = None) -> str | None:
    """Why a 2xx answer is unhealthy after all, or None: a top-level ``status`` that says
    so, or a value ``expect`` names that is missing or different."""
    if isinstance(data, dict):
        status = data.get("status")
        if isinstance(status, str) and status.strip().lower() in UNHEALTHY_WORDS:
            return f"the body says {status!r}"
    for path, want in (expect or {}).items():
        got = _lookup(data, path)
        got_s = str(got).lower() if isinstance(got, bool) else (None if got is None else str(got))
        if got_s != want:
            return f"{path} is {json.dumps(got)[:60]}, expected {json.dumps(want)}"
    return None


def _status_summary(data: Any) -> str:
    """``metadatabase=healthy scheduler=unhealthy``: each top-level object's ``status``."""
    if not isinstance(data, dict):
        return ""
    parts = [f"{k}={v['status']}" for k, v in data.items()
             if isinstance(v, dict) and isinstance(v.get("status"), str | None)]
    return " ".join(parts)[:300]


def _settings(cfg: ComponentConfig) -> PolicySettings:
    return PolicySettings(
        restart=cfg.restart,
        backoff_initial=cfg.backoff_initial,
        backoff_max=cfg.backoff_max,
        stable_after=cfg.stable_after,
        crash_loop_failures=cfg.crash_loop_failures,
        crash_loop_window=cfg.crash_loop_window,
    )


def _signame(sig: int | None) -> str | None:
    if sig is None:
        return None
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def _describe_exit(info: ExitInfo) -> str:
    if info.spawn_failed:
        return "could not start"
    if info.unhealthy:
        return "killed after failing its health check"
    if info.signal is not None:
        return f"killed by {_signame(info.signal)}"
    if info.code is None:
        return "lost"
    return f"exit code {info.code}"
