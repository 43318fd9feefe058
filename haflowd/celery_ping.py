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
from urllib.parse import unquote, urlsplit

AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
MAILBOX = "celery.pidbox"
REPLY = "reply.celery.pidbox"


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
    for url in urls:
        pw = urlsplit(url).password
        if pw:
            text = text.replace(pw, "***").replace(unquote(pw), "***")
    return text


async def ping(broker: str, destination: str, timeout: float) -> tuple[bool, str]:
    """(answered, what happened). Never raises for a broker or worker problem; the
    caller bounds the whole call with ``timeout`` too."""
    # not at the top: config loading imports this module (presets) before haflowd decides
    # whether it needs OpenSSL, and asyncio imports ssl when it can (tls.py)
    import asyncio

    from aio_pika.exceptions import AMQPError, ChannelClosed  # loaded only where it is used

    urls = amqp_urls(broker)
    if not urls:
        return False, "the broker is not AMQP"
    deadline = time.monotonic() + timeout
    errors = []
    for url in urls:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            return await asyncio.wait_for(_ping_one(url, destination, left), left)
        except TimeoutError:
            return False, f"no pong from {destination} within {timeout:g}s"
        except ChannelClosed as e:
            if "NOT_FOUND" in str(e):
                return False, f"no Celery mailbox on the broker ({MAILBOX} missing): no worker connected yet"
            errors.append(f"{type(e).__name__}: {e}")
        except (AMQPError, OSError, ConnectionError) as e:
            errors.append(f"{type(e).__name__}: {e}".strip())
    return False, _scrub("broker unreachable: " + "; ".join(errors)[:300], urls)


async def _ping_one(url: str, destination: str, timeout: float) -> tuple[bool, str]:
    import aio_pika as ap

    conn = await ap.connect(url, timeout=timeout)
    try:
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
    finally:
        await conn.close()
