"""OpenSSL only when the config needs it.

Python's ``ssl`` and ``_hashlib`` map OpenSSL's libssl and libcrypto into the process
and initialise them: about 7 MiB of the daemon's RSS. Most nodes never use TLS:
gossip is plain HTTP signed with HMAC-SHA256 (``hmac`` and ``hashlib`` fall back to
Python's own ``_sha256`` without ``_hashlib``), the Airflow probes are ``http://`` on
loopback plus a SQLite or psycopg2 query (psycopg2-binary carries its own libssl), and
RabbitMQ is often plain ``amqp://``. So ``__main__`` asks :func:`needs_tls` of the
parsed config before it imports asyncio, aiohttp or anything else, and without a reason
calls :func:`block_openssl`: from then on the process is what asyncio and aiohttp know
as a Python built without ssl.

A reload cannot bring OpenSSL (or aio-pika, see :func:`block_openssl`) into a process
that started without it; the daemon refuses such a reload and says to restart
(:func:`reload_refusal`).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable, Sequence
from typing import Any

from haflowd.airflow.celery_ping import amqp_urls
from haflowd.config import ComponentConfig, Config, RabbitConfig

_BLOCKED = ("ssl", "_ssl", "_hashlib")
# import ssl unconditionally, and use it only for TLS (prometheus_client: its own HTTPS
# server and push gateway; aio-pika and aiormq: amqps://)
_NEED_SSL_TO_IMPORT = ("prometheus_client",)
AIO_PIKA = "aio_pika"


def _celery_ping(components: Iterable[ComponentConfig]) -> Iterable[tuple[int, ComponentConfig, str]]:
    """(index, component, broker URL) of every component whose probe is the daemon's own
    Celery ping. Follows the precedence of ``Child.probe``: http, airflow_job, celery."""
    for i, c in enumerate(components):
        h = c.health
        if h is not None and not h.http and not h.airflow_job and h.celery_ping and h.broker is not None:
            yield i, c, h.broker.reveal()


def components_need_tls(components: Iterable[ComponentConfig]) -> str | None:
    """Why these components' probes need ``ssl`` (the key path first), or None."""
    components = tuple(components)
    for i, c in enumerate(components):
        h = c.health
        if h is not None and h.http and h.http.startswith("https://"):  # config.py accepts only the lower case
            return f"component[{i}].health.http is an https:// URL"
    for i, c, broker in _celery_ping(components):
        if any(u.startswith("amqps://") for u in amqp_urls(broker)):
            return f"component[{i}] ({c.name}) pings Celery at an amqps:// broker_url"
    return None


def _rabbitmq_needs_tls(r: RabbitConfig) -> str | None:
    if r.amqp_url is not None and r.amqp_url.reveal().startswith("amqps://"):
        return "rabbitmq.amqp_url is an amqps:// URL"
    for i, n in enumerate(r.nodes):
        if n.management_url.startswith("https://"):
            return f"rabbitmq.node[{i}].management_url is an https:// URL"
        if n.amqp_url is not None and n.amqp_url.reveal().startswith("amqps://"):
            return f"rabbitmq.node[{i}].amqp_url is an amqps:// URL"
    return None


def needs_tls(cfg: Config) -> str | None:
    """The first setting of ``cfg`` that needs Python's ``ssl`` module, named by its key
    path with the reason (never a secret), or None when the daemon can run without OpenSSL."""
    if cfg.rabbitmq is not None and (why := _rabbitmq_needs_tls(cfg.rabbitmq)):
        return why
    return components_need_tls(cfg.components)


def uses_aio_pika(cfg: Config) -> bool:
    """The [rabbitmq] check and the Celery ping speak AMQP through aio-pika."""
    return cfg.rabbitmq is not None or any(True for _ in _celery_ping(cfg.components))


def reload_refusal(components: Sequence[ComponentConfig]) -> str | None:
    """Why a daemon running without OpenSSL cannot apply these components now, or None."""
    why = components_need_tls(components)
    if why is not None:
        return f"{why}, and this haflowd started without OpenSSL: restart haflowd to load TLS"
    ping = next(iter(_celery_ping(components)), None)
    if ping is not None and AIO_PIKA not in sys.modules:
        i, c, _broker = ping
        return (f"component[{i}] ({c.name}) pings Celery with aio-pika, which this haflowd did not load "
                "at start (it imports ssl): restart haflowd to load it")
    return None


class _SslForImportOnly(types.ModuleType):
    """Stands in for ``ssl`` while the modules that import it unconditionally import.

    prometheus_client's ``exposition`` imports ``ssl`` (and ``urllib.request``'s
    HTTPSHandler) for the TLS of its own HTTP server and of ``push_to_gateway``, neither
    of which haflowd uses: the metrics are served by aiohttp. aio-pika and aiormq import
    it for ``amqps://`` only. Every name read from it (``ssl.PROTOCOL_TLS_SERVER`` as a
    default argument, ``ssl.SSLContext`` in annotations) is a class that refuses to be
    instantiated, so TLS attempted anyway (an HTTPS request through urllib) fails with a
    clear error instead of loading OpenSSL."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Unavailable


class _Unavailable:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("haflowd runs without OpenSSL (no setting needs TLS)")


def block_openssl(aio_pika: bool = False) -> bool:
    """Make ``ssl``, ``_ssl`` and ``_hashlib`` unimportable for the rest of this process.

    Call it before asyncio, aiohttp, hashlib or prometheus_client are imported. The
    libraries that import ``ssl`` unconditionally are imported here, against a stand-in:
    prometheus_client always, aio-pika if ``aio_pika`` (it costs 3.5 MiB: only configs
    that use it). True on success; False (nothing blocked, nothing left half-imported) if
    OpenSSL is already loaded or one of them cannot be imported without it."""
    if any(sys.modules.get(name) is not None for name in _BLOCKED):
        return False
    before = set(sys.modules)
    for name in _BLOCKED:
        sys.modules[name] = None  # type: ignore[assignment]
    sys.modules["ssl"] = _SslForImportOnly("ssl")
    try:
        for module in (*_NEED_SSL_TO_IMPORT, *((AIO_PIKA,) if aio_pika else ())):
            __import__(module)
    except Exception:
        for name in set(sys.modules) - before:
            del sys.modules[name]
        return False
    sys.modules["ssl"] = None  # type: ignore[assignment]
    return True


def blocked() -> bool:
    """True when this process runs without OpenSSL (:func:`block_openssl` succeeded)."""
    return "ssl" in sys.modules and sys.modules["ssl"] is None
