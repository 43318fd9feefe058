"""Errors are types, caught at the edge where they become one line for a person."""

from __future__ import annotations

from collections.abc import Sequence


class HaflowdError(Exception):
    """Base of every error haflowd raises on purpose."""


class ConfigError(HaflowdError):
    """A config file that cannot be used; ``lines`` holds every problem, one per line."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


class SpawnError(HaflowdError):
    """A child process could not be started (no such program, bad user, bad directory)."""


class ProbeTimeout(HaflowdError):
    """A health probe did not answer within its timeout."""
