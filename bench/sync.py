"""haflowd's DAG sync against what it replaces: crontab + csync2, and lsyncd + csync2.

    scripts/bench sync [--writes N] [--burst N] [--json] [--keep-tmp]

Three nodes n1..n3 in network namespaces on one bridge (198.18.0.11-13), each with a
``csync2 -ii`` server (its own config dir, database, ``-N`` name, no SSL) and a haflowd
with ``[sync]`` at its defaults (watch the DAG folder, debounce 500ms, interval 60s,
timeout 120s, retry 2s..5m) and ``[gossip]``. Files are written on n1 and their arrival
is polled on the other nodes' folders every 5 ms (one filesystem: no network involved
in measuring). Phases, in one run:

1. all peers up: N writes (one at a time, 0.6-1.2 s apart): write -> present on both peers;
2. n3's link down (``ip link set eth0 down`` in its namespace): N writes -> present on n2;
3. the link back up: time until n3 has every file written while it was away;
4. a burst of 500 files on n1 -> present on both peers;
5. no file lost: the three folders are compared;
6. lsyncd + csync2 (the usual recipe: ``lsyncd`` running ``csync2 -x`` on changes,
   delay 1 s) with n3's link down, haflowd stopped: what happens to the writes.

The crontab baseline (``* * * * * csync2 -x``) is computed from phase 1's and 2's own
write times: a write waits for the next full minute, then for a csync2 run (its
duration as measured by haflowd's runs; with n3 down plus the stall csync2 showed on
the dead peer in phase 6).

Everything started is torn down in ``finally``; the namespaces and their hosts files
are deleted; only addresses inside the namespaces made here (198.18.0.0/24) and
127.0.0.1 inside them are used.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import json
import math
import os
import platform
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common import (
    BenchError,
    delete_namespaces,
    enter_netns,
    log,
    percentile,
    run_cmd,
    run_main,
    sweep_stale_namespaces,
    wait_until,
)

from testbed import csync2 as tbc  # the one csync2 set-up, shared with the tests and the demo
from testbed.netns import Topology

ROOT = Path(__file__).resolve().parent.parent

PYTHON = sys.executable
NODES = ("n1", "n2", "n3")
HOSTS = {"n1": "nodea", "n2": "nodeb", "n3": "nodec"}
SUBNET = "198.18.0"
API_PORT = 8787
GOSSIP_PORT = 7946
NS_PREFIX = "hfbs"  # haflowd bench sync
NS_RE = re.compile(rf"^{NS_PREFIX}(\d+)-")
POLL_S = 0.005
DELIVERY_TIMEOUT_S = 30.0
LSYNCD_WINDOW_S = 160.0  # csync2 waits ~130 s on a blackholed peer (no connect timeout)
MIN_WRITES = 20
TARGET_P50_DOWN_S = 2.0
TARGET_CATCH_UP_S = 3.0

LSYNCD_CFG = """\
settings {{ logfile = "{log}", statusFile = "{status}", nodaemon = true, insist = true }}
local csync2 = {{
    maxProcesses = 1,
    delay = 1,
    action = function(inlet)
        local elist = inlet.getEvents()
        spawn(elist, "/usr/sbin/csync2", "-N", "{host}", "-D", "{db}", "-x")
    end,
}}
sync {{ csync2, source = "{dags}" }}
"""


class Node:
    def __init__(self, name: str, index: int, prefix: str, tmp: Path) -> None:
        self.name = name
        self.host = HOSTS[name]
        self.index = index
        self.ns = f"{prefix}-{name}"
        self.addr = f"{SUBNET}.{10 + index}"
        self.dir = tmp / name
        self.dags = self.dir / "dags"
        self.sysdir = self.dir / "csync2"
        self.db = self.dir / "db"
        self.server: subprocess.Popen[bytes] | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, initializer=enter_netns,
                                                          initargs=(self.ns,))

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CSYNC2_SYSTEM_DIR": str(self.sysdir)}

    def get(self, path: str) -> Any:
        def fetch() -> Any:
            with urllib.request.urlopen(f"http://127.0.0.1:{API_PORT}{path}", timeout=5) as r:
                return json.loads(r.read())
        try:
            return self.pool.submit(fetch).result(10)
        except (OSError, ValueError, concurrent.futures.TimeoutError) as e:
            raise BenchError(f"GET {path} on {self.name}: {e}") from e

    def has(self, rel: str, text: str) -> bool:
        try:
            return (self.dags / rel).read_text() == text
        except (OSError, UnicodeDecodeError):
            return False


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.prefix = f"{NS_PREFIX}{os.getpid()}"
        self.nodes = {n: Node(n, i, self.prefix, tmp) for i, n in enumerate(NODES, start=1)}
        self.topo = Topology(prefix=self.prefix, names=list(NODES), subnet=SUBNET,
                             hosts={n.host: n.addr for n in self.nodes.values()})
        self.lsyncd: subprocess.Popen[bytes] | None = None

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    # ------------------------------------------------------------------ set-up

    def create(self) -> None:
        sweep_stale_namespaces(NS_RE)
        self.topo.create()
        key = self.tmp / "csync2.key"
        run_cmd(["csync2", "-k", str(key)])
        gossip_key = self.tmp / "gossip.key"
        gossip_key.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        gossip_key.chmod(0o600)
        for n in self.nodes.values():
            for d in (n.dags, n.sysdir, n.db):
                d.mkdir(parents=True)
        dags = {m.host: m.dags for m in self.nodes.values()}
        for n in self.nodes.values():
            (n.sysdir / "csync2.cfg").write_text(tbc.group_config(list(dags), key, "%dags%", self.tmp / "backup", dags))
            self.start_server(n)
        for n in self.nodes.values():
            self.start_daemon(n, gossip_key)
        for n in self.nodes.values():
            wait_until(f"haflowd on {n.name} answering", 30, lambda n=n: _try(lambda: n.get("/liveness")))

    def start_server(self, n: Node) -> None:
        def wrap(argv: list[str]) -> list[str]:
            return ["ip", "netns", "exec", n.ns, *argv]

        tbc.create_tables(wrap, n.host, n.db, n.env)  # see there: a race on the first syncs otherwise
        n.server = tbc.start_server(wrap, n.host, n.db, n.env, n.dir / "csync2-server.log")
        wait_until(f"csync2 server on {n.name}", 10, lambda: tbc.listening(n.ns), every=0.05)

    def start_daemon(self, n: Node, gossip_key: Path) -> None:
        hd = n.dir / "haflowd"
        hd.mkdir(exist_ok=True)
        seeds = ", ".join(f'"{m.addr}:{GOSSIP_PORT}"' for m in self.nodes.values() if m is not n)
        peers = ", ".join(f'"{m.name}"' for m in self.nodes.values() if m is not n)
        host_map = ", ".join(f'{m.name} = "{m.host}"' for m in self.nodes.values())
        cfg = f"""
[node]
name = "{n.name}"
data_dir = "{hd / 'data'}"

[api]
listen = "127.0.0.1:{API_PORT}"
control_socket = "{hd / 'control.sock'}"

[gossip]
listen = "{n.addr}:{GOSSIP_PORT}"
seeds = [{seeds}]
key_file = "{gossip_key}"

[sync]
command = ["csync2", "-N", "{n.host}", "-D", "{n.db}", "-x"]
watch = ["{n.dags}"]
peers = [{peers}]
host_map = {{ {host_map} }}
"""
        (hd / "haflowd.toml").write_text(cfg)
        with open(hd / "haflowd.log", "ab") as out:
            n.daemon = subprocess.Popen(["ip", "netns", "exec", n.ns, PYTHON, "-m", "haflowd", "--config",
                                         str(hd / "haflowd.toml")], stdout=out, stderr=subprocess.STDOUT,
                                        env=n.env, cwd=hd)

    def stop_daemons(self) -> None:
        for n in self.nodes.values():
            if n.daemon is not None and n.daemon.poll() is None:
                n.daemon.send_signal(signal.SIGTERM)
        for n in self.nodes.values():
            if n.daemon is not None:
                try:
                    n.daemon.wait(20)
                except subprocess.TimeoutExpired:
                    n.daemon.kill()
                    n.daemon.wait(5)
                n.daemon = None

    def destroy(self) -> None:
        if self.lsyncd is not None and self.lsyncd.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.lsyncd.pid, signal.SIGKILL)
        with contextlib.suppress(BenchError):
            self.stop_daemons()
        for n in self.nodes.values():
            if n.server is not None:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(n.server.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    n.server.wait(5)
            n.pool.shutdown(wait=False, cancel_futures=True)
        delete_namespaces(self.topo.made[::-1])  # nodes before the bridge, with their hosts files
        self.topo.made.clear()

    # ------------------------------------------------------------------ faults and views

    def link(self, name: str, up: bool) -> None:
        self.topo.link(self.nodes[name].index, up)

    def member(self, observer: str, peer: str) -> str | None:
        for p in self.nodes[observer].get("/peers"):
            if p["name"] == peer:
                return str(p["status"])
        return None

    def quiet(self, timeout: float = 60, for_s: float = 1.5) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        last: dict[str, int] = {}
        since = time.monotonic()
        while time.monotonic() < deadline:
            views = {n: self.nodes[n].get("/sync") for n in NODES}
            counts = {n: int(v["runs_total"]) for n, v in views.items()}
            if counts != last or any(v["running"] for v in views.values()):
                last, since = counts, time.monotonic()
            elif time.monotonic() - since >= for_s:
                return counts
            time.sleep(0.1)
        raise BenchError(f"sync did not go quiet within {timeout:g}s")


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except BenchError:
        return None


# --------------------------------------------------------------------- measuring


def deliver(c: Cluster, origin: str, rel: str, text: str, to: Sequence[str],
            timeout: float = DELIVERY_TIMEOUT_S) -> tuple[float, dict[str, float | None]]:
    """Write ``rel`` on ``origin``; poll until it is on every node in ``to``. (wall time of the write,
    seconds to each node or None past ``timeout``)."""
    p = c[origin].dags / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    wall = time.time()
    t0 = time.monotonic()
    p.write_text(text)
    got: dict[str, float | None] = dict.fromkeys(to)
    while time.monotonic() - t0 < timeout:
        for n in to:
            if got[n] is None and c[n].has(rel, text):
                got[n] = time.monotonic() - t0
        if all(v is not None for v in got.values()):
            break
        time.sleep(POLL_S)
    return wall, got


def stats(xs: Sequence[float]) -> dict[str, float]:
    return {"n": len(xs), "min": min(xs), "p50": percentile(xs, 50), "p99": percentile(xs, 99), "max": max(xs),
            "mean": statistics.fmean(xs)}


def cron_latency(walls: Sequence[float], run_s: float) -> list[float]:
    """``* * * * * csync2 -x``: a write waits for the next full minute, then for one run."""
    return [math.ceil(w / 60.0) * 60.0 - w + run_s for w in walls]


def phase_writes(c: Cluster, label: str, count: int, to: Sequence[str]) -> dict[str, Any]:
    lat: list[float] = []
    walls: list[float] = []
    runs: list[float] = []
    missing = 0
    for i in range(count):
        time.sleep(random.uniform(0.6, 1.2))
        rel = f"{label}/dag_{i:03}.py"
        wall, got = deliver(c, "n1", rel, f"# {label} {i}\nfrom airflow import DAG\n", to)
        walls.append(wall)
        if any(v is None for v in got.values()):
            missing += 1
            log(f"{label}: {rel} not on {[n for n, v in got.items() if v is None]} after {DELIVERY_TIMEOUT_S:g}s")
            continue
        lat.append(max(v for v in got.values() if v is not None))
        last = c["n1"].get("/sync").get("last_duration_s")
        if isinstance(last, int | float):
            runs.append(float(last))
    if not lat:
        raise BenchError(f"{label}: no write arrived")
    return {"latency": stats(lat), "walls": walls, "missing": missing, "run_s_median": statistics.median(runs)
            if runs else None, "files": {f"{label}/dag_{i:03}.py": f"# {label} {i}\nfrom airflow import DAG\n"
                                         for i in range(count)}}


def lsyncd_phase(c: Cluster, tmp: Path, writes: int = 5) -> dict[str, Any]:
    """haflowd stopped; lsyncd on n1 runs csync2 -x on every change; n3's link goes down."""
    if shutil.which("lsyncd") is None:
        return {"skipped": "lsyncd is not installed (scripts/setup installs it)"}
    n1 = c["n1"]
    version = run_cmd(["lsyncd", "--version"], check=False).stdout.strip().splitlines()
    cfg = tmp / "lsyncd.lua"
    lsyncd_log = tmp / "lsyncd.log"
    cfg.write_text(LSYNCD_CFG.format(log=lsyncd_log, status=tmp / "lsyncd.status", host=n1.host, db=n1.db,
                                     dags=n1.dags))
    with open(tmp / "lsyncd.out", "ab") as out:
        c.lsyncd = subprocess.Popen(["ip", "netns", "exec", n1.ns, "lsyncd", str(cfg)], stdout=out,
                                    stderr=subprocess.STDOUT, env=n1.env, start_new_session=True)
    wait_until("lsyncd's startup sync", 30,
               lambda: lsyncd_log.exists() and "Startup" in lsyncd_log.read_text(), every=0.1)
    time.sleep(2)
    _, warm = deliver(c, "n1", "lsyncd/warmup.py", "# warm-up\n", ("n2", "n3"))
    up = max((v for v in warm.values() if v is not None), default=None)
    c.link("n3", up=False)
    cut = time.monotonic()
    results: list[dict[str, Any]] = []
    exited_at: float | None = None
    for i in range(writes):
        rel = f"lsyncd/dag_{i:03}.py"
        text = f"# lsyncd {i}\n"
        (n1.dags / rel).write_text(text)
        results.append({"file": rel, "written_s": round(time.monotonic() - cut, 2), "arrived_s": None})
        time.sleep(2)
    deadline = cut + LSYNCD_WINDOW_S
    while time.monotonic() < deadline:
        for r in results:
            if r["arrived_s"] is None and c["n2"].has(r["file"], f"# lsyncd {int(r['file'][-6:-3])}\n"):
                r["arrived_s"] = round(time.monotonic() - cut - r["written_s"], 2)
        if exited_at is None and c.lsyncd.poll() is not None:
            exited_at = time.monotonic() - cut
        if exited_at is not None:
            break  # nothing syncs any more
        time.sleep(0.05)
    if exited_at is None and c.lsyncd.poll() is not None:
        exited_at = time.monotonic() - cut
    errors = [line.split(" ", 5)[-1] for line in lsyncd_log.read_text().splitlines() if "Error" in line]
    state = (f"exited (code {c.lsyncd.returncode}) {exited_at:.1f}s after the cut" if exited_at is not None
             else f"still running after {LSYNCD_WINDOW_S:g}s")
    c.link("n3", up=True)
    if c.lsyncd.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(c.lsyncd.pid, signal.SIGKILL)
    return {"version": version[0] if version else "?", "all_up_latency_s": up, "writes": results, "state": state,
            "exited": exited_at is not None, "errors": errors[:3], "window_s": LSYNCD_WINDOW_S,
            "delivered": sum(1 for r in results if r["arrived_s"] is not None)}


# --------------------------------------------------------------------- the run


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    for tool in ("csync2", "ip", "ss"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed (scripts/setup installs it)")
    if os.geteuid() != 0:
        raise BenchError("this bench makes network namespaces: run it as root")
    c = Cluster(tmp)
    report: dict[str, Any] = {"versions": versions(), "writes": args.writes, "burst": args.burst}
    try:
        log("setting up three namespaces, csync2 servers, haflowd daemons")
        c.create()
        wait_until("gossip: every node sees the others alive", 30,
                   lambda: all(c.member(o, p) == "alive" for o in NODES for p in NODES if o != p), every=0.2)
        c.quiet()

        log(f"phase 1: {args.writes} writes, all peers up")
        up = phase_writes(c, "up", args.writes, ("n2", "n3"))
        report["all_up"] = {k: up[k] for k in ("latency", "missing", "run_s_median")}

        log(f"phase 2: n3's link down, {args.writes} writes")
        c.link("n3", up=False)
        time.sleep(1.0)
        down = phase_writes(c, "down", args.writes, ("n2",))
        view = c["n1"].get("/sync")["peers"]["n3"]
        report["one_down"] = {k: down[k] for k in ("latency", "missing", "run_s_median")}
        report["one_down"]["n3_on_n1"] = {k: view[k] for k in ("state", "attempts", "pending_files", "member",
                                                                "last_error")}

        log("phase 3: n3's link back up")
        t0 = time.monotonic()
        link_up_wall = time.time()
        c.link("n3", up=True)
        alive_s: float | None = None
        deadline = t0 + 60
        todo = dict(down["files"])
        while time.monotonic() < deadline and todo:
            todo = {k: v for k, v in todo.items() if not c["n3"].has(k, v)}
            if alive_s is None and _try(lambda: c.member("n1", "n3")) == "alive":
                alive_s = time.monotonic() - t0
            time.sleep(POLL_S if len(todo) < 5 else 0.02)
        catch_up = time.monotonic() - t0 if not todo else None
        report["catch_up"] = {"seconds": catch_up, "gossip_alive_s": alive_s, "files": len(down["files"]),
                              "still_missing": len(todo),
                              "cron_s": math.ceil(link_up_wall / 60) * 60 - link_up_wall + (up["run_s_median"] or 0)}

        log(f"phase 4: a burst of {args.burst} files")
        before = c.quiet()
        files = {f"burst/f{i:04}.py": f"# burst {i}\n" for i in range(args.burst)}
        t0 = time.monotonic()
        for rel, text in files.items():
            p = c["n1"].dags / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        written = time.monotonic() - t0
        todo_b = {n: dict(files) for n in ("n2", "n3")}
        took: dict[str, float | None] = {"n2": None, "n3": None}
        while time.monotonic() - t0 < 120 and any(todo_b.values()):
            for n in ("n2", "n3"):
                if todo_b[n]:
                    todo_b[n] = {k: v for k, v in todo_b[n].items() if not c[n].has(k, v)}
                    if not todo_b[n]:
                        took[n] = time.monotonic() - t0
            time.sleep(0.1)
        after = c.quiet()
        report["burst_result"] = {"written_s": written, "to": took,
                                  "runs": {n: after[n] - before[n] for n in NODES}}

        log("phase 5: comparing the three DAG folders")
        report["lost"] = lost_files(c)

        log("phase 6: lsyncd + csync2 with n3's link down (haflowd stopped)")
        c.stop_daemons()
        report["lsyncd"] = lsyncd_phase(c, tmp)
        stall = [w["arrived_s"] for w in report["lsyncd"].get("writes", [])[:1] if w["arrived_s"] is not None]

        run_s = up["run_s_median"] or 0.0
        report["cron"] = {
            "all_up": stats(cron_latency(up["walls"], run_s)),
            "one_down": stats(cron_latency(down["walls"], run_s + stall[0])) if stall else None,
            "run_s": run_s,
            "dead_peer_stall_s": stall[0] if stall else None,
        }
        report["targets"] = targets(report)
    finally:
        log("tearing down")
        c.destroy()
    return report


def lost_files(c: Cluster) -> dict[str, Any]:
    def tree(n: str) -> dict[str, str]:
        root = c[n].dags
        return {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()}
    ref = tree("n1")
    out: dict[str, Any] = {"files": len(ref)}
    for n in ("n2", "n3"):
        other = tree(n)
        out[n] = sorted(k for k, v in ref.items() if other.get(k) != v)[:20]
    out["count"] = len(out["n2"]) + len(out["n3"])
    return out


def targets(r: dict[str, Any]) -> list[tuple[str, bool, str]]:
    p50 = r["one_down"]["latency"]["p50"]
    cu = r["catch_up"]["seconds"]
    lost = r["lost"]["count"] + r["all_up"]["missing"] + r["one_down"]["missing"]
    return [
        (f"p50 <= {TARGET_P50_DOWN_S:g} s to every alive peer with a peer down", p50 <= TARGET_P50_DOWN_S,
         f"{p50:.3f} s"),
        (f"catch-up <= {TARGET_CATCH_UP_S:g} s after the peer is reachable again",
         cu is not None and cu <= TARGET_CATCH_UP_S, "never" if cu is None else f"{cu:.3f} s"),
        ("0 lost files", lost == 0, f"{lost} lost"),
    ]


def versions() -> dict[str, Any]:
    csync2 = run_cmd(["dpkg-query", "-W", "-f=${Version}", "csync2"], check=False).stdout.strip() or "?"
    haflowd = run_cmd([PYTHON, "-c", "import haflowd; print(haflowd.__version__)"], check=False).stdout.strip()
    return {"haflowd": haflowd, "csync2": csync2, "python": platform.python_version(),
            "kernel": platform.release(), "cpus": os.cpu_count()}


# --------------------------------------------------------------------- report


def _secs(x: float | None, digits: int = 2, none: str = "never") -> str:
    return none if x is None else f"{x:.{digits}f} s"


def _row(label: str, s: dict[str, float]) -> str:
    return f"  {label:<44} {s['p50']:>8.3f} {s['p99']:>8.3f} {s['max']:>8.3f} {s['mean']:>8.3f}"


def render(r: dict[str, Any]) -> str:
    v = r["versions"]
    head = f"  {'':<44} {'p50':>8} {'p99':>8} {'max':>8} {'mean':>8}"
    out = [
        f"haflowd {v['haflowd']}, csync2 {v['csync2']}, python {v['python']}, linux {v['kernel']}, {v['cpus']} CPUs",
        "three nodes in network namespaces on one bridge; haflowd [sync] defaults (watch, debounce 500ms, "
        "interval 60s, timeout 120s, retry 2s..5m) with [gossip]",
        "",
        f"write on n1 -> present on both peers, seconds ({r['all_up']['latency']['n']} writes)",
        head,
        _row("haflowd", r["all_up"]["latency"]),
        _row("crontab csync2 -x every minute (computed)", r["cron"]["all_up"]),
        "",
        f"n3's link down: write on n1 -> present on n2, seconds ({r['one_down']['latency']['n']} writes)",
        head,
        _row("haflowd", r["one_down"]["latency"]),
    ]
    cron_down = r["cron"]["one_down"]
    if cron_down is not None:
        out.append(_row("crontab csync2 -x every minute (computed)", cron_down))
        out.append(f"    (a minute's wait, then csync2 -x: {r['cron']['dead_peer_stall_s']:.1f} s stuck on the dead "
                   "peer, as measured under lsyncd below; runs overlap and fail: csync2 serialises nothing)")
    else:
        out.append(f"  crontab csync2 -x every minute: csync2 -x did not get past the dead peer within "
                   f"{r.get('lsyncd', {}).get('window_s', LSYNCD_WINDOW_S):g} s (measured under lsyncd below)")
    ld = r.get("lsyncd", {})
    if "skipped" in ld:
        out.append(f"  lsyncd + csync2: skipped ({ld['skipped']})")
    else:
        got = ", ".join(f"{w['file'].split('/')[-1]}: {_secs(w['arrived_s'], 1)}" for w in ld["writes"])
        out.append(f"  lsyncd + csync2 ({ld['version']}): {ld['state']}; {ld['delivered']} of {len(ld['writes'])} "
                   f"writes reached n2 within {ld['window_s']:g}s ({got})")
        if ld["errors"]:
            out.append(f"    lsyncd's log: {' | '.join(ld['errors'])}")
        if ld.get("all_up_latency_s") is not None:
            out.append(f"    (with every peer up, lsyncd's delay of 1 s: a write reached both peers in "
                       f"{ld['all_up_latency_s']:.2f}s)")
    n3 = r["one_down"]["n3_on_n1"]
    out.append(f"  n3 as n1 saw it at the end: {n3['state']}, gossip {n3['member']}, {n3['attempts']} attempts, "
               f"{n3['pending_files']} files pending ({n3['last_error']})")
    cu = r["catch_up"]
    out += [
        "",
        "n3's link back up -> n3 has every file written while it was away",
        f"  haflowd: {_secs(cu['seconds'], 3)} for {cu['files']} files "
        f"(gossip saw n3 alive after {_secs(cu['gossip_alive_s'], 2, '-')})",
        f"  crontab: {cu['cron_s']:.1f} s (the next full minute, computed)",
        "",
    ]
    b = r["burst_result"]
    took = ", ".join(f"{n} {_secs(t)}" for n, t in b["to"].items())
    out.append(f"burst of {r['burst']} files on n1 (written in {b['written_s']:.2f} s) -> on the peers: {took}; "
               f"sync runs it caused: " + ", ".join(f"{n} {k}" for n, k in b["runs"].items()))
    lost = r["lost"]
    out.append(f"lost files after healing: {lost['count']} of {lost['files']}"
               + (f" (n2: {lost['n2'][:3]}, n3: {lost['n3'][:3]})" if lost["count"] else ""))
    out += ["", "targets:"]
    for label, ok, got in r["targets"]:
        out.append(f"  [{'PASS' if ok else 'FAIL'}] {label}: {got}")
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench sync", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--writes", type=int, default=25, help=f"writes per phase (default 25, at least {MIN_WRITES})")
    p.add_argument("--burst", type=int, default=500, help="files in the burst (default 500)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs) for inspection")
    args = p.parse_args(argv)
    if not MIN_WRITES <= args.writes <= 1000:
        p.error(f"--writes: expected {MIN_WRITES}..1000")
    if not 1 <= args.burst <= 20000:
        p.error("--burst: expected 1..20000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def go(tmp: Path) -> dict[str, Any]:
        return run(args, tmp)

    code = run_main("haflowd-bench-sync-", args.keep_tmp, args.json, go, render)
    return code


if __name__ == "__main__":
    sys.exit(main())
