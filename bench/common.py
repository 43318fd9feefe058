"""What every benchmark here shares: waits with deadlines, ports, percentiles, tables,
and a main() that always tears down (SIGTERM/SIGHUP unwind through every ``finally``)."""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # scripts/bench runs bench/X.py: its folder is on sys.path, the repo's is not
    sys.path.insert(0, str(ROOT))

from testbed.netns import NetnsError, kill_inside  # noqa: E402
from testbed.netns import delete_namespaces as netns_delete  # noqa: E402
from testbed.netns import enter_netns as enter_netns  # noqa: E402  (re-exported: benches enter namespaces)
from testbed.netns import sweep_stale as netns_sweep  # noqa: E402


class BenchError(Exception):
    pass


class Terminated(BaseException):
    """SIGTERM/SIGHUP to the bench: unwind so every ``finally`` tears down."""


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def wait_until(what: str, timeout: float, check: Callable[[], Any], every: float = 0.2) -> Any:
    """Call ``check()`` until it returns something truthy; BenchError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(min(every, left))


def free_port(udp_too: bool = False) -> int:
    """A port free on 127.0.0.1 (for TCP, and UDP too when asked: Serf binds both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not udp_too:
            return port
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise BenchError("no free port on 127.0.0.1")


def toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def percentile(xs: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def table(title: str, head: tuple[str, str, str], rows: list[tuple[str, str, str]]) -> str:
    """A label column and two right-aligned value columns, side by side."""
    w0 = max(len(r[0]) for r in [head, *rows])
    w1 = max(len(r[1]) for r in [head, *rows])
    w2 = max(len(r[2]) for r in [head, *rows])
    lines = [title, f"  {head[0]:<{w0}}  {head[1]:>{w1}}  {head[2]:>{w2}}"]
    lines += [f"  {a:<{w0}}  {b:>{w1}}  {c:>{w2}}" for a, b, c in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def signals_unwind() -> Iterator[None]:
    def terminated(signum: int, _frame: Any) -> None:
        raise Terminated(signal.Signals(signum).name)

    old = {s: signal.signal(s, terminated) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_main(prefix: str, keep_tmp: bool, as_json: bool, run: Callable[[Path], dict[str, Any]],
             render: Callable[[dict[str, Any]], str]) -> int:
    """Run ``run(tmp)`` in a temp dir that is always removed; print the report."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with signals_unwind():
            report = run(tmp)
    except (BenchError, NetnsError) as e:
        log(f"failed: {e}")
        return 1
    except (KeyboardInterrupt, Terminated):
        log("interrupted")
        return 130
    finally:
        if keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report, indent=2) if as_json else render(report))
    return 0


def tail_files(files: Sequence[Path], lines: int = 15, label: str = "") -> str:
    """The last ``lines`` of each file, headed by ``label`` and its name, for an error message."""
    parts = []
    for f in files:
        with contextlib.suppress(OSError):
            text = f.read_text(errors="replace").splitlines()[-lines:]
            if text:
                parts.append(f"--- {label}{f.name}:\n" + "\n".join(text))
    return "\n".join(parts) or "no output"


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def run_cmd(argv: Sequence[str], timeout: float = 30.0, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A command with a deadline; BenchError on a timeout, or on failure when ``check``."""
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                           check=False, env=env)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{shlex.join(argv)}: no exit within {timeout:g}s") from e
    if check and r.returncode != 0:
        raise BenchError(f"{shlex.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def stop_tree(proc: subprocess.Popen[Any], label: str, timeout: float) -> None:
    """SIGTERM, then SIGKILL to the group after ``timeout``; then SIGKILL to any descendant
    still alive (one that left the group)."""
    seen: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        seen = psutil.Process(proc.pid).children(recursive=True)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{label} ignored SIGTERM for {timeout:g}s; SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    if proc.returncode not in (0, None):
        log(f"{label} exited {proc.returncode}")
    # The group outlives its leader only while members remain, so its id cannot have been reused.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    alive = [p for p in seen if p.is_running()]  # is_running() notices a reused pid
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    if alive:
        log(f"{label}: killed {len(alive)} leftover process(es)")
        psutil.wait_procs(alive, timeout=5)


# --------------------------------------------------------------- network namespaces
# The builder is testbed.netns, shared with the tests and the demo.


def delete_namespaces(names: Sequence[str]) -> None:
    """SIGKILL whatever still runs in them, then delete them and their /etc/netns entries."""
    killed = kill_inside(names)
    if killed:
        log(f"killed {killed} process(es) left in netns {' '.join(names)}")
    for ns in netns_delete(names, kill=False):
        log(f"ip netns del {ns} failed")


def sweep_stale_namespaces(pattern: re.Pattern[str]) -> None:
    """Delete namespaces an earlier run left behind: ``pattern`` captures the run's pid as group 1,
    and that pid no longer runs."""
    stale = netns_sweep(pattern)
    if stale:
        log(f"deleted {len(stale)} namespace(s) left by an earlier run: {' '.join(stale)}")


def supervisord_head(d: Path, identifier: str) -> str:
    """The sections of a supervisord.conf before its programs: everything in ``d``, no daemon."""
    return f"""\
[unix_http_server]
file={d}/supervisor.sock
chmod=0700

[supervisord]
nodaemon=true
logfile={d}/supervisord.log
pidfile={d}/supervisord.pid
childlogdir={d}
identifier={identifier}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{d}/supervisor.sock
"""


def supervisord_program(d: Path, name: str, command: str, **settings: str | int | float) -> str:
    """A ``[program:]`` section: autostart and autorestart, the group stopped and killed
    together, its output in ``d``; ``settings`` add keys or override these."""
    keys = {"command": command, "autostart": "true", "autorestart": "true", "stopasgroup": "true",
            "killasgroup": "true", **settings}
    lines = "".join(f"{k}={v}\n" for k, v in keys.items())
    return f"\n[program:{name}]\n{lines}stdout_logfile={d}/{name}.out\nstderr_logfile={d}/{name}.err\n"
