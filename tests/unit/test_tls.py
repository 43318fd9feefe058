"""OpenSSL on demand: which settings need Python's ssl (a table of configs), and what a
process without it can still do (a fresh interpreter each, since blocking is for life)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from haflowd import config, tls

ROOT = Path(__file__).resolve().parents[2]

COMP = '[[component]]\nname = "{name}"\ncommand = ["sleep", "1"]\n'
HTTP = COMP + '[component.health]\nhttp = "{url}"\n'
RABBIT = '[rabbitmq]\n{amqp}[[rabbitmq.node]]\nname = "rabbit@a"\nmanagement_url = "{url}"\n'
CELERY = ('[[component]]\nname = "worker"\npreset = "airflow-celery-worker"\n'
          'environment = {{ AIRFLOW__CELERY__BROKER_URL = "{broker}" }}\n')


def _cfg(tmp_path: Path, body: str) -> config.Config:
    p = tmp_path / "haflowd.toml"
    p.write_text(body)
    return config.load(p, check_system=False)


@pytest.mark.parametrize(("body", "reason", "aio_pika"), [
    ("", None, False),
    (COMP.format(name="a"), None, False),
    (HTTP.format(name="a", url="http://127.0.0.1:8080/health"), None, False),
    (COMP.format(name="a") + '[component.health]\ncommand = ["true"]\n', None, False),
    ('[[component]]\nname = "t"\npreset = "airflow-triggerer"\n'
     'environment = { AIRFLOW__DATABASE__SQL_ALCHEMY_CONN = "postgresql://af:pw@pg1/airflow?sslmode=require" }\n',
     None, False),  # psycopg2 brings its own libssl
    (CELERY.format(broker="redis://r:6379/0"), None, False),  # not AMQP: the celery CLI in a child
    ('[postgres]\n[[postgres.node]]\nname = "pg1"\ndsn = "host=pg1 sslmode=require"\n', None, False),
    ('[gossip]\nlisten = "127.0.0.1:7946"\nkeys = ["' + "a" * 44 + '"]\n', None, False),
    (HTTP.format(name="a", url="http://x/") + HTTP.format(name="b", url="https://x/"),
     "component[1].health.http is an https:// URL", False),
    (COMP.format(name="a") + CELERY.format(broker="amqp://u:pw@rmq1:5672//"), None, True),
    (CELERY.format(broker="pyamqp://u:pw@a//;amqp://u:pw@b//"), None, True),
    (COMP.format(name="a") + CELERY.format(broker="amqp://u:pw@a//;amqps://u:pw@b//"),
     "component[1] (worker) pings Celery at an amqps:// broker_url", True),
    (RABBIT.format(amqp="", url="http://127.0.0.1:15672"), None, True),
    (RABBIT.format(amqp='amqp_url = "amqp://u:pw@a:5672/"\n', url="http://a:15672"), None, True),
    (RABBIT.format(amqp='amqp_url = "amqps://u:pw@a:5671/"\n', url="http://a:15672"),
     "rabbitmq.amqp_url is an amqps:// URL", True),
    (RABBIT.format(amqp="", url="https://a:15671"), "rabbitmq.node[0].management_url is an https:// URL", True),
    (RABBIT.format(amqp="", url="http://a:15672") + 'amqp_url = "amqps://u:pw@a:5671/"\n',
     "rabbitmq.node[0].amqp_url is an amqps:// URL", True),
    # the section's problem is named before the components'
    (HTTP.format(name="a", url="https://x/") + RABBIT.format(amqp="", url="https://a:15671"),
     "rabbitmq.node[0].management_url is an https:// URL", True),
])
def test_needs_tls(tmp_path: Path, body: str, reason: str | None, aio_pika: bool) -> None:
    cfg = _cfg(tmp_path, body)
    assert tls.needs_tls(cfg) == reason
    assert tls.uses_aio_pika(cfg) is aio_pika
    assert "pw" not in (reason or "")


def test_an_http_probe_replaces_the_celery_ping(tmp_path: Path) -> None:
    """A [component.health] http under the celery preset is what runs (http wins in
    Child.probe): neither aio-pika nor the broker's scheme matters then."""
    cfg = _cfg(tmp_path, CELERY.format(broker="amqps://u:pw@rmq1//") + '[component.health]\nhttp = "http://x/"\n')
    assert tls.needs_tls(cfg) is None
    assert not tls.uses_aio_pika(cfg)


@pytest.mark.parametrize(("body", "aio_pika_loaded", "refusal"), [
    (COMP.format(name="a"), False, None),
    (HTTP.format(name="a", url="https://x/"), True,
     "component[0].health.http is an https:// URL, and this haflowd started without OpenSSL: "
     "restart haflowd to load TLS"),
    (CELERY.format(broker="amqp://u:pw@rmq1//"), True, None),
    (CELERY.format(broker="amqp://u:pw@rmq1//"), False,
     "component[0] (worker) pings Celery with aio-pika, which this haflowd did not load at start "
     "(it imports ssl): restart haflowd to load it"),
    (CELERY.format(broker="amqps://u:pw@rmq1//"), True,
     "component[0] (worker) pings Celery at an amqps:// broker_url, and this haflowd started without "
     "OpenSSL: restart haflowd to load TLS"),
])
def test_reload_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, aio_pika_loaded: bool,
                        refusal: str | None) -> None:
    if not aio_pika_loaded:
        monkeypatch.delitem(sys.modules, "aio_pika", raising=False)
    else:
        monkeypatch.setitem(sys.modules, "aio_pika", sys.modules.get("aio_pika") or ModuleType("aio_pika"))
    assert tls.reload_refusal(_cfg(tmp_path, body).components) == refusal


def _fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_without_openssl_the_daemon_imports_and_signs_and_serves_http() -> None:
    """A process that blocked OpenSSL: no libssl/libcrypto mapped after importing the
    whole daemon and running aiohttp server and client on loopback; gossip signatures
    equal those of a process with OpenSSL; an HTTPS request fails cleanly."""
    r = _fresh_python("""
        import json, sys
        from haflowd import tls
        assert tls.block_openssl() and tls.blocked()
        import asyncio, hashlib, hmac
        import aiohttp
        from aiohttp import web
        import haflowd.daemon, haflowd.api.metrics
        from haflowd.supervisor.child import Child
        from prometheus_client import CollectorRegistry, Gauge, generate_latest

        reg = CollectorRegistry()
        Gauge("g", "a gauge", registry=reg).set(2)
        assert b"g 2.0" in generate_latest(reg)

        async def main():
            app = web.Application()
            app.router.add_get("/", lambda r: web.json_response({"ok": True}))
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{port}/") as resp:
                    ok = (await resp.json())["ok"]
                try:
                    await s.get(f"https://127.0.0.1:{port}/")
                    https = "no error"
                except Exception as e:
                    https = type(e).__name__
            await runner.cleanup()
            return ok, https

        ok, https = asyncio.run(main())
        maps = open("/proc/self/maps").read()
        print(json.dumps({
            "ok": ok, "https": https,
            "libs": sorted({l.split()[-1] for l in maps.splitlines() if "libssl" in l or "libcrypto" in l}),
            "mac": hmac.new(b"k" * 32, b"message", hashlib.sha256).hexdigest(),
        }))
    """)
    assert r.returncode == 0, r.stderr
    import hashlib
    import hmac
    import json

    out = json.loads(r.stdout)
    assert out["ok"] is True
    assert out["libs"] == []
    assert out["https"] != "no error"
    assert out["mac"] == hmac.new(b"k" * 32, b"message", hashlib.sha256).hexdigest()


def test_block_openssl_refuses_when_ssl_is_already_loaded() -> None:
    r = _fresh_python("""
        import ssl
        from haflowd import tls
        assert not tls.block_openssl()
        assert not tls.blocked()
        import ssl as again
        assert again is ssl
    """)
    assert r.returncode == 0, r.stderr


def test_urllib_https_fails_with_a_clear_error_without_openssl() -> None:
    """urllib.request is imported with the stand-in ssl (prometheus_client needs its
    HTTPSHandler); using it for HTTPS says why instead of loading OpenSSL."""
    r = _fresh_python("""
        from haflowd import tls
        assert tls.block_openssl()
        import urllib.request
        try:
            urllib.request.urlopen("https://127.0.0.1:9/", timeout=1)
        except RuntimeError as e:
            print(e)
        assert "libcrypto" not in open("/proc/self/maps").read()
    """)
    assert r.returncode == 0, r.stderr
    assert "haflowd runs without OpenSSL" in r.stdout


def test_aio_pika_without_openssl_speaks_plain_amqp() -> None:
    """Imported against the stand-in, aio-pika connects to amqp:// as usual: here to a
    closed port on loopback, which the Celery ping reports as an unreachable broker."""
    r = _fresh_python("""
        import socket
        from haflowd import tls
        assert tls.block_openssl(aio_pika=True)
        import asyncio
        from haflowd import celery_ping

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ok, what = asyncio.run(celery_ping.ping(f"amqp://guest:secret@127.0.0.1:{port}//", "celery@x", 5))
        assert not ok and what.startswith("broker unreachable"), what
        assert "secret" not in what
        assert "libcrypto" not in open("/proc/self/maps").read()
        print(what)
    """)
    assert r.returncode == 0, r.stderr + r.stdout
