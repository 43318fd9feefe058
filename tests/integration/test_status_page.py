"""The status page (``GET /``) of a real daemon, read by a real headless Chromium: three
gossiping daemons (test_gossip.py's ``trio``), on n1 a component in a crash loop gone fatal
and a PostgreSQL and RabbitMQ section whose secrets must not show, then n3 killed. The DOM
Chromium built says n3 is dead and the component fatal; the page has no script at all (so
there is no script error to collect) and Chromium reaches nothing but the loopback URL.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, peer_map, wait_until
from tests.integration.test_gossip import Trio, trio  # noqa: F401  (the three-node fixture, shared)
from tests.unit.test_status_page import Page

pytestmark = pytest.mark.integration

PASSWORD = "Pg-Secret-8841"
RABBIT_PASSWORD = "Mq-Secret-5512"
SECTIONS = """
[[component]]
name = "flaky"
command = ["sh", "-c", "echo '<script>alert(1)</script>' >&2; exit 3"]
backoff_initial = "10ms"
backoff_max = "40ms"
crash_loop_failures = 3
crash_loop_window = "1m"

[postgres]
local_node = "pg1"
timeout = "1s"
[[postgres.node]]
name = "pg1"
dsn = "host=127.0.0.1 port={closed} user=airflow password={password} connect_timeout=1"

[rabbitmq]
timeout = "1s"
amqp_url = "amqp://airflow:{rabbit_password}@127.0.0.1:{closed}/"
[[rabbitmq.node]]
name = "rabbit@n1"
management_url = "http://127.0.0.1:{closed}"
username = "airflow"
password = "{rabbit_password}"
"""
CHROMIUM_S = 20


def chromium(tmp_path: Path, url: str, *args: str) -> str:
    """One headless Chromium run on ``url``: no proxy, a fresh profile, every host name but
    127.0.0.1 unresolvable, nothing in the background; its stdout."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium is not installed; scripts/setup installs it")
    profile = tmp_path / f"chromium-{len(list(tmp_path.glob('chromium-*')))}"
    cmd = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-proxy-server",
           f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
           "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-extensions", "--disable-default-apps", "--disable-breakpad", "--window-size=1280,900",
           *args, url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "HOME": str(tmp_path)})
    try:
        out, err = proc.communicate(timeout=CHROMIUM_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"chromium took more than {CHROMIUM_S}s on {url}") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as r:
        return r.status, dict(r.headers), r.read()


def test_the_page_in_a_real_browser_shows_a_fatal_component_and_a_dead_peer(
        trio: Trio, tmp_path: Path) -> None:  # noqa: F811
    n1, n3 = trio["n1"], trio["n3"]
    closed = free_port()  # nothing listens there: PostgreSQL and RabbitMQ refuse at once
    n1.kill()
    n1.config.write_text(n1.config.read_text() + SECTIONS.format(
        closed=closed, password=PASSWORD, rabbit_password=RABBIT_PASSWORD))
    n1.start()
    wait_until(trio.all_alive, 15, "n1 back among n1, n2, n3, all alive")
    n1.wait_state("flaky", "fatal", timeout=15)
    wait_until(lambda: n1.get("/postgres")[1]["checked_at"] and n1.get("/rabbitmq")[1]["checked_at"], 15,
               "n1's first PostgreSQL and RabbitMQ rounds")
    assert n3.proc is not None
    n3.proc.send_signal(signal.SIGKILL)
    wait_until(lambda: peer_map(n1)["n3"]["status"] == "dead", 20, "n1 to see n3 dead")

    status, headers, body = fetch(n1.api + "/")
    text = body.decode()
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "<script" not in text.lower()
    assert PASSWORD not in text and RABBIT_PASSWORD not in text
    status, headers, body = fetch(n1.api + "/", "HEAD")
    assert (status, body) == (200, b"") and headers["Content-Type"] == "text/html; charset=utf-8"

    dom = chromium(tmp_path, n1.api + "/", "--dump-dom")
    p = Page(dom)
    assert p.forbidden == [] and "<script" not in dom.lower()  # no script: none can fail
    assert PASSWORD not in dom and RABBIT_PASSWORD not in dom
    assert set(p.sections) == {"nodes", "components", "peer-components", "checks", "postgres", "rabbitmq"}
    n3_row = p.row("nodes", "n3")
    assert (n3_row[1].text, n3_row[1].kinds) == ("dead", ["bad"])
    assert [(c.text, c.kinds) for c in p.row("nodes", "n2")[1:3]] == [("alive", ["good"]), ("passing", ["good"])]
    flaky = p.row("components", "n1", "flaky")
    assert (flaky[2].text, flaky[2].kinds) == ("fatal", ["bad"]) and int(flaky[5].text) >= 2
    assert "last known" in p.row("peer-components", "n3")[0].text
    n3_checks = p.rows("checks", "n3")
    assert n3_checks and all(r[3].text == "last known" for r in n3_checks)  # a dead node's last summary
    assert p.row("postgres", "pg1")[1].text == "down"
    assert p.row("rabbitmq", "rabbit@n1")[1].kinds == ["bad"]

    shot = tmp_path / "status-page.png"
    chromium(tmp_path, n1.api + "/", f"--screenshot={shot}")
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
