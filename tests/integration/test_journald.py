"""Under journald a real daemon starts every log line with its syslog priority (issue 17):
stdout and stderr are one pipe, as systemd connects them, and JOURNAL_STREAM names it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from haflowd.logs import syslog_priority
from tests.conftest import wait_until

BODY = """
[[component]]
name = "talker"
command = ["sh", "-c", "echo out-line; echo err-line >&2; exec sleep 600"]

[[component]]
name = "broken"
command = ["sh", "-c", "exit 3"]
restart = "never"
"""

PREFIXED = re.compile(rb"^<([0-7])>(\{.*\})$")


class Reader(threading.Thread):
    """Reads a pipe to its EOF (when the daemon and every child are gone)."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.data = bytearray()

    def run(self) -> None:
        while chunk := os.read(self.fd, 65536):
            self.data += chunk


def _run(daemon: Any, journal_stream: str | None) -> list[bytes]:
    """Start a daemon whose stdout and stderr are one pipe (as systemd connects them to the
    journal); return all it wrote until it stopped on SIGTERM."""
    d = daemon(BODY, start=False)
    r, w = os.pipe()
    st = os.fstat(w)
    env = {**os.environ, "JOURNAL_STREAM": journal_stream or f"{st.st_dev}:{st.st_ino}"}
    drain = Reader(r)
    drain.start()
    try:
        try:
            d.proc = subprocess.Popen([sys.executable, "-m", "haflowd", "--config", str(d.config)],
                                      stdout=w, stderr=w, env=env, cwd=d.dir)
        finally:
            os.close(w)
        wait_until(d.live, 15, "haflowd /liveness")
        wait_until(lambda: b"err-line" in drain.data and b"child_exited" in drain.data, 10,
                   "both components' lines in the log")
        d.signal(signal.SIGTERM)
        assert d.wait_exit(20) == 0
        drain.join(10)
        assert not drain.is_alive(), "the pipe has a writer left after the daemon's exit"
    finally:
        d.kill()
        drain.join(10)
        os.close(r)
    return [line for line in bytes(drain.data).splitlines() if line]


def test_every_line_carries_its_priority(daemon: Any) -> None:
    lines = _run(daemon, None)
    events = []
    for line in lines:
        m = PREFIXED.match(line)
        assert m is not None, line[:300]
        ev = json.loads(m.group(2))
        assert int(m.group(1)) == syslog_priority(ev["level"]), line[:300]
        events.append((int(m.group(1)), ev))
    out = [(p, e["stream"], e["line"]) for p, e in events
           if e.get("event") == "output" and e.get("component") == "talker"]
    # a child's stderr is info, like its stdout: Airflow, gunicorn and Celery log there
    assert sorted(out) == [(6, "stderr", "err-line"), (6, "stdout", "out-line")], out
    assert any(p == 6 and e["event"] == "child_exited" and e["component"] == "broken" for p, e in events)
    assert {p for p, _ in events} <= {3, 4, 6}, events


def test_no_prefix_when_journal_stream_names_another_file(daemon: Any) -> None:
    """A daemon started from a shell inside a service inherits JOURNAL_STREAM with a stdout
    that is not the journal: plain JSON lines then."""
    lines = _run(daemon, "1:1")
    assert lines and all(line.startswith(b"{") for line in lines), lines[:3]


def test_a_refused_config_is_an_error_in_the_journal(tmp_path: Path) -> None:
    """Exit 2 is not restarted by the unit (RestartPreventExitStatus=2): its reasons must be
    found with `journalctl -p err`, so each line on stderr carries <3>."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[node]\nname = "n"\nbogus = 1\n\n[[component]]\nname = "x"\n')
    r, w = os.pipe()
    st = os.fstat(w)
    try:
        proc = subprocess.run([sys.executable, "-m", "haflowd", "--config", str(cfg)], stdout=w, stderr=w,
                              env={**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
                              timeout=30, check=False)
        os.close(w)
        w = -1
        out = b""
        while chunk := os.read(r, 65536):
            out += chunk
    finally:
        if w >= 0:
            os.close(w)
        os.close(r)
    assert proc.returncode == 2
    lines = out.decode().splitlines()
    assert len(lines) >= 2 and all(line.startswith("<3>") for line in lines), lines
    assert any("bogus" in line for line in lines), lines
