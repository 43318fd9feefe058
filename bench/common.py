"""What every benchmark here shares: waits with deadlines, ports, percentiles, tables,
and a main() that always tears down (SIGTERM/SIGHUP unwind through every ``finally``)."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any


class BenchError(Exception):
    pass


class Terminated(BaseException):
    """SIGTERM/SIGHUP to the bench: unwind so every ``finally`` tears down."""


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def wait_until(what: str, timeout: float, check: Callable[[], Any], every: float = 0.2) -> Any:
    """Call ``check()`` until it returns something truthy; BenchError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(min(every, left))


def free_port(udp_too: bool = False) -> int:
    """A port free on 127.0.0.1 (for TCP, and UDP too when asked: Serf binds both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not udp_too:
            return port
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise BenchError("no free port on 127.0.0.1")


def toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def percentile(xs: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def table(title: str, head: tuple[str, str, str], rows: list[tuple[str, str, str]]) -> str:
    """A label column and two right-aligned value columns, side by side."""
    w0 = max(len(r[0]) for r in [head, *rows])
    w1 = max(len(r[1]) for r in [head, *rows])
    w2 = max(len(r[2]) for r in [head, *rows])
    lines = [title, f"  {head[0]:<{w0}}  {head[1]:>{w1}}  {head[2]:>{w2}}"]
    lines += [f"  {a:<{w0}}  {b:>{w1}}  {c:>{w2}}" for a, b, c in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def signals_unwind() -> Iterator[None]:
    def terminated(signum: int, _frame: Any) -> None:
        raise Terminated(signal.Signals(signum).name)

    old = {s: signal.signal(s, terminated) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_main(prefix: str, keep_tmp: bool, as_json: bool, run: Callable[[Path], dict[str, Any]],
             render: Callable[[dict[str, Any]], str]) -> int:
    """Run ``run(tmp)`` in a temp dir that is always removed; print the report."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with signals_unwind():
            report = run(tmp)
    except BenchError as e:
        log(f"failed: {e}")
        return 1
    except (KeyboardInterrupt, Terminated):
        log("interrupted")
        return 130
    finally:
        if keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report, indent=2) if as_json else render(report))
    return 0
