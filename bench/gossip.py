"""haflowd against HashiCorp Serf as a failure detector: time from a node's failure to ``dead`` everywhere.

    scripts/bench gossip [--runs N] [--json] [--keep-tmp]

Three haflowd daemons (n1..n3) and three Serf agents (s1..s3) run side by side, both
with their default gossip settings (haflowd: no gossip tuning in the config; Serf:
``serf agent`` with the default ``lan`` profile, i.e. memberlist's LAN timings). In
every run one node of each cluster fails at the same moment and the two survivors of
each cluster are polled every ~20 ms (haflowd: ``GET /peers``; Serf: ``serf members
-format=json``) until the victim shows ``dead`` (haflowd) / ``failed`` (Serf). A
survivor's detection time is from t0, taken right before the failure is injected, to
the completion of its first poll that shows it; a run's value is the max over the two
survivors (dead on *every* survivor). Two scenarios:

(a) ``kill -9``: the daemon / agent is SIGKILLed (three nodes each on 127.0.0.1,
    distinct ports). Its ports then refuse connections. After the run the victim is
    restarted with the same name (and haflowd with the same data_dir).
(b) cut link: three network namespaces (one per node pair n_i + s_i) on a bridge that
    lives in a fourth namespace, addresses 198.18.0.1-3/24; the failure is
    ``ip netns exec NS ip link set eth0 down`` on the victim's namespace: silence, no
    refusal. The survivors' views are read from inside their namespaces (each polling
    thread enters the namespace with setns(2), as ``ip netns exec`` does); haflowd's API
    and Serf's RPC listen on each namespace's own 127.0.0.1. After the run the link is
    restored; a cluster that has not healed by itself within HEAL_GRACE_S gets its
    victim restarted (Serf retries failed members only every 30 s by default).

Before every failure all three nodes of both clusters see each other ``alive``, then
the bench waits SETTLE_S plus a random 0..JITTER_S (so the failure lands at a random
phase of the probe rounds). Victims rotate n1, n2, n3, ...; in (a) which cluster's
victim is killed first alternates.

Every wait has a deadline; everything started is torn down in ``finally`` (SIGTERM,
then SIGKILL to the process group; every process left in a namespace this bench made
is SIGKILLed; the namespaces are deleted; the temp dir is removed). Only 127.0.0.0/8
and addresses inside namespaces made by this bench are used.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import http.client
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from common import (
    BenchError,
    delete_namespaces,
    enter_netns,
    free_port,
    log,
    percentile,
    run_cmd,
    run_main,
    stop_tree,
    sweep_stale_namespaces,
    table,
    tail_files,
    toml_str,
    wait_until,
)

from testbed.netns import Topology

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable  # scripts/bench runs this file with the venv's python

MIN_RUNS = 5
MAX_RUNS = 1000
POLL_EVERY_S = 0.02  # survivors' views are read this often (start to start)
POLL_TIMEOUT_S = 2.0  # one poll (an HTTP GET, a `serf members`)
START_TIMEOUT_S = 30.0  # a daemon/agent up and answering
CONVERGE_TIMEOUT_S = 90.0  # all three see all three alive
DETECT_TIMEOUT_S = 60.0  # failure -> dead on every survivor; far beyond either default
HEAL_GRACE_S = 10.0  # (b): wait this long for a healed link to heal the membership, then restart the victim
PRIME_TIMEOUT_S = 10.0  # every poller has seen the victim alive once
SETTLE_S = 2.0  # after convergence, before the next failure...
JITTER_S = 1.0  # ...plus a random 0..JITTER_S
STOP_TIMEOUT_S = 10.0  # SIGTERM to exit, then SIGKILL
CMD_TIMEOUT_S = 10.0  # one `ip` command

NS_PREFIX = "hfgossip"
NS_RE = re.compile(rf"^{NS_PREFIX}-(\d+)x[0-9a-f]+-(br|n\d)$")
SUBNET = "198.18.0"  # 198.18.0.0/15 is reserved for benchmarking (RFC 2544)
NS_HAFLOWD_API = 8080  # on the namespace's own 127.0.0.1
NS_HAFLOWD_GOSSIP = 7946
NS_SERF_BIND = 7947
NS_SERF_RPC = 7373

HAFLOWD_DEAD = ("dead",)
SERF_DEAD = ("failed",)


# ---------------------------------------------------------------- network namespaces

class Site:
    """Where a node runs: the root namespace (loopback) or a namespace this bench made.

    Everything that talks to a node (readiness, views, polls) runs on this site's
    threads, which sit in the node's namespace.
    """

    def __init__(self, netns: str | None, workers: int = 6) -> None:
        self.netns = netns
        init: Callable[..., object] | None = None
        initargs: tuple[Any, ...] = ()
        if netns is not None:
            init, initargs = enter_netns, (netns,)
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=f"site-{netns or 'root'}", initializer=init, initargs=initargs
        )

    def wrap(self, argv: list[str]) -> list[str]:
        return argv if self.netns is None else ["ip", "netns", "exec", self.netns, *argv]

    def call(self, fn: Callable[[], Any], timeout: float = POLL_TIMEOUT_S + 5) -> Any:
        try:
            return self.pool.submit(fn).result(timeout)
        except concurrent.futures.TimeoutError as e:
            raise BenchError(f"a call on site {self.netns or 'root'} took over {timeout:g}s") from e

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def cut_link_bed() -> Topology:
    """Three node namespaces (n1..n3 on 198.18.0.1-3) with a veth each onto a bridge in a fourth
    namespace (testbed.netns: nothing is made in the root namespace)."""
    token = f"{os.getpid()}x{secrets.token_hex(2)}"
    return Topology(prefix=f"{NS_PREFIX}-{token}", names=["n1", "n2", "n3"],
                    addresses=[f"{SUBNET}.{i}" for i in (1, 2, 3)], port_prefix="veth")


# ----------------------------------------------------------------------- the nodes


class Node:
    """One gossiping process (a haflowd daemon or a Serf agent) in its own session."""

    system = "?"
    dead_statuses: tuple[str, ...] = ()

    def __init__(self, name: str, site: Site, workdir: Path) -> None:
        self.name = name
        self.site = site
        self.dir = workdir
        self.dir.mkdir(parents=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.out = self.dir / "stdout.log"
        self.err = self.dir / "stderr.log"
        self.starts = 0

    def argv(self) -> list[str]:
        raise NotImplementedError

    def view(self) -> dict[str, str] | None:
        """{member: status} as this node sees it; None if it does not answer. Call on its site."""
        raise NotImplementedError

    def start(self) -> None:
        if self.proc is not None:
            raise BenchError(f"{self.name} started twice")
        self.starts += 1
        with open(self.out, "ab") as out, open(self.err, "ab") as err:
            self.proc = subprocess.Popen(
                self.site.wrap(self.argv()), cwd=self.dir, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise BenchError(f"{self.system} {self.name} is not running (exit {code}); {self.tail()}")

    def tail(self, lines: int = 15) -> str:
        return tail_files((self.err, self.out), lines, f"{self.name}/")

    def wait_up(self) -> None:
        def up() -> bool:
            self.check_alive()
            v = self.site.call(self.view)
            return bool(v) and v.get(self.name) == "alive"

        wait_until(f"{self.system} {self.name} up", START_TIMEOUT_S, up)

    def kill9(self) -> None:
        """``kill -9`` of the process itself (``ip netns exec`` execs it: same pid)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)

    def reap(self) -> None:
        """After kill9: collect it, and anything left in its group."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            raise BenchError(f"{self.system} {self.name} survived SIGKILL") from e
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the group; then SIGKILL to any descendant still alive."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        stop_tree(proc, f"{self.system} {self.name}", STOP_TIMEOUT_S)

    def listeners(self) -> list[str]:
        """Addresses this process listens on (TCP listen, UDP bound)."""
        out: list[str] = []
        if self.proc is None:
            return out
        with contextlib.suppress(psutil.Error):
            for c in psutil.Process(self.proc.pid).net_connections(kind="inet"):
                if (c.status == psutil.CONN_LISTEN or c.type == socket.SOCK_DGRAM) and c.laddr:
                    out.append(f"{c.laddr.ip}:{c.laddr.port}")
        return out


class HaflowdNode(Node):
    system = "haflowd"
    dead_statuses = HAFLOWD_DEAD

    def __init__(self, name: str, site: Site, workdir: Path, api: tuple[str, int], gossip: tuple[str, int],
                 seeds: list[str], key_file: Path) -> None:
        super().__init__(name, site, workdir)
        self.api = api
        self.gossip_addr = f"{gossip[0]}:{gossip[1]}"
        self.config = self.dir / "haflowd.toml"
        lines = [
            "[node]",
            f"name = {toml_str(name)}",
            f"data_dir = {toml_str(str(self.dir / 'data'))}",
            "[api]",
            f'listen = "{api[0]}:{api[1]}"',
            f"control_socket = {toml_str(str(self.dir / 'ctl.sock'))}",
            "[gossip]",  # listen, seeds and key only: the bench measures the default timings
            f'listen = "{self.gossip_addr}"',
            f"seeds = [{', '.join(toml_str(s) for s in seeds)}]",
            f"key_file = {toml_str(str(key_file))}",
        ]
        self.config.write_text("\n".join(lines) + "\n")

    def argv(self) -> list[str]:
        return [PYTHON, "-m", "haflowd", "--config", str(self.config), "--log-format", "json"]

    def view(self) -> dict[str, str] | None:
        conn = http.client.HTTPConnection(self.api[0], self.api[1], timeout=POLL_TIMEOUT_S)
        try:
            conn.request("GET", "/peers")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                return None
            return {str(p["name"]): str(p["status"]) for p in json.loads(body)}
        except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
            return None
        finally:
            conn.close()


class SerfNode(Node):
    system = "serf"
    dead_statuses = SERF_DEAD

    def __init__(self, name: str, site: Site, workdir: Path, bind: tuple[str, int], rpc: tuple[str, int]) -> None:
        super().__init__(name, site, workdir)
        self.bind = f"{bind[0]}:{bind[1]}"
        self.rpc = f"{rpc[0]}:{rpc[1]}"
        self.join: list[str] = []

    def argv(self) -> list[str]:
        # Default LAN profile, no tuning: only who we are, where we listen, whom we join.
        return ["serf", "agent", f"-node={self.name}", f"-bind={self.bind}", f"-rpc-addr={self.rpc}",
                *(f"-join={a}" for a in self.join)]

    def view(self) -> dict[str, str] | None:
        try:
            r = subprocess.run(
                ["serf", "members", f"-rpc-addr={self.rpc}", "-format=json"],
                capture_output=True, timeout=POLL_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False,
            )
        except subprocess.TimeoutExpired:
            return None
        if r.returncode != 0:
            return None
        try:
            return {str(m["name"]): str(m["status"]) for m in json.loads(r.stdout)["members"]}
        except (ValueError, KeyError, TypeError):
            return None


class Cluster:
    def __init__(self, system: str, nodes: list[Node]) -> None:
        self.system = system
        self.nodes = nodes

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def all_alive(self, among: Sequence[Node] | None = None) -> bool:
        """Does every node (of ``among``) see every node alive?"""
        for n in among or self.nodes:
            n.check_alive()
            v = n.site.call(n.view)
            if not v or any(v.get(m) != "alive" for m in self.names):
                return False
        return True

    def wait_converged(self, timeout: float = CONVERGE_TIMEOUT_S) -> None:
        wait_until(f"{self.system}: all of {', '.join(self.names)} alive on all", timeout, self.all_alive)

    def views(self) -> dict[str, dict[str, str] | None]:
        out: dict[str, dict[str, str] | None] = {}
        for n in self.nodes:
            try:
                out[n.name] = n.site.call(n.view)
            except BenchError:
                out[n.name] = None
        return out

    def stop(self) -> None:
        for n in self.nodes:
            try:
                n.stop()
            except Exception as e:  # keep tearing down the others
                log(f"stopping {n.system} {n.name}: {e}")


def start_clusters(h: Cluster, s: Cluster) -> None:
    """haflowd: all at once (each seeds the other two). Serf: s1 first, s2 and s3 join it."""
    for n in h.nodes:
        n.start()
    first = s.nodes[0]
    assert isinstance(first, SerfNode)
    first.start()
    first.wait_up()
    for n in s.nodes[1:]:
        assert isinstance(n, SerfNode)
        n.join = [first.bind]
        n.start()
    for n in [*h.nodes, *s.nodes[1:]]:
        n.wait_up()
    h.wait_converged()
    s.wait_converged()


def restart(node: Node, cluster: Cluster) -> None:
    """Start a failed victim again under the same name; a Serf agent joins the survivors."""
    if isinstance(node, SerfNode):
        node.join = [o.bind for o in cluster.nodes if o is not node and isinstance(o, SerfNode)]
    node.start()
    node.wait_up()


# ----------------------------------------------------------------- detection runs


@dataclass
class Watch:
    """One survivor's polling of one victim."""

    survivor: str
    polls: int = 0
    failed_polls: int = 0
    poll_s: list[float] = field(default_factory=list)
    primed: threading.Event = field(default_factory=threading.Event)
    dead_at: float | None = None  # perf_counter at the completion of the first poll that showed it
    first_not_alive: tuple[float, str] | None = None
    error: str | None = None


def watch(node: Node, victim: str, w: Watch, stop: threading.Event, deadline: float) -> Watch:
    """Poll ``node``'s view every POLL_EVERY_S until ``victim`` shows dead there (runs on node's site)."""
    while not stop.is_set():
        if time.monotonic() > deadline:
            w.error = "deadline"
            return w
        a = time.perf_counter()
        v = node.view()
        b = time.perf_counter()
        w.polls += 1
        w.poll_s.append(b - a)
        status = v.get(victim) if v else None
        if status is None:
            w.failed_polls += 1
        else:
            if not w.primed.is_set():
                if status != "alive":
                    w.error = f"{victim} was {status!r} before the failure"
                    w.primed.set()
                    return w
                w.primed.set()
            if status != "alive" and w.first_not_alive is None:
                w.first_not_alive = (b, status)
            if status in node.dead_statuses:
                w.dead_at = b
                return w
        stop.wait(max(0.0, POLL_EVERY_S - (time.perf_counter() - a)))
    w.error = w.error or "stopped"
    return w


def detect(clusters: list[Cluster], victim_idx: int, inject: Callable[[], dict[str, float]]) -> dict[str, Any]:
    """Start pollers on every survivor, inject the failure, wait for dead everywhere."""
    stop = threading.Event()
    deadline = time.monotonic() + PRIME_TIMEOUT_S + DETECT_TIMEOUT_S
    jobs: list[tuple[Cluster, Watch, concurrent.futures.Future[Watch]]] = []
    try:
        for c in clusters:
            victim = c.nodes[victim_idx]
            for n in c.nodes:
                if n is victim:
                    continue
                w = Watch(n.name)
                jobs.append((c, w, n.site.pool.submit(watch, n, victim.name, w, stop, deadline)))
        for c, w, _ in jobs:
            if not w.primed.wait(PRIME_TIMEOUT_S) or w.error:
                raise BenchError(f"{c.system} {w.survivor}: {w.error or 'no answer'} before the failure")
        t0 = inject()
        out: dict[str, Any] = {}
        for c, w, fut in jobs:
            try:
                fut.result(max(0.0, deadline - time.monotonic()) + POLL_TIMEOUT_S + 5)
            except concurrent.futures.TimeoutError:
                w.error = "poller hung"
            victim_name = c.nodes[victim_idx].name
            if w.dead_at is None:
                raise BenchError(
                    f"{c.system}: {w.survivor} did not see {victim_name} dead within {DETECT_TIMEOUT_S:g}s "
                    f"({w.error}); views now: {c.views()}"
                )
            rec = out.setdefault(c.system, {"victim": victim_name, "survivors": {}})
            first = w.first_not_alive
            rec["survivors"][w.survivor] = {
                "dead_s": round(w.dead_at - t0[c.system], 4),
                "first_not_alive_s": round(first[0] - t0[c.system], 4) if first else None,
                "first_not_alive": first[1] if first else None,
                "polls": w.polls,
                "failed_polls": w.failed_polls,
                "poll_ms_median": round(percentile(w.poll_s, 50) * 1000, 2),
            }
        for rec in out.values():
            rec["value_s"] = max(s["dead_s"] for s in rec["survivors"].values())
        return out
    finally:
        stop.set()


def settle() -> None:
    time.sleep(SETTLE_S + random.uniform(0, JITTER_S))


def scenario_kill(tmp: Path, runs: int, key_file: Path) -> dict[str, Any]:
    """(a) kill -9 on loopback."""
    site = Site(None, workers=8)
    h = s = None
    try:
        ports = [(free_port(udp_too=True), free_port(udp_too=True)) for _ in range(3)]
        gossip = [f"127.0.0.1:{g}" for _, g in ports]
        h = Cluster("haflowd", [
            HaflowdNode(f"n{i + 1}", site, tmp / "kill" / f"n{i + 1}", ("127.0.0.1", api), ("127.0.0.1", g),
                        [a for j, a in enumerate(gossip) if j != i], key_file)
            for i, (api, g) in enumerate(ports)
        ])
        s = Cluster("serf", [
            SerfNode(f"s{i + 1}", site, tmp / "kill" / f"s{i + 1}", ("127.0.0.1", free_port(udp_too=True)),
                     ("127.0.0.1", free_port(udp_too=True)))
            for i in range(3)
        ])
        log("(a) kill -9: starting 3 haflowd daemons and 3 serf agents on 127.0.0.1")
        start_clusters(h, s)
        listeners = {n.name: n.listeners() for n in [*h.nodes, *s.nodes]}
        outside = sorted({a for ls in listeners.values() for a in ls if not a.startswith("127.")})
        results = []
        for r in range(runs):
            settle()
            vi = r % 3
            order = [h, s] if r % 2 == 0 else [s, h]

            def inject(vi: int = vi, order: list[Cluster] = order) -> dict[str, float]:
                t0 = {}
                for c in order:
                    t0[c.system] = time.perf_counter()
                    c.nodes[vi].kill9()
                return t0

            res = detect([h, s], vi, inject)
            res["killed_first"] = order[0].system
            results.append(res)
            log(f"(a) run {r + 1}/{runs}: " + ", ".join(
                f"{c.system} {res[c.system]['victim']} dead everywhere after {res[c.system]['value_s']:.3f}s"
                for c in (h, s)))
            for c in (h, s):
                c.nodes[vi].reap()
            for c in (h, s):
                restart(c.nodes[vi], c)
            h.wait_converged()
            s.wait_converged()
        return {"runs": results, "non_loopback_listeners": outside}
    finally:
        for cluster in (h, s):
            if cluster is not None:
                cluster.stop()
        site.close()


def scenario_cut(tmp: Path, runs: int, key_file: Path) -> dict[str, Any]:
    """(b) a cut link in network namespaces."""
    bed = cut_link_bed()
    sites: list[Site] = []
    h = s = None
    try:
        log(f"(b) cut link: creating namespaces {', '.join(bed.nodes)} and {bed.bridge} (bridge), "
            f"{SUBNET}.1-3/24")
        bed.create()
        sites = [Site(ns) for ns in bed.nodes]
        addrs = [bed.addr(i + 1) for i in range(3)]
        gossip = [f"{a}:{NS_HAFLOWD_GOSSIP}" for a in addrs]
        h = Cluster("haflowd", [
            HaflowdNode(f"n{i + 1}", sites[i], tmp / "cut" / f"n{i + 1}", ("127.0.0.1", NS_HAFLOWD_API),
                        (addrs[i], NS_HAFLOWD_GOSSIP), [a for j, a in enumerate(gossip) if j != i], key_file)
            for i in range(3)
        ])
        s = Cluster("serf", [
            SerfNode(f"s{i + 1}", sites[i], tmp / "cut" / f"s{i + 1}", (addrs[i], NS_SERF_BIND),
                     ("127.0.0.1", NS_SERF_RPC))
            for i in range(3)
        ])
        log("(b) cut link: starting 3 haflowd daemons and 3 serf agents, one of each per namespace")
        start_clusters(h, s)
        results = []
        for r in range(runs):
            settle()
            vi = r % 3

            def inject(vi: int = vi) -> dict[str, float]:
                t0 = time.perf_counter()
                bed.link(vi + 1, up=False)
                return {"haflowd": t0, "serf": t0}

            res = detect([h, s], vi, inject)
            log(f"(b) run {r + 1}/{runs}: " + ", ".join(
                f"{c.system} {res[c.system]['victim']} dead everywhere after {res[c.system]['value_s']:.3f}s"
                for c in (h, s)))
            bed.link(vi + 1, up=True)
            healed_at = time.monotonic()
            for c in (h, s):
                try:
                    c.wait_converged(HEAL_GRACE_S - (time.monotonic() - healed_at))
                    res[c.system]["healed_by"] = "link up"
                    res[c.system]["heal_s"] = round(time.monotonic() - healed_at, 3)
                except BenchError:
                    victim = c.nodes[vi]
                    log(f"(b) {c.system}: not healed {HEAL_GRACE_S:g}s after link up; restarting {victim.name}")
                    victim.kill9()
                    victim.reap()
                    restart(victim, c)
                    c.wait_converged()
                    res[c.system]["healed_by"] = "victim restarted"
            results.append(res)
        return {"runs": results, "namespaces": [*bed.nodes, bed.bridge]}
    finally:
        for cluster in (h, s):
            if cluster is not None:
                cluster.stop()
        for site in sites:
            site.close()
        delete_namespaces(bed.made[::-1])  # what is left inside, SIGKILLed; nodes before the bridge
        bed.made.clear()
        bed.destroy()


# ------------------------------------------------------------------- figures


def summary_s(xs: list[float]) -> dict[str, Any]:
    stats = {"min": min(xs), "p50": percentile(xs, 50), "p99": percentile(xs, 99), "max": max(xs),
             "mean": sum(xs) / len(xs)}
    return {"n": len(xs), **{k: round(v, 4) for k, v in stats.items()}, "samples": [round(x, 4) for x in xs]}


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in raw.items() if k != "runs"}
    for system in ("haflowd", "serf"):
        out[system] = summary_s([r[system]["value_s"] for r in raw["runs"]])
        out[system]["first_survivor"] = summary_s(
            [min(s["dead_s"] for s in r[system]["survivors"].values()) for r in raw["runs"]])
        polls = [s["poll_ms_median"] for r in raw["runs"] for s in r[system]["survivors"].values()]
        out[system]["poll_ms_median"] = round(percentile(polls, 50), 2)
    out["ratio_p50_serf_over_haflowd"] = round(out["serf"]["p50"] / out["haflowd"]["p50"], 3)
    out["runs"] = raw["runs"]
    return out


ROUNDS = 3  # of the 1,000-node simulation with --sim-1000: each variant this many times

def simulator_figures(big: bool, stall_seeds: int) -> dict[str, Any]:
    """The same core in the seeded simulator (virtual time): detection and message rates as
    the cluster grows, and false deaths under loss and stalls over many seeds. 1,000 nodes
    for the issue's 10 simulated minutes, and its join, run only with --sim-1000."""
    import time

    from gossip_sim.simulator import Simulator, scenario

    sizes = [(10, 2.0), (100, 2.0)] + ([(1000, 10.0)] if big else [])
    out: dict[str, Any] = {"sizes": [], "joins": []}
    for nodes, minutes in sizes:
        log(f"simulator: {nodes} nodes started joined, {minutes:g} simulated minutes, a crash after 5 s")
        r = scenario(nodes, minutes, seed=1, warm=True)
        det = r["detections"][0] if r["detections"] else {}
        out["sizes"].append({"nodes": nodes, "minutes": minutes, "detect_p50_s": det.get("p50"),
                             "detect_p99_s": det.get("p99"), "detect_all_s": det.get("all"),
                             "msgs_per_node_s": r["messages_per_node_per_s"], "false_deaths": r["false_deaths"],
                             "real_s": round(r["real_s"], 1), "compiled": r["compiled"],
                             "compiled_core": r["compiled_core"], "events": r["events"]})
    c = out["sizes"][-1]
    if big:
        # the 1,000-node run in ROUNDS rounds, each run as built and its anchors (the same run,
        # same seed, same result: with the core interpreted, then all in Python), alternating
        # so that the machine's drift falls on all of them alike; medians of the rounds
        variants: list[tuple[bool, bool, str]] = [(c["compiled"], c["compiled_core"], "as built")]
        for loop, core, what in ((c["compiled"], False, "the core interpreted"), (False, False, "all in Python")):
            if (loop, core) not in [(v[0], v[1]) for v in variants]:
                variants.append((loop, core, what))
        runs: dict[str, dict[str, Any]] = {
            what: {"what": what, "compiled": loop, "compiled_core": core, "real_s": [], "same_result": True}
            for loop, core, what in variants}
        runs["as built"]["real_s"].append(c["real_s"])
        for rnd in range(ROUNDS):
            for loop, core, what in variants:
                if rnd == 0 and what == "as built":
                    continue  # the run in the table above
                log(f"simulator: the 1,000-node run, round {rnd + 1} of {ROUNDS}, {what}")
                r = scenario(1000, 10.0, seed=1, warm=True, compiled=loop, compiled_core=core)
                runs[what]["real_s"].append(round(r["real_s"], 1))
                runs[what]["same_result"] &= ((r["detections"][0]["p50"], r["false_deaths"], r["events"])
                                              == (c["detect_p50_s"], c["false_deaths"], c["events"]))
        for v in runs.values():
            v["median_s"] = statistics.median(v["real_s"])
        out["runs_1000"] = list(runs.values())
    for nodes in (100, 1000) if big else (100,):
        log(f"simulator: {nodes} nodes joining through 3 seeds at once")
        started = time.perf_counter()
        sim = Simulator(nodes, seed=1)
        took = sim.run_until(sim.converged, 120, check_every=1.0)
        out["joins"].append({"nodes": nodes, "converged_after_s": took, "false_deaths": len(sim.false_deaths),
                             "real_s": round(time.perf_counter() - started, 1)})
    out["stall_loss"] = []
    for nodes, stalling, what in ((20, None, "every node"), (20, 1, "one node"), (3, None, "every node")):
        log(f"simulator: {nodes} nodes, 10 minutes, 10% loss, {what} stalled 1 s in every 10, "
            f"seeds 1..{stall_seeds}")
        deaths, real, examples = 0, 0.0, []
        for seed in range(1, stall_seeds + 1):
            r = scenario(nodes, 10.0, seed=seed, loss=0.1, stall=1.0, stall_every=10.0, stall_nodes=stalling, crash=0)
            deaths += r["false_deaths"]
            real += r["real_s"]
            examples += [(seed, *x) for x in r["false_death_examples"]]
        out["stall_loss"].append({"nodes": nodes, "stalling": what, "minutes": 10, "loss": 0.1, "seeds": stall_seeds,
                                  "false_deaths": deaths, "examples": examples[:5], "real_s": round(real, 1)})
    return out


def versions() -> dict[str, str]:
    from haflowd import __version__

    serf = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError, BenchError):
        lines = run_cmd(["serf", "version"], timeout=CMD_TIMEOUT_S, check=False).stdout.strip().splitlines()
        serf = lines[0].removeprefix("Serf ").strip() if lines else "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError, BenchError):
        deb = run_cmd(["dpkg-query", "-W", "-f=${Version}", "serf"], timeout=CMD_TIMEOUT_S, check=False).stdout.strip()
        if deb:
            serf += f" (Debian package {deb})"  # Debian's build reports an older version string
    return {
        "haflowd": __version__,
        "serf": serf,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
    }


def gossip_defaults() -> dict[str, Any]:
    from haflowd.gossip.membership import GossipSettings

    g = GossipSettings()
    return {"probe_interval_s": g.probe_interval, "probe_timeout_s": g.probe_timeout,
            "suspicion_mult": g.suspicion_mult, "indirect_checks": g.indirect_checks}


TITLES = {
    "kill9": "(a) kill -9 of one daemon/agent, three nodes on 127.0.0.1",
    "cut_link": "(b) cut link (ip link set eth0 down on the victim), three network namespaces on a bridge",
}


def render(report: dict[str, Any]) -> str:
    v = report["versions"]
    g = report["haflowd_gossip_defaults"]
    out = [
        f"haflowd {v['haflowd']}, serf {v['serf']}, python {v['python']}, linux {v['kernel']}, {v['cpus']} CPUs",
        f"defaults: haflowd probe_interval {g['probe_interval_s']:g}s, probe_timeout {g['probe_timeout_s']:g}s, "
        f"suspicion_mult {g['suspicion_mult']}; serf agent -profile=lan (its default)",
        f"failure -> dead on every survivor, seconds ({report['runs']} runs each; survivors polled every "
        f"{POLL_EVERY_S * 1000:g} ms)",
        "",
    ]
    for key in ("kill9", "cut_link"):
        sc = report["scenarios"].get(key)
        if not sc:
            continue
        h, s = sc["haflowd"], sc["serf"]
        rows = [(k, f"{h[k]:.3f}", f"{s[k]:.3f}") for k in ("min", "p50", "p99", "max")]
        rows.append(("p50, first survivor to see it", f"{h['first_survivor']['p50']:.3f}",
                     f"{s['first_survivor']['p50']:.3f}"))
        rows.append(("one poll, ms (median)", f"{h['poll_ms_median']:.1f}", f"{s['poll_ms_median']:.1f}"))
        out.append(table(TITLES[key], ("", "haflowd", "serf"), rows))
        out.append(f"  ratio of p50s, serf / haflowd: {sc['ratio_p50_serf_over_haflowd']:.2f}x")
        heals = [r["serf"].get("healed_by") for r in sc["runs"]] + [r["haflowd"].get("healed_by") for r in sc["runs"]]
        restarted = sum(1 for x in heals if x == "victim restarted")
        if restarted:
            out.append(f"  (healing between runs: {restarted} victim restart(s) after the link came back)")
        if sc.get("non_loopback_listeners"):
            out.append(f"  WARNING: listening outside loopback: {', '.join(sc['non_loopback_listeners'])}")
        out.append("")
    sim = report.get("simulator")
    if sim is not None:
        out.append("\nsimulator (same core, virtual time, seed 1, defaults), started joined: "
                   "a crash -> dead on every survivor")
        out.append("  nodes   sim min   p50 s   p99 s   all s   msgs/node/s   false deaths   real s")
        for z in sim["sizes"]:
            out.append(f"  {z['nodes']:>5}  {z['minutes']:8g}  {z['detect_p50_s'] or 0:6.2f}  "
                       f"{z['detect_p99_s'] or 0:6.2f}  {z['detect_all_s'] or 0:6.2f}  {z['msgs_per_node_s']:12.2f}  "
                       f"{z['false_deaths']:13d}  {z['real_s']:7.1f}")
        c = sim["sizes"][-1] if sim["sizes"] else {}
        built = [part for part, key in (("event loop in C", "compiled"), ("core compiled by mypyc", "compiled_core"))
                 if c.get(key)]
        runs = sim.get("runs_1000")
        if runs:
            first = runs[0]["median_s"]
            out.append(f"  {c['nodes']} nodes, {c['minutes']:g} min, real s in {len(runs[0]['real_s'])} alternating "
                       f"rounds: median (each run)")
            for v in runs:
                what = f"the same run, {v['what']}"
                if v["what"] == "as built":
                    what = " and ".join(built) or "all in Python"
                out.append(f"    {what}: {v['median_s']:.1f} ({', '.join(f'{x:.1f}' for x in v['real_s'])})"
                           + (f"  {v['median_s'] / max(first, 1e-9):.2f}x" if v is not runs[0] else "")
                           + ("" if v["same_result"] else "  WARNING: a different result"))
        missing = [part for part, key in (("the C event loop", "compiled"), ("the compiled core", "compiled_core"))
                   if c and not c.get(key)]
        if missing:
            out.append(f"  (not built here, so run in Python: {' and '.join(missing)})")
        for j in sim.get("joins", []):
            took = f"{j['converged_after_s']:.0f} simulated s" if j["converged_after_s"] is not None else "never"
            out.append(f"  join of {j['nodes']} nodes through 3 seeds at once: all alive everywhere after {took}, "
                       f"{j['false_deaths']} false deaths, {j['real_s']:.1f} s real")
        for sl in sim["stall_loss"]:
            out.append(f"  false deaths, {sl['nodes']} nodes, {sl['minutes']} min, {sl['loss']:.0%} loss, "
                       f"{sl['stalling']} stalled 1 s in 10, {sl['seeds']} seeds: {sl['false_deaths']}"
                       + (f" e.g. (seed, t, observer, node) {sl['examples'][:2]}" if sl["false_deaths"] else ""))
    return "\n".join(out).rstrip()


# --------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench gossip", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--runs", type=int, default=MIN_RUNS,
                   help=f"failures per scenario (default {MIN_RUNS}, at least {MIN_RUNS})")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs) for inspection")
    p.add_argument("--sim-1000", action="store_true", help="also simulate 1,000 nodes for 10 minutes")
    p.add_argument("--stall-seeds", type=int, default=30, help="seeds of each stall-and-loss run (default 30)")
    p.add_argument("--sim-only", action="store_true", help="only the simulator figures (no Serf, no root)")
    args = p.parse_args(argv)
    if not MIN_RUNS <= args.runs <= MAX_RUNS:
        p.error(f"--runs: expected {MIN_RUNS}..{MAX_RUNS}")
    return args


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    key_file = tmp / "gossip.key"
    key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    key_file.chmod(0o600)
    report: dict[str, Any] = {
        "versions": versions(),
        "haflowd_gossip_defaults": gossip_defaults(),
        "runs": args.runs,
        "poll_every_ms": POLL_EVERY_S * 1000,
        "scenarios": {},
    }
    if not args.sim_only:
        report["scenarios"]["kill9"] = summarise(scenario_kill(tmp, args.runs, key_file))
        report["scenarios"]["cut_link"] = summarise(scenario_cut(tmp, args.runs, key_file))
    report["simulator"] = simulator_figures(args.sim_1000, args.stall_seeds)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [b for b in ("serf", "ip") if shutil.which(b) is None and not args.sim_only]
    if missing:
        log(f"not on PATH: {', '.join(missing)} (apt-get install serf iproute2)")
        return 1
    if os.geteuid() != 0 and not args.sim_only:
        log("needs root: scenario (b) creates network namespaces")
        return 1

    def go(tmp: Path) -> dict[str, Any]:
        sweep_stale_namespaces(NS_RE)
        return run(args, tmp)

    return run_main("haflowd-bench-gossip-", args.keep_tmp, args.json, go, render)


if __name__ == "__main__":
    sys.exit(main())
