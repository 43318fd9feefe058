"""What every builder here shares: its error, a wait with a deadline, a free port."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Wrap = Callable[[list[str]], list[str]]  # puts a command where it must run (``ip netns exec NS ...``)


class TestbedError(AssertionError):
    """Something a builder started did not come up. An AssertionError: a test whose set-up
    fails reads as a failure with this message, and callers that caught one still do."""

    __test__ = False  # not a test class, whatever pytest thinks of the name


def same_place(argv: list[str]) -> list[str]:
    """The ``Wrap`` that runs a command here."""
    return list(argv)


def wait_until(fn: Callable[[], T], timeout: float = 10.0, what: str = "condition", interval: float = 0.02) -> T:
    """Poll ``fn`` until it returns something truthy; TestbedError with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (OSError, ValueError, KeyError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise TestbedError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


_PORT_BLOCK = 4000
_next_port: list[int] = []


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range (outgoing connections never take
    it) and in a block of its own per pytest-xdist worker (two workers never pick the same
    one): ``bind(0)`` handed out ephemeral ports that a connection or the other worker could
    take before the test bound them."""
    if not _next_port:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
        slot = (int(worker) if worker.isdigit() else 0) % 3
        _next_port.append(20000 + slot * _PORT_BLOCK + (os.getpid() % 1000))
    base = 20000 + ((_next_port[0] - 20000) // _PORT_BLOCK) * _PORT_BLOCK
    for _ in range(_PORT_BLOCK):
        port = _next_port[0]
        _next_port[0] = base + (port + 1 - base) % _PORT_BLOCK
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # the whole block is taken: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
