"""Celery's remote-control ping of one worker, over AMQP, from inside the daemon.

What ``celery inspect ping --destination celery@HOST`` does, without starting a Python
that imports Airflow (about 4 s of CPU a probe): publish a ``ping`` to the
``celery.pidbox`` fanout exchange addressed to the worker, and wait for its ``pong`` on
a private queue bound to ``reply.celery.pidbox`` (kombu's mailbox protocol, the one every
Celery worker answers). Only AMQP brokers (RabbitMQ); presets fall back to the CLI for
others.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from haflowd import secrets

AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
MAILBOX = "celery.pidbox"
REPLY = "reply.celery.pidbox"
# the longest a ping waits for the broker's Close-Ok before it drops the connection
CLOSE_TIMEOUT_S = 0.5

T = TypeVar("T")
_abandoned: set[Any] = set()  # cancelled tasks still ending: referenced so they are not collected


def amqp_urls(broker: str) -> list[str]:
    """The AMQP URLs of a Celery ``broker_url`` (``;`` separates failover brokers), in
    aio-pika's form; empty if any is not AMQP."""
    out = []
    for url in (u.strip() for u in broker.split(";")):
        if not url:
            continue
        scheme = urlsplit(url).scheme
        if scheme not in AMQP_SCHEMES:
            return []
        out.append("amqps" + url[len(scheme):] if scheme == "amqps" else "amqp" + url[len(scheme):])
    return out


def _scrub(text: str, urls: list[str]) -> str:
    """The one scrubber (haflowd.secrets), knowing the broker URLs' passwords in every spelling."""
    return secrets.Scrubber(s for url in urls for s in secrets.derive(url))(text)


async def ping(broker: str, destination: str, timeout: float) -> tuple[bool, str]:
    """(answered, what happened), within ``timeout`` seconds in all, the closing of the
    connection included. Never raises for a broker or worker problem."""
    # not at the top: config loading imports this module (presets) before haflowd decides
    # whether it needs OpenSSL, and asyncio imports ssl when it can (tls.py)
    from aio_pika.exceptions import AMQPError, ChannelClosed  # loaded only where it is used

    urls = amqp_urls(broker)
    if not urls:
        return False, "the broker is not AMQP"
    # the exchange stops this much before the end, so that its close fits in the timeout too
    close_budget = min(CLOSE_TIMEOUT_S, timeout / 4)
    end = time.monotonic() + timeout
    errors = []
    for url in urls:
        left = end - time.monotonic() - close_budget
        if left <= 0:
            break
        opened: list[Any] = []
        try:
            return await _bounded(_ping_one(url, destination, left, opened), left)
        except TimeoutError:
            return False, f"no pong from {destination} within {timeout:g}s"
        except ChannelClosed as e:
            if "NOT_FOUND" in str(e):
                return False, f"no Celery mailbox on the broker ({MAILBOX} missing): no worker connected yet"
            errors.append(f"{type(e).__name__}: {e}")
        except (AMQPError, OSError, ConnectionError) as e:
            errors.append(f"{type(e).__name__}: {e}".strip())
        finally:
            for conn in opened:
                await _close(conn, min(close_budget, max(0.0, end - time.monotonic())))
    return False, _scrub("broker unreachable: " + "; ".join(errors)[:300], urls)


async def _bounded(aw: Awaitable[T], timeout: float, cancel: bool = True) -> T:
    """``aw``'s result within ``timeout``, else TimeoutError. Unlike ``asyncio.wait_for``,
    it never waits for a late task to finish: one stuck on a broker that stopped answering
    is cancelled (unless ``cancel`` is false) and left to end on its own."""
    import asyncio

    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        _abandon(task, cancel)
        raise
    if not done:
        _abandon(task, cancel)
        raise TimeoutError
    return task.result()


def _abandon(task: Any, cancel: bool) -> None:
    """Stop waiting for a task; keep it referenced until it ends, and swallow its outcome
    (nobody awaits it)."""
    if cancel:
        task.cancel()
    _abandoned.add(task)

    def forget(t: Any) -> None:
        _abandoned.discard(t)
        if not t.cancelled():
            t.exception()

    task.add_done_callback(forget)


async def _close(conn: Any, timeout: float) -> None:
    """Close a connection, waiting at most ``timeout``. A close that takes longer goes on
    without us, uncancelled: aiormq bounds it itself (it drops the socket when Close-Ok
    does not come), whereas a cancelled close can hang for good. The ping's answer is
    known by now, so a failing close changes nothing."""
    try:
        await _bounded(conn.close(), timeout, cancel=False)
    except Exception:  # a broken or stuck connection is what is being dropped
        pass


async def _ping_one(url: str, destination: str, timeout: float, opened: list[Any]) -> tuple[bool, str]:
    """The exchange itself; the connection goes into ``opened`` for the caller to close."""
    import aio_pika as ap

    conn = await ap.connect(url, timeout=timeout)
    opened.append(conn)
    channel = await conn.channel()
    oid = uuid.uuid4().hex
    ticket = uuid.uuid4().hex
    reply_exchange = await channel.declare_exchange(
        REPLY, ap.ExchangeType.DIRECT, durable=False, auto_delete=False)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(reply_exchange, routing_key=oid)
    mailbox = await channel.get_exchange(MAILBOX, ensure=True)  # exists once a worker runs
    body = {"method": "ping", "arguments": {}, "destination": [destination], "pattern": None,
            "matcher": None, "ticket": ticket, "reply_to": {"exchange": REPLY, "routing_key": oid}}
    message = ap.Message(
        json.dumps(body).encode(), content_type="application/json", content_encoding="utf-8",
        headers={"clock": 1, "expires": time.time() + timeout},
        delivery_mode=ap.DeliveryMode.NOT_PERSISTENT)
    await mailbox.publish(message, routing_key="")
    async with queue.iterator() as replies:
        async for reply in replies:
            await reply.ack()
            if (reply.headers or {}).get("ticket") not in (None, ticket):
                continue
            try:
                answer = json.loads(reply.body)
            except ValueError:
                continue
            if isinstance(answer, dict) and destination in answer:
                got = answer[destination]
                ok = isinstance(got, dict) and got.get("ok") == "pong"
                return ok, f"{destination}: {'pong' if ok else json.dumps(got)[:100]}"
    return False, f"no pong from {destination}"
