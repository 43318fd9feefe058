"""A peer's node summary as this node shows it: each known field checked, the rest dropped.

A summary arrives signed, but from a peer that may run another version of haflowd: a
status this version does not know, a field of another type, a list or string far longer
than any real one. :func:`normalize` never raises and never returns more than the limits
below, so ``/health/cluster`` answers from it whatever a peer sent. What is forwarded to
other peers is the summary as received: a newer node's fields reach the newer nodes.

An unknown status counts as ``warning``: this node cannot vouch that the peer is passing,
and a status added in a newer version must not fail the whole cluster's check (critical)
while a rolling upgrade runs. The status as sent is kept in ``reported_status``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATUSES = ("passing", "warning", "critical")
UNKNOWN_STATUS = "warning"
MISSING_STATUS = "warning"  # a live peer whose summary has not arrived yet is unknown, not failing
MAX_CHECKS = 64
MAX_COMPONENTS = 64
MAX_NAME_CHARS = 128
MAX_OUTPUT_CHARS = 1024
MAX_STATE_CHARS = 32
MAX_VERSION_CHARS = 64


@dataclass(frozen=True)
class NodeSummary:
    status: str = MISSING_STATUS
    checks: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    version: str | None = None
    reported_status: str | None = None  # set only when ``status`` was not one we know
    maintenance: bool = False  # drained (``haflowctl drain``); an older peer sends nothing: False


def normalize(data: Any) -> NodeSummary:
    """Whatever a peer sent (or None when nothing arrived yet) as a :class:`NodeSummary`."""
    if not isinstance(data, dict):
        return NodeSummary()
    status, reported = _status(data.get("status"), MISSING_STATUS)
    return NodeSummary(
        status=status,
        checks=[c for c in map(_check, _items(data.get("checks"), MAX_CHECKS)) if c is not None],
        components=[c for c in map(_component, _items(data.get("components"), MAX_COMPONENTS)) if c is not None],
        version=_text(data.get("version"), MAX_VERSION_CHARS),
        reported_status=reported,
        maintenance=data.get("maintenance") is True,
    )


def _status(value: Any, missing: str) -> tuple[str, str | None]:
    """(the status shown, the one sent when it was not known)."""
    if value is None:
        return missing, None
    if isinstance(value, str) and value in STATUSES:
        return value, None
    shown = value if isinstance(value, str) else repr(value)
    return UNKNOWN_STATUS, _clip(shown, MAX_STATE_CHARS)


def _items(value: Any, limit: int) -> list[Any]:
    return value[:limit] if isinstance(value, list) else []


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(value: Any, limit: int) -> str | None:
    return _clip(value, limit) if isinstance(value, str) else None


def _check(item: Any) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        return None
    name = _text(item.get("name"), MAX_NAME_CHARS)
    if not name:
        return None
    status, reported = _status(item.get("status"), UNKNOWN_STATUS)
    out: dict[str, Any] = {"name": name, "status": status, "output": _text(item.get("output"), MAX_OUTPUT_CHARS) or ""}
    if reported is not None:
        out["reported_status"] = reported
    return out


def _component(item: Any) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        return None
    name = _text(item.get("name"), MAX_NAME_CHARS)
    if not name:
        return None
    healthy = item.get("healthy")
    return {"name": name, "state": _text(item.get("state"), MAX_STATE_CHARS) or "unknown",
            "healthy": healthy if isinstance(healthy, bool) else None}
