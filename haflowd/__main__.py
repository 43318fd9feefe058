"""``haflowd``: parse arguments, load the config, run the daemon.

Operators see one clear line for every failure, never a traceback: a bad config
exits 2 (every problem listed), a start-up failure exits 1.

The config is parsed before asyncio, aiohttp and the rest are imported, so that a
daemon whose config needs no TLS never loads OpenSSL (``tls.py``).
"""

from __future__ import annotations

import argparse
import sys

from haflowd import __version__, config, tls
from haflowd.errors import ConfigError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="haflowd", description="HA node daemon for Apache Airflow clusters")
    p.add_argument("--config", "-c", help=f"config file (default: $HAFLOWD_CONFIG or {config.DEFAULT_CONFIG_PATH})")
    p.add_argument("--check-config", action="store_true", help="validate the config and exit (0 good, 2 bad)")
    p.add_argument("--log-format", choices=("json", "console"), default="json")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.add_argument("--version", action="version", version=f"haflowd {__version__}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = config.load(args.config)
    except ConfigError as e:
        for line in e.lines:
            print(line, file=sys.stderr)
        return 2
    if args.check_config:
        print(f"{cfg.path}: ok ({len(cfg.components)} components)")
        return 0

    tls_reason = tls.needs_tls(cfg)
    without_openssl = tls_reason is None and tls.block_openssl(aio_pika=tls.uses_aio_pika(cfg))

    import asyncio

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
        return asyncio.run(run())
    except StartupError as e:
        print(f"haflowd: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the last line of defence: one line, no traceback
        structlog.get_logger().exception("crashed")
        print(f"haflowd: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
