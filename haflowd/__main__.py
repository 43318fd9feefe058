"""``haflowd``: parse arguments, load the config, run the daemon.

Operators see one clear line for every failure, never a traceback: a bad config
exits 2 (every problem listed), a start-up failure exits 1.

The config is parsed before asyncio, aiohttp and the rest are imported, so that a
daemon whose config needs no TLS never loads OpenSSL (``tls.py``).
"""

from __future__ import annotations

import argparse
import os
import select
import sys
from collections.abc import Coroutine
from typing import Any

from haflowd import __version__, config, journal, tls
from haflowd.errors import ConfigError

SHUTDOWN_GRACE_S = 3.0
"""How long tasks still running when the daemon's run ends get to finish after being cancelled."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="haflowd", description="HA node daemon for Apache Airflow clusters")
    p.add_argument("--config", "-c", help=f"config file (default: $HAFLOWD_CONFIG or {config.DEFAULT_CONFIG_PATH})")
    p.add_argument("--check-config", action="store_true", help="validate the config and exit (0 good, 2 bad)")
    p.add_argument("--log-format", choices=("json", "console"), default="json")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.add_argument("--version", action="version", version=f"haflowd {__version__}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    guard_std_fds()
    args = parse_args(argv)
    try:
        cfg = config.load(args.config, check_commands=args.check_config)
    except ConfigError as e:
        for line in e.lines:
            say(line, 2)
        return 2
    if args.check_config:
        say(f"{cfg.path}: ok ({len(cfg.components)} components)", 1)
        return 0

    tls_reason = tls.needs_tls(cfg)
    without_openssl = tls_reason is None and tls.block_openssl(aio_pika=tls.uses_aio_pika(cfg))

    import structlog

    from haflowd import logs
    from haflowd.daemon import Daemon, StartupError

    logs.configure(args.log_format, node=cfg.node.name, level=args.log_level)
    if without_openssl:
        structlog.get_logger().info("openssl_not_loaded", detail="no setting needs TLS; a reload that adds one "
                                    "is refused until haflowd is restarted")
    else:
        structlog.get_logger().info("openssl_loaded", reason=tls_reason or "it could not be kept out of this process")

    async def run() -> int:
        return await Daemon(cfg).run()

    try:
        return run_bounded(run())
    except StartupError as e:
        say(f"haflowd: {e}", 2)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the last line of defence: one line, no traceback
        structlog.get_logger().exception("crashed")
        say(logs.REDACTOR.scrub(f"haflowd: internal error: {type(e).__name__}: {e}"), 2)
        return 1
    finally:
        logs.flush()  # bounded: an output nobody reads does not hold the exit


def run_bounded(main: Coroutine[Any, Any, int], grace: float = SHUTDOWN_GRACE_S) -> int:
    """``asyncio.run``, except that the tasks still running when ``main`` returns get
    ``grace`` seconds after their cancellation, not for ever: a task that ignores it (an
    AMQP close stuck on a broker that stopped answering) is abandoned, and the daemon exits."""
    import asyncio

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=grace))
            loop.run_until_complete(asyncio.wait([loop.create_task(loop.shutdown_asyncgens())], timeout=grace))
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def guard_std_fds() -> None:
    """A standard descriptor closed at start gets /dev/null, so that the next file or socket
    the daemon opens does not take its number and receive the log (or a child's stdin)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                null = os.open(os.devnull, os.O_RDWR)
                if null != fd:
                    os.dup2(null, fd)
                    os.close(null)
            except OSError:
                pass


def say(text: str, fd: int) -> None:
    """One line for an operator on stdout (1) or stderr (2), never a traceback and never a
    hang: a closed, full or stalled output loses the line. Under journald a line on stderr is
    an error (``<3>``): `journalctl -p err` shows why the daemon exited 2."""
    if fd == 2 and journal.is_journal_stream(2):
        text = journal.journal_prefix("error") + text
    data = (text + "\n").encode("utf-8", "replace")[:4096]
    try:
        _, ready, _ = select.select([], [fd], [], 1.0)
        if ready:
            os.write(fd, data)  # one page at most: a pipe that polls writable takes it without blocking
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
