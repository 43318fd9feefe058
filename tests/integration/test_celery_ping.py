"""haflowd's Celery ping against the session's real RabbitMQ cluster. The real worker's
answer is in test_airflow_celery.py; here a responder speaks kombu's mailbox protocol
the way a worker does, so the failure paths can be driven: another worker's name, a
wrong password, a broker that is not there, a broker that is not AMQP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aio_pika
import pytest

from haflowd.airflow import celery_ping
from tests.conftest import free_port
from tests.fixtures.rabbitmq import RabbitCluster


@pytest.mark.parametrize(
    ("broker", "urls"),
    [
        ("amqp://u:p@h:5672//", ["amqp://u:p@h:5672//"]),
        ("pyamqp://u:p@h:5672/%2F", ["amqp://u:p@h:5672/%2F"]),
        ("amqps://u:p@h:5671//", ["amqps://u:p@h:5671//"]),
        ("amqp://a//;amqp://b//", ["amqp://a//", "amqp://b//"]),
        ("redis://redis:6379/0", []),
        ("amqp://a//;redis://b", []),
        ("", []),
    ],
)
def test_amqp_urls(broker: str, urls: list[str]) -> None:
    assert celery_ping.amqp_urls(broker) == urls


async def _responder(url: str, name: str) -> AsyncIterator[None]:
    """A worker's mailbox: answers a ping addressed to ``name`` as kombu does."""
    conn = await aio_pika.connect(url)
    ch = await conn.channel()
    mailbox = await ch.declare_exchange(celery_ping.MAILBOX, aio_pika.ExchangeType.FANOUT, durable=False)
    queue = await ch.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(mailbox)

    async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with msg.process():
            body = json.loads(msg.body)
            if body.get("method") != "ping" or name not in (body.get("destination") or [name]):
                return
            reply = await ch.get_exchange(body["reply_to"]["exchange"])
            await reply.publish(aio_pika.Message(json.dumps({name: {"ok": "pong"}}).encode(),
                                                 content_type="application/json",
                                                 headers={"ticket": body["ticket"]}),
                                routing_key=body["reply_to"]["routing_key"])

    await queue.consume(on_message)
    try:
        yield
    finally:
        await conn.close()


async def test_a_worker_answers_and_another_name_does_not(rabbit_cluster: RabbitCluster) -> None:
    url = rabbit_cluster.amqp_url(1)
    gen = _responder(url, "celery@n7")
    await gen.__anext__()
    try:
        ok, out = await celery_ping.ping(url, "celery@n7", timeout=5)
        assert (ok, out) == (True, "celery@n7: pong")
        # failover list: the first broker is down, the second answers
        dead = f"amqp://haflowd:x@127.0.0.1:{free_port()}//"
        ok, out = await celery_ping.ping(f"{dead};{url}", "celery@n7", timeout=5)
        assert (ok, out) == (True, "celery@n7: pong")
        ok, out = await celery_ping.ping(url, "celery@elsewhere", timeout=1.5)
        assert (ok, out) == (False, "no pong from celery@elsewhere within 1.5s")
    finally:
        await gen.aclose()


async def test_a_wrong_password_is_refused_and_never_shown(rabbit_cluster: RabbitCluster) -> None:
    secret = "not-the-Password-42"
    ok, out = await celery_ping.ping(rabbit_cluster.amqp_url(1, password=secret), "celery@n7", timeout=5)
    assert not ok
    assert out.startswith("broker unreachable: ")
    assert secret not in out


async def test_no_broker_and_no_amqp() -> None:
    ok, out = await celery_ping.ping(f"amqp://u:hush@127.0.0.1:{free_port()}//", "celery@n7", timeout=3)
    assert not ok and out.startswith("broker unreachable: ") and "hush" not in out
    assert await celery_ping.ping("redis://127.0.0.1:6379/0", "celery@n7", timeout=1) == (
        False, "the broker is not AMQP")
    # bounded even when asked to wait long for nothing
    await asyncio.wait_for(celery_ping.ping(f"amqp://u:p@127.0.0.1:{free_port()}//", "w", 2), 5)
