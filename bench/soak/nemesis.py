"""The nemesis: a seeded plan of faults in four lanes that run side by side, and the hand
that carries it out.

Lanes: ``net`` (partitions 2+1 and 1+1+1, one-way partitions, packet loss, a tbf rate
limit, conflicting writes during a 2+1 partition), ``proc`` (SIGSTOP of a daemon, kill -9
and restart of a daemon, of a guard, of a child), ``disk`` (a full data_dir) and
``clock`` (a forward step of one node's clock). Within a lane faults come one at a time
with a recovery gap after each; across lanes they overlap. Each lane draws from its own
``random.Random(f"{seed}:{lane}")``, so one seed is one plan. The plan is pure (no I/O):
:func:`plan` returns it; :class:`Nemesis` runs it and logs what happened when.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.common import BenchError, log

NODES = ("n1", "n2", "n3")
WARMUP_S = 10.0
NET_KINDS = ("part21", "part111", "oneway", "loss", "tbf", "conflict")
PROC_KINDS = ("sigstop", "kill_daemon", "kill_guard", "kill_child")
ORPHAN_GRACE_S = 10.0
MAX_CLOCK_OFFSET_S = 25.0  # below gossip's 30 s signature window: a bigger step is a partition by design
COMPONENTS = ("sleeper", "forker", "shell")
# the one daemon never killed (every other fault hits it): its RSS, fds and threads are
# watched over the whole run, one process from minute 2 to the end
WITNESS = "n1"


@dataclass
class Fault:
    id: int
    lane: str
    kind: str
    at: float  # planned start, seconds after the campaign's start
    hold: float  # planned duration (0: instantaneous)
    params: dict[str, Any]
    gap: float  # recovery gap after it
    # filled in when it runs (host wall clock, UNIX seconds)
    start: float | None = None
    end: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def as_json(self, t0: float) -> dict[str, Any]:
        return {"id": self.id, "lane": self.lane, "kind": self.kind, "params": self.params,
                "planned_at_s": round(self.at, 2), "planned_hold_s": round(self.hold, 2),
                "start_s": None if self.start is None else round(self.start - t0, 3),
                "end_s": None if self.end is None else round(self.end - t0, 3), "notes": self.notes}


def _cycle(rng: random.Random, kinds: tuple[str, ...]) -> Callable[[], str]:
    """Every kind once, in a shuffled order, before any comes again: a short run still sees them all."""
    bag: list[str] = []

    def nxt() -> str:
        if not bag:
            bag.extend(kinds)
            rng.shuffle(bag)
        return bag.pop()
    return nxt


def _net(rng: random.Random, kind: str) -> tuple[float, dict[str, Any]]:
    nodes = list(NODES)
    rng.shuffle(nodes)
    # some partitions outlast what an isolated node needs (Lifeguard slows it down): see invariants.Timing
    if kind == "part21":
        return rng.uniform(5, 25), {"groups": [sorted(nodes[:2]), [nodes[2]]]}
    if kind == "conflict":  # the two edits `gap_s` apart: within one second of each other, or not
        return rng.uniform(5, 12), {"groups": [sorted(nodes[:2]), [nodes[2]]], "gap_s": round(rng.uniform(0.2, 2.5), 2)}
    if kind == "part111":
        return rng.uniform(6, 25), {"groups": [[n] for n in sorted(nodes)]}
    if kind == "oneway":  # what `src` sends `dst` is lost; the other way works
        return rng.uniform(5, 12), {"src": nodes[0], "dst": nodes[1]}
    if kind == "loss":
        return rng.uniform(8, 20), {"node": nodes[0], "percent": rng.randint(5, 20),
                                    "direction": rng.choice(("in", "out", "both"))}
    if kind == "tbf":
        # queueing delay up to `latency` (kept under gossip's 150 ms probe timeout: a delay, not a cut)
        return rng.uniform(8, 20), {"node": nodes[0], "rate": rng.choice(("128kbit", "256kbit", "512kbit")),
                                    "latency": rng.choice(("50ms", "100ms"))}
    raise ValueError(kind)


def _proc(rng: random.Random, kind: str) -> tuple[float, dict[str, Any]]:
    if kind == "kill_daemon":  # down this long, then started again; never the witness
        return rng.uniform(4, 8), {"node": rng.choice([n for n in NODES if n != WITNESS])}
    node = rng.choice(NODES)
    if kind == "sigstop":
        return rng.uniform(1, 5), {"node": node}
    return 0.0, {"node": node, "component": rng.choice(COMPONENTS)}


def plan(seed: int, duration_s: float, clock_node: str | None) -> list[Fault]:
    """The whole campaign's faults, each over before ``duration_s``; pure and deterministic."""
    faults: list[Fault] = []

    def lane(name: str, make: Callable[[random.Random], tuple[str, float, dict[str, Any]]],
             gap: tuple[float, float], first: float) -> None:
        rng = random.Random(f"{seed}:{name}")
        t = first + rng.uniform(0, 5)
        for _ in range(10_000):
            kind, hold, params = make(rng)
            g = rng.uniform(*gap)
            if not kind or t + hold + 2 > duration_s:
                break
            faults.append(Fault(0, name, kind, t, hold, params, g))
            t += hold + g

    net_next = _cycle(random.Random(f"{seed}:net-order"), NET_KINDS)
    proc_next = _cycle(random.Random(f"{seed}:proc-order"), PROC_KINDS)

    def net(rng: random.Random) -> tuple[str, float, dict[str, Any]]:
        k = net_next()
        return (k, *_net(rng, k))

    def proc(rng: random.Random) -> tuple[str, float, dict[str, Any]]:
        k = proc_next()
        return (k, *_proc(rng, k))

    def disk(rng: random.Random) -> tuple[str, float, dict[str, Any]]:
        return "disk_full", rng.uniform(5, 15), {"node": rng.choice(NODES)}

    offset = [0.0]

    def clock(rng: random.Random) -> tuple[str, float, dict[str, Any]]:
        step = round(rng.uniform(3, 8), 1)
        if clock_node is None or offset[0] + step > MAX_CLOCK_OFFSET_S:
            return "", 0.0, {}
        offset[0] += step
        return "clock_step", 0.0, {"node": clock_node, "seconds": step}

    lane("net", net, (3, 10), WARMUP_S)
    lane("proc", proc, (4, 12), WARMUP_S + 3)
    lane("disk", disk, (20, 60), WARMUP_S + 15)
    lane("clock", clock, (30, 90), WARMUP_S + 25)
    faults.sort(key=lambda f: (f.at, f.lane))
    for i, f in enumerate(faults, start=1):
        f.id = i
    return faults


class Nemesis:
    """Runs a plan, one thread per lane; every fault is undone in a ``finally``."""

    def __init__(self, cluster: Any, faults: list[Fault], t0: float, stop: threading.Event,
                 on_event: Callable[[str, dict[str, Any]], None], writers: Any) -> None:
        self.c = cluster
        self.faults = faults
        self.t0 = t0
        self.stop = stop
        self.on_event = on_event
        self.writers = writers
        self.threads: list[threading.Thread] = []
        self.errors: list[str] = []
        self.last_components: Callable[[str], list[dict[str, Any]]] = lambda _n: []

    def start(self) -> None:
        for lane in ("net", "proc", "disk", "clock"):
            todo = [f for f in self.faults if f.lane == lane]
            t = threading.Thread(target=self._lane, args=(lane, todo), name=f"nemesis-{lane}", daemon=True)
            t.start()
            self.threads.append(t)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def _lane(self, lane: str, todo: list[Fault]) -> None:
        for f in todo:
            wait = self.t0 + f.at - time.time()
            if wait > 0 and self.stop.wait(wait):
                return
            if self.stop.is_set():
                return
            log(f"fault {f.id} {f.kind} {f.params} for {f.hold:.1f}s")
            try:
                getattr(self, f"_do_{f.kind}")(f)
            except (BenchError, OSError) as e:
                f.notes["error"] = str(e)
                self.errors.append(f"fault {f.id} {f.kind}: {e}")
                log(f"fault {f.id} {f.kind} failed: {e}")
            finally:
                if f.start is not None and f.end is None:
                    f.end = time.time()

    def _hold(self, f: Fault) -> None:
        self.stop.wait(f.hold)

    # ------------------------------------------------------------------ net

    def _partition(self, f: Fault, groups: list[list[str]]) -> None:
        f.start = time.time()
        try:
            for g in groups:
                others = [n for n in NODES if n not in g]
                for n in g:
                    if others:
                        self.c.drop_from(n, others)
            if f.kind == "conflict":
                self._during_partition(f)
            else:
                self._hold(f)
        finally:
            for n in NODES:
                self.c.heal_table(n, "soak_part")
            f.end = time.time()

    def _do_part21(self, f: Fault) -> None:
        self._partition(f, f.params["groups"])

    def _do_part111(self, f: Fault) -> None:
        self._partition(f, f.params["groups"])

    def _do_conflict(self, f: Fault) -> None:
        """A file every node has, then a 2+1 partition, then a different edit of it on each side."""
        rel = f"conflict_{f.id:03d}.py"
        a, b = f.params["groups"][0][0], f.params["groups"][1][0]
        base = self.writers.write_conflict_base(a, rel, f.id)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not self.stop.is_set():
            if all(self.writers.read(n, rel) == base for n in NODES):
                break
            time.sleep(0.2)
        else:
            f.notes["base_not_everywhere"] = True
        f.params = {**f.params, "file": rel, "writers": [a, b]}
        self._partition(f, f.params["groups"])

    def _during_partition(self, f: Fault) -> None:
        rel, (a, b) = f.params["file"], f.params["writers"]
        self.stop.wait(min(1.5, f.hold / 3))
        gap = f.params["gap_s"]
        f.notes["versions"] = {a: self.writers.write_conflict(a, rel, f.id, "a")}
        self.stop.wait(gap)
        f.notes["versions"][b] = self.writers.write_conflict(b, rel, f.id, "b")
        self.stop.wait(max(0.0, f.hold - min(1.5, f.hold / 3) - gap))

    def _do_oneway(self, f: Fault) -> None:
        f.start = time.time()
        try:
            self.c.drop_from(f.params["dst"], [f.params["src"]])
            self._hold(f)
        finally:
            self.c.heal_table(f.params["dst"], "soak_part")
            f.end = time.time()

    def _do_loss(self, f: Fault) -> None:
        p = f.params
        f.start = time.time()
        try:
            self.c.loss(p["node"], p["percent"], p["direction"])
            self._hold(f)
        finally:
            self.c.heal_table(p["node"], "soak_loss")
            f.end = time.time()

    def _do_tbf(self, f: Fault) -> None:
        p = f.params
        f.start = time.time()
        try:
            self.c.rate_limit(p["node"], p["rate"], p["latency"])
            self._hold(f)
        finally:
            self.c.rate_unlimit(p["node"])
            f.end = time.time()

    # ------------------------------------------------------------------ proc

    def _do_sigstop(self, f: Fault) -> None:
        n = f.params["node"]
        if self.c.pid(n) is None:
            f.notes["skipped"] = "daemon not running"
            return
        f.start = time.time()
        try:
            self.c.signal_daemon(n, signal.SIGSTOP)
            self._hold(f)
        finally:
            self.c.signal_daemon(n, signal.SIGCONT)
            f.end = time.time()

    def _do_kill_daemon(self, f: Fault) -> None:
        n = f.params["node"]
        f.notes["old_pid"] = self.c.pid(n)
        f.start = time.time()
        self.c.kill_daemon(n)
        self._hold(f)
        if self.stop.is_set():
            f.end = time.time()
            return
        f.notes["restarted_at"] = time.time()
        f.end = self.c.start_daemon(n)
        f.notes["new_pid"] = self.c.pid(n)
        f.notes["orphans"] = self.on_orphan_check(f)

    def _do_kill_guard(self, f: Fault) -> None:
        self._kill_component(f, "guard_pid")

    def _do_kill_child(self, f: Fault) -> None:
        self._kill_component(f, "pid")

    def _kill_component(self, f: Fault, key: str) -> None:
        n, comp = f.params["node"], f.params["component"]
        c = next((c for c in self.last_components(n) if c.get("name") == comp), None)
        pid = c.get(key) if c else None
        tree = self.c.tree(n)
        if not isinstance(pid, int) or pid not in tree:
            f.notes["skipped"] = f"no live {key} for {comp} on {n} (state {c.get('state') if c else None})"
            return
        f.start = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        f.notes["pid"] = pid
        f.end = time.time()
        f.notes["orphans"] = self.on_orphan_check(f)

    def on_orphan_check(self, f: Fault) -> list[dict[str, Any]]:
        """Orphans that outlive a grace period after the fault (the restarted daemon sweeps them)."""
        deadline = time.monotonic() + ORPHAN_GRACE_S
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not self.stop.is_set():
            found = self.c.orphans()
            if not found:
                return []
            time.sleep(0.5)
        if found:
            self.on_event("orphans", {"fault": f.id, "kind": f.kind, "orphans": found})
        return found

    # ------------------------------------------------------------------ disk, clock

    def _do_disk_full(self, f: Fault) -> None:
        n = f.params["node"]
        f.start = time.time()
        try:
            self.c.fill_data_dir(n)
            self._hold(f)
        finally:
            self.c.free_data_dir(n)
            f.end = time.time()

    def _do_clock_step(self, f: Fault) -> None:
        f.start = time.time()
        self.c.step_clock(f.params["seconds"])
        f.notes["offset_after_s"] = self.c.clock_offset
        f.end = f.start

