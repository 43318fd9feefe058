"""structlog set-up: JSON lines on stdout (journald keeps them), or a console format.

Every line carries ``event``, ``level``, ``timestamp`` and ``node``. Known secrets
are masked in every string value as a last line of defence: a child that prints
its DSN does not put the password in our log.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

MASK = "***"


class Redactor:
    def __init__(self) -> None:
        self.secrets: set[str] = set()

    def set(self, secrets: Iterable[str]) -> None:
        self.secrets = {s for s in secrets if len(s) >= 4}

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, MASK)
        return text

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if self.secrets:
            for k, v in event.items():
                if isinstance(v, str):
                    event[k] = self.scrub(v)
        return event


REDACTOR = Redactor()


def configure(fmt: str = "json", node: str | None = None, level: str = "info",
              stream: TextIO | None = None) -> None:
    def add_node(_l: Any, _n: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if node is not None:
            event.setdefault("node", node)
        return event

    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=(stream or sys.stdout).isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            add_node,
            structlog.processors.dict_tracebacks if fmt == "json" else structlog.processors.format_exc_info,
            REDACTOR,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
