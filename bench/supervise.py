"""haflowd against supervisord as a process supervisor: restart latency and idle footprint.

    scripts/bench supervise [--crashes N] [--idle-seconds S] [--json] [--keep-tmp]

1. Restart latency. Both supervisors run the same child,
   ``sh -c 'echo $$ > FIFO; exec sleep 100000'``: it announces its pid on a FIFO
   that this bench holds open (O_RDWR | O_NONBLOCK: opening it never blocks, reading
   it never sees EOF). The bench SIGKILLs the announced pid at t0 and polls the FIFO
   until a *different* pid arrives at t1; latency = t1 - t0. Before every crash the
   child has been up longer than the stability window (haflowd ``stable_after = "1s"``,
   supervisord ``startsecs=1``), so both restart at once rather than backing off.
2. Idle footprint. Six ``sleep 100000`` children (c1..c6) under each supervisor;
   once all are running, wait, then sample for ``--idle-seconds``: the daemon's own
   RSS and CPU (% of one core), and for haflowd separately its per-component guard
   processes (the daemon's direct children running guard.py).

Every wait has a deadline; everything started is torn down in ``finally`` (SIGTERM,
then SIGKILL to the process group and to every descendant seen); the temp dir is
removed. Only 127.0.0.1 and UNIX sockets are used.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from common import (
    BenchError,
    free_port,
    http_get,
    log,
    percentile,
    run_main,
    stop_tree,
    supervisord_head,
    supervisord_program,
    table,
    tail_files,
    toml_str,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable  # scripts/bench runs this file with the venv's python

CHILDREN = 6
STABLE_S = 1.0  # haflowd stable_after and supervisord startsecs
SETTLE_S = 1.3  # wait after each (re)start: longer than the stability window
START_TIMEOUT_S = 30.0  # a daemon up, a first pid announced, all children running
RESTART_TIMEOUT_S = 10.0  # one restart; far beyond any sane latency
STOP_TIMEOUT_S = 15.0  # SIGTERM to exit, then SIGKILL
FOOTPRINT_WARMUP_S = 3.0
SAMPLE_EVERY_S = 0.5
MAX_CRASHES = 1000
MAX_LINE = 4096
SLEEPER = ["sleep", "100000"]  # the footprint test's children
HEAD = ("", "haflowd", "supervisord")


def announcing_child(fifo: Path) -> list[str]:
    """The child of the latency test: announces its pid, then sleeps as that same pid."""
    return ["sh", "-c", f"echo $$ > {shlex.quote(str(fifo))}; exec sleep 100000"]


# --------------------------------------------------------------------- the FIFO


class PidFifo:
    """The bench's end of the FIFO on which children announce their pid, one per line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path, 0o600)
        # O_RDWR: we are a writer too, so a child's open() never blocks and we never read EOF.
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.poller = select.poll()
        self.poller.register(self.fd, select.POLLIN)
        self.buf = b""
        self.lines: deque[tuple[int, float]] = deque()  # (pid, perf_counter when it arrived)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def _read(self, arrived: float) -> None:
        try:
            self.buf += os.read(self.fd, 65536)
        except BlockingIOError:
            return
        while b"\n" in self.buf:
            line, _, self.buf = self.buf.partition(b"\n")
            with contextlib.suppress(ValueError):
                self.lines.append((int(line), arrived))
        self.buf = self.buf[-MAX_LINE:]

    def next_pid(self, timeout: float) -> tuple[int, float]:
        """The next announced pid and when it arrived; BenchError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not self.lines:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"no pid announced on {self.path} within {timeout:g}s")
            if self.poller.poll(max(1, math.ceil(left * 1000))):
                self._read(time.perf_counter())
        return self.lines.popleft()

    def next_new_pid(self, old: int, timeout: float) -> tuple[int, float]:
        deadline = time.monotonic() + timeout
        while True:
            pid, arrived = self.next_pid(max(0.0, deadline - time.monotonic()))
            if pid != old:
                return pid, arrived


# ---------------------------------------------------------------- the daemons


class Daemon:
    """One supervisor under test, in its own session, in its own directory."""

    label = "?"
    stop_timeout = STOP_TIMEOUT_S  # SIGTERM to exit, then SIGKILL

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.out = self.dir / "stdout.log"
        self.err = self.dir / "stderr.log"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv(), cwd=self.dir, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
            )

    @property
    def ps(self) -> psutil.Process:
        assert self.proc is not None
        return psutil.Process(self.proc.pid)

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise BenchError(f"{self.label} is not running (exit {code}); {self.tail()}")

    def tail(self, lines: int = 15) -> str:
        return tail_files((self.err, self.out), lines)

    def owns(self, pid: int) -> bool:
        """Is ``pid`` a descendant of this daemon (so killing it is safe)?"""
        try:
            return any(p.pid == self.ps.pid for p in psutil.Process(pid).parents())
        except psutil.Error:
            return False

    def check_listeners(self) -> list[str]:
        """TCP/UDP sockets of the daemon that listen anywhere but 127.0.0.1."""
        bad = []
        with contextlib.suppress(psutil.Error):
            for c in self.ps.net_connections(kind="inet"):
                listening = c.status == psutil.CONN_LISTEN or c.type == socket.SOCK_DGRAM
                if listening and c.laddr and c.laddr.ip != "127.0.0.1":
                    bad.append(f"{c.laddr.ip}:{c.laddr.port}")
        return bad

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the group; then SIGKILL to any descendant still alive."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        stop_tree(proc, self.label, self.stop_timeout)


class Haflowd(Daemon):
    label = "haflowd"

    def __init__(self, workdir: Path, components: dict[str, list[str]], crash_budget: int) -> None:
        super().__init__(workdir)
        self.port = free_port()
        self.config = self.dir / "haflowd.toml"
        lines = [
            "[node]",
            'name = "bench"',
            f"data_dir = {toml_str(str(self.dir / 'data'))}",
            "[api]",
            f'listen = "127.0.0.1:{self.port}"',
            f"control_socket = {toml_str(str(self.dir / 'ctl.sock'))}",
        ]
        for name, argv in components.items():
            lines += [
                "[[component]]",
                f"name = {toml_str(name)}",
                f"command = [{', '.join(toml_str(a) for a in argv)}]",
                f'stable_after = "{STABLE_S:g}s"',
                'backoff_initial = "1s"',
                f"crash_loop_failures = {crash_budget}",
                'stop_timeout = "5s"',
            ]
        self.config.write_text("\n".join(lines) + "\n")

    def argv(self) -> list[str]:
        return [PYTHON, "-m", "haflowd", "--config", str(self.config), "--log-format", "json"]

    def wait_up(self) -> None:
        def up() -> bool:
            self.check_alive()
            with contextlib.suppress(OSError, http.client.HTTPException):
                return http_get(self.port, "/liveness")[0] == 200
            return False

        wait_until("haflowd /liveness", START_TIMEOUT_S, up)

    def components(self) -> dict[str, dict[str, Any]]:
        status, body = http_get(self.port, "/components")
        if status != 200:
            raise BenchError(f"GET /components: {status}")
        return {c["name"]: c for c in json.loads(body)}

    def wait_running(self, names: list[str]) -> dict[str, dict[str, Any]]:
        def running() -> dict[str, dict[str, Any]] | None:
            self.check_alive()
            comps = self.components()
            ok = all(comps.get(n, {}).get("state") == "running" and comps[n].get("pid") for n in names)
            return comps if ok else None

        result: dict[str, dict[str, Any]] = wait_until("haflowd components running", START_TIMEOUT_S, running)
        return result

    def guards(self) -> list[psutil.Process]:
        out = []
        for p in self.ps.children():
            with contextlib.suppress(psutil.Error):
                if any("guard.py" in part for part in p.cmdline()):
                    out.append(p)
        return out


class Supervisord(Daemon):
    label = "supervisord"

    def __init__(self, workdir: Path, programs: dict[str, list[str]]) -> None:
        super().__init__(workdir)
        self.config = self.dir / "supervisord.conf"
        d = self.dir
        text = supervisord_head(d, "bench")
        for name, argv in programs.items():
            text += supervisord_program(d, name, shlex.join(argv), startsecs=f"{STABLE_S:g}", startretries=100,
                                        stopwaitsecs=5)
        self.config.write_text(text)

    def argv(self) -> list[str]:
        return ["supervisord", "-n", "-c", str(self.config)]

    def status(self) -> dict[str, tuple[str, int | None]]:
        """{program: (STATE, pid)} from ``supervisorctl status``."""
        try:
            r = subprocess.run(
                ["supervisorctl", "-c", str(self.config), "status"],
                capture_output=True,
                text=True,
                timeout=10,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {}
        out: dict[str, tuple[str, int | None]] = {}
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                pid = None
                if len(parts) >= 4 and parts[2] == "pid":
                    with contextlib.suppress(ValueError):
                        pid = int(parts[3].rstrip(","))
                out[parts[0]] = (parts[1], pid)
        return out

    def wait_running(self, names: list[str]) -> dict[str, tuple[str, int | None]]:
        def running() -> dict[str, tuple[str, int | None]] | None:
            self.check_alive()
            st = self.status()
            return st if all(st.get(n, ("", None))[0] == "RUNNING" for n in names) else None

        result: dict[str, tuple[str, int | None]] = wait_until(
            "supervisord programs RUNNING", START_TIMEOUT_S, running, every=0.5
        )
        return result


@contextlib.contextmanager
def running(daemon: Daemon) -> Iterator[Daemon]:
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


# --------------------------------------------------------------- measurements


def summary_ms(seconds: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    stats = {
        "min": min(ms),
        "median": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "max": max(ms),
        "mean": sum(ms) / len(ms),
    }
    return {"n": len(ms), **{k: round(v, 3) for k, v in stats.items()}, "samples": [round(x, 3) for x in ms]}


def crash_loop(daemon: Daemon, fifo: PidFifo, crashes: int) -> tuple[list[float], int]:
    """SIGKILL the announced child ``crashes`` times; (latencies in s, the last pid)."""
    pid, _ = fifo.next_pid(START_TIMEOUT_S)
    latencies: list[float] = []
    for i in range(crashes):
        time.sleep(SETTLE_S)
        daemon.check_alive()
        if not daemon.owns(pid):
            raise BenchError(f"{daemon.label}: announced pid {pid} is not its descendant")
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        try:
            pid, t1 = fifo.next_new_pid(pid, RESTART_TIMEOUT_S)
        except BenchError as e:
            raise BenchError(f"{daemon.label}: crash {i + 1}: {e}; {daemon.tail()}") from e
        latencies.append(t1 - t0)
    time.sleep(SETTLE_S)
    return latencies, pid


def latency_haflowd(tmp: Path, crashes: int) -> list[float]:
    fifo = PidFifo(tmp / "haflowd-pid.fifo")
    try:
        d = Haflowd(tmp / "haflowd-latency", {"c1": announcing_child(fifo.path)}, crash_budget=crashes + 100)
        with running(d):
            d.wait_up()
            lat, last = crash_loop(d, fifo, crashes)
            c1 = d.components()["c1"]
            if c1.get("pid") != last or c1.get("state") != "running":
                raise BenchError(f"haflowd /components disagrees: {c1} (last announced pid {last})")
            if c1.get("restarts") != crashes:
                log(f"haflowd reports {c1.get('restarts')} restarts, expected {crashes}")
            return lat
    finally:
        fifo.close()


def latency_supervisord(tmp: Path, crashes: int) -> list[float]:
    fifo = PidFifo(tmp / "supervisord-pid.fifo")
    try:
        d = Supervisord(tmp / "supervisord-latency", {"c1": announcing_child(fifo.path)})
        with running(d):
            lat, last = crash_loop(d, fifo, crashes)
            st = d.status().get("c1")
            if st != ("RUNNING", last):
                raise BenchError(f"supervisorctl disagrees: c1 {st} (last announced pid {last})")
            return lat
    finally:
        fifo.close()


def mib(n: float) -> float:
    return n / (1024 * 1024)


def cpu_s(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)  # the process itself, not its reaped children


def sample_idle(daemon: psutil.Process, guards: list[psutil.Process], seconds: float) -> dict[str, Any]:
    rss: list[int] = []
    guard_rss: list[int] = []
    cpu0, gcpu0, w0 = cpu_s(daemon), sum(cpu_s(g) for g in guards), time.monotonic()
    for _ in range(max(1, math.ceil(seconds / SAMPLE_EVERY_S))):
        time.sleep(SAMPLE_EVERY_S)
        rss.append(daemon.memory_info().rss)
        guard_rss.append(sum(g.memory_info().rss for g in guards))
    cpu1, gcpu1, w1 = cpu_s(daemon), sum(cpu_s(g) for g in guards), time.monotonic()
    wall = w1 - w0
    out: dict[str, Any] = {
        "wall_s": round(wall, 3),
        "rss_mib_median": mib(percentile(rss, 50)),
        "rss_mib_max": mib(max(rss)),
        "cpu_percent": 100 * (cpu1 - cpu0) / wall,
    }
    if guards:
        uss = None
        with contextlib.suppress(psutil.Error):
            uss = mib(sum(g.memory_full_info().uss for g in guards))
        out["guards"] = {
            "count": len(guards),
            "rss_mib_total": mib(percentile(guard_rss, 50)),
            "uss_mib_total": uss,
            "cpu_percent": 100 * (gcpu1 - gcpu0) / wall,
        }
    return out


def footprint_haflowd(tmp: Path, seconds: float) -> dict[str, Any]:
    names = [f"c{i}" for i in range(1, CHILDREN + 1)]
    d = Haflowd(tmp / "haflowd-idle", dict.fromkeys(names, SLEEPER), crash_budget=5)
    with running(d):
        d.wait_up()
        d.wait_running(names)
        time.sleep(FOOTPRINT_WARMUP_S)
        d.check_alive()
        guards = d.guards()
        if len(guards) != CHILDREN:
            log(f"haflowd has {len(guards)} guard processes, expected {CHILDREN}")
        result = sample_idle(d.ps, guards, seconds)
        result["non_local_listeners"] = d.check_listeners()
        states = {c["name"]: c["state"] for c in d.components().values()}
        if set(states.values()) != {"running"}:
            raise BenchError(f"haflowd components not all running while measuring: {states}")
        return result


def footprint_supervisord(tmp: Path, seconds: float) -> dict[str, Any]:
    names = [f"c{i}" for i in range(1, CHILDREN + 1)]
    d = Supervisord(tmp / "supervisord-idle", dict.fromkeys(names, SLEEPER))
    with running(d):
        d.wait_running(names)
        time.sleep(FOOTPRINT_WARMUP_S)
        d.check_alive()
        result = sample_idle(d.ps, [], seconds)
        result["non_local_listeners"] = d.check_listeners()
        if not all(s == "RUNNING" for s, _ in d.status().values()):
            raise BenchError("supervisord programs not all RUNNING while measuring")
        return result


# ------------------------------------------------------------------- report


def versions() -> dict[str, str]:
    from haflowd import __version__

    sv = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        sv = subprocess.run(
            ["supervisord", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    return {
        "haflowd": __version__,
        "supervisord": sv,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
    }


def render(report: dict[str, Any]) -> str:
    v = report["versions"]
    out = [
        f"haflowd {v['haflowd']}, supervisord {v['supervisord']}, python {v['python']}, "
        f"linux {v['kernel']}, {v['cpus']} CPUs",
        "",
    ]
    lat = report.get("restart_latency")
    if lat:
        h, s = lat["haflowd"], lat["supervisord"]
        rows = [(k, f"{h[k]:.2f}", f"{s[k]:.2f}") for k in ("min", "median", "p95", "p99", "max", "mean")]
        out.append(table(f"restart latency, ms (SIGKILL -> new pid announced; {lat['crashes']} crashes each)",
                         HEAD, rows))
        out.append(f"  ratio of medians, supervisord / haflowd: {lat['ratio_median_supervisord_over_haflowd']:.2f}x")
        out.append("")
    fp = report.get("footprint")
    if fp:
        h, s = fp["haflowd"], fp["supervisord"]
        g = h.get("guards", {})
        na = "-"
        uss = g.get("uss_mib_total")
        rows = [
            ("daemon RSS, MiB (median)", f"{h['rss_mib_median']:.1f}", f"{s['rss_mib_median']:.1f}"),
            ("daemon RSS, MiB (max)", f"{h['rss_mib_max']:.1f}", f"{s['rss_mib_max']:.1f}"),
            ("daemon idle CPU, % of one core", f"{h['cpu_percent']:.2f}", f"{s['cpu_percent']:.2f}"),
            (f"guard processes ({g.get('count', 0)}): RSS total, MiB", f"{g.get('rss_mib_total', 0):.1f}", na),
            ("guard processes: USS total, MiB", na if uss is None else f"{uss:.1f}", na),
            ("guard processes: idle CPU, % of one core", f"{g.get('cpu_percent', 0):.2f}", na),
            (
                "daemon + guards RSS, MiB",
                f"{h['rss_mib_median'] + g.get('rss_mib_total', 0):.1f}",
                f"{s['rss_mib_median']:.1f}",
            ),
        ]
        out.append(
            table(
                f"footprint: {CHILDREN} children (sleep), sampled {fp['idle_seconds']:g}s "
                f"after all running + {FOOTPRINT_WARMUP_S:g}s",
                HEAD,
                rows,
            )
        )
        for name in ("haflowd", "supervisord"):
            if fp[name]["non_local_listeners"]:
                out.append(f"  WARNING: {name} listens on {', '.join(fp[name]['non_local_listeners'])}")
    return "\n".join(out).rstrip()


# --------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench supervise", description=__doc__.split("\n\n")[0])
    p.add_argument("--crashes", type=int, default=20, help="SIGKILLs per supervisor (default 20)")
    p.add_argument("--idle-seconds", type=float, default=10.0, help="footprint sampling window (default 10)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs) for inspection")
    args = p.parse_args(argv)
    if not 1 <= args.crashes <= MAX_CRASHES:
        p.error(f"--crashes: expected 1..{MAX_CRASHES}")
    if not 0.5 <= args.idle_seconds <= 3600:
        p.error("--idle-seconds: expected 0.5..3600")
    return args


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    report: dict[str, Any] = {"versions": versions()}
    log(f"restart latency: haflowd, {args.crashes} crashes (~{args.crashes * SETTLE_S:.0f}s)")
    h = summary_ms(latency_haflowd(tmp, args.crashes))
    log(f"restart latency: supervisord, {args.crashes} crashes")
    s = summary_ms(latency_supervisord(tmp, args.crashes))
    report["restart_latency"] = {
        "crashes": args.crashes,
        "haflowd": h,
        "supervisord": s,
        "ratio_median_supervisord_over_haflowd": s["median"] / h["median"],
    }
    log(f"footprint: haflowd, {CHILDREN} children, {args.idle_seconds:g}s")
    fh = footprint_haflowd(tmp, args.idle_seconds)
    log(f"footprint: supervisord, {CHILDREN} programs, {args.idle_seconds:g}s")
    fs = footprint_supervisord(tmp, args.idle_seconds)
    report["footprint"] = {"children": CHILDREN, "idle_seconds": args.idle_seconds, "haflowd": fh, "supervisord": fs}
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("supervisord") is None or shutil.which("supervisorctl") is None:
        log("supervisord/supervisorctl not on PATH (apt-get install supervisor)")
        return 1
    return run_main("haflowd-bench-", args.keep_tmp, args.json, lambda tmp: run(args, tmp), render)


if __name__ == "__main__":
    sys.exit(main())
