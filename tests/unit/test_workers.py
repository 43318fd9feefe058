"""WorkerBudget: bounded, keyed, timed calls in threads (real threads, no I/O)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from haflowd import workers
from haflowd.workers import WorkerBudget, WorkerBusy

LONG = 10.0  # no test waits this long: every blocked call is released by its test


def run(coro_fn: Callable[[], object]) -> object:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


def blocker() -> tuple[threading.Event, Callable[[], str]]:
    """A call that hangs until released (a stopped PostgreSQL, as far as a thread can tell)."""
    release = threading.Event()

    def hang() -> str:
        release.wait(LONG)
        return "late"
    return release, hang


def wait_idle(b: WorkerBudget) -> None:
    """Until the budget's threads have all returned (they release their slot themselves)."""
    deadline = time.monotonic() + LONG
    while b.in_flight and time.monotonic() < deadline:
        time.sleep(0.005)
    assert b.in_flight == 0


def test_returns_the_value_and_raises_the_error() -> None:
    b = WorkerBudget("t", 2)

    async def main() -> None:
        assert await b.call(lambda x: x * 2, 21) == 42
        with pytest.raises(ZeroDivisionError):
            await b.call(lambda: 1 / 0)
        assert b.in_flight == 0 and b.calls == 2 and b.busy_refusals == 0
    run(main)


def test_runs_in_a_named_thread_of_its_own() -> None:
    b = WorkerBudget("named", 1)

    async def main() -> None:
        name = await b.call(lambda: threading.current_thread().name)
        assert name.startswith("haflowd-named-")
        assert name != threading.current_thread().name
    run(main)


def test_a_key_runs_one_call_at_a_time_and_counts_refusals() -> None:
    b = WorkerBudget("t", 4)
    release, hang = blocker()

    async def main() -> None:
        first = asyncio.create_task(b.call(hang, key="scheduler"))
        await asyncio.sleep(0)
        for _ in range(3):
            with pytest.raises(WorkerBusy, match="previous probe still running"):
                await b.call(hang, key="scheduler")
        assert b.busy_refusals == 3 and b.in_flight == 1
        assert await b.call(lambda: "other", key="triggerer") == "other"  # another key is not held up
        release.set()
        assert await first == "late"
        assert await b.call(lambda: "again", key="scheduler") == "again"  # the key is free again
    run(main)


def test_a_timeout_keeps_the_slot_until_the_call_returns() -> None:
    b = WorkerBudget("t", 1)
    release, hang = blocker()
    cut: list[bool] = []

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await b.call(hang, key="k", timeout=0.05, on_timeout=lambda: cut.append(True))
        assert cut == [True] and b.timeouts == 1
        # the thread is still blocked: the budget refuses instead of starting another one
        assert b.in_flight == 1
        with pytest.raises(WorkerBusy, match="previous probe still running"):
            await b.call(hang, key="k")
        with pytest.raises(WorkerBusy, match="all 1 t workers are busy"):
            await b.call(lambda: 1, key="other")
        release.set()
        wait_idle(b)
        assert await b.call(lambda: 7, key="k") == 7
    run(main)


def test_on_timeout_can_make_the_call_return() -> None:
    """What the job probe does with its connection: the cut ends the blocked call."""
    b = WorkerBudget("t", 1)
    release, hang = blocker()

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await b.call(hang, timeout=0.05, on_timeout=release.set)
        wait_idle(b)
    run(main)


def test_threads_never_exceed_the_budget() -> None:
    b = WorkerBudget("t", 3)
    release, hang = blocker()
    peak = 0
    now = 0
    lock = threading.Lock()

    def counted() -> str:
        nonlocal peak, now
        with lock:
            now += 1
            peak = max(peak, now)
        try:
            return hang()
        finally:
            with lock:
                now -= 1

    async def main() -> None:
        tasks = [asyncio.create_task(b.call(counted, timeout=LONG)) for _ in range(3)]
        await asyncio.sleep(0)
        refused = 0
        for _ in range(50):
            try:
                await b.call(counted, timeout=0.01)
            except WorkerBusy:
                refused += 1
        assert refused == 50 and b.busy_refusals == 50
        release.set()
        assert await asyncio.gather(*tasks) == ["late"] * 3
    run(main)
    assert peak <= 3


def test_a_hung_budget_does_not_starve_another() -> None:
    """Starvation-freedom: every PostgreSQL call hangs, yet the Airflow probes and the
    sampler's budget answer at once, and the default pool is untouched."""
    pg = WorkerBudget("pg", 2)
    probes = WorkerBudget("probes", 2)
    sampler = WorkerBudget("sampler", 1)
    release, hang = blocker()

    async def main() -> None:
        stuck = [asyncio.create_task(pg.call(hang, key=f"node{i}")) for i in range(2)]
        await asyncio.sleep(0)
        for i in range(20):  # a PostgreSQL checker that keeps trying never gets more threads
            with pytest.raises(WorkerBusy):
                await pg.call(hang, key=f"node{i % 3}", timeout=0.01)
        t0 = time.monotonic()
        for _ in range(20):
            assert await probes.call(lambda: "healthy", key="scheduler", timeout=1.0) == "healthy"
            assert await sampler.call(lambda: 42, timeout=1.0) == 42
            assert await asyncio.to_thread(lambda: "default pool") == "default pool"
        assert time.monotonic() - t0 < 5.0
        assert pg.in_flight == 2
        release.set()
        assert await asyncio.gather(*stuck) == ["late", "late"]
    run(main)


def test_a_cancelled_caller_cuts_the_call() -> None:
    b = WorkerBudget("t", 1)
    release, hang = blocker()

    async def main() -> None:
        task = asyncio.create_task(b.call(hang, on_timeout=release.set))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert release.is_set()
    run(main)


def test_shutdown_refuses_new_calls() -> None:
    b = WorkerBudget("t", 1)
    b.shutdown()

    async def main() -> None:
        with pytest.raises(WorkerBusy, match="shut down"):
            await b.call(lambda: 1)
    run(main)


def test_stats_and_the_named_budgets() -> None:
    b = WorkerBudget("t", 2)
    assert b.stats() == {"max_workers": 2, "in_flight": 0, "calls": 0, "busy_refusals": 0, "timeouts": 0}
    assert workers.budget(workers.AIRFLOW_PROBES) is workers.budget(workers.AIRFLOW_PROBES)
    assert workers.budget(workers.AIRFLOW_PROBES) is not workers.budget(workers.POSTGRES)
    assert workers.budget(workers.POSTGRES) in workers.all_budgets()
    with pytest.raises(ValueError):
        WorkerBudget("t", 0)


def test_metrics_name_each_pool() -> None:
    b = workers.budget(workers.SUPERVISOR)
    families = {m.name: m for m in workers.collect()}
    assert set(families) == {"haflowd_worker_in_flight", "haflowd_worker_max", "haflowd_worker_busy_refusals",
                             "haflowd_worker_timeouts"}
    pools = {s.labels["pool"]: s.value for s in families["haflowd_worker_max"].samples}
    assert pools[b.name] == b.max_workers
