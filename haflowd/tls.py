"""OpenSSL only when the config needs it.

Python's ``ssl`` and ``_hashlib`` map OpenSSL's libssl and libcrypto into the process
and initialise them: about 7 MiB of the daemon's RSS. Most nodes never use TLS:
gossip is plain HTTP signed with HMAC-SHA256 (``hmac`` and ``hashlib`` fall back to
Python's own ``_sha256`` without ``_hashlib``), the Airflow probes are ``http://`` on
loopback plus a SQLite or psycopg2 query (psycopg2-binary carries its own libssl). So
``__main__`` asks :func:`needs_tls` of the parsed config before it imports asyncio,
aiohttp or anything else, and without a reason calls :func:`block_openssl`: from then
on the process is what asyncio and aiohttp know as a Python built without ssl.

A reload cannot bring OpenSSL back into a process that started without it; the daemon
refuses such a reload and says to restart (:func:`components_need_tls`).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable
from typing import Any

from haflowd.config import ComponentConfig, Config

_BLOCKED = ("ssl", "_ssl", "_hashlib")


def components_need_tls(components: Iterable[ComponentConfig]) -> str | None:
    """Why these components' probes need ``ssl`` (the key path first), or None.

    Follows the precedence of ``Child.probe``: an ``http`` probe wins over the rest."""
    for i, c in enumerate(components):
        h = c.health
        if h is None:
            continue
        if h.http:
            if h.http.startswith("https://"):  # config.py accepts only the lower case
                return f"component[{i}].health.http is an https:// URL"
        elif h.airflow_job:
            continue  # SQLite, or psycopg2 with its own libssl
        elif h.celery_ping and h.broker is not None:
            return (f"component[{i}] ({c.name}) pings Celery over AMQP with aio-pika, "
                    "which imports ssl")
    return None


def needs_tls(cfg: Config) -> str | None:
    """The first setting of ``cfg`` that needs Python's ``ssl`` module, named by its key
    path with the reason, or None when the daemon can run without OpenSSL."""
    if cfg.rabbitmq is not None:
        return "[rabbitmq] is checked with aio-pika, which imports ssl"
    return components_need_tls(cfg.components)


class _SslForImportOnly(types.ModuleType):
    """Stands in for ``ssl`` while prometheus_client imports.

    Its ``exposition`` module imports ``ssl`` (and ``urllib.request``'s HTTPSHandler) at
    the top for the TLS of its own HTTP server and of ``push_to_gateway``, neither of
    which haflowd uses: the metrics are served by aiohttp. Every name read from it
    (``ssl.PROTOCOL_TLS_SERVER`` as a default argument, ``ssl.SSLContext`` in
    annotations) is a class that refuses to be instantiated, so an HTTPS request through
    urllib in this process fails with a clear error instead of loading OpenSSL."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unavailable


class _Unavailable:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("haflowd runs without OpenSSL (no setting needs TLS)")


def block_openssl() -> bool:
    """Make ``ssl``, ``_ssl`` and ``_hashlib`` unimportable for the rest of this process.

    Call it before asyncio, aiohttp, hashlib or prometheus_client are imported. True on
    success; False (nothing blocked, nothing left half-imported) if OpenSSL is already
    loaded or prometheus_client cannot be imported without it."""
    if any(sys.modules.get(name) is not None for name in _BLOCKED):
        return False
    before = set(sys.modules)
    for name in _BLOCKED:
        sys.modules[name] = None  # type: ignore[assignment]
    sys.modules["ssl"] = _SslForImportOnly("ssl")
    try:
        import prometheus_client  # noqa: F401
    except Exception:
        for name in set(sys.modules) - before:
            del sys.modules[name]
        return False
    sys.modules["ssl"] = None  # type: ignore[assignment]
    return True


def blocked() -> bool:
    """True when this process runs without OpenSSL (:func:`block_openssl` succeeded)."""
    return "ssl" in sys.modules and sys.modules["ssl"] is None
