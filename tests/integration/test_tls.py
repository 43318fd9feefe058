"""OpenSSL on demand, in a real daemon: a config that needs no TLS never maps libssl or
libcrypto; one with an https:// or amqps:// URL loads them; a reload that would need
them in a daemon started without them is refused and the daemon runs on unchanged."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.conftest import Daemon, free_port, wait_until

SLEEPER = """
[[component]]
name = "sleeper"
command = ["sleep", "3700"]
"""


def openssl_maps(d: Daemon) -> set[str]:
    """The OpenSSL libraries and Python's modules over them mapped into the daemon."""
    assert d.proc is not None
    paths = {line.split()[-1] for line in Path(f"/proc/{d.proc.pid}/maps").read_text().splitlines()
             if len(line.split()) >= 6}
    return {p for p in paths if any(k in Path(p).name for k in ("libssl", "libcrypto", "_ssl.", "_hashlib."))}


def events(d: Daemon, name: str) -> list[dict[str, object]]:
    return [e for e in d.log_events() if e.get("event") == name]


def test_a_plain_config_runs_without_openssl(daemon):
    d = daemon(SLEEPER, start=False)
    d.write_config(SLEEPER + f"""
[component.health]
http = "http://127.0.0.1:{d.port}/liveness"
interval = "200ms"
timeout = "150ms"
""")
    d.start()
    d.wait_state("sleeper", "running", healthy=True)  # the http probe works without ssl
    assert d.get("/metrics")[0] == 200  # prometheus-client imported without ssl
    assert openssl_maps(d) == set()
    assert len(events(d, "openssl_not_loaded")) == 1


def test_an_https_probe_loads_openssl(daemon):
    d = daemon(SLEEPER + f"""
[component.health]
http = "https://127.0.0.1:{free_port()}/"
""")
    d.wait_state("sleeper", "starting")  # never healthy: nothing answers there
    wait_until(lambda: any("libssl" in p for p in openssl_maps(d)), 10, "libssl mapped")
    ev = events(d, "openssl_loaded")
    assert ev and ev[0]["reason"] == "component[0].health.http is an https:// URL"
    assert not events(d, "openssl_not_loaded")


def test_an_amqps_rabbitmq_url_loads_openssl(daemon):
    port = free_port()
    d = daemon(SLEEPER + f"""
[rabbitmq]
interval = "1s"
timeout = "500ms"
amqp_url = "amqps://guest:guest@127.0.0.1:{port}/"
[[rabbitmq.node]]
name = "rabbit@nowhere"
management_url = "http://127.0.0.1:{port}"
""")
    wait_until(lambda: any("libssl" in p for p in openssl_maps(d)), 10, "libssl mapped")
    assert events(d, "openssl_loaded")[0]["reason"] == "rabbitmq.amqp_url is an amqps:// URL"


def test_plain_amqp_runs_aio_pika_without_openssl(daemon):
    """[rabbitmq] over amqp:// and http://: aio-pika is loaded against the stand-in ssl,
    the checker runs (here against closed ports: critical, with aio-pika's own error)."""
    port = free_port()
    d = daemon(SLEEPER + f"""
[rabbitmq]
interval = "500ms"
timeout = "400ms"
amqp_url = "amqp://guest:guest@127.0.0.1:{port}/"
[[rabbitmq.node]]
name = "rabbit@nowhere"
management_url = "http://127.0.0.1:{port}"
""")
    body = wait_until(lambda: (b := d.get("/rabbitmq")[1]) and b.get("amqp_error") and b, 10, "an AMQP error")
    assert "ssl" not in str(body["amqp_error"]).lower()
    assert d.live()
    assert openssl_maps(d) == set()
    assert len(events(d, "openssl_not_loaded")) == 1


def test_a_reload_that_needs_tls_is_refused_and_nothing_changes(daemon):
    d = daemon(SLEEPER)
    pid = d.wait_state("sleeper", "running")["pid"]
    good = d.config.read_text()
    https = good + f'[component.health]\nhttp = "https://127.0.0.1:{free_port()}/"\n'

    d.config.write_text(https)
    r = d.ctl("reload")
    assert r.returncode == 1, r
    assert "component[0].health.http is an https:// URL" in r.stderr
    assert "restart haflowd to load TLS" in r.stderr
    assert "Traceback" not in r.stderr + d.log_text()

    d.signal(signal.SIGHUP)  # the same through the signal: one clear log line
    wait_until(lambda: len(events(d, "reload_rejected")) >= 2, 10, "the SIGHUP reload rejected")
    assert all("restart haflowd to load TLS" in str(e["error"]) for e in events(d, "reload_rejected"))

    assert d.live()
    c = d.comp("sleeper")
    assert (c["pid"], c["state"]) == (pid, "running")
    assert openssl_maps(d) == set()

    # what a reload applies later ([rabbitmq] waits for a restart, which loads OpenSSL) is accepted
    d.config.write_text(good + """
[rabbitmq]
[[rabbitmq.node]]
name = "rabbit@a"
management_url = "http://127.0.0.1:1"
""")
    r = d.ctl("reload")
    assert r.returncode == 0, r
    assert "[rabbitmq] changed: takes effect at the next restart" in r.stdout
    assert openssl_maps(d) == set()
    assert d.comp("sleeper")["pid"] == pid
