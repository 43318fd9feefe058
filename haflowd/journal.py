"""journald's stream protocol, the part haflowd uses: is our output the journal, and the
``<N>`` priority prefix a line starts with there (sd-daemon(3)). Standard library only:
``__main__`` uses it before the log is set up, to mark a refused config as an error."""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["SYSLOG_PRIORITIES", "is_journal_stream", "journal_prefix", "parse_journal_stream", "syslog_priority"]

SYSLOG_PRIORITIES: Mapping[str, int] = {
    "emergency": 0, "emerg": 0, "alert": 1, "critical": 2, "crit": 2, "fatal": 2,
    "error": 3, "err": 3, "exception": 3, "warning": 4, "warn": 4, "notice": 5,
    "info": 6, "debug": 7,
}
"""structlog's level names (and syslog's) -> syslog priority (RFC 5424, sd-daemon(3))."""


def syslog_priority(level: str) -> int:
    """The syslog priority of a log level; a level we do not know is info (6)."""
    return SYSLOG_PRIORITIES.get(level.lower(), 6) if isinstance(level, str) else 6


def journal_prefix(level: str) -> str:
    """``<N>``: what a line starts with for journald to file it at ``level``."""
    return f"<{syslog_priority(level)}>"


def parse_journal_stream(value: str | None) -> tuple[int, int] | None:
    """``JOURNAL_STREAM`` (``DEVICE:INODE``, both decimal, systemd.exec(5)) -> the pair, or None."""
    if not value:
        return None
    dev, sep, ino = value.strip().partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return None
    return int(dev), int(ino)


def is_journal_stream(fd: int, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``fd`` is the stream systemd connected to the journal: the variable alone
    is not enough, since a process started from a service (or a shell in one) inherits it
    with another stdout."""
    want = parse_journal_stream((os.environ if environ is None else environ).get("JOURNAL_STREAM"))
    if want is None:
        return False
    try:
        st = os.fstat(fd)
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == want
