"""A broken log output never takes supervision down (issue 15 #4): real daemons whose
stdout is closed mid-run, /dev/full from the start, or a pipe nobody reads. Each must
stay live, keep its children supervised (their output keeps being read), count what it
lost, print no traceback, and stop in order on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from tests.conftest import Daemon, alive, wait_until

CHATTY = """
import itertools, os, sys, time
path, pause = sys.argv[1], float(sys.argv[2])
for i in itertools.count():
    sys.stdout.write("x" * 4000 + f" {i}\\n")
    sys.stdout.flush()
    with open(path + ".tmp", "w") as f:
        f.write(str(i))
    os.replace(path + ".tmp", path)
    time.sleep(pause)
"""


def body(tmp_path: Path, pause: float, order: Path | None = None) -> str:
    """``chatty`` prints 4 KB lines (its pipe fills in milliseconds if nobody reads it) and
    counts them in a file; with ``order``, ``a`` then ``b`` record their start and stop."""
    script = tmp_path / "chatty.py"
    script.write_text(CHATTY)
    out = f"""
[[component]]
name = "chatty"
command = ["{sys.executable}", "{script}", "{tmp_path / 'count'}", "{pause}"]
log_rate_limit = 0
stop_timeout = "5s"
"""
    prev = None
    for name in ("a", "b") if order else ():
        out += f"""
[[component]]
name = "{name}"
command = ["sh", "-c", "trap 'echo stop-{name} >> {order}; exit 0' TERM; echo start-{name} >> {order}; while :; do sleep 0.05; done"]
stop_timeout = "5s"
stable_after = "100ms"
"""
        if prev:
            out += f'start_after = ["{prev}"]\n'
        prev = name
    return out


def start(d: Daemon, stdout: int | IO[bytes]) -> Path:
    """Start ``d`` with this stdout and stderr in a file of its own (returned)."""
    err = d.dir / "stderr.txt"
    with open(err, "wb") as stderr:
        d.proc = subprocess.Popen([sys.executable, "-m", "haflowd", "--config", str(d.config)],
                                  stdout=stdout, stderr=stderr, env={**os.environ, **d.env}, cwd=d.dir)
    wait_until(d.live, 15, "haflowd /liveness")
    return err


def count(tmp_path: Path) -> int:
    return int((tmp_path / "count").read_text() or 0)


def keeps_counting(tmp_path: Path, lines: int, timeout: float = 20.0) -> None:
    """The child goes on writing: its output is read (a 4 KB line fills a lost reader's pipe
    after 16 lines)."""
    n0 = wait_until(lambda: count(tmp_path) + 1, 10, "chatty's first line") - 1
    wait_until(lambda: count(tmp_path) >= n0 + lines, timeout, f"chatty to write {lines} more lines")


def metric(d: Daemon, name: str, **labels: str) -> float:
    _, text = d.get("/metrics")
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.decode().splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def no_traceback(err: Path) -> None:
    text = err.read_text(errors="replace")
    assert "Traceback" not in text and "Exception ignored" not in text, text[-3000:]


class Drain:
    """Reads a pipe in a thread until told to stop."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    return
                self.data += chunk

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in bytes(self.data).decode(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def stops_cleanly(d: Daemon, err: Path, timeout: float = 20.0) -> float:
    pids = d.all_pids()
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(timeout) == 0
    took = time.monotonic() - t0
    wait_until(lambda: not alive(pids), 5, "every child to be gone")
    no_traceback(err)
    return took


def test_stdout_closed_mid_run(daemon: Any, tmp_path: Path) -> None:
    d = daemon(body(tmp_path, 0.005), start=False)
    r, w = os.pipe()
    try:
        err = start(d, w)
    finally:
        os.close(w)
    drain = Drain(r)
    d.wait_state("chatty", "running")
    wait_until(lambda: b'"component": "chatty"' in drain.data, 10, "the child's output in the log")
    drain.stop()
    os.close(r)  # the reader is gone: every write now fails with EPIPE
    keeps_counting(tmp_path, 300)
    wait_until(lambda: metric(d, "haflowd_log_write_errors_total", error="EPIPE") > 0, 10, "EPIPE counted")
    assert metric(d, "haflowd_log_dropped_total", reason="write_error") > 0
    assert d.get("/liveness")[0] == 200
    assert d.comp("chatty")["state"] == "running"
    stops_cleanly(d, err)


def test_stdout_on_dev_full_from_the_start(daemon: Any, tmp_path: Path) -> None:
    d = daemon(body(tmp_path, 0.005), start=False)
    with open("/dev/full", "wb") as full:
        err = start(d, full)
    d.wait_state("chatty", "running")
    keeps_counting(tmp_path, 300)
    wait_until(lambda: metric(d, "haflowd_log_write_errors_total", error="ENOSPC") > 0, 10, "ENOSPC counted")
    stops_cleanly(d, err)
    assert err.read_text() == ""


def test_stdout_a_pipe_nobody_reads(daemon: Any, tmp_path: Path) -> None:
    order = tmp_path / "order.log"
    d = daemon(body(tmp_path, 0.001, order), start=False)
    r, w = os.pipe()
    try:
        err = start(d, w)
        os.close(w)
        for name in ("a", "b", "chatty"):
            d.wait_state(name, "running")
        # the pipe holds 64 KiB; then the 4 MiB queue fills, then lines are dropped and counted
        wait_until(lambda: metric(d, "haflowd_log_dropped_total", reason="queue_full") > 0, 20,
                   "lines dropped because the output is stuck", interval=0.2)
        keeps_counting(tmp_path, 300)
        t0 = time.monotonic()
        assert d.get("/liveness")[0] == 200  # the old daemon's loop was stuck in write(): no answer at all
        assert time.monotonic() - t0 < 3.0, "the event loop was held up"
        # the output recovers for a moment: a line says how many were lost; then it stalls again
        drain = Drain(r)
        lost = wait_until(lambda: [e for e in drain.events() if e.get("event") == "log_lines_lost"], 10,
                          "a log_lines_lost line")
        assert lost[0]["lines"] > 0 and lost[0]["node"] == "test"
        drain.stop()
        dropped = metric(d, "haflowd_log_dropped_total", reason="queue_full")
        wait_until(lambda: metric(d, "haflowd_log_dropped_total", reason="queue_full") > dropped, 20,
                   "the stalled output to drop lines again", interval=0.2)
        # still supervised: a child that dies is restarted
        b = d.comp("b")
        os.kill(b["pid"], signal.SIGKILL)
        wait_until(lambda: (c := d.comp("b"))["state"] == "running" and c["pid"] != b["pid"], 10, "b restarted")
        took = stops_cleanly(d, err)
        assert took < 15, f"SIGTERM took {took:.1f}s"
        stops = [line for line in order.read_text().splitlines() if line.startswith("stop-")]
        assert stops[-2:] == ["stop-b", "stop-a"], stops
    finally:
        os.close(r)
