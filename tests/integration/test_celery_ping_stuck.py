"""The Celery ping against a broker that hangs: it returns within its timeout, whatever
the broker stops answering (the handshake, the channel, the close)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from pamqp import commands, frame

from haflowd.airflow import celery_ping

TIMEOUT_S = 1.0
MARGIN_S = 0.5


@contextlib.asynccontextmanager
async def _stuck_broker(answer_handshake: bool) -> AsyncIterator[int]:
    """A loopback TCP server that accepts and then never answers, or that completes the
    AMQP handshake (Start, Tune, Open-Ok) and then answers nothing (no channel, no Close-Ok)."""
    conns: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readexactly(8)  # "AMQP\0\0\x09\x01"
            if answer_handshake:
                props = {"product": "stuck", "capabilities": {"publisher_confirms": True, "basic.nack": True,
                                                              "consumer_cancel_notify": True}}
                writer.write(frame.marshal(commands.Connection.Start(server_properties=props), 0))
                buf = b""
                while True:  # Start-Ok, Tune-Ok, Open
                    buf += await reader.read(4096)
                    if not buf:
                        return
                    opened = False
                    while buf:
                        try:
                            used, _ch, value = frame.unmarshal(buf)
                        except Exception:  # an incomplete frame: read more
                            break
                        buf = buf[used:]
                        if isinstance(value, commands.Connection.StartOk):
                            writer.write(frame.marshal(commands.Connection.Tune(2047, 131072, 0), 0))
                        elif isinstance(value, commands.Connection.Open):
                            writer.write(frame.marshal(commands.Connection.OpenOk(), 0))
                            opened = True
                    if opened:
                        break
            while await reader.read(4096):  # then silence, whatever comes
                pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        for w in conns:
            w.close()
        await server.wait_closed()


@pytest.mark.parametrize("answer_handshake", [False, True], ids=["silent", "after-handshake"])
def test_ping_is_bounded_by_its_timeout(answer_handshake: bool) -> None:
    async def run() -> tuple[bool, str, float]:
        async with _stuck_broker(answer_handshake) as port:
            t0 = time.monotonic()
            # the outer bound only keeps a regression from hanging the test run
            ok, what = await asyncio.wait_for(
                asyncio.shield(celery_ping.ping(f"amqp://guest:guest@127.0.0.1:{port}//", "celery@x", TIMEOUT_S)),
                TIMEOUT_S + 10)
            took = time.monotonic() - t0
            # what the ping left behind (a close still waiting for the broker) ends on its own
            if celery_ping._abandoned:
                await asyncio.wait(set(celery_ping._abandoned), timeout=10)
            assert not celery_ping._abandoned, celery_ping._abandoned
            return ok, what, took

    ok, what, took = asyncio.run(run())
    assert not ok
    assert took < TIMEOUT_S + MARGIN_S, f"the ping took {took:.2f}s ({what})"
    assert "guest" not in what
