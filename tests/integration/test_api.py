"""The API, the metrics, haflowctl and sd_notify against a real daemon."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import free_port, wait_until

ONE = """
[[component]]
name = "sleeper"
command = ["sleep", "5000"]
[[component]]
name = "web"
command = ["@PY@", "-m", "http.server", "--bind", "127.0.0.1", "@WEBPORT@"]
[component.health]
http = "http://127.0.0.1:@WEBPORT@/"
interval = "200ms"
timeout = "200ms"
start_period = "10s"
"""


@pytest.fixture
def running(daemon):
    d = daemon(ONE.replace("@WEBPORT@", str(free_port())))
    d.wait_state("sleeper", "running")
    d.wait_state("web", "running", timeout=15, healthy=True)
    return d


def test_read_endpoints_and_head(running):
    d = running
    status, body = d.get("/health")
    assert status == 200 and body["status"] == "passing" and body["node"] == "test"
    assert {c["name"] for c in body["checks"]} == {"component:sleeper", "component:web"}
    assert all({"name", "status", "output", "checked_at"} <= set(c) for c in body["checks"])
    assert d.get("/readiness")[0] == 200
    assert d.get("/liveness") == (200, d.get("/liveness")[1]) and d.get("/liveness")[1]["status"] == "ok"
    comps = d.get("/components")[1]
    for c in comps:
        assert {"name", "state", "pid", "uptime_s", "restarts", "healthy", "cpu_percent", "rss_bytes",
                "last_exit_code"} <= set(c)
    peers = d.get("/peers")[1]
    assert peers[0]["name"] == "test" and peers[0]["status"] == "alive"
    cluster = d.get("/health/cluster")
    assert cluster[0] == 200 and cluster[1]["nodes"][0]["name"] == "test"
    doc = d.get("/openapi.json")[1]
    assert doc["openapi"].startswith("3.") and "/health" in doc["paths"]
    for path in ("/health", "/liveness", "/readiness", "/components", "/peers", "/metrics", "/health/cluster"):
        status, body = d.get(path, method="HEAD")
        assert status == 200 and not body, path
    assert d.get("/nope")[0] == 404


def test_health_statuses_and_strict(running):
    d = running
    assert d.ctl("stop", "sleeper").returncode == 0
    status, body = d.get("/health")
    assert status == 200 and body["status"] == "warning"
    assert d.get("/health?strict=1")[0] == 503
    assert d.get("/health?strict=1", method="HEAD")[0] == 503
    assert d.get("/readiness")[0] == 200
    assert d.ctl("health").returncode == 1
    assert d.ctl("status").returncode == 1


def test_metrics_pass_promtool(running):
    d = running
    wait_until(lambda: d.comp("web")["rss_bytes"] > 0, 10, "a resource sample")
    status, text = d.get("/metrics")
    assert status == 200
    text = text.decode()
    for name in ("haflowd_build_info", "haflowd_component_up", "haflowd_component_healthy",
                 "haflowd_component_restarts_total", "haflowd_component_cpu_seconds_total",
                 "haflowd_component_memory_rss_bytes", "haflowd_check_status", "haflowd_peer_up"):
        assert f"\n{name}{{" in text or text.startswith(name), name
    assert 'haflowd_component_up{component="web"} 1.0' in text
    assert 'haflowd_check_status{check="component:web"} 0.0' in text
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: scripts/test installs the prometheus package")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr


def test_haflowctl_tables_and_json(running):
    d = running
    r = d.ctl("components")
    assert r.returncode == 0
    header = r.stdout.splitlines()[0].split()
    assert header[:4] == ["NAME", "STATE", "PID", "UPTIME"]
    assert "sleeper" in r.stdout and "web" in r.stdout
    r = d.ctl("components", "--json")
    assert {c["name"] for c in json.loads(r.stdout)} == {"sleeper", "web"}
    r = d.ctl("--json", "health")
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "passing"
    r = d.ctl("status")
    assert r.returncode == 0 and "node test" in r.stdout and "sleeper" in r.stdout
    r = d.ctl("peers")
    assert r.returncode == 0 and r.stdout.split()[:5] == ["NAME", "ADDRESS", "STATUS", "INCARNATION", "LAST"]
    r = d.ctl("health", "--cluster")
    assert r.returncode == 0 and "cluster: passing" in r.stdout
    r = d.ctl("reload")
    assert r.returncode == 0 and "reloaded" in r.stdout


def test_haflowctl_without_a_daemon_exits_3(tmp_path):
    port = free_port()
    for args in (["status"], ["peers", "--json"], ["components"], ["restart", "x"], ["reload"], ["health"]):
        r = subprocess.run(
            [sys.executable, "-m", "haflowd.ctl", "--api", f"http://127.0.0.1:{port}",
             "--socket", str(tmp_path / "none.sock"), *args],
            capture_output=True, text=True, timeout=30,
        )
        assert r.returncode == 3, (args, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert r.stderr.startswith("haflowctl: ")


def test_sd_notify_protocol(daemon, tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    messages: list[str] = []

    def drain_until(pred, timeout=10.0, what=""):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                pass
            if pred():
                return
        raise AssertionError(f"no {what} in {messages}")

    try:
        d = daemon('[[component]]\nname = "s"\ncommand = ["sleep", "5100"]\n', start=False,
                   env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
        d.start()
        drain_until(lambda: any("READY=1" in m for m in messages), what="READY=1")
        drain_until(lambda: sum("WATCHDOG=1" in m for m in messages) >= 3, what="three WATCHDOG=1")
        assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in messages)
        n = len(messages)
        d.signal(signal.SIGHUP)
        drain_until(lambda: any("RELOADING=1" in m for m in messages[n:]), what="RELOADING=1")
        k = next(i for i in range(n, len(messages)) if "RELOADING=1" in messages[i])
        drain_until(lambda: any("READY=1" in m for m in messages[k + 1:]), what="READY=1 after reload")
        # a stopped loop feeds no watchdog
        d.signal(signal.SIGSTOP)
        try:  # empty what was sent before the stop
            while True:
                sock.recv(4096)
        except TimeoutError:
            pass
        messages.clear()
        time.sleep(1.0)  # a window of five watchdog intervals
        try:
            while True:
                messages.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        assert not any("WATCHDOG=1" in m for m in messages)
        d.signal(signal.SIGCONT)
        d.signal(signal.SIGTERM)
        drain_until(lambda: any("STOPPING=1" in m for m in messages), what="STOPPING=1")
        assert d.wait_exit(20) == 0
    finally:
        sock.close()
