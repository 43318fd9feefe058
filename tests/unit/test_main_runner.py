"""The daemon's event-loop runner: a task that ignores cancellation (an AMQP close stuck on a
broker that stopped answering) must not hold the exit for ever, as ``asyncio.run`` would."""

from __future__ import annotations

import asyncio
import contextlib
import time

from haflowd.__main__ import SHUTDOWN_GRACE_S, run_bounded


async def _stubborn() -> None:
    for _ in range(10_000):  # bounded: at most 10,000 cancellations ignored
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)


async def _main_leaving_a_stubborn_task() -> int:
    asyncio.get_running_loop().create_task(_stubborn())
    await asyncio.sleep(0)
    return 7


def test_a_task_that_ignores_cancellation_is_abandoned_after_the_grace() -> None:
    t0 = time.monotonic()
    assert run_bounded(_main_leaving_a_stubborn_task(), grace=0.2) == 7
    assert time.monotonic() - t0 < 2.0


def test_tasks_that_end_when_cancelled_are_waited_for() -> None:
    ended: list[str] = []

    async def polite() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            ended.append("cleaned up")

    async def main() -> int:
        asyncio.get_running_loop().create_task(polite())
        await asyncio.sleep(0)
        return 0

    assert run_bounded(main()) == 0
    assert ended == ["cleaned up"]
    assert SHUTDOWN_GRACE_S <= 5.0


def test_the_main_coroutines_exception_still_reaches_the_caller() -> None:
    async def boom() -> int:
        raise RuntimeError("x")

    try:
        run_bounded(boom())
    except RuntimeError as e:
        assert str(e) == "x"
    else:
        raise AssertionError("the exception was swallowed")
