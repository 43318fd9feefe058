"""What every builder here shares: its error, a wait with a deadline, a free port."""

from __future__ import annotations

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
