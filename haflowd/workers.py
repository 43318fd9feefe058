"""Bounded thread budgets for blocking calls (database drivers, /proc scans, name lookups).

``asyncio.to_thread`` shares one default pool among everything. A call that hangs (a
stopped PostgreSQL, a blackholed host) keeps its thread, and enough of them starve every
other user of that pool: the resource sampler, the Airflow job probe, a reload. Each user
here gets a ``WorkerBudget`` of its own, with its own named threads and a limit:

* at most ``max_workers`` calls in flight; one more is refused at once (``WorkerBusy``),
  never queued behind the hung ones;
* at most one call per ``key`` (a component, a node): while the previous one is still
  running, the next answers "previous probe still running" instead of stacking threads;
* a timeout: the caller stops waiting and may ``on_timeout`` cut the call's connection;
  the thread keeps its place in the budget until the call really returns, so a budget
  full of hung calls refuses rather than grows.

A refusal and a timeout are counted (``busy_refusals``, ``timeouts``) for the metrics.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

T = TypeVar("T")


class WorkerBusy(Exception):
    """A call was refused: its key's previous call, or ``max_workers`` calls, still run."""


class WorkerBudget:
    def __init__(self, name: str, max_workers: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.name = name
        self.max_workers = max_workers
        self.clock = clock
        self.busy_refusals = 0
        self.timeouts = 0
        self.calls = 0
        self._lock = threading.Lock()
        self._running = 0
        self._keys: dict[str, float] = {}  # key -> clock() when its call started
        self._closed = False
        self._seq = itertools.count(1)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._running

    def running_keys(self) -> dict[str, float]:
        with self._lock:
            return dict(self._keys)

    def _claim(self, key: str | None) -> None:
        with self._lock:
            if key is not None and key in self._keys:
                self.busy_refusals += 1
                age = self.clock() - self._keys[key]
                raise WorkerBusy(f"previous probe still running (started {age:.1f}s ago)")
            if self._closed:
                raise WorkerBusy(f"the {self.name} workers are shut down")
            if self._running >= self.max_workers:
                self.busy_refusals += 1
                raise WorkerBusy(f"all {self.max_workers} {self.name} workers are busy")
            self._running += 1
            self.calls += 1
            if key is not None:
                self._keys[key] = self.clock()

    def _release(self, key: str | None) -> None:
        with self._lock:
            self._running -= 1
            if key is not None:
                self._keys.pop(key, None)

    async def call(self, fn: Callable[..., T], *args: Any, key: str | None = None,
                   timeout: float | None = None, on_timeout: Callable[[], None] | None = None) -> T:
        """``fn(*args)`` in one of this budget's threads.

        Raises ``WorkerBusy`` at once if the budget or ``key`` is taken, ``TimeoutError``
        after ``timeout`` (having called ``on_timeout``, which should make ``fn`` return)."""
        self._claim(key)
        loop = asyncio.get_running_loop()
        result: asyncio.Future[T] = loop.create_future()

        def deliver(value: Any, error: BaseException | None) -> None:
            if result.done():
                return
            if error is not None:
                result.set_exception(error)
            else:
                result.set_result(value)

        def run() -> None:
            value: Any = None
            error: BaseException | None = None
            try:
                value = fn(*args)
            except BaseException as e:  # delivered to the caller, never lost in the thread
                error = e
            finally:
                self._release(key)
            try:
                loop.call_soon_threadsafe(deliver, value, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        # daemon threads: a call that never returns must not hold up the daemon's exit
        thread = threading.Thread(target=run, name=f"haflowd-{self.name}-{next(self._seq)}", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            self._release(key)
            raise WorkerBusy(f"cannot start a {self.name} worker thread") from None
        try:
            return await asyncio.wait_for(asyncio.shield(result), timeout)
        except TimeoutError:
            self.timeouts += 1
            if on_timeout is not None:
                on_timeout()
            raise
        except asyncio.CancelledError:
            if on_timeout is not None:
                on_timeout()
            raise

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"max_workers": self.max_workers, "in_flight": self._running, "calls": self.calls,
                    "busy_refusals": self.busy_refusals, "timeouts": self.timeouts}

    def shutdown(self) -> None:
        """No new calls; threads still running finish on their own (never waited for here)."""
        with self._lock:
            self._closed = True


_BUDGETS: dict[str, WorkerBudget] = {}
_BUDGETS_LOCK = threading.Lock()

# the budgets of haflowd's blocking users: each its own, so none can starve another
AIRFLOW_PROBES = "airflow-probe"
POSTGRES = "postgres"
SUPERVISOR = "supervisor"
DEFAULT_SIZES = {AIRFLOW_PROBES: 4, POSTGRES: 16, SUPERVISOR: 4}


def budget(name: str) -> WorkerBudget:
    """The process-wide budget called ``name`` (made on first use)."""
    with _BUDGETS_LOCK:
        b = _BUDGETS.get(name)
        if b is None:
            b = _BUDGETS[name] = WorkerBudget(name, DEFAULT_SIZES.get(name, 2))
        return b


def all_budgets() -> list[WorkerBudget]:
    with _BUDGETS_LOCK:
        return list(_BUDGETS.values())


def collect() -> Iterator[Metric]:
    """Each budget's busy threads, refusals and timeouts, for /metrics."""
    busy = GaugeMetricFamily("haflowd_worker_in_flight", "blocking calls running in the pool's threads "
                             "(hung ones included)", labels=["pool"])
    size = GaugeMetricFamily("haflowd_worker_max", "the pool's thread budget", labels=["pool"])
    refused = CounterMetricFamily("haflowd_worker_busy_refusals", "calls refused because the same key's "
                                  "previous call, or the whole budget, was still busy", labels=["pool"])
    timeouts = CounterMetricFamily("haflowd_worker_timeouts", "calls the caller stopped waiting for",
                                   labels=["pool"])
    for b in sorted(all_budgets(), key=lambda b: b.name):
        st = b.stats()
        busy.add_metric([b.name], st["in_flight"])
        size.add_metric([b.name], st["max_workers"])
        refused.add_metric([b.name], st["busy_refusals"])
        timeouts.add_metric([b.name], st["timeouts"])
    yield from (busy, size, refused, timeouts)
