"""Issue 18 on real daemons: ``haflowctl logs -f`` of a crash-looping component, ``haflowctl
events -f`` seeing a member die, a hook that writes a file on member-dead, and one that hangs
killed with its process group (and what escaped it) at its timeout."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from tests.conftest import Daemon, peer_map, wait_until
from tests.integration.test_gossip import trio  # noqa: F401  (the three-node fixture, shared)

pytestmark = pytest.mark.integration

CRASHY = """
[[component]]
name = "crashy"
command = ["sh", "-c", "n=$(cat @DIR@/runs 2>/dev/null || echo 0); n=$((n+1)); echo $n > @DIR@/runs; \
echo out-$n; echo err-$n >&2; exit 3"]
backoff_initial = "50ms"
backoff_max = "100ms"
crash_loop_failures = 3
crash_loop_window = "1m"
"""


class Follower:
    """``haflowctl ... -f`` in the background, its stdout lines collected."""

    def __init__(self, d: Daemon, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "haflowd.ctl", "--api", d.api, "--socket", str(d.socket), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def json(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in list(self.lines)]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(10)


@pytest.fixture
def followers() -> Iterator[list[Follower]]:
    made: list[Follower] = []
    yield made
    for f in made:
        if f.proc.poll() is None:
            f.proc.kill()
            f.proc.wait(5)


def test_logs_of_a_crash_looping_component_follow_and_survive_fatal(daemon, followers):
    d = daemon(CRASHY)
    f = Follower(d, "logs", "crashy", "-f", "-n", "1000")
    followers.append(f)
    d.wait_state("crashy", "fatal")
    # the ring holds every run's lines, the ones before each death, though the component is fatal
    r = d.ctl("logs", "crashy", "-n", "1000")
    assert r.returncode == 0, r.stderr
    for n in (1, 2, 3):
        assert f"out-{n}" in r.stdout and f"err-{n}" in r.stdout, r.stdout
    assert "[stderr] err-1" in r.stdout
    errs = d.ctl("logs", "crashy", "--stream", "stderr", "--json")
    assert [json.loads(x)["line"] for x in errs.stdout.splitlines()][:2] == ["err-1", "err-2"]
    assert len(d.ctl("logs", "crashy", "-n", "2").stdout.splitlines()) == 2
    # the follower saw them, and sees new runs after a start from fatal
    wait_until(lambda: any("out-3" in x for x in f.lines), 5, "the follower to see out-3")
    assert d.ctl("start", "crashy").returncode == 0
    wait_until(lambda: any("out-4" in x for x in f.lines), 10, "the follower to follow a new run")
    assert f.stop() == 0  # Ctrl-C ends a follow quietly
    evs = [json.loads(x) for x in d.ctl("events", "--json").stdout.splitlines()]
    kinds = [e["type"] for e in evs if e["subject"] in ("crashy", "component:crashy")]
    assert kinds.count("component-started") >= 3 and kinds.count("component-exited") >= 3, kinds
    assert "component-fatal" in kinds and "check-changed" in kinds, kinds
    bad = d.ctl("logs", "nope")
    assert bad.returncode == 1 and "no component named" in bad.stderr

    # a follow whose client went away frees its slot (64 at most): 70 opened and dropped, then one more
    for _ in range(70):
        open_follow(d).close()
    wait_until(lambda: _status_of(open_follow(d)) == 200, 10, "a follow slot after 70 dropped follows")

    # open follows never hold a stopping daemon (aiohttp would wait out its 60 s shutdown timeout)
    for args in (("events", "-f"), ("logs", "crashy", "-f")):
        followers.append(Follower(d, *args))
    wait_until(lambda: all(x.lines for x in followers[-2:]), 5, "both followers to print")
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0
    assert time.monotonic() - t0 < 10, f"stopping took {time.monotonic() - t0:.1f}s with followers attached"
    assert [x.proc.wait(10) for x in followers[-2:]] == [0, 0]


def test_events_see_a_member_die_and_hooks_run_or_are_killed(trio, followers):  # noqa: F811
    n1 = trio["n1"]
    marker = n1.dir / "dead.json"
    hung = n1.dir / "hung.pids"
    # a hook that writes what it got, and one that hangs and forks a process out of its group
    hooks = f"""
[[hook]]
name = "record"
on = ["member-dead"]
command = ["sh", "-c", "cat > {marker}.tmp; echo \\"$HAFLOWD_EVENT_TYPE $HAFLOWD_EVENT_SUBJECT\\" >> {marker}.tmp; \
mv {marker}.tmp {marker}"]

[[hook]]
name = "hang"
on = ["member-dead"]
command = ["sh", "-c", "setsid sleep 300 & echo $$ $! > {hung}; sleep 300"]
timeout = "1s"

[[hook]]
name = "flood"
on = ["member-dead"]
command = ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\\\0' x; echo; echo last-line"]
"""
    # and a component that prints the gossip key: its ring keeps the line masked
    leaky = f"""
[[component]]
name = "leaky"
command = ["sh", "-c", "echo key={trio.key}; exec sleep 3600"]
"""
    n1.config.write_text(n1.config.read_text() + hooks + leaky)
    r = n1.ctl("reload")
    assert r.returncode == 0, r.stdout + r.stderr
    f = Follower(n1, "events", "-f", "--json")
    followers.append(f)
    wait_until(lambda: any(e["type"] == "config-reloaded" for e in f.json()), 5, "config-reloaded in the ring")
    wait_until(lambda: "key=" in n1.ctl("logs", "leaky").stdout, 10, "leaky's line")
    shown = n1.ctl("logs", "leaky").stdout
    assert trio.key not in shown and "key=***" in shown, shown

    trio["n3"].proc.send_signal(signal.SIGKILL)
    trio["n3"].proc.wait(5)

    def n3_events() -> list[str]:
        return [e["type"] for e in f.json() if e["subject"] == "n3" and e["type"].startswith("member-")]
    wait_until(lambda: "member-dead" in n3_events(), 15, "member-dead n3 on the follower")
    seen = n3_events()
    assert seen.index("member-suspect") < seen.index("member-dead"), seen
    dead = next(e for e in f.json() if e["type"] == "member-dead")
    assert dead["node"] == "n1" and set(dead) == {"time", "type", "node", "subject", "detail"}
    assert peer_map(n1)["n3"]["status"] == "dead"

    wait_until(marker.exists, 10, "the record hook's file")
    body, env_line = marker.read_text().splitlines()
    assert json.loads(body)["subject"] == "n3" and env_line == "member-dead n3"

    def runs(result: str) -> float:
        _, text = n1.get("/metrics")
        want = f'haflowd_hook_runs_total{{hook="hang",result="{result}"}}'
        for line in text.decode().splitlines():
            if line.startswith(want):
                return float(line.split()[-1])
        return 0.0
    wait_until(lambda: runs("timeout") == 1.0, 10, "the hang hook counted as a timeout")
    sh, escaped = (int(x) for x in hung.read_text().split())
    for pid in (sh, escaped):  # its group and what escaped it (setsid) are gone
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, pid
    assert [p.pid for p in psutil.process_iter() if _hook_token(p)] == []
    since = n1.ctl("events", "--since", "1h", "--json")
    assert any(json.loads(x)["type"] == "member-dead" for x in since.stdout.splitlines())
    assert f.stop() == 0
    n1.signal(signal.SIGTERM)  # its log flushed: each run is one hook_run line
    assert n1.wait_exit(30) == 0
    runs_logged = {e["hook"]: e for e in n1.log_events() if e.get("event") == "hook_run"}
    assert runs_logged["hang"]["result"] == "timeout" and runs_logged["hang"]["timeout_s"] == 1.0
    assert runs_logged["record"]["result"] == "ok", runs_logged
    flood = runs_logged["flood"]  # 3 MB of output, read bounded, its last lines logged cut
    assert flood["result"] == "ok" and flood["output"][-1] == "last-line"
    assert max(len(x) for x in flood["output"]) <= 500


def open_follow(d: Daemon) -> socket.socket:
    """A raw ``GET /events?follow=1`` on the control socket, its status line read."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(d.socket))
    s.sendall(b"GET /events?follow=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    return s


def _status_of(s: socket.socket) -> int:
    with s:
        return int(s.recv(64).split()[1])


def _hook_token(p: psutil.Process) -> bool:
    try:
        return "HAFLOWD_HOOK" in p.environ() and p.pid != os.getpid()
    except psutil.Error:
        return False


TALKER = """
[[component]]
name = "talker"
command = ["sh", "-c", "echo {word}; exec sleep 1000"]
stop_timeout = "2s"
"""


def test_a_reload_that_changes_a_component_keeps_its_log_ring(daemon):
    """The ring outlives the component's runs (above), and a reload that changes its config too:
    the lines of the run before the change are what an operator reads to see why it changed."""
    d = daemon(TALKER.format(word="before-the-change"))
    wait_until(lambda: "before-the-change" in d.ctl("logs", "talker").stdout, 10, "the first run's line")
    d.write_config(TALKER.format(word="after-the-change"))
    r = d.ctl("--json", "reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["components"]["restarted"] == ["talker"]
    wait_until(lambda: "after-the-change" in d.ctl("logs", "talker").stdout, 10, "the new run's line")
    shown = d.ctl("logs", "talker").stdout.splitlines()
    before = [i for i, x in enumerate(shown) if "before-the-change" in x]
    after = [i for i, x in enumerate(shown) if "after-the-change" in x]
    assert before and after and before[-1] < after[0], shown
