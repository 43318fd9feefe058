"""OpenSSL on demand, in fresh interpreters (blocking ssl is for the life of a process):
what a process without OpenSSL can still do. The config table is in tests/unit/test_tls.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
        from haflowd.airflow import celery_ping

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
