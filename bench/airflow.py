"""haflowd against supervisord for a real Airflow 3 scheduler: SIGKILL of its main PID.

    scripts/bench airflow [--kills N] [--supervisord-kills M] [--bound S] [--idle-seconds S]
                          [--parallelism P] [--skip-footprint | --footprint-only] [--with-openssl]
                          [--json] [--keep-tmp]

1. Restart after SIGKILL. The same ``airflow scheduler`` (same environment, one migrated
   SQLite AIRFLOW_HOME) under three masters, one after the other:
   - the bench itself, as the reference for how fast Airflow can start: it SIGKILLs the
     scheduler's whole tree and starts a new one at once (a zero-overhead supervisor that
     leaves nothing behind);
   - haflowd, ``preset = "airflow-scheduler"``;
   - supervisord 4.2.5, ``autorestart=true``.
   Before each kill the scheduler has been healthy for SETTLE_S (longer than haflowd's
   ``stable_after``). t0 = SIGKILL of the main PID; t1 = the first moment at which
   ``GET /health`` on AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT answers 200
   AND the process listening on that port is the new main PID or one of its descendants
   (psutil.net_connections). A port answered by anything else (an orphan of the old tree)
   does not count. Every wait is bounded (``--bound``, 90 s); an attempt that hits the
   bound says who held the port. Orphans: processes of the old tree (snapshot just
   before the kill) still alive at t1 (or at the bound) and KILL_PLUS_S after t0.
   Between supervisord attempts the bench kills the orphans and restarts the program, so
   each attempt starts from one healthy tree.
2. Footprint. scheduler, dag-processor, api-server and triggerer from haflowd's presets
   (one daemon), all healthy, then sampled for ``--idle-seconds``: the daemon's RSS, its
   guards' RSS and USS; then the same four programs under supervisord, its RSS.

Every Airflow process carries HAFLOWD_BENCH_AIRFLOW=<temp dir> in its environment and
starts in <temp dir>/airflow-cwd; the bench kills whatever carries the one or sits in the other after
each phase and at the end (also on Ctrl-C and SIGTERM), after stopping the supervisors.
Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from common import (
    BenchError,
    free_port,
    http_get,
    log,
    percentile,
    run_cmd,
    run_main,
    supervisord_head,
    supervisord_program,
    table,
    toml_str,
    wait_until,
)
from supervise import Daemon, mib, sample_idle, versions

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable  # scripts/bench runs this file with the venv's python
AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"
MARKER = "HAFLOWD_BENCH_AIRFLOW"
RUN_DIR = "airflow-cwd"  # under the temp dir: the working directory of every Airflow process

SETTLE_S = 12.0  # healthy this long before a kill: > haflowd's stable_after (10 s), the tree fully forked
KILL_PLUS_S = 5.0  # orphans are counted again this long after the kill
POLL_S = 0.05
START_TIMEOUT_S = 120.0  # a first healthy scheduler
FOOTPRINT_TIMEOUT_S = 300.0  # four components healthy (the job-heartbeat probes run every 15 s)
STOP_TIMEOUT_S = 90.0  # SIGTERM -> exit of a supervisor stopping four Airflow components
FOOTPRINT_WARMUP_S = 5.0
MIGRATE_TIMEOUT_S = 300.0
COMPONENTS = {  # name -> (haflowd preset, command)
    "scheduler": ("airflow-scheduler", ["airflow", "scheduler"]),
    "dag-processor": ("airflow-dag-processor", ["airflow", "dag-processor"]),
    "api-server": ("airflow-api-server", ["airflow", "api-server"]),
    "triggerer": ("airflow-triggerer", ["airflow", "triggerer"]),
}
HEAD = ("", "haflowd", "supervisord")


# ------------------------------------------------------------------- Airflow


@dataclass
class Airflow:
    home: Path
    env: dict[str, str]  # what every Airflow process gets on top of the bench's own environment
    health_port: int
    api_port: int
    log_port: int  # worker_log_server_port: the scheduler's serve-logs child listens there
    cwd: Path  # every Airflow process starts here (and only they do): the sweep finds them by it


def airflow_env(home: Path, marker: str, parallelism: int) -> tuple[dict[str, str], int, int]:
    """The environment of tests/fixtures/airflow.py (copied: that module needs pytest), plus the
    health server switched on (haflowd's preset adds that itself; supervisord needs it given)."""
    health, api = free_port(), free_port()
    env = {
        "PATH": f"{AIRFLOW_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(health),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": "haflowd-bench-jwt-secret",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__CELERY__FLOWER_PORT": str(free_port()),
        "AIRFLOW__CELERY__FLOWER_HOST": "127.0.0.1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api}/execution/",
        MARKER: marker,
    }
    return env, health, api


def prepare_airflow(tmp: Path, parallelism: int) -> Airflow:
    home = tmp / "airflow-home"
    (home / "dags").mkdir(parents=True)
    cwd = tmp / RUN_DIR
    cwd.mkdir()
    env, health, api = airflow_env(home, str(tmp), parallelism)
    t = time.monotonic()
    run_cmd([str(AIRFLOW_BIN / "airflow"), "db", "migrate"], timeout=MIGRATE_TIMEOUT_S, env={**os.environ, **env})
    log(f"airflow db migrate: {time.monotonic() - t:.1f}s")
    log_port = int(env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"])
    return Airflow(home=home, env=env, health_port=health, api_port=api, log_port=log_port, cwd=cwd)


def marked(marker: str) -> list[psutil.Process]:
    """Every live process the bench started: the marker in its environment, or its working directory in the
    temp dir. The environment alone misses Airflow's serve-logs and executor workers: setproctitle reuses
    the memory /proc/PID/environ shows, so theirs reads empty."""
    out = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.pid == os.getpid() or p.status() == psutil.STATUS_ZOMBIE:
                continue
            if p.environ().get(MARKER) == marker or (p.cwd() + "/").startswith(f"{marker}/{RUN_DIR}/"):
                out.append(p)
    return out


def sweep(marker: str, when: str) -> int:
    """SIGKILL every process that carries the bench's marker; how many there were."""
    procs = marked(marker)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    if procs:
        psutil.wait_procs(procs, timeout=10)
        log(f"{when}: killed {len(procs)} leftover Airflow process(es)")
    return len(procs)


def health_status(port: int) -> int | None:
    with contextlib.suppress(OSError, http.client.HTTPException):
        return http_get(port, "/health", timeout=1.0)[0]
    return None


def listeners(port: int) -> list[int]:
    """Pids of the processes holding a TCP socket that listens on ``port``."""
    pids = set()
    with contextlib.suppress(psutil.Error):
        for c in psutil.net_connections("tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                pids.add(c.pid)
    return sorted(pids)


def in_tree(pid: int, root: int) -> bool:
    if pid == root:
        return True
    try:
        return any(p.pid == root for p in psutil.Process(pid).parents())
    except psutil.Error:
        return False


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:  # is_running() notices a reused pid
                out.append(p)
    return out


def describe(pid: int) -> str:
    try:
        p = psutil.Process(pid)
        return f"pid {pid} ({' '.join(p.cmdline())[:60] or p.name()}, parent {p.ppid()})"
    except psutil.Error:
        return f"pid {pid} (gone)"


# ------------------------------------------------------------- one SIGKILL


@dataclass
class Attempt:
    healthy_s: float | None = None  # SIGKILL -> healthy new scheduler; None: not within the bound
    new_pid_s: float | None = None  # SIGKILL -> the supervisor reports a new main pid
    tree_size: int = 0  # processes in the old tree just before the kill
    orphans_at_healthy: int = 0  # old tree still alive at t1 (or at the bound)
    orphans_after: int = 0  # old tree still alive KILL_PLUS_S after the kill (and after t1)
    log_port: str = ""  # who holds worker_log_server_port afterwards: "new tree", "orphan", "nobody"
    note: str = ""
    orphan_pids: list[int] = field(default_factory=list)


def holder_text(holders: list[int], old: set[int]) -> str:
    stale = [h for h in holders if h in old]
    if stale:
        return f"port held by orphan {describe(stale[0])} of the old tree"
    if holders:
        return f"port held by {describe(holders[0])}, outside the new tree"
    return "nothing listens on the port"


def await_healthy(port: int, new_main: Callable[[], int | None], t0: float, bound: float,
                  attempt: Attempt, old: set[int], probe: bool) -> int | None:
    """Poll until /health is 200 from a listener in the new main pid's tree; that pid, or None at the bound.

    ``probe``: send GET /health from the kill on, as a load balancer would. Without it, the port
    gets no request until a process of the new tree listens on it (only the socket is watched).
    """
    note = ""
    status: int | None = None
    while True:
        now = time.perf_counter()
        pid = new_main()
        if pid is not None and attempt.new_pid_s is None:
            attempt.new_pid_s = now - t0
        if probe:
            status = health_status(port)
            if status == 200:
                holders = listeners(port)
                if pid is not None and any(in_tree(h, pid) for h in holders):
                    attempt.healthy_s = time.perf_counter() - t0
                    return pid
                note = holder_text(holders, old) + ", answering 200"
        else:
            holders = listeners(port)
            if pid is not None and any(in_tree(h, pid) for h in holders):
                status = health_status(port)
                if status == 200:
                    attempt.healthy_s = time.perf_counter() - t0
                    return pid
            else:
                note = holder_text(holders, old)
        if now - t0 > bound:
            if not probe and note.startswith("port held by"):
                note += f" (asked now, it answers {health_status(port)})"
            attempt.note = f"never within {bound:g} s: {note or f'/health last answered {status}'}"
            return pid
        time.sleep(POLL_S)


def log_port_holder(port: int, new: int | None, old: set[int], timeout: float) -> str:
    """Who serves the task logs: the new tree's serve-logs, an orphan of the old one, or nobody."""
    deadline = time.monotonic() + timeout
    while True:
        holders = listeners(port)
        if new is not None and any(in_tree(h, new) for h in holders):
            return "new tree"
        if time.monotonic() > deadline:
            stale = [h for h in holders if h in old]
            return f"orphan {stale[0]}" if stale else ("other" if holders else "nobody")
        time.sleep(0.2)


def one_kill(label: str, af: Airflow, main_pid: int, kill: Callable[[], None], new_main: Callable[[], int | None],
             bound: float, probe: bool = True) -> tuple[Attempt, int | None]:
    """SIGKILL (via ``kill``) the scheduler whose main pid is ``main_pid``; measure; (result, new main pid)."""
    old_tree = tree(main_pid)
    old = {p.pid for p in old_tree}
    attempt = Attempt(tree_size=len(old_tree))
    t0 = time.perf_counter()
    kill()
    pid = await_healthy(af.health_port, new_main, t0, bound, attempt, old, probe)
    attempt.orphans_at_healthy = len([p for p in alive(old_tree) if p.pid != main_pid])
    left = KILL_PLUS_S - (time.perf_counter() - t0)
    if left > 0:
        time.sleep(left)
    orphans = [p for p in alive(old_tree) if p.pid != main_pid]
    attempt.orphans_after = len(orphans)
    attempt.orphan_pids = [p.pid for p in orphans]
    attempt.log_port = log_port_holder(af.log_port, pid, old, 10.0 if attempt.healthy_s is not None else 0.0)
    shown = "-" if attempt.healthy_s is None else f"{attempt.healthy_s:.2f}s"
    log(f"{label}: healthy again {shown}, orphans {attempt.orphans_at_healthy}/{attempt.orphans_after} "
        f"of {attempt.tree_size - 1}, log port: {attempt.log_port}{'; ' + attempt.note if attempt.note else ''}")
    return attempt, pid


def wait_first_healthy(port: int, main_pid: Callable[[], int | None], what: str, timeout: float,
                       check: Callable[[], None]) -> int:
    def ok() -> int | None:
        check()
        pid = main_pid()
        if pid is None or health_status(port) != 200:
            return None
        return pid if any(in_tree(h, pid) for h in listeners(port)) else None

    result: int = wait_until(what, timeout, ok, every=0.2)
    return result


# ------------------------------------------------------------ the masters


class Reference:
    """The bench as a perfect supervisor: kill the whole tree, start a new scheduler at once."""

    def __init__(self, af: Airflow, workdir: Path) -> None:
        self.af = af
        self.dir = workdir
        self.dir.mkdir(parents=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.dir / "scheduler.log", "ab") as out:
            self.proc = subprocess.Popen(["airflow", "scheduler"], env={**os.environ, **self.af.env}, cwd=self.af.cwd,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def main(self) -> int | None:
        return None if self.proc is None or self.proc.poll() is not None else self.proc.pid

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"airflow scheduler exited {self.proc.returncode}; see {self.dir / 'scheduler.log'}")

    def kill_and_restart(self) -> None:
        assert self.proc is not None
        procs = tree(self.proc.pid)
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.kill()
        self.proc.wait(10)
        psutil.wait_procs(procs, timeout=10)
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(psutil.Error):
                for p in tree(self.proc.pid):
                    p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            self.proc = None


class AirflowDaemon(Daemon):
    """supervise.Daemon with the venv's bin on the daemon's PATH too (both see the same
    environment), and time for Airflow's own graceful shutdown on a busy machine."""

    stop_timeout = STOP_TIMEOUT_S

    def start(self) -> None:
        env = {**os.environ, "PATH": f"{AIRFLOW_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(self.argv(), cwd=self.dir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, start_new_session=True)


class Haflowd(AirflowDaemon):
    label = "haflowd"

    def __init__(self, workdir: Path, af: Airflow, names: list[str], crash_budget: int,
                 openssl: bool = False) -> None:
        super().__init__(workdir)
        self.port = free_port()
        self.openssl = openssl
        self.config = self.dir / "haflowd.toml"
        env = ", ".join(f"{k} = {toml_str(v)}" for k, v in af.env.items())
        lines = [
            "[node]",
            'name = "bench-airflow"',
            f"data_dir = {toml_str(str(self.dir / 'data'))}",
            "[api]",
            f'listen = "127.0.0.1:{self.port}"',
            f"control_socket = {toml_str(str(self.dir / 'ctl.sock'))}",
        ]
        for name in names:
            lines += [
                "[[component]]",
                f"name = {toml_str(name)}",
                f"preset = {toml_str(COMPONENTS[name][0])}",
                f"environment = {{ {env} }}",
                f"working_dir = {toml_str(str(af.cwd))}",
                # the default (5 exits in 2 min = a crash loop) would stop a bench that kills every ~20 s
                f"crash_loop_failures = {crash_budget}",
            ]
        self.config.write_text("\n".join(lines) + "\n")

    def argv(self) -> list[str]:
        args = ["--config", str(self.config), "--log-format", "json"]
        if self.openssl:  # as a config that needs TLS runs it: ssl is loaded before haflowd decides
            return [PYTHON, "-c", "import ssl, sys; from haflowd.__main__ import main; sys.exit(main())", *args]
        return [PYTHON, "-m", "haflowd", *args]

    def components(self) -> dict[str, dict[str, Any]]:
        status, body = http_get(self.port, "/components")
        if status != 200:
            raise BenchError(f"GET /components: {status}")
        return {c["name"]: c for c in json.loads(body)}

    def wait_up(self) -> None:
        def up() -> bool:
            self.check_alive()
            with contextlib.suppress(OSError, http.client.HTTPException):
                return http_get(self.port, "/liveness")[0] == 200
            return False

        wait_until("haflowd /liveness", 60, up)

    def main_pid(self, name: str = "scheduler") -> int | None:
        # "starting" until haflowd's own probe passes (every 10 s): the pid is the new main pid already
        with contextlib.suppress(OSError, http.client.HTTPException, BenchError, ValueError):
            c = self.components().get(name, {})
            if c.get("state") in ("starting", "running") and c.get("pid"):
                return int(c["pid"])
        return None

    def guards(self) -> list[psutil.Process]:
        out = []
        for p in self.ps.children():
            with contextlib.suppress(psutil.Error):
                if any("guard.py" in part for part in p.cmdline()):
                    out.append(p)
        return out


def supervisor_env(env: dict[str, str]) -> str:
    def quote(v: str) -> str:
        return '"' + v.replace("%", "%%").replace('"', '\\"') + '"'

    return ",".join(f"{k}={quote(v)}" for k, v in env.items())


class Supervisord(AirflowDaemon):
    label = "supervisord"

    def __init__(self, workdir: Path, af: Airflow, names: list[str]) -> None:
        super().__init__(workdir)
        self.config = self.dir / "supervisord.conf"
        d = self.dir
        text = supervisord_head(d, "bench-airflow")
        for name in names:
            # stopasgroup/killasgroup only act on a stop, not when the main process dies;
            # they are here so that the bench's own stop leaves less to sweep
            text += supervisord_program(d, name, " ".join(COMPONENTS[name][1]), environment=supervisor_env(af.env),
                                        directory=str(af.cwd), stopwaitsecs=30)
        self.config.write_text(text)

    def argv(self) -> list[str]:
        return ["supervisord", "-n", "-c", str(self.config)]

    def ctl(self, *args: str) -> str:
        return run_cmd(["supervisorctl", "-c", str(self.config), *args], timeout=90, check=False).stdout.strip()

    def program_pids(self) -> list[int]:
        """supervisord's direct children: the programs' main processes."""
        with contextlib.suppress(psutil.Error):
            return [p.pid for p in self.ps.children() if p.status() != psutil.STATUS_ZOMBIE]
        return []

    def main_pid(self, name: str = "scheduler") -> int | None:
        # with one program the only child is its main process; with several, ask supervisorctl
        pids = self.program_pids()
        return pids[0] if len(pids) == 1 else None


# --------------------------------------------------------------- measurements


def summary_s(attempts: list[Attempt]) -> dict[str, Any]:
    ok = [a.healthy_s for a in attempts if a.healthy_s is not None]
    out: dict[str, Any] = {"n": len(attempts), "healthy": len(ok), "attempts": [asdict(a) for a in attempts]}
    if ok:
        out.update(min=min(ok), median=percentile(ok, 50), p99=percentile(ok, 99), max=max(ok))
    spawn = [a.new_pid_s for a in attempts if a.new_pid_s is not None]
    if spawn:
        out["new_pid_median"] = percentile(spawn, 50)
    out["orphans_at_healthy_max"] = max(a.orphans_at_healthy for a in attempts)
    out["orphans_after_max"] = max(a.orphans_after for a in attempts)
    out["tree_size_median"] = percentile([a.tree_size for a in attempts], 50)
    out["log_port_not_new_tree"] = sum(1 for a in attempts if a.log_port != "new tree")
    return out


def run_reference(af: Airflow, tmp: Path, kills: int, bound: float) -> dict[str, Any]:
    ref = Reference(af, tmp / "reference")
    try:
        t0 = time.perf_counter()
        ref.start()
        wait_first_healthy(af.health_port, ref.main, "a first healthy scheduler", START_TIMEOUT_S, ref.check)
        first = time.perf_counter() - t0
        log(f"reference: first start (no live scheduler in the DB) healthy after {first:.2f}s")
        attempts = []
        for i in range(kills):
            time.sleep(SETTLE_S)
            ref.check()
            old = ref.main()
            assert old is not None
            a, _ = one_kill(f"reference {i + 1}/{kills}", af, old, ref.kill_and_restart,
                            lambda old=old: p if (p := ref.main()) not in (None, old) else None, bound)
            attempts.append(a)
            if a.healthy_s is None:
                raise BenchError(f"the reference scheduler was not healthy within {bound:g}s; "
                                 f"see {ref.dir / 'scheduler.log'}")
        return {"first_start_s": first, **summary_s(attempts)}
    finally:
        ref.stop()
        sweep(str(tmp), "after the reference")


def run_haflowd(af: Airflow, tmp: Path, kills: int, bound: float) -> dict[str, Any]:
    d = Haflowd(tmp / "haflowd-kill", af, ["scheduler"], crash_budget=kills + 10)
    try:
        d.start()
        d.wait_up()
        pid = wait_first_healthy(af.health_port, d.main_pid, "haflowd: a healthy scheduler", START_TIMEOUT_S,
                                 d.check_alive)
        attempts = []
        for i in range(kills):
            time.sleep(SETTLE_S)
            d.check_alive()
            cur = d.main_pid()
            if cur != pid:
                raise BenchError(f"haflowd: scheduler pid changed from {pid} to {cur} without a kill; {d.tail()}")
            if not d.owns(pid):
                raise BenchError(f"haflowd: scheduler pid {pid} is not its descendant")
            a, new = one_kill(f"haflowd {i + 1}/{kills}", af, pid,
                              lambda pid=pid: os.kill(pid, signal.SIGKILL),
                              lambda pid=pid: p if (p := d.main_pid()) not in (None, pid) else None, bound)
            attempts.append(a)
            if new is None or a.healthy_s is None:
                raise BenchError(f"haflowd: attempt {i + 1}: {a.note or 'no new scheduler'}; {d.tail()}")
            pid = new
        main = d.main_pid()
        current = {p.pid for p in tree(main)} if main else set()
        piled = len([p for p in marked(str(tmp)) if p.pid not in current])
        comp = d.components()["scheduler"]
        if comp.get("restarts") != kills:
            log(f"haflowd reports {comp.get('restarts')} restarts of the scheduler, expected {kills}")
        return {**summary_s(attempts), "restarts_reported": comp.get("restarts"), "orphans_piled_up": piled}
    finally:
        d.stop()
        sweep(str(tmp), "after haflowd")


def run_supervisord(af: Airflow, tmp: Path, kills: int, unprobed: int, bound: float) -> dict[str, Any]:
    """``kills`` SIGKILLs with /health probed from the kill on, then ``unprobed`` with only the socket watched."""
    d = Supervisord(tmp / "supervisord-kill", af, ["scheduler"])
    marker = str(tmp)

    def new_main(old: int) -> Callable[[], int | None]:
        return lambda: p if (p := d.main_pid()) not in (None, old) else None

    def fresh_start(why: str) -> int:
        """Kill every Airflow process but the current scheduler's tree, restart the program, wait for health."""
        current = set()
        with contextlib.suppress(psutil.Error):
            if (m := d.main_pid()) is not None:
                current = {p.pid for p in tree(m)}
        extra = [p for p in marked(marker) if p.pid not in current]
        for p in extra:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(extra, timeout=10)
        d.ctl("restart", "scheduler")
        log(f"supervisord: {why}: killed {len(extra)} orphan(s), supervisorctl restart scheduler")
        return wait_first_healthy(af.health_port, d.main_pid, "supervisord: a healthy scheduler again",
                                  START_TIMEOUT_S, d.check_alive)

    def series(n: int, probe: bool, pid: int) -> tuple[list[Attempt], int, int]:
        attempts: list[Attempt] = []
        mode = "probed" if probe else "unprobed"
        for i in range(n):
            time.sleep(SETTLE_S)
            d.check_alive()
            a, new = one_kill(f"supervisord {mode} {i + 1}/{n}", af, pid,
                              lambda pid=pid: os.kill(pid, signal.SIGKILL), new_main(pid), bound, probe)
            status = " ".join(d.ctl("status", "scheduler").split())
            a.note = (a.note + f"; supervisorctl: {status}").lstrip("; ")
            attempts.append(a)
            if i + 1 < n:
                if new is None or a.healthy_s is None or not probe:
                    pid = fresh_start(f"before {mode} kill {i + 2}")
                else:
                    pid = new  # the orphans stay: they pile up as they would in production
        main = d.main_pid()
        current = {p.pid for p in tree(main)} if main else set()
        piled = len([p for p in marked(marker) if p.pid not in current])
        return attempts, pid, piled

    try:
        d.start()
        pid = wait_first_healthy(af.health_port, d.main_pid, "supervisord: a healthy scheduler", START_TIMEOUT_S,
                                 d.check_alive)
        probed, pid, piled = series(kills, True, pid)
        out: dict[str, Any] = {"probed": {**summary_s(probed), "orphans_piled_up": piled}}
        if unprobed:
            pid = fresh_start("before the unprobed series")
            quiet, _, piled = series(unprobed, False, pid)
            out["unprobed"] = {**summary_s(quiet), "orphans_piled_up": piled}
        text = "".join((d.dir / f).read_text(errors="replace") for f in ("scheduler.err", "scheduler.out"))
        out["address_in_use_lines"] = text.count("Address already in use") + text.count("address already in use")
        return out
    finally:
        d.stop()
        sweep(marker, "after supervisord")


def airflow_rss(marker: str) -> float:
    return mib(sum(p.memory_info().rss for p in marked(marker) if p.is_running()))


def footprint_haflowd(af: Airflow, tmp: Path, seconds: float, openssl: bool = False) -> dict[str, Any]:
    names = list(COMPONENTS)
    d = Haflowd(tmp / "haflowd-footprint", af, names, crash_budget=5, openssl=openssl)
    try:
        d.start()
        d.wait_up()

        def all_healthy() -> dict[str, dict[str, Any]] | None:
            d.check_alive()
            comps = d.components()
            ok = all(comps.get(n, {}).get("state") == "running" and comps[n].get("healthy") for n in names)
            return comps if ok else None

        t = time.monotonic()
        wait_until("haflowd: four Airflow components healthy", FOOTPRINT_TIMEOUT_S, all_healthy, every=1.0)
        log(f"haflowd: {', '.join(names)} healthy after {time.monotonic() - t:.1f}s")
        time.sleep(FOOTPRINT_WARMUP_S)
        guards = d.guards()
        if len(guards) != len(names):
            log(f"haflowd has {len(guards)} guard processes, expected {len(names)}")
        result = sample_idle(d.ps, guards, seconds)
        result["airflow_rss_mib"] = airflow_rss(str(tmp))
        states = {n: (c["state"], c.get("healthy")) for n, c in d.components().items()}
        if any(s != ("running", True) for s in states.values()):
            raise BenchError(f"haflowd components not all running and healthy while measuring: {states}")
        return result
    finally:
        d.stop()
        sweep(str(tmp), "after the haflowd footprint")


def footprint_supervisord(af: Airflow, tmp: Path, seconds: float) -> dict[str, Any]:
    names = list(COMPONENTS)
    d = Supervisord(tmp / "supervisord-footprint", af, names)
    try:
        d.start()

        def up() -> bool:
            d.check_alive()
            if health_status(af.health_port) != 200:
                return False
            with contextlib.suppress(OSError, http.client.HTTPException):
                return http_get(af.api_port, "/api/v2/monitor/health", timeout=2)[0] == 200
            return False

        t = time.monotonic()
        wait_until("supervisord: scheduler and api-server healthy", FOOTPRINT_TIMEOUT_S, up, every=1.0)
        log(f"supervisord: scheduler and api-server healthy after {time.monotonic() - t:.1f}s")
        time.sleep(FOOTPRINT_WARMUP_S)
        result = sample_idle(d.ps, [], seconds)
        result["airflow_rss_mib"] = airflow_rss(str(tmp))
        status = d.ctl("status")
        if any(" RUNNING " not in line + " " for line in status.splitlines()):
            raise BenchError(f"supervisord programs not all RUNNING while measuring:\n{status}")
        return result
    finally:
        d.stop()
        sweep(str(tmp), "after the supervisord footprint")


# ------------------------------------------------------------------- report


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def render(report: dict[str, Any]) -> str:
    v = report["versions"]
    out = [
        f"haflowd {v['haflowd']}, supervisord {v['supervisord']}, airflow {report['airflow_version']}, "
        f"python {v['python']}, linux {v['kernel']}, {v['cpus']} CPUs; "
        f"AIRFLOW__CORE__PARALLELISM={report['parallelism']}",
        "",
    ]
    k = report.get("kill")
    if k:
        r, h, sv = k["reference"], k["haflowd"], k["supervisord"]
        cols = [("haflowd", h), ("supervisord, probed", sv["probed"])]
        if "unprobed" in sv:
            cols.append(("supervisord, unprobed", sv["unprobed"]))
        bound = k["bound_s"]

        def val(x: dict[str, Any], key: str) -> str:
            return f"{x[key]:.2f}" if key in x else "never"

        rows: list[tuple[str, ...]] = [("", *(c[0] for c in cols))]
        rows += [(f"healthy again, s: {q}", *(val(x, q) for _, x in cols)) for q in ("min", "median", "p99", "max")]
        rows.append((f"healthy within {bound:g}s", *(f"{x['healthy']}/{x['n']}" for _, x in cols)))
        rows.append(("SIGKILL -> new main pid, s (median)", *(val(x, "new_pid_median") for _, x in cols)))
        rows.append(("processes in the old tree", *(f"{x['tree_size_median']:g}" for _, x in cols)))
        rows.append(("orphans when healthy again / at the bound", *(str(x["orphans_at_healthy_max"]) for _, x in cols)))
        rows.append((f"orphans {KILL_PLUS_S:g}s after the kill", *(str(x["orphans_after_max"]) for _, x in cols)))
        rows.append(("log port not served by the new tree",
                     *(f"{x['log_port_not_new_tree']}/{x['n']}" for _, x in cols)))
        rows.append(("orphans piled up at the end of the series", *(str(x["orphans_piled_up"]) for _, x in cols)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        out.append("SIGKILL of the scheduler's main pid -> /health 200 served by the new scheduler's tree "
                   "(orphan counts: max over the kills)")
        for row in rows:
            cells = [c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)]
            out.append("  " + "  ".join(cells))
        out.append(f"  reference, Airflow itself (whole tree killed, a new scheduler started at once; {r['n']} times): "
                   f"min {r['min']:.2f}  median {r['median']:.2f}  p99 {r['p99']:.2f}  max {r['max']:.2f}")
        out.append(f"  reference, first start with no live scheduler in the DB: {r['first_start_s']:.2f}")
        if "median" in h:
            out.append(f"  haflowd median / reference median: {h['median'] / r['median']:.2f}x")
        if "median" in sv["probed"] and "median" in h:
            out.append(f"  supervisord (probed) median / haflowd median: {sv['probed']['median'] / h['median']:.2f}x")
        out.append("  probed: GET /health every 50 ms from the kill on (as a load balancer would); unprobed: no "
                   "request reaches the port until the new tree listens on it")
        for name, x in cols:
            for i, a in enumerate(x["attempts"], 1):
                if a["note"] and (name != "supervisord, probed" or a["healthy_s"] is None or i == 1):
                    out.append(f"  {name} kill {i}: {a['note']}")
        if sv.get("address_in_use_lines"):
            out.append(f"  supervisord's scheduler logged 'address already in use' {sv['address_in_use_lines']} times")
        out.append("")
    fp = report.get("footprint")
    if fp:
        h, s = fp["haflowd"], fp["supervisord"]
        g = h.get("guards", {})
        na = "-"
        uss = g.get("uss_mib_total")
        rows = [
            ("daemon RSS, MiB (median)", f"{h['rss_mib_median']:.1f}", f"{s['rss_mib_median']:.1f}"),
            ("daemon RSS, MB (median; target <= 45 MB)", f"{h['rss_mib_median'] * 1.048576:.1f}",
             f"{s['rss_mib_median'] * 1.048576:.1f}"),
            ("daemon RSS, MiB (max)", f"{h['rss_mib_max']:.1f}", f"{s['rss_mib_max']:.1f}"),
            ("daemon CPU, % of one core", f"{h['cpu_percent']:.2f}", f"{s['cpu_percent']:.2f}"),
            (f"guard processes ({g.get('count', 0)}): RSS total, MiB", f"{g.get('rss_mib_total', 0):.1f}", na),
            ("guard processes: USS total, MiB", na if uss is None else f"{uss:.1f}", na),
            ("guard processes: CPU, % of one core", f"{g.get('cpu_percent', 0):.2f}", na),
            ("daemon + guards RSS, MiB", f"{h['rss_mib_median'] + g.get('rss_mib_total', 0):.1f}",
             f"{s['rss_mib_median']:.1f}"),
            ("the Airflow processes themselves: RSS total, MiB", f"{h['airflow_rss_mib']:.0f}",
             f"{s['airflow_rss_mib']:.0f}"),
        ]
        tls = "; OpenSSL loaded (--with-openssl)" if fp.get("with_openssl") else ""
        out.append(table(f"footprint while supervising {', '.join(COMPONENTS)} (all healthy), "
                         f"sampled {fp['idle_seconds']:g}s{tls}", HEAD, rows))
    leftovers = report.get("leftovers")
    out.append("")
    out.append(f"leftover processes after the bench: {leftovers}")
    return "\n".join(out).rstrip()


# --------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench airflow", description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=5, help="SIGKILLs under haflowd and for the reference (default 5)")
    p.add_argument("--supervisord-kills", type=int, default=3,
                   help="SIGKILLs under supervisord with /health probed from the kill on (default 3; each one "
                        "may run into --bound)")
    p.add_argument("--unprobed-kills", type=int, default=1,
                   help="then SIGKILLs under supervisord with only the socket watched (default 1; each one is "
                        "expected to run into --bound)")
    p.add_argument("--bound", type=float, default=90.0, help="the longest wait for a healthy scheduler (default 90)")
    p.add_argument("--idle-seconds", type=float, default=10.0, help="footprint sampling window (default 10)")
    p.add_argument("--parallelism", type=int, default=2,
                   help="AIRFLOW__CORE__PARALLELISM, the number of LocalExecutor workers (default 2, as in the "
                        "tests; Airflow's default 32 gives a ~35-process scheduler)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--skip-footprint", action="store_true", help="only the SIGKILL part")
    only.add_argument("--footprint-only", action="store_true",
                      help="only the footprint part (about three minutes instead of fifteen)")
    p.add_argument("--with-openssl", action="store_true",
                   help="footprint: load ssl in the daemon before it starts, as a config that needs TLS "
                        "(an https:// probe, [rabbitmq], the Celery ping) does; the presets need none")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs) for inspection")
    args = p.parse_args(argv)
    if not 1 <= args.kills <= 100:
        p.error("--kills: expected 1..100")
    if not 1 <= args.supervisord_kills <= 100:
        p.error("--supervisord-kills: expected 1..100")
    if not 0 <= args.unprobed_kills <= 100:
        p.error("--unprobed-kills: expected 0..100")
    if not 10 <= args.bound <= 600:
        p.error("--bound: expected 10..600")
    if not 0.5 <= args.idle_seconds <= 3600:
        p.error("--idle-seconds: expected 0.5..3600")
    if not 1 <= args.parallelism <= 64:
        p.error("--parallelism: expected 1..64")
    return args


@contextlib.contextmanager
def swept(marker: str) -> Iterator[None]:
    try:
        yield
    finally:
        sweep(marker, "at exit")


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    marker = str(tmp)
    with swept(marker):
        report: dict[str, Any] = {"versions": versions(), "parallelism": args.parallelism}
        r = run_cmd([str(AIRFLOW_BIN / "python"), "-c", "import airflow; print(airflow.__version__)"], timeout=120)
        report["airflow_version"] = r.stdout.strip()
        af = prepare_airflow(tmp, args.parallelism)
        if not args.footprint_only:
            log(f"reference: Airflow alone, {args.kills} restarts (~{args.kills * (SETTLE_S + 10):.0f}s)")
            ref = run_reference(af, tmp, args.kills, args.bound)
            log(f"haflowd: {args.kills} SIGKILLs of the scheduler's main pid")
            h = run_haflowd(af, tmp, args.kills, args.bound)
            log(f"supervisord: {args.supervisord_kills} SIGKILLs probed, {args.unprobed_kills} unprobed "
                f"(each of those may take the full {args.bound:g}s bound)")
            s = run_supervisord(af, tmp, args.supervisord_kills, args.unprobed_kills, args.bound)
            report["kill"] = {"bound_s": args.bound, "reference": ref, "haflowd": h, "supervisord": s}
        if not args.skip_footprint:
            log(f"footprint: haflowd with {len(COMPONENTS)} Airflow components")
            fh = footprint_haflowd(af, tmp, args.idle_seconds, args.with_openssl)
            log(f"footprint: supervisord with {len(COMPONENTS)} Airflow programs")
            fs = footprint_supervisord(af, tmp, args.idle_seconds)
            report["footprint"] = {"idle_seconds": args.idle_seconds, "haflowd": fh, "supervisord": fs,
                                   "with_openssl": args.with_openssl}
    report["leftovers"] = len(marked(marker))
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("supervisord") is None or shutil.which("supervisorctl") is None:
        log("supervisord/supervisorctl not on PATH (apt-get install supervisor)")
        return 1
    if not (AIRFLOW_BIN / "airflow").exists():
        log(f"{AIRFLOW_BIN / 'airflow'} is missing: run scripts/setup (it installs the pinned Airflow)")
        return 1
    return run_main("haflowd-bench-airflow-", args.keep_tmp, args.json, lambda tmp: run(args, tmp), render)


if __name__ == "__main__":
    sys.exit(main())
