"""Drain (maintenance mode): whether this node is drained, since when, and its file in data_dir.

A drained node stops its components (those with ``on_drain = "stop"``, in reverse start
order, each with its own stop_signal and stop_timeout), answers 503 on /readiness, shows a
"maintenance" warning on /health and gossips ``maintenance`` to its peers. The state lives in
``data_dir/maintenance.json`` so that it survives a restart of the daemon and a reboot: a
drained node that comes back starts only its ``on_drain = "keep"`` components.

:class:`Maintenance` is pure (the time is passed in); :func:`load` and :func:`save` are the
file's I/O, small and synchronous (a few bytes, written once per drain or undrain).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haflowd.health import Status

STATE_FILE = "maintenance.json"
MAX_BYTES = 4096
CHECK_NAME = "maintenance"


@dataclass(frozen=True)
class Maintenance:
    """``since`` is the wall time the node was drained; None when it is not."""

    since: float | None = None

    @property
    def on(self) -> bool:
        return self.since is not None

    def drain(self, now: float) -> Maintenance:
        """Drained from ``now``; a second drain keeps the first time."""
        return self if self.on else Maintenance(since=now)

    def undrain(self) -> Maintenance:
        return Maintenance()

    def check(self) -> tuple[Status, str]:
        """The "maintenance" check: a warning that names it (nobody is paged), passing otherwise."""
        if self.since is None:
            return Status.PASSING, "not in maintenance"
        when = format_time(self.since) if self.since > 0 else "an unknown time (damaged record)"
        return Status.WARNING, f"node drained for maintenance since {when}"

    def to_json(self) -> dict[str, Any]:
        return {"maintenance": self.on, "since": self.since}


def format_time(t: float) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    except (OverflowError, ValueError, OSError):
        return "?"


def parse(text: str) -> tuple[Maintenance, str | None]:
    """The state in ``text``, and why it was not understood (then: drained since an unknown
    time is safer than undrained: an operator drained it for a reason)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return Maintenance(since=0.0), "not valid JSON; kept drained"
    if not isinstance(data, dict):
        return Maintenance(since=0.0), "not a JSON object; kept drained"
    since = data.get("since")
    if data.get("maintenance") is False:
        return Maintenance(), None
    if isinstance(since, int | float) and not isinstance(since, bool) and since == since and since >= 0:
        return Maintenance(since=float(since)), None
    return Maintenance(since=0.0), "no valid 'since'; kept drained"


def load(data_dir: Path) -> tuple[Maintenance, str | None]:
    """No file: not drained. An unreadable or damaged file: drained, and why."""
    path = data_dir / STATE_FILE
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return Maintenance(), None
    except OSError as e:
        return Maintenance(since=0.0), f"cannot be read ({e.strerror or e}); kept drained"
    if len(raw) > MAX_BYTES:
        return Maintenance(since=0.0), f"larger than {MAX_BYTES} bytes; kept drained"
    return parse(raw.decode(errors="replace"))


def save(data_dir: Path, state: Maintenance) -> None:
    """Write (drained) or remove (undrained) the file, durably: a reboot right after a drain
    must find it. Raises OSError."""
    path = data_dir / STATE_FILE
    if not state.on:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        f.write(json.dumps(state.to_json()))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    with contextlib.suppress(OSError):
        fd = os.open(data_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
