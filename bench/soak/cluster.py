"""The soak's cluster: the csync2 fixture's three namespaces and daemons, with components,
libfaketime on one node, and the levers the nemesis pulls (nftables, tc, signals, tmpfs).

Built on :class:`tests.fixtures.csync2.SyncCluster` (namespaces 198.18.0.11-13 on a bridge,
a ``csync2 -ii`` server per node, a haflowd per node with ``[sync]`` and ``[gossip]``): the
soak adds only what the fixture does not have.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import BenchError, log, run_cmd
from tests.fixtures.csync2 import NODES, SyncCluster, _sweep_hosts_files, csync2_unavailable
from tests.fixtures.netns import NsDaemon, Topology, sweep_stale

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
CLOCK_NODE = "n3"  # the one node started under libfaketime
MARKER_ENV = "HAFLOWD_SUPERVISOR"
IFACE = "eth0"
TABLES = ("soak_part", "soak_loss")

# a sleep-like child that proves it is alive through a heartbeat file, and one that forks
COMPONENT_PY = """\
import os, sys, time
mode, hb = sys.argv[1], sys.argv[2]
if mode == "forker" and os.fork() == 0:
    while True:
        time.sleep(3600)
while True:
    with open(hb, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(1)
"""


def components_body(py: str, script: Path, d: Path) -> str:
    hb = d / "hb-sleeper"
    return f"""
[[component]]
name = "sleeper"
command = [{json.dumps(py)}, "-I", {json.dumps(str(script))}, "sleeper", {json.dumps(str(hb))}]
stable_after = "2s"
[component.health]
command = ["sh", "-c", {json.dumps(f"test -e {hb}")}]
interval = "2s"
timeout = "1s"
failures = 3
start_period = "2s"

[[component]]
name = "forker"
command = [{json.dumps(py)}, "-I", {json.dumps(str(script))}, "forker", {json.dumps(str(d / "hb-forker"))}]
stable_after = "2s"

[[component]]
name = "shell"
command = ["sh", "-c", "sleep 100000 & exec sleep 100001"]
stable_after = "2s"
"""


class SoakCluster:
    """Three nodes, their daemons, and every fault lever; ``destroy`` undoes all of it."""

    def __init__(self, tmp: Path, faketime: bool) -> None:
        self.tmp = tmp
        self.sync = SyncCluster(tmp, Topology(3))
        self.faketime = faketime
        self.clock_file = tmp / "faketime"
        self.clock_offset = 0.0
        self.lock = threading.RLock()
        self.expected_down: dict[str, bool] = dict.fromkeys(NODES, False)
        self.stopped: set[str] = set()
        self.mounted: list[Path] = []
        self.tbf: set[str] = set()

    # ------------------------------------------------------------------ set-up

    def create(self) -> None:
        why = csync2_unavailable()
        if why:
            raise BenchError(why)
        if shutil.which("nft") is None:
            raise BenchError("nft is not installed (apt-get install nftables; scripts/soak does it)")
        sweep_stale()
        _sweep_hosts_files()
        self.sync.create()
        script = self.tmp / "component.py"
        script.write_text(COMPONENT_PY)
        extra_body = {n: components_body(sys.executable, script, self.sync[n].dir) for n in NODES}
        extra_env: dict[str, dict[str, str]] = {}
        if self.faketime:
            self.clock_file.write_text("+0s\n")
            # wall and monotonic move together: libfaketime 0.9.10 breaks Python's time.sleep
            # with DONT_FAKE_MONOTONIC=1. Re-read at most once a second, not at every call.
            # NO_FAKE_STAT: a real clock step leaves the mtimes already on disk alone; shifted
            # ones would make csync2 (a child, it inherits the preload) see every file changed.
            extra_env[CLOCK_NODE] = {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME_TIMESTAMP_FILE": str(self.clock_file),
                                     "FAKETIME_CACHE_DURATION": "1", "NO_FAKE_STAT": "1"}
            # every process of that node lives in its time: its csync2 server too
            self.sync.kill_server(CLOCK_NODE)
            self.sync.start_server(CLOCK_NODE, extra_env[CLOCK_NODE])
        self.sync.start_daemons(gossip=True, extra_body=extra_body, extra_env=extra_env, interval="30s")

    def daemon(self, name: str) -> NsDaemon:
        return self.sync.daemon(name)

    def pid(self, name: str) -> int | None:
        d = self.sync[name].daemon
        if d is None or d.proc is None or d.proc.poll() is not None:
            return None
        return d.proc.pid

    def data_dir(self, name: str) -> Path:
        return self.daemon(name).dir / "data"

    def dags(self, name: str) -> Path:
        return self.sync[name].dags

    def ns(self, name: str) -> str:
        return self.sync[name].ns

    def addr(self, name: str) -> str:
        return self.sync[name].addr

    def all_alive(self) -> bool:
        """Every daemon sees every node alive (through the fixture's namespace workers)."""
        for n in NODES:
            try:
                status, body = self.daemon(n).get("/peers")
            except (OSError, TimeoutError):
                return False
            if status != 200 or {p["name"] for p in body if p["status"] == "alive"} != set(NODES):
                return False
        return True

    # ------------------------------------------------------------------ processes

    def kill_daemon(self, name: str) -> None:
        """SIGKILL to the daemon alone: its guards must notice and take their trees with them."""
        with self.lock:
            self.expected_down[name] = True
            d = self.daemon(name)
            assert d.proc is not None
            self.stopped.discard(name)
            with contextlib.suppress(ProcessLookupError):
                os.kill(d.proc.pid, signal.SIGKILL)
            d.proc.wait(10)

    def start_daemon(self, name: str, timeout: float = 30.0) -> float:
        """Start it again; the time at which its /liveness first answered."""
        d = self.daemon(name)
        with self.lock:
            d.start(wait=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if d.live():
                    with self.lock:
                        self.expected_down[name] = False
                    return time.time()
            except (AssertionError, TimeoutError):
                if d.proc is not None and d.proc.poll() is not None:
                    tail = d.log_text().strip().splitlines()[-3:]
                    raise BenchError(f"haflowd on {name} exited {d.proc.returncode} at start: "
                                     + " | ".join(ln[-300:] for ln in tail)) from None
            time.sleep(0.1)
        raise BenchError(f"haflowd on {name} did not answer /liveness within {timeout:g}s")

    def signal_daemon(self, name: str, sig: signal.Signals) -> None:
        pid = self.pid(name)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if sig == signal.SIGSTOP:
            self.stopped.add(name)
        elif sig == signal.SIGCONT:
            self.stopped.discard(name)

    def tree(self, name: str) -> set[int]:
        pid = self.pid(name)
        if pid is None:
            return set()
        try:
            return {pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))}
        except psutil.Error:
            return set()

    def marked(self) -> list[dict[str, Any]]:
        """Every live process carrying one of this run's daemon markers (``node:data_dir``)."""
        out = []
        needle = str(self.tmp)
        for p in psutil.process_iter(["pid", "ppid", "name"]):
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue
                marker = p.environ().get(MARKER_ENV, "")
                if needle in marker:
                    out.append({"pid": p.pid, "ppid": p.info["ppid"], "marker": marker,
                                "cmd": " ".join(p.cmdline())[:200]})
            except (psutil.Error, OSError):
                continue
        return out

    def orphans(self) -> list[dict[str, Any]]:
        """Marked processes outside every live daemon's tree."""
        live: set[int] = set()
        for n in NODES:
            live |= self.tree(n)
        return [p for p in self.marked() if p["pid"] not in live]

    # ------------------------------------------------------------------ network faults (nftables, tc)

    def nft(self, name: str, script: str) -> None:
        r = subprocess.run(["ip", "netns", "exec", self.ns(name), "nft", "-f", "-"], input=script, text=True,
                           capture_output=True, timeout=10)
        if r.returncode != 0:
            raise BenchError(f"nft in {name}: exit {r.returncode}: {r.stderr.strip()} (script: {script!r})")

    def drop_from(self, name: str, sources: list[str]) -> None:
        """``name`` drops every packet that ``sources`` send it (on eth0 only: loopback is untouched)."""
        addrs = ", ".join(self.addr(s) for s in sources)
        self.nft(name, f"table inet soak_part {{\n chain in {{ type filter hook input priority 0; policy accept;\n"
                       f"  iifname \"{IFACE}\" ip saddr {{ {addrs} }} drop\n }}\n}}\n")

    def loss(self, name: str, percent: int, direction: str) -> None:
        rules = []
        if direction in ("in", "both"):
            rules.append(f" chain in {{ type filter hook input priority 0; policy accept;\n"
                         f"  iifname \"{IFACE}\" numgen random mod 100 < {percent} drop\n }}\n")
        if direction in ("out", "both"):
            rules.append(f" chain out {{ type filter hook output priority 0; policy accept;\n"
                         f"  oifname \"{IFACE}\" numgen random mod 100 < {percent} drop\n }}\n")
        self.nft(name, "table inet soak_loss {\n" + "".join(rules) + "}\n")

    def heal_table(self, name: str, table: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.ns(name), "nft", "delete", "table", "inet", table],
                       capture_output=True, timeout=10, check=False)

    def rate_limit(self, name: str, rate: str, latency: str) -> None:
        run_cmd(["ip", "netns", "exec", self.ns(name), "tc", "qdisc", "replace", "dev", IFACE, "root", "tbf",
                 "rate", rate, "burst", "4kb", "latency", latency], timeout=10)
        self.tbf.add(name)

    def rate_unlimit(self, name: str) -> None:
        run_cmd(["ip", "netns", "exec", self.ns(name), "tc", "qdisc", "del", "dev", IFACE, "root"], timeout=10,
                check=False)
        self.tbf.discard(name)

    # ------------------------------------------------------------------ disk and clock

    def fill_data_dir(self, name: str) -> Path:
        """A 1 MiB tmpfs on the data_dir (its files copied in first, it stays until teardown), filled up."""
        d = self.data_dir(name)
        if d not in self.mounted:
            stash = self.tmp / f"stash-{name}"
            shutil.rmtree(stash, ignore_errors=True)
            if d.exists():
                run_cmd(["cp", "-a", f"{d}/.", str(stash)], timeout=10, check=False)
            d.mkdir(parents=True, exist_ok=True)
            run_cmd(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(d)], timeout=10)
            self.mounted.append(d)
            if stash.exists():
                run_cmd(["cp", "-a", f"{stash}/.", str(d)], timeout=10, check=False)
        fill = d / "soak-fill"
        run_cmd(["dd", "if=/dev/zero", f"of={fill}", "bs=64k"], timeout=20, check=False)  # ends with ENOSPC
        return fill

    def free_data_dir(self, name: str) -> None:
        with contextlib.suppress(OSError):
            (self.data_dir(name) / "soak-fill").unlink()

    def step_clock(self, seconds: float) -> None:
        self.clock_offset += seconds
        self.clock_file.write_text(f"+{self.clock_offset:g}s\n")

    # ------------------------------------------------------------------ teardown

    def heal_all(self) -> None:
        """Every lever back: tables gone, rate limits gone, stopped daemons continued."""
        for n in NODES:
            with contextlib.suppress(BenchError, OSError, subprocess.SubprocessError):
                for t in TABLES:
                    self.heal_table(n, t)
                if n in self.tbf:
                    self.rate_unlimit(n)
            self.signal_daemon(n, signal.SIGCONT)
            self.free_data_dir(n)

    def destroy(self) -> list[str]:
        """Kill everything, delete the namespaces, unmount; the namespaces that could not be deleted."""
        with contextlib.suppress(Exception):
            self.heal_all()
        left: list[str] = []
        try:
            left = self.sync.destroy()
        finally:
            # whatever still carries one of our markers, or runs from our directory (a daemon a
            # fault's thread restarted late, a csync2), goes too (orphans were reported before this)
            victims = {p["pid"] for p in self.marked()}
            for p in psutil.process_iter(["pid", "cmdline"]):
                with contextlib.suppress(psutil.Error, TypeError):
                    if p.pid != os.getpid() and str(self.tmp) in " ".join(p.info["cmdline"] or []):
                        victims.add(p.pid)
            for pid in victims:
                with contextlib.suppress(psutil.Error):
                    psutil.Process(pid).kill()
            for d in reversed(self.mounted):
                r = run_cmd(["umount", str(d)], timeout=10, check=False)
                if r.returncode != 0:
                    log(f"umount {d}: {r.stderr.strip()}; lazy unmount")
                    run_cmd(["umount", "-l", str(d)], timeout=10, check=False)
            self.mounted.clear()
        return left
