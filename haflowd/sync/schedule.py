"""When to run csync2, and against whom: a pure core, no I/O.

Triggers go in with the time (from the injected clock); decisions come out: a
:class:`RunPlan` ("run now against these peers") from :meth:`SyncSchedule.start_run`,
or the next time anything is due from :meth:`SyncSchedule.wake_at`. The service
executes a plan and reports each peer's :class:`PeerResult` to
:meth:`SyncSchedule.finish_run`.

- **One run at a time.** A trigger during a run only marks work as due; when the run
  ends, everything that came due is one follow-up run.
- **File changes are debounced**: a run starts once the folders have been quiet for
  ``debounce``, and at the latest ``debounce_max`` after the first change.
- **The schedule** fires every ``interval`` ±10 %, counted from the last run that went
  to every peer, so nodes drift apart instead of running in lockstep.
- **Each peer has its own state.** A failure sets the peer aside with exponential
  backoff and jitter (``retry_initial`` doubling to ``retry_max``); while it waits, the
  other peers keep syncing on every trigger; when its retry comes due it is run on its
  own. A peer that gossip says is dead or left is not tried at all (``pending``);
  when gossip says it is alive again it is retried at once.
- **Work left for a peer that was not in a run** (``csync2 -M`` counts files for it: a
  peer's conflicting update made csync2 mark a file dirty again here) is run at once,
  not at the next schedule, so a settled conflict reaches every peer.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from haflowd.clock import Clock
from haflowd.health import Status

OK, PENDING, FAILING, SKIPPED = "ok", "pending", "failing", "skipped"
PEER_STATES = (OK, PENDING, FAILING, SKIPPED)
RUN_RESULTS = ("ok", "conflict", "partial", "failed", "timeout", "skipped")
JITTER = 0.1
MAX_CONFLICTS = 200  # per peer: enough to name them, bounded whatever csync2 prints

# gossip member statuses (haflowd.gossip.membership), repeated here to keep this module pure
ALIVE, SUSPECT, DEAD, LEFT = "alive", "suspect", "dead", "left"
GONE = (DEAD, LEFT)


class Outcome(StrEnum):
    """What one peer got from one run."""

    SYNCED = "synced"  # csync2 exit 0
    CONFLICT = "conflict"  # reached; some files lost a conflict or are dirty on both sides
    UNREACHABLE = "unreachable"  # the probe got no answer (timeout, no route): the host is away
    REFUSED = "refused"  # the probe was refused: the host is there, its csync2 server is not
    ERROR = "error"  # csync2 ran and failed against it
    TIMEOUT = "timeout"  # csync2 hung and was killed
    DOWN = "down"  # gossip says dead or left: not tried


SUCCESS = (Outcome.SYNCED, Outcome.CONFLICT)
AWAY = (Outcome.UNREACHABLE, Outcome.DOWN)  # -> pending; everything else that is not a success -> failing


@dataclass(frozen=True)
class PeerResult:
    outcome: Outcome
    detail: str | None = None  # csync2's own words, one line
    conflicts: tuple[str, ...] = ()  # still in conflict: lost csync2's auto test, or dirty on both sides
    resolved: tuple[str, ...] = ()  # conflicts this update won: the peer's version was replaced
    lost_age: tuple[str, ...] = ()  # of ``conflicts``: lost csync2's younger/older test (maybe a tie)
    removals: tuple[str, ...] = ()  # of ``conflicts``: deleted here, changed on the peer (the change wins)


@dataclass(frozen=True)
class ScheduleSettings:
    interval: float = 60.0
    debounce: float = 0.5
    debounce_max: float = 5.0
    retry_initial: float = 2.0
    retry_max: float = 300.0
    jitter: float = JITTER


@dataclass(frozen=True)
class RunPlan:
    """Run csync2 now against ``peers``, in this order (peers in good standing first,
    then the retries); ``down`` are the peers gossip says are gone, not tried."""

    id: int
    peers: tuple[str, ...]
    down: tuple[str, ...]
    reasons: tuple[str, ...]
    manual: bool
    full: bool  # a general run (schedule, watch, request, startup), not only retries
    started_mono: float
    started_at: float


@dataclass(frozen=True)
class RunSummary:
    plan: RunPlan
    result: str  # one of RUN_RESULTS
    finished_at: float
    duration: float
    results: Mapping[str, PeerResult]


@dataclass
class PeerSyncState:
    """One peer as this node sees it. Times are wall-clock UNIX seconds except ``retry_at``."""

    name: str
    state: str = PENDING  # not synced yet
    attempts: int = 0  # unsuccessful attempts since the last success
    last_success: float | None = None
    last_attempt: float | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    pending_files: int | None = None
    conflicts: tuple[str, ...] = ()
    since: float = 0.0  # when this node started tracking the peer
    unhealthy_since: float | None = None  # first unsuccessful attempt since the last success
    retry_at: float | None = None  # monotonic; None: no retry of its own is due
    member: str | None = None  # gossip status; None without gossip
    woken: bool = False  # retry_at was set because gossip saw it come back

    def to_json(self, clock: Clock) -> dict[str, Any]:
        next_retry = None
        if self.retry_at is not None:
            next_retry = round(clock.wall() + (self.retry_at - clock.monotonic()), 3)
        return {
            "state": self.state,
            "last_success": self.last_success,
            "attempts": self.attempts,
            "next_retry": next_retry,
            "last_error": self.last_error,
            "pending_files": self.pending_files,
            "last_attempt": self.last_attempt,
            "last_outcome": self.last_outcome,
            "member": self.member,
            "conflicts": list(self.conflicts),
        }


_PERSISTED = ("state", "attempts", "last_success", "last_attempt", "last_outcome", "last_error",
              "pending_files", "since", "unhealthy_since")


class SyncSchedule:
    """Triggers in, decisions out; see the module docstring."""

    def __init__(self, clock: Clock, settings: ScheduleSettings, peers: Sequence[str] = (),
                 dynamic: bool = False, rng: random.Random | None = None) -> None:
        self.clock = clock
        self.s = settings
        self.rng = rng or random.Random()
        self.dynamic = dynamic  # peers come and go with gossip membership
        self.started_at = clock.wall()
        self.peers: dict[str, PeerSyncState] = {}
        for name in peers:
            self._add(name)
        self.running: RunPlan | None = None
        self.last_run: float | None = None
        self.last_success: float | None = None
        self.last_result: str | None = None
        self.last_duration: float | None = None
        self.runs: dict[str, int] = dict.fromkeys(RUN_RESULTS, 0)
        self._next_id = 1
        self._startup = True  # the first run: catch up on whatever changed while we were down
        self._schedule_at = clock.monotonic() + self._jittered(settings.interval)
        self._watch_first: float | None = None
        self._watch_at: float | None = None
        self._manual = False

    # ------------------------------------------------------------------ triggers

    def file_changed(self) -> None:
        """A change under a watched folder (the watcher calls this for every event)."""
        now = self.clock.monotonic()
        if self._watch_first is None:
            self._watch_first = now
        self._watch_at = min(now + self.s.debounce, self._watch_first + self.s.debounce_max)

    def request(self) -> None:
        """Run now, against every peer that is not gone, backoff or not (an operator asked)."""
        self._manual = True

    def set_members(self, statuses: Mapping[str, str]) -> None:
        """Gossip's view of every member (this node excluded): name -> status."""
        now = self.clock.monotonic()
        if self.dynamic:
            for name in statuses:
                if name not in self.peers:
                    new = self._add(name)
                    new.retry_at, new.woken = now, True  # a new member: sync it at once
            for name in [n for n in self.peers if n not in statuses]:
                del self.peers[name]
        for name, status in statuses.items():
            p = self.peers.get(name)
            if p is None or p.member == status:
                continue
            old, p.member = p.member, status
            if status in GONE:
                if p.state != PENDING:
                    p.state = PENDING
                    p.unhealthy_since = p.unhealthy_since or self.clock.wall()
                p.last_error = f"gossip: {status}"
                p.retry_at, p.woken = None, False
            elif old in GONE and (p.state != OK or (p.pending_files or 0) > 0 or p.attempts):
                p.retry_at, p.woken = now, True  # it is back: catch it up now

    # ------------------------------------------------------------------ decisions

    def due(self) -> bool:
        """A general run (every peer in good standing) is due now."""
        now = self.clock.monotonic()
        return (self._manual or self._startup or now >= self._schedule_at
                or (self._watch_at is not None and now >= self._watch_at))

    def wake_at(self) -> float | None:
        """The monotonic time at which :meth:`start_run` next has something to do; None
        while a run is going (its end is the next event)."""
        if self.running is not None:
            return None
        times = [self._schedule_at]
        if self._manual or self._startup:
            times.append(self.clock.monotonic())
        if self._watch_at is not None:
            times.append(self._watch_at)
        times += [p.retry_at for p in self.peers.values() if p.retry_at is not None and p.member not in GONE]
        return min(times)

    def start_run(self) -> RunPlan | None:
        """The run to make now, or None (nothing due, or a run is going)."""
        if self.running is not None:
            return None
        now = self.clock.monotonic()
        general = self.due()
        main: list[str] = []
        retries: list[str] = []
        down: list[str] = []
        reasons: list[str] = []
        for name in sorted(self.peers):
            p = self.peers[name]
            if p.member in GONE:
                if general:
                    down.append(name)
                continue
            if p.retry_at is not None and (self._manual or p.retry_at <= now):
                retries.append(name)
                reason = "alive" if p.woken else "retry"
                if reason not in reasons:
                    reasons.append(reason)
            elif p.retry_at is None and general:
                main.append(name)
        if not general and not retries:
            return None
        if general:
            if self._startup:
                reasons.insert(0, "startup")
            if self._manual:
                reasons.insert(0, "manual")
            if self._watch_at is not None and now >= self._watch_at:
                reasons.insert(0, "watch")
            if now >= self._schedule_at:
                reasons.insert(0, "schedule")
        plan = RunPlan(id=self._next_id, peers=tuple(main + retries), down=tuple(down),
                       reasons=tuple(reasons), manual=self._manual, full=general,
                       started_mono=now, started_at=self.clock.wall())
        self._next_id += 1
        if general:
            self._schedule_at = now + self._jittered(self.s.interval)
            self._startup = self._manual = False
            if self._watch_at is not None and now >= self._watch_at:
                self._watch_first = self._watch_at = None
        for name in retries:
            self.peers[name].retry_at, self.peers[name].woken = None, False
        self.running = plan
        return plan

    def finish_run(self, results: Mapping[str, PeerResult],
                   pending: Mapping[str, int] | None = None) -> RunSummary:
        """Record what each peer got; ``pending`` is csync2 -M's count per peer, if known."""
        plan = self.running
        if plan is None:
            raise RuntimeError("finish_run without a run")
        self.running = None
        now, wall = self.clock.monotonic(), self.clock.wall()
        for name in plan.down:
            p = self.peers.get(name)
            if p is not None and p.member in GONE:
                p.last_outcome = Outcome.DOWN.value
        for name, r in results.items():
            p = self.peers.get(name)
            if p is not None:
                self._apply(p, r, now, wall)
        if pending is not None:
            for name, p in self.peers.items():
                p.pending_files = pending.get(name, 0)
                if (name not in results and p.state == OK and p.retry_at is None and p.member not in GONE
                        and p.pending_files > len(p.conflicts)):
                    p.retry_at = now  # csync2 has work for it that this run did not do: soon, not at the schedule
        result = run_result(results.values())
        self.runs[result] += 1
        self.last_run, self.last_result = wall, result
        self.last_duration = now - plan.started_mono
        if result in ("ok", "conflict"):
            self.last_success = wall
        return RunSummary(plan, result, wall, self.last_duration, dict(results))

    def set_pending(self, pending: Mapping[str, int]) -> None:
        """Pending counts read outside a run (at startup, from csync2's database)."""
        for name, p in self.peers.items():
            p.pending_files = pending.get(name, 0)

    def backoff(self, attempts: int) -> float:
        """The delay before retry number ``attempts`` (1-based): doubling, ±jitter, capped."""
        base = min(self.s.retry_max, self.s.retry_initial * 2.0 ** min(max(attempts - 1, 0), 60))
        return min(self.s.retry_max, self._jittered(base))

    def _apply(self, p: PeerSyncState, r: PeerResult, now: float, wall: float) -> None:
        p.last_attempt, p.last_outcome = wall, r.outcome.value
        if r.outcome in SUCCESS:
            p.state, p.attempts, p.last_success = OK, 0, wall
            p.retry_at, p.woken, p.unhealthy_since = None, False, None
            p.last_error = r.detail if r.outcome == Outcome.CONFLICT else None
            p.conflicts = r.conflicts[:MAX_CONFLICTS]
            return
        p.attempts += 1
        gone = p.member in GONE  # gossip saw it die while csync2 was at it: not a sync failure
        p.state = PENDING if r.outcome in AWAY or gone else FAILING
        p.last_error = r.detail or r.outcome.value
        p.unhealthy_since = p.unhealthy_since or wall
        if p.woken:
            return  # gossip saw it come back during this attempt, which may predate that: retry at once
        p.retry_at = None if r.outcome == Outcome.DOWN or gone else now + self.backoff(p.attempts)

    def _jittered(self, seconds: float) -> float:
        return seconds * (1.0 + self.rng.uniform(-self.s.jitter, self.s.jitter))

    def _add(self, name: str) -> PeerSyncState:
        p = PeerSyncState(name=name, since=self.clock.wall())
        self.peers[name] = p
        return p

    # ------------------------------------------------------------------ health

    def health(self, warn_after: float, critical_after: float) -> tuple[Status, str]:
        """The ``sync`` check: conflicts are a warning; a peer that is not gone and has not
        been synced for ``warn_after`` is a warning, for ``critical_after`` critical."""
        if not self.peers:
            return Status.WARNING, "no peers to sync with: list them in [sync] peers, or configure [gossip]"
        now = self.clock.wall()
        status = Status.PASSING
        problems: list[str] = []
        parts: list[str] = []
        for name in sorted(self.peers):
            p = self.peers[name]
            if p.state == OK:
                parts.append(f"{name} ok")
                continue
            since = p.last_success if p.last_success is not None else p.since
            age = max(0.0, now - since)
            what = f"{name} {p.state}" + (f" ({p.last_error})" if p.last_error else "")
            if p.member in GONE:
                parts.append(what)  # gossip reports a dead or departed node; nothing to add here
                continue
            if age >= critical_after:
                status = Status.CRITICAL
                problems.append(f"{name}: no successful sync for {_age(age)} ({p.state}: {p.last_error or '-'})")
            elif age >= warn_after:
                status = max(status, Status.WARNING)
                problems.append(f"{name}: no successful sync for {_age(age)} ({p.state}: {p.last_error or '-'})")
            else:
                parts.append(what)
        conflicts = [(name, f) for name in sorted(self.peers) for f in self.peers[name].conflicts]
        if conflicts:
            status = max(status, Status.WARNING)
            shown = ", ".join(f"{f} (with {name})" for name, f in conflicts[:10])
            more = f" and {len(conflicts) - 10} more" if len(conflicts) > 10 else ""
            problems.append(f"conflicts: {shown}{more}")
        return status, "; ".join(problems + parts)

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> dict[str, Any]:
        """What survives a restart (wall-clock times only)."""
        peers = {}
        for name, p in self.peers.items():
            d: dict[str, Any] = {k: getattr(p, k) for k in _PERSISTED}
            d["conflicts"] = list(p.conflicts)
            d["next_retry"] = p.to_json(self.clock)["next_retry"]
            peers[name] = d
        return {"version": 1, "last_run": self.last_run, "last_success": self.last_success,
                "last_result": self.last_result, "runs": dict(self.runs), "peers": peers}

    def restore(self, data: Mapping[str, Any]) -> None:
        """Take back :meth:`to_state`'s output; anything malformed is ignored, field by field."""
        for key in ("last_run", "last_success"):
            if _is_time(data.get(key)):
                setattr(self, key, float(data[key]))
        if data.get("last_result") in RUN_RESULTS:
            self.last_result = data["last_result"]
        runs = data.get("runs")
        if isinstance(runs, dict):
            for k, v in runs.items():
                if k in self.runs and isinstance(v, int) and v >= 0:
                    self.runs[k] = v
        peers = data.get("peers")
        if not isinstance(peers, dict):
            return
        now, wall = self.clock.monotonic(), self.clock.wall()
        for name, d in peers.items():
            if not isinstance(d, dict) or not isinstance(name, str):
                continue
            if name not in self.peers:
                if not self.dynamic:
                    continue  # no longer configured
                self._add(name)
            p = self.peers[name]
            if d.get("state") in (OK, PENDING, FAILING):
                p.state = d["state"]
            if isinstance(d.get("attempts"), int) and d["attempts"] >= 0:
                p.attempts = d["attempts"]
            for key in ("last_success", "last_attempt", "unhealthy_since"):
                if _is_time(d.get(key)):
                    setattr(p, key, float(d[key]))
            if _is_time(d.get("since")):
                p.since = min(p.since, float(d["since"]))
            for key in ("last_outcome", "last_error"):
                if isinstance(d.get(key), str):
                    setattr(p, key, d[key])
            if isinstance(d.get("pending_files"), int):
                p.pending_files = d["pending_files"]
            if isinstance(d.get("conflicts"), list):
                p.conflicts = tuple(str(c) for c in d["conflicts"][:MAX_CONFLICTS])
            if _is_time(d.get("next_retry")):
                p.retry_at = now + max(0.0, float(d["next_retry"]) - wall)
            elif p.state != OK and p.attempts:
                p.retry_at = now


def run_result(results: Iterable[PeerResult]) -> str:
    """One word for a run, the label of ``haflowd_sync_runs_total``."""
    outcomes = [r.outcome for r in results if r.outcome != Outcome.DOWN]
    if not outcomes:
        return "skipped"
    if Outcome.TIMEOUT in outcomes:
        return "timeout"
    good = [o for o in outcomes if o in SUCCESS]
    if len(good) == len(outcomes):
        return "conflict" if Outcome.CONFLICT in good else "ok"
    return "partial" if good else "failed"


def _is_time(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v >= 0


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
