"""The sync service: wires the triggers (watchdog, the schedule, gossip, requests) to
the pure :class:`~haflowd.sync.schedule.SyncSchedule`, and its plans to csync2 through
:class:`~haflowd.sync.runner.Csync2Runner`.

It runs as one task of the daemon and publishes a check (``sync``, in the registry), a
snapshot (``GET /sync``, ``/status``, rendered by the API) and metric families, all from one
state; it knows nothing of HTTP. Watchdog's observer thread only posts
events onto the loop (``call_soon_threadsafe``); every decision is taken on the loop
by the core; csync2 runs as a subprocess, never blocking the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from haflowd import events
from haflowd.clock import SYSTEM_CLOCK, Clock
from haflowd.config import SyncConfig
from haflowd.health import CheckRegistry, Status
from haflowd.sync.conflicts import (
    REMOVAL_RULE,
    TIE_MAX_PER_RUN,
    ConflictLog,
    Csync2Layout,
    TieAction,
    TieBudget,
    csync2_cfg_path,
    decide_tie,
    parse_csync2_cfg,
)
from haflowd.sync.runner import Csync2Runner
from haflowd.sync.schedule import (
    OK,
    PEER_STATES,
    RUN_RESULTS,
    SKIPPED,
    SUCCESS,
    Outcome,
    PeerResult,
    RunPlan,
    RunSummary,
    ScheduleSettings,
    SyncSchedule,
)

log = structlog.get_logger()

STATE_FILE = "sync-state.json"
CHECK_MARKER = "sync-check.running"  # exists while csync2 -cr runs (see runner.py)
HEALTH_EVERY_S = 1.0
INCOMING_POLL_S = 0.05
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# what a change looks like; "opened" and "closed_no_write" are csync2 reading the files
CHANGE_EVENTS = frozenset({"created", "deleted", "modified", "moved", "closed", "attrib"})
# csync2's own scratch files (librsync signatures and patches, mkstemp: ".NAME.XXXXXX"), made
# next to the file on both ends of every transfer: they must not set off another run
CSYNC2_TEMP = re.compile(r"^\..+\.[A-Za-z0-9]{6}\Z")


def is_change(event_type: str, is_directory: bool, path: str) -> bool:
    """Does this watchdog event (for a move: about its destination) call for a sync?"""
    if event_type not in CHANGE_EVENTS:
        return False
    if is_directory and event_type == "modified":
        return False  # a directory's mtime moves with every entry: the entry's own event says it
    return not CSYNC2_TEMP.match(os.path.basename(path))


class _Changes(FileSystemEventHandler):
    """Runs in watchdog's observer thread: posts each change onto the loop, nothing more."""

    def __init__(self, loop: asyncio.AbstractEventLoop, notify: Any) -> None:
        self.loop = loop
        self.notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = event.dest_path if event.event_type == "moved" else event.src_path
        if not is_change(event.event_type, event.is_directory, os.fsdecode(path)):
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self.loop.call_soon_threadsafe(self.notify)


class SyncService:
    """csync2 on a schedule, on file changes, on request and when peers come back.

    A task of the daemon (``run`` until cancelled, then ``close``) that publishes the
    ``sync`` check, a ``snapshot`` and metric families (``collect``)."""

    name = "sync"

    def __init__(self, cfg: SyncConfig, node: str, data_dir: Path, registry: CheckRegistry,
                 clock: Clock = SYSTEM_CLOCK, gossip: bool = False,
                 runner: Csync2Runner | None = None) -> None:
        self.registry = registry
        self.clock = clock
        self.cfg = cfg
        self.node = node
        self.enabled = cfg.enabled
        self.state_path = data_dir / STATE_FILE
        peers = [p for p in cfg.peers if p != node]
        settings = ScheduleSettings(interval=cfg.interval, debounce=cfg.debounce, debounce_max=cfg.debounce_max,
                                    retry_initial=cfg.retry_initial, retry_max=cfg.retry_max)
        self.core = SyncSchedule(clock, settings, peers, dynamic=gossip and not cfg.peers)
        self.runner = runner or Csync2Runner(cfg.command, port=cfg.port, timeout=cfg.timeout,
                                             probe_timeout=cfg.probe_timeout, trace=_trace,
                                             check_marker=data_dir / CHECK_MARKER)
        self.conflicts = ConflictLog(node, cfg.csync2_host(node))
        self.ties = TieBudget()  # same-second ties this node looks at (and forces, if its name is first)
        self.no_backups: list[str] = []  # csync2 groups of this host that keep no overwritten file
        self.csync2_cfg: str | None = None  # the csync2.cfg read, if any
        self.events = 0  # file events seen
        self.watch_errors: dict[str, str] = {}
        self._observer: BaseObserver | None = None
        self._watched: set[str] = set()
        self._wake: asyncio.Event | None = None
        self._waiting: list[asyncio.Future[dict[str, Any]]] = []  # requests for the next run
        self._members: dict[str, str] = {}
        self._hist = [0] * (len(DURATION_BUCKETS) + 1)
        self._hist_sum = 0.0
        self._last: RunSummary | None = None
        self._restore()

    # ------------------------------------------------------------------ inputs

    def set_members(self, members: Mapping[str, str]) -> None:
        """Gossip's statuses of the other members (the daemon calls this on every tick)."""
        view = {k: v for k, v in members.items() if k != self.node}
        if view == self._members:
            return
        self._members = view
        self.core.set_members(view)
        self._poke()

    async def sync_now(self) -> dict[str, Any]:
        """Run now (after the run that is going, if any); answer with what each peer got."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        self.core.request()
        self._poke()
        return await fut

    def _file_changed(self) -> None:
        self.events += 1
        self.core.file_changed()
        self._poke()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        self._wake = asyncio.Event()
        self._publish()
        if not self.enabled:
            log.info("sync_disabled")
            while True:
                await asyncio.sleep(HEALTH_EVERY_S)
                self._publish()
        self._watch()
        await self._read_csync2_cfg()
        health = asyncio.create_task(self._health_loop(), name="sync-health")
        try:
            pending = await self.runner.pending()  # rebuilt from csync2's database
            if pending is not None:
                self.core.set_pending(self._by_node(pending))
            while True:
                self._wake.clear()
                plan = self.core.start_run()
                if plan is None:
                    at = self.core.wake_at()
                    delay = None if at is None else max(0.0, at - self.clock.monotonic())
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                    continue
                await self._execute(plan)
        finally:
            health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await health

    async def _execute(self, plan: RunPlan) -> None:
        waiters = self._waiting if plan.manual else []
        if plan.manual:
            self._waiting = []
        log.info("sync_run_started", run=plan.id, peers=list(plan.peers), down=list(plan.down),
                 reasons=list(plan.reasons))
        results: dict[str, PeerResult] = {}
        pending: dict[str, int] | None = None
        summary: RunSummary | None = None
        try:
            hosts = {p: self.cfg.csync2_host(p) for p in plan.peers}
            probes = await asyncio.gather(*(self.runner.probe(hosts[p]) for p in plan.peers))
            for peer, pr in zip(plan.peers, probes, strict=True):
                if not pr.ok:
                    results[peer] = PeerResult(pr.outcome, pr.detail)
            if plan.peers:
                await self._let_incoming_finish()
                if self.runner.interrupted():
                    log.warning("sync_check_interrupted", run=plan.id,
                                action="csync2 -mr /: every peer compares every file once")
                problem = await self.runner.check()
                if problem is not None:
                    log.error("sync_check_failed", run=plan.id, error=problem)
                    for peer in plan.peers:
                        results.setdefault(peer, PeerResult(Outcome.ERROR, problem))
            for peer in plan.peers:
                if peer in results:
                    continue
                results[peer], took = await self.runner.sync(hosts[peer])
                self._note_conflicts(peer, hosts[peer], results[peer])
                if results[peer].lost_age:
                    results[peer] = await self._settle_ties(peer, hosts[peer], results[peer])
                log.debug("sync_peer_run", peer=peer, outcome=results[peer].outcome.value, duration_s=round(took, 3))
            if plan.peers:
                got = await self.runner.pending()
                pending = self._by_node(got) if got is not None else None
        except Exception as e:  # a bug here must not stop syncing for good
            log.exception("sync_run_crashed", run=plan.id)
            for peer in plan.peers:
                results.setdefault(peer, PeerResult(Outcome.ERROR, f"haflowd: {type(e).__name__}: {e}"))
        finally:
            before = {n: p.state for n, p in self.core.peers.items()}
            summary = self.core.finish_run(results, pending)
            self._last = summary
            self._observe(summary.duration)
            self._log_run(summary, before)
            self._publish()
            body = self._run_body(summary)
            for fut in waiters:
                if not fut.done():
                    fut.set_result(body)
        await self._save()

    def _note_conflicts(self, peer: str, host: str, r: PeerResult) -> None:
        new, done = self.conflicts.observe(peer, host, self.clock.wall(), won=r.resolved, open_=r.conflicts,
                                           reached=r.outcome in (Outcome.SYNCED, Outcome.CONFLICT),
                                           removals=r.removals)
        for c in new:
            where = c.kept_at or ("unknown: csync2.cfg was not read" if self.conflicts.layout is None
                                  else "nowhere: csync2 keeps no backup (set backup-directory in csync2.cfg)")
            if c.rule == REMOVAL_RULE:
                where = "nothing to keep: deleted here, changed on the peer; the change comes back (delete it again)"
            log.warning("sync_conflict", file=c.path or c.file, peer=peer, winner=c.winner, loser=c.loser,
                        kept_on=c.kept_on, kept_at=where, resolved=c.resolved, rule=c.rule)
        for c in done:
            log.info("sync_conflict_resolved", file=c.path or c.file, peer=peer, winner=c.winner,
                     kept_on=c.kept_on, kept_at=c.kept_at, rule=c.rule)
        self.ties.forget((peer, c.file) for c in done)

    async def _settle_ties(self, peer: str, host: str, r: PeerResult) -> PeerResult:
        """Files that lost csync2's younger/older test against ``peer``: a tie (the same
        mtime second on both) is settled by the node whose csync2 host name sorts first,
        which forces its version and updates the peer again; the other node waits for it.
        A real younger/older loss is left to csync2 (the peer's update wins). Bounded per
        file by :class:`TieBudget`. Returns the result of the last update to ``peer``."""
        if not self.runner.command.splittable:
            return r  # a wrapper script: haflowd cannot ask csync2 for mtimes or force a file
        me, now = self.conflicts.host, self.clock.monotonic()
        forced: list[str] = []
        for name in r.lost_age[:TIE_MAX_PER_RUN]:
            key = (peer, name)
            path = self.conflicts.path_of(name)
            if path is None or self.conflicts.open_entry(peer, name) is None or not self.ties.due(key, now):
                continue
            local = await asyncio.to_thread(_mtime, path)
            remote = await self.runner.peer_mtime(me, host, name, path)
            verdict = decide_tie(me, host, local, remote)
            if verdict.action == TieAction.UNKNOWN:
                if self.ties.failed(key, now):
                    log.error("sync_conflict_tie_gave_up", file=path, peer=peer,
                              error="could not read both mtimes; settle it by hand (touch the version to keep)")
                if remote is None:
                    break  # the peer did not answer for this file: not for the next ones either, this run
                continue
            self.ties.decided(key, verdict.action)
            if verdict.action == TieAction.NOT_A_TIE:
                continue
            winner = self.node if verdict.action == TieAction.FORCE else peer
            c = self.conflicts.tie(peer, host, name, winner)
            if verdict.action == TieAction.WAIT:
                log.warning("sync_conflict_tie", file=path, peer=peer, winner=peer, mtime=local,
                            action=f"same mtime second on both: {host} sorts first and forces its version; "
                                   f"this one is then kept at {c.kept_at if c else None}")
                continue
            problem = await self.runner.force(path)
            if problem is not None:
                log.warning("sync_conflict_tie_force_failed", file=path, peer=peer, error=problem)
                if self.ties.failed(key, now):
                    log.error("sync_conflict_tie_gave_up", file=path, peer=peer, error=problem)
                continue
            forced.append(name)
        if not forced:
            return r
        again, _ = await self.runner.sync(host)
        wall = self.clock.wall()
        for name in forced:
            path = self.conflicts.path_of(name) or name
            with contextlib.suppress(OSError):
                await self.runner.unforce(name, path)  # the other peers keep csync2's own rule
            if again.outcome in SUCCESS and name not in again.conflicts:
                c = self.conflicts.settle(peer, name, wall)
                self.ties.forget([(peer, name)])
                log.warning("sync_conflict_tie_settled", file=path, peer=peer, winner=self.node, loser=peer,
                            rule=c.rule if c else None, kept_on=peer, kept_at=c.kept_at if c else None,
                            detail="both versions had the same mtime second (csync2 could not decide); "
                                   "this node's csync2 name sorts first, its version was forced")
            elif self.ties.failed((peer, name), self.clock.monotonic()):
                log.error("sync_conflict_tie_gave_up", file=path, peer=peer,
                          error=f"the forced update did not settle it: {again.detail}; settle it by hand "
                                "(touch the version to keep)")
        self._note_conflicts(peer, host, again)
        return PeerResult(again.outcome, again.detail, again.conflicts, r.resolved + again.resolved, again.lost_age,
                          again.removals)

    async def _read_csync2_cfg(self) -> None:
        """Where csync2 keeps the versions it overwrites (for the conflicts' ``kept_at``),
        and a warning if it keeps none. A command that is not csync2 itself is not read."""
        if not self.runner.command.splittable:
            return
        env = self.runner.env if self.runner.env is not None else os.environ
        path = csync2_cfg_path(self.runner.command.options(), env)
        try:
            text = await asyncio.to_thread(Path(path).read_text, errors="replace")
        except OSError as e:
            log.info("sync_csync2_config_unread", path=path, error=e.strerror or str(e))
            return
        layout: Csync2Layout = parse_csync2_cfg(text)
        self.csync2_cfg = path
        self.conflicts.layout = layout
        host = self.runner.command.option("-N") or self.cfg.csync2_host(self.node)  # csync2's name for itself
        self.conflicts.host = host
        self.no_backups = layout.without_backups(host)
        if self.no_backups:
            log.warning("sync_no_backups", path=path, groups=self.no_backups,
                        error="csync2 keeps no copy of the files it overwrites: a conflict would lose a version; "
                              "set backup-directory (and backup-generations >= 2) in each group")

    async def _let_incoming_finish(self) -> None:
        """Wait (up to ``debounce_max``) while a peer is pushing files to this node: a check
        in the middle of an incoming transfer sees half-written files as local changes and
        fights the sender over them (and both crawl on csync2's database lock). Sessions
        from peers known to be away (a link cut mid-transfer leaves them open) are not
        waited for."""
        away: set[str] = set()
        for name, p in self.core.peers.items():
            if p.state != OK:
                away |= self.runner.addresses.get(self.cfg.csync2_host(name), set())
        deadline = self.clock.monotonic() + self.cfg.debounce_max
        t0 = self.clock.monotonic()
        while self.clock.monotonic() < deadline:
            busy = [a for a in await self.runner.incoming() if a not in away]
            if not busy:
                break
            await asyncio.sleep(INCOMING_POLL_S)
        if self.clock.monotonic() - t0 >= INCOMING_POLL_S:
            log.debug("sync_waited_for_incoming", waited_s=round(self.clock.monotonic() - t0, 3))

    def _by_node(self, per_host: Mapping[str, int]) -> dict[str, int]:
        return {n: per_host.get(self.cfg.csync2_host(n), 0) for n in self.core.peers}

    def _log_run(self, s: RunSummary, before: Mapping[str, str]) -> None:
        log.info("sync_run", run=s.plan.id, result=s.result, duration_s=round(s.duration, 3),
                 reasons=list(s.plan.reasons),
                 peers={n: r.outcome.value for n, r in s.results.items()})
        for name, p in self.core.peers.items():
            if before.get(name) != p.state:
                level = log.info if p.state == OK else log.warning
                level("sync_peer_state", peer=name, old=before.get(name), new=p.state, attempts=p.attempts,
                      error=p.last_error, next_retry=p.to_json(self.clock)["next_retry"])
                if p.state == "failing" or (p.state == OK and before.get(name) == "failing"):
                    events.emit(f"sync-peer-{p.state}", name, {"old": before.get(name), "attempts": p.attempts,
                                                               "error": p.last_error})

    def _observe(self, duration: float) -> None:
        self._hist_sum += duration
        for i, le in enumerate(DURATION_BUCKETS):
            if duration <= le:
                self._hist[i] += 1
                return
        self._hist[-1] += 1

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_EVERY_S)
            self._watch()  # a watched folder that was missing may exist now
            self._publish()

    def _publish(self) -> None:
        if not self.enabled:
            self.registry.set(self.name, Status.PASSING, "sync disabled ([sync] enabled = false)",
                              interval=HEALTH_EVERY_S * 5)
            return
        status, output = self.core.health(self.cfg.warn_after, self.cfg.critical_after)
        extra: list[str] = []
        if self.watch_errors:
            extra += [f"cannot watch {p}: {e}" for p, e in sorted(self.watch_errors.items())]
        if self.no_backups:
            extra.append(f"csync2 keeps no backups (group {', '.join(self.no_backups)} in {self.csync2_cfg} has no "
                         f"backup-directory): a conflict would lose a version")
        if extra:
            status = max(status, Status.WARNING)
            output = "; ".join(extra + ([output] if output else []))
        self.registry.set(self.name, status, output, interval=HEALTH_EVERY_S * 5)

    # ------------------------------------------------------------------ watching

    def _watch(self) -> None:
        """Watch every configured folder that exists; a missing one is retried each second."""
        if not self.enabled or not self.cfg.watch:
            return
        missing = [p for p in self.cfg.watch if str(p) not in self._watched]
        if not missing:
            return
        if self._observer is None:
            self._observer = Observer()
            self._observer.daemon = True
            self._observer.start()
        handler = _Changes(asyncio.get_running_loop(), self._file_changed)
        for path in missing:
            key = str(path)
            try:
                if not path.is_dir():
                    raise FileNotFoundError(os.strerror(2))
                self._observer.schedule(handler, key, recursive=True)
            except OSError as e:
                if self.watch_errors.get(key) is None:
                    log.warning("sync_watch_failed", path=key, error=e.strerror or str(e))
                self.watch_errors[key] = e.strerror or str(e)
                continue
            self._watched.add(key)
            if self.watch_errors.pop(key, None) is not None:
                log.info("sync_watching", path=key)
                self._file_changed()  # it appeared: whatever is in it is news

    # ------------------------------------------------------------------ state on disk

    def _restore(self) -> None:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warning("sync_state_unreadable", path=str(self.state_path), error=str(e))
            return
        if isinstance(data, dict):
            self.core.restore(data)
            self.conflicts.restore(data.get("conflicts"))

    async def _save(self) -> None:
        data = json.dumps({**self.core.to_state(), "conflicts": self.conflicts.to_state()}, indent=1)
        try:
            await asyncio.to_thread(_write_atomic, self.state_path, data)
        except OSError as e:
            log.error("sync_state_write_failed", path=str(self.state_path), error=e.strerror or str(e))

    async def close(self) -> None:
        for fut in self._waiting:
            if not fut.done():
                fut.set_result({"ok": False, "error": "haflowd is stopping; the sync did not run"})
        self._waiting = []
        if self._observer is not None:
            obs, self._observer = self._observer, None
            obs.stop()
            await asyncio.to_thread(obs.join, 2.0)
        if self.enabled:
            await self._save()

    # ------------------------------------------------------------------ views

    def peers_json(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name in sorted(self.core.peers):
            p = self.core.peers[name].to_json(self.clock)
            p["host"] = self.cfg.csync2_host(name)
            if not self.enabled:
                p["state"] = SKIPPED
            out[name] = p
        return out

    def snapshot(self) -> dict[str, Any]:
        """``GET /sync`` (always 200) and ``/status``'s ``sync``."""
        c = self.core
        at = c.wake_at()
        return {
            "enabled": self.enabled,
            "node": self.node,
            "running": c.running is not None,
            "last_run": c.last_run,
            "last_success": c.last_success,
            "last_result": c.last_result,
            "last_duration_s": round(c.last_duration, 3) if c.last_duration is not None else None,
            "next_run": (round(self.clock.wall() + max(0.0, at - self.clock.monotonic()), 3)
                         if at is not None and self.enabled else None),
            "runs": dict(c.runs),
            "runs_total": sum(c.runs.values()),
            "file_events": self.events,
            "watch": [str(p) for p in self.cfg.watch],
            "watch_errors": dict(self.watch_errors),
            "conflicts": self.conflicts_json(),
            "peers": self.peers_json(),
            "checked_at": self.clock.wall(),
        }

    def conflicts_json(self) -> list[dict[str, Any]]:
        """The conflict log (oldest first), and any file csync2 still reports in conflict
        that the log does not hold (a state file from an older haflowd)."""
        out = [c.to_json() for c in self.conflicts.items]
        logged = {(c.peer, c.file) for c in self.conflicts.items if not c.resolved}
        for name, p in sorted(self.core.peers.items()):
            out += [{"peer": name, "file": f, "resolved": False} for f in p.conflicts if (name, f) not in logged]
        return out

    def _run_body(self, s: RunSummary) -> dict[str, Any]:
        """POST /sync's answer: when it ran, and what each peer got."""
        peers = self.peers_json()
        for name, p in peers.items():
            r = s.results.get(name)
            if r is not None:
                p["outcome"], p["detail"] = r.outcome.value, r.detail
            elif name in s.plan.down:
                p["outcome"], p["detail"] = Outcome.DOWN.value, p["last_error"]
            else:
                p["outcome"], p["detail"] = "not tried", "waiting for its retry"
        return {
            "ok": s.result in ("ok", "conflict"),
            "result": s.result,
            "run": s.plan.id,
            "reasons": list(s.plan.reasons),
            "started_at": s.plan.started_at,
            "finished_at": s.finished_at,
            "duration_s": round(s.duration, 3),
            "peers": peers,
        }

    def collect(self) -> Iterator[Metric]:
        c = self.core
        runs = CounterMetricFamily("haflowd_sync_runs", "csync2 runs by result", labels=["result"])
        for result in RUN_RESULTS:
            runs.add_metric([result], c.runs[result])
        yield runs
        buckets: list[tuple[str, float]] = []
        acc = 0
        for le, n in zip(DURATION_BUCKETS, self._hist, strict=False):
            acc += n
            buckets.append((_le(le), acc))
        buckets.append(("+Inf", acc + self._hist[-1]))
        hist = HistogramMetricFamily("haflowd_sync_duration_seconds", "duration of a sync run (all its peers)")
        hist.add_metric([], buckets, sum_value=self._hist_sum)
        yield hist
        last = GaugeMetricFamily("haflowd_sync_peer_last_success_timestamp_seconds",
                                 "when the peer was last synced (0: never)", labels=["peer"])
        pending = GaugeMetricFamily("haflowd_sync_peer_pending_files", "files csync2 still has to send to the peer",
                                    labels=["peer"])
        pending_old = GaugeMetricFamily("haflowd_sync_peer_pending", "DEPRECATED, removed in the next release: "
                                        "use haflowd_sync_peer_pending_files", labels=["peer"])
        state = GaugeMetricFamily("haflowd_sync_peer_state", "1 for the peer's current sync state",
                                  labels=["peer", "state"])
        attempts = GaugeMetricFamily("haflowd_sync_peer_attempts", "unsuccessful attempts since the last success",
                                     labels=["peer"])
        peers = self.peers_json()
        for name, p in peers.items():
            last.add_metric([name], p["last_success"] or 0)
            pending.add_metric([name], p["pending_files"] or 0)
            pending_old.add_metric([name], p["pending_files"] or 0)
            attempts.add_metric([name], p["attempts"])
            for s in PEER_STATES:
                state.add_metric([name, s], 1 if p["state"] == s else 0)
        yield from (last, pending, pending_old, state, attempts)
        running = GaugeMetricFamily("haflowd_sync_running", "1 while csync2 runs")
        running.add_metric([], 1 if c.running is not None else 0)
        yield running
        in_conflict = sum(len(p.conflicts) for p in c.peers.values())
        conflicts = GaugeMetricFamily("haflowd_sync_conflicts_files", "files csync2 reported in conflict")
        conflicts.add_metric([], in_conflict)
        conflicts_old = GaugeMetricFamily("haflowd_sync_conflicts", "DEPRECATED, removed in the next release: "
                                          "use haflowd_sync_conflicts_files")
        conflicts_old.add_metric([], in_conflict)
        yield from (conflicts, conflicts_old)
        resolved = CounterMetricFamily("haflowd_sync_conflicts_resolved",
                                       "conflicts settled since start: one version replaced the other "
                                       "(the other is in csync2's backup-directory; see GET /sync)")
        resolved.add_metric([], self.conflicts.resolved_total)
        yield resolved


def _trace(what: str, line: str) -> None:
    log.debug("csync2_output", what=what, line=line)


def _mtime(path: str) -> int | None:
    try:
        return int(os.lstat(path).st_mtime)
    except OSError:
        return None


def _le(x: float) -> str:
    return repr(float(x))


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
