"""Drain (maintenance) on a real daemon: components stop warmly in reverse start order (unless
on_drain = "keep"), /readiness answers 503, /health is a warning naming maintenance, the state
survives a daemon restart, undrain starts them again; haflowctl's progress shows only on a tty."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import Daemon, wait_until

# a child that records its warm stop (after a short "finish the running task") in ORDER
WORKER = """
[[component]]
name = "{name}"
command = ["/bin/sh", "-c", "trap 'sleep {linger}; echo {name} >> @DIR@/order; exit 0' TERM; while :; do sleep 0.05; done"]
stop_timeout = "10s"
{extra}
"""


def body(linger: float = 0.2, extra: bool = False) -> str:
    return (WORKER.format(name="db", linger=linger, extra="")
            + WORKER.format(name="web", linger=linger, extra='start_after = ["db"]')
            + WORKER.format(name="sidecar", linger=linger, extra='on_drain = "keep"')
            + (WORKER.format(name="manual", linger=0, extra="") if extra else ""))


def order(d: Daemon) -> list[str]:
    p = d.dir / "order"
    return p.read_text().split() if p.exists() else []


def test_drain_wait_stops_in_reverse_order_survives_restart_and_undrain_starts_again(daemon) -> None:
    d = daemon(body(extra=True))
    for n in ("db", "web", "sidecar", "manual"):
        d.wait_state(n, "running")
    assert d.get("/readiness")[0] == 200
    assert d.ctl("stop", "manual").returncode == 0  # an operator's stop, before the drain
    (d.dir / "order").unlink()

    r = d.ctl("drain", "--wait")
    assert r.returncode == 0, r.stderr
    # not a tty: no spinner, one line per component stopped
    assert "waiting for" not in r.stderr
    assert [ln.split()[1] for ln in r.stderr.splitlines() if ln.startswith("stopped ")] == ["web", "db"]
    assert order(d) == ["web", "db"]  # reverse start order, each its own warm stop (trap ran)
    assert d.comp("sidecar")["state"] == "running"
    assert d.comp("db")["note"] == "drained for maintenance"

    assert d.get("/readiness")[0] == 503
    code, health = d.get("/health")
    assert code == 200 and health["status"] == "warning"
    [m] = [c for c in health["checks"] if c["name"] == "maintenance"]
    assert m["status"] == "warning" and m["output"].startswith("node drained for maintenance since ")
    assert b"haflowd_node_maintenance 1.0" in d.get("/metrics")[1]
    assert d.get("/peers")[1][0]["maintenance"] is True
    code, cluster = d.get("/health/cluster")
    assert code == 200 and cluster["nodes"][0]["maintenance"] is True
    st = d.get("/status")[1]["maintenance"]
    assert st["maintenance"] is True and st["to_stop"] == ["manual", "web", "db"] and st["still_running"] == []
    assert "(maintenance)" in d.ctl("peers").stdout
    r = d.ctl("status")
    assert r.returncode == 1 and "MAINTENANCE: drained (all stopped)" in r.stdout  # a warning
    assert [e["type"] for e in _events(d)].count("maintenance-on") == 1

    r = d.ctl("start", "web")
    assert r.returncode == 1 and "drained for maintenance" in r.stderr and "undrain" in r.stderr
    assert d.comp("web")["state"] == "stopped"
    assert d.ctl("stop", "sidecar").returncode == 0  # an on_drain = "keep" component obeys as usual
    assert d.ctl("start", "sidecar").returncode == 0
    # a reload that changes a drained component leaves it stopped
    d.write_config(body(linger=0.3, extra=True).replace("@DIR@", str(d.dir)))
    r = d.ctl("reload")
    assert r.returncode == 0 and "web" in r.stdout, r.stdout + r.stderr
    assert d.comp("web")["state"] == "stopped" and d.comp("web")["note"] == "drained for maintenance"

    # undrain starts what the drain stopped, not what an operator had stopped before
    r = d.ctl("undrain")
    assert r.returncode == 0 and "manual" not in r.stdout, r.stdout
    d.wait_state("web", "running")
    assert d.comp("manual")["state"] == "stopped"
    assert d.ctl("drain", "--wait").returncode == 0

    # a restarted drained daemon starts only the on_drain = "keep" components
    d.signal(15)
    assert d.wait_exit() == 0
    d.start()
    d.wait_state("sidecar", "running")
    assert d.comp("db")["state"] == "stopped" and d.comp("web")["state"] == "stopped"
    assert d.get("/readiness")[0] == 503
    assert (d.dir / "data" / "maintenance.json").exists()

    r = d.ctl("undrain")
    assert r.returncode == 0, r.stderr
    assert "db" in r.stdout and "web" in r.stdout
    d.wait_state("db", "running")
    d.wait_state("web", "running")
    assert "manual" in r.stdout  # across a restart an operator's stop is not remembered (as without a drain)
    wait_until(lambda: d.get("/readiness")[0] == 200, 10, "/readiness 200 after undrain")
    assert b"haflowd_node_maintenance 0.0" in d.get("/metrics")[1]
    assert not (d.dir / "data" / "maintenance.json").exists()
    assert all(c["name"] != "maintenance" for c in d.get("/health")[1]["checks"])
    assert [e["type"] for e in _events(d)].count("maintenance-off") == 1


def _events(d: Daemon) -> list[dict[str, object]]:
    r = d.ctl("events", "--json")
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def _run_in_pty(argv: list[str], timeout: float) -> tuple[int, str]:
    """Run argv with its stderr (and stdout) on a pty; what the terminal showed, and the exit code."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the other side closed
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=max(0.1, deadline - time.monotonic())), out.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def test_progress_only_on_a_terminal(daemon) -> None:
    d = daemon(body(linger=1.5))
    d.wait_state("web", "running")
    ctl = [sys.executable, "-m", "haflowd.ctl", "--api", d.api, "--socket", str(d.socket)]
    code, shown = _run_in_pty([*ctl, "stop", "web"], 30)
    assert code == 0, shown
    assert "waiting for web to stop (" in shown  # the spinner line, redrawn while the stop runs
    assert "web: stopped" in shown
    r = d.ctl("restart", "web")
    assert r.returncode == 0 and r.stderr == ""  # not a tty: nothing on stderr
    code, shown = _run_in_pty([*ctl, "drain", "--wait"], 30)
    assert code == 0, shown
    assert "waiting for " in shown and "stopped web (1/2)" in shown and "stopped db (2/2)" in shown
    assert Path(d.dir / "order").read_text().split()[-2:] == ["web", "db"]


def test_sigterm_during_a_drain_stops_each_component_once(daemon) -> None:
    d = daemon(body(linger=1.0))
    for n in ("db", "web", "sidecar"):
        d.wait_state(n, "running")
    r = d.ctl("drain")
    assert r.returncode == 0 and "web, db" in r.stdout, r.stdout
    wait_until(lambda: d.comp("web")["state"] == "stopping", 10, "the drain to be stopping web")
    d.signal(15)
    assert d.wait_exit(60) == 0
    assert order(d) == ["web", "db", "sidecar"]  # each once, warmly, in reverse start order
    assert "Traceback" not in d.log_text() and '"level": "error"' not in d.log_text()
    assert (d.dir / "data" / "maintenance.json").exists()  # still drained at the next start
