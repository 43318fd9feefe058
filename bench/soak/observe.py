"""What the soak watches and does besides faults: pollers (inside each namespace), DAG
writers (one per node, bounded, remembering every version) and the daemons' own logs."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import enter_netns
from bench.soak.cluster import CLOCK_NODE

API_PORT = 8787
POLL_EVERY_S = 1.0
LIVENESS_TIMEOUT_S = 1.0
GET_TIMEOUT_S = 2.0
MAX_FILES_PER_NODE = 30


def _get(path: str, timeout: float) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", API_PORT, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def parse_metrics(text: str) -> dict[str, float]:
    """The daemon's own process gauges and anything about asyncio tasks, by metric name."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if (name.startswith("haflowd_process_") or "asyncio" in name or name.endswith("_tasks")
                or name == "haflowd_gossip_local_health"):
            with contextlib.suppress(ValueError, IndexError):
                out[name] = float(line.rsplit(" ", 1)[1])
    return out


def proc_usage(pid: int) -> dict[str, int] | None:
    """RSS (bytes), open fds and threads from /proc: what the daemon holds, not what it says."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    vals = {}
    for line in status.splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "Threads"):
            vals[k] = int(v.split()[0])
    return {"rss": vals.get("VmRSS", 0) * 1024, "fds": fds, "threads": vals.get("Threads", 0)}


class Poller:
    """Two threads per node inside its namespace: /liveness (1 s deadline) and the rest."""

    def __init__(self, cluster: Any, nodes: tuple[str, ...], stop: threading.Event) -> None:
        self.c = cluster
        self.nodes = nodes
        self.stop = stop
        self.live: dict[str, list[dict[str, Any]]] = {n: [] for n in nodes}
        self.samples: dict[str, list[dict[str, Any]]] = {n: [] for n in nodes}
        self.components: dict[str, list[dict[str, Any]]] = {n: [] for n in nodes}
        self.sync_conflicts: dict[str, dict[str, Any]] = {}  # every /sync conflicts entry ever seen
        self.sync_has_conflicts_key = False
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        for n in self.nodes:
            for target in (self._live_loop, self._data_loop):
                t = threading.Thread(target=target, args=(n,), name=f"poll-{n}", daemon=True)
                t.start()
                self.threads.append(t)

    def join(self) -> None:
        for t in self.threads:
            t.join(10)

    def _live_loop(self, n: str) -> None:
        enter_netns(self.c.ns(n))
        while not self.stop.is_set():
            t = time.time()
            rec: dict[str, Any] = {"t": t, "pid": self.c.pid(n)}
            try:
                status, _ = _get("/liveness", LIVENESS_TIMEOUT_S)
                rec["status"] = status
            except (OSError, http.client.HTTPException) as e:
                rec["error"] = type(e).__name__
            rec["ms"] = round((time.time() - t) * 1000, 1)
            rec["load1"] = os.getloadavg()[0]  # the machine is shared: a slow answer may be the machine's
            rec["ok"] = rec.get("status") == 200 and rec["ms"] <= LIVENESS_TIMEOUT_S * 1000
            self.live[n].append(rec)
            self.stop.wait(max(0.0, POLL_EVERY_S - (time.time() - t)))

    def _data_loop(self, n: str) -> None:
        enter_netns(self.c.ns(n))
        while not self.stop.is_set():
            t = time.time()
            rec: dict[str, Any] = {"t": t}
            pid = self.c.pid(n)
            rec["pid"] = pid
            if pid is not None and n not in self.c.stopped:
                rec["proc"] = proc_usage(pid)
            for path in ("/peers", "/components", "/sync", "/metrics"):
                try:
                    status, body = _get(path, GET_TIMEOUT_S)
                except (OSError, http.client.HTTPException) as e:
                    rec.setdefault("errors", {})[path] = type(e).__name__
                    continue
                if status != 200:
                    rec.setdefault("errors", {})[path] = status
                    continue
                try:
                    self._take(n, path, body, rec)
                except (ValueError, KeyError, TypeError) as e:
                    rec.setdefault("errors", {})[path] = f"unreadable: {e}"
            self.samples[n].append(rec)
            self.stop.wait(max(0.0, POLL_EVERY_S - (time.time() - t)))

    def _take(self, n: str, path: str, body: bytes, rec: dict[str, Any]) -> None:
        if path == "/metrics":
            rec["metrics"] = parse_metrics(body.decode(errors="replace"))
            return
        doc = json.loads(body)
        if path == "/peers":
            rec["peers"] = {p["name"]: p["status"] for p in doc if not p.get("self")}
        elif path == "/components":
            comps = [{k: c.get(k) for k in ("name", "state", "pid", "guard_pid", "restarts", "healthy")} for c in doc]
            rec["components"] = comps
            self.components[n] = comps
        elif path == "/sync":
            rec["sync"] = {"running": doc.get("running"), "runs_total": doc.get("runs_total"),
                           "last_result": doc.get("last_result"),
                           "peers": {p: v.get("state") for p, v in (doc.get("peers") or {}).items()}}
            if "conflicts" in doc:
                with self.lock:
                    self.sync_has_conflicts_key = True
                    for e in doc["conflicts"] or []:
                        key = json.dumps(e, sort_keys=True)
                        self.sync_conflicts.setdefault(key, {"node": n, "first_seen": rec["t"], "entry": e})

    def last_components(self, n: str) -> list[dict[str, Any]]:
        return self.components[n]


class Writers:
    """One writer per node: new files and edits of its own files, every version remembered."""

    def __init__(self, cluster: Any, nodes: tuple[str, ...], seed: int, stop: threading.Event) -> None:
        self.c = cluster
        self.nodes = nodes
        self.seed = seed
        self.stop = stop
        self.versions: dict[str, list[str]] = {}  # rel -> every content written, in order
        self.times: dict[str, list[float]] = {}  # rel -> when each version was written
        self.owner: dict[str, str] = {}
        self.conflicts: dict[str, dict[str, Any]] = {}
        self.counts: dict[str, dict[str, int]] = {n: {"new": 0, "edit": 0} for n in nodes}
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for n in self.nodes:
            t = threading.Thread(target=self._loop, args=(n,), name=f"writer-{n}", daemon=True)
            t.start()
            self.threads.append(t)

    def join(self) -> None:
        for t in self.threads:
            t.join(10)

    def _write(self, n: str, rel: str, text: str) -> None:
        p = self.c.dags(n) / rel
        p.write_text(text)
        off = self.c.clock_offset if n == CLOCK_NODE else 0.0
        if off:  # a file written on the node whose clock was stepped carries that clock's time
            now = time.time() + off
            os.utime(p, (now, now))

    def read(self, n: str, rel: str) -> str | None:
        try:
            return str((self.c.dags(n) / rel).read_text())
        except (OSError, UnicodeDecodeError):
            return None

    def _loop(self, n: str) -> None:
        rng = random.Random(f"{self.seed}:writer:{n}")
        mine: list[str] = []
        while not self.stop.wait(rng.uniform(1.5, 4.0)):
            if len(mine) < MAX_FILES_PER_NODE and (len(mine) < 3 or rng.random() < 0.4):
                rel = f"{n}_dag_{len(mine):03d}.py"
                mine.append(rel)
                kind = "new"
            else:
                rel = rng.choice(mine)
                kind = "edit"
            with self.lock:
                v = len(self.versions.get(rel, []))
                text = f"# soak writer {n} file {rel} version {v}\nvalue = {rng.random()!r}\n"
                self.versions.setdefault(rel, []).append(text)
                self.times.setdefault(rel, []).append(time.time())
                self.owner[rel] = n
                self.counts[n][kind] += 1
            self._write(n, rel, text)

    def write_conflict_base(self, n: str, rel: str, fid: int) -> str:
        text = f"# conflict {fid} base written on {n}\n"
        with self.lock:
            self.conflicts[rel] = {"base": text, "base_node": n, "versions": {}}
        self._write(n, rel, text)
        return text

    def write_conflict(self, n: str, rel: str, fid: int, side: str) -> str:
        text = f"# conflict {fid} side {side} written on {n} at {time.time():.3f}\n"
        with self.lock:
            self.conflicts[rel]["versions"][n] = text
            # the file's mtime there: its clock's time (a stepped node's is ahead)
            self.conflicts[rel].setdefault("times", {})[n] = time.time() + (self.c.clock_offset if n == CLOCK_NODE
                                                                           else 0.0)
        self._write(n, rel, text)
        return text

    def all_files(self) -> dict[str, list[str]]:
        """rel -> every version written (conflict files: base and both sides)."""
        with self.lock:
            out = {k: list(v) for k, v in self.versions.items()}
            for rel, c in self.conflicts.items():
                out[rel] = [c["base"], *c["versions"].values()]
        return out


# ---------------------------------------------------------------------- logs


def read_events(log: Path) -> list[dict[str, Any]]:
    out = []
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                e = json.loads(line)
                if isinstance(e, dict):
                    out.append(e)
    return out


def event_time(e: dict[str, Any], steps: list[tuple[float, float]]) -> float | None:
    """An event's host time: its ISO timestamp, less the clock offset the node had then.

    ``steps`` are (host time of the step, offset from then on), in order; the node's
    offset before the first is 0."""
    ts = e.get("timestamp")
    if not isinstance(ts, str):
        return None
    try:
        logged = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    for at, off in reversed(steps):
        if logged - off >= at:
            return logged - off
    return logged


def peer_verdicts(events: list[dict[str, Any]], observer: str,
                  steps: list[tuple[float, float]]) -> list[dict[str, Any]]:
    out = []
    for e in events:
        if e.get("event") != "peer_status" or e.get("peer") == observer:
            continue
        t = event_time(e, steps)
        if t is None:
            continue
        out.append({"t": t, "observer": observer, "peer": e.get("peer"), "old": e.get("old"), "new": e.get("new"),
                    "reason": e.get("reason"), "lhm": e.get("local_health")})
    return out
