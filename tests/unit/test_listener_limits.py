"""Pure parts of the listeners' hardening: the refusal log's rate limit, the in-flight caps,
and how a peer's summary is normalized before /health/cluster shows it."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from haflowd.api.limits import InflightLimit, RefusalLog
from haflowd.gossip import summary
from haflowd.testing import FakeClock

# --- RefusalLog ----------------------------------------------------------------------------


def _lines(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == event]


def test_a_flood_of_refusals_is_a_few_lines_then_one_summary_per_interval() -> None:
    clock = FakeClock()
    rl = RefusalLog("gossip_rejected", clock, interval=10.0, burst=5)
    with capture_logs() as logs:
        for i in range(980):  # 980 forged requests over 98 s
            rl.refused("bad_signature", f"10.0.0.{i % 3}")
            clock.advance(0.1)
            rl.flush()
    single = _lines(logs, "gossip_rejected")
    summaries = _lines(logs, "gossip_rejected_summary")
    assert len(single) == 5  # the first ones at once
    assert all(e["reason"] == "bad_signature" and e["log_level"] == "warning" for e in single)
    assert 8 <= len(summaries) <= 10  # then at most one line per 10 s
    assert sum(e["count"] for e in summaries) + len(single) <= 980
    assert all(e["remotes"] == ["10.0.0.0", "10.0.0.1", "10.0.0.2"] for e in summaries)
    clock.advance(10.0)
    with capture_logs() as logs:
        rl.flush()
    assert sum(e["count"] for e in summaries) + len(single) + sum(e["count"] for e in logs) == 980


def test_each_reason_has_its_own_allowance_and_the_first_is_logged_at_once() -> None:
    clock = FakeClock()
    rl = RefusalLog("gossip_rejected", clock, interval=10.0, burst=5)
    with capture_logs() as logs:
        for _ in range(20):
            rl.refused("stale", "a")
        rl.refused("busy", "b")
    assert [e["reason"] for e in _lines(logs, "gossip_rejected")] == ["stale"] * 5 + ["busy"]
    assert not _lines(logs, "gossip_rejected_summary")  # not due yet


def test_occasional_refusals_are_all_logged() -> None:
    clock = FakeClock()
    rl = RefusalLog("api_refused", clock, interval=10.0, burst=5)
    with capture_logs() as logs:
        for _ in range(30):
            rl.refused("busy", "a")
            clock.advance(11.0)
            rl.flush()
    assert len(_lines(logs, "api_refused")) == 30 and not _lines(logs, "api_refused_summary")


# --- InflightLimit -------------------------------------------------------------------------


def test_inflight_caps_in_all_and_per_remote() -> None:
    lim = InflightLimit(total=4, per_remote=2)
    assert lim.try_enter("a") and lim.try_enter("a")
    assert not lim.try_enter("a")  # a's share is used up
    assert lim.try_enter("b") and lim.try_enter("c")
    assert not lim.try_enter("d")  # the total
    lim.leave("a")
    assert lim.count == 3 and lim.try_enter("d")
    for r in ("a", "b", "c", "d"):
        lim.leave(r)
    assert lim.count == 0 and lim.try_enter("a") and lim.try_enter("a")


# --- summary.normalize ---------------------------------------------------------------------

GOOD = {"version": "1.2.3", "status": "passing",
        "checks": [{"name": "gossip", "status": "passing", "output": "3 of 3 members alive"}],
        "components": [{"name": "scheduler", "state": "running", "healthy": True}]}


def test_a_summary_of_this_version_is_shown_as_it_is() -> None:
    s = summary.normalize(GOOD)
    assert (s.status, s.checks, s.components, s.version, s.reported_status) == (
        "passing", GOOD["checks"], GOOD["components"], "1.2.3", None)


@pytest.mark.parametrize(("status", "shown", "reported"), [
    ("maintenance", "warning", "maintenance"),  # a newer version's status
    ("CRITICAL", "warning", "CRITICAL"),
    (2, "warning", "2"),
    ([1], "warning", "[1]"),
    ({"x": 1}, "warning", "{'x': 1}"),
    ("x" * 1000, "warning", "x" * 31 + "…"),
    (None, "warning", None),  # no status: unknown, not failing
    ("critical", "critical", None),
])
def test_status(status: Any, shown: str, reported: str | None) -> None:
    s = summary.normalize({**GOOD, "status": status})
    assert (s.status, s.reported_status) == (shown, reported)


@pytest.mark.parametrize("data", [None, [], "x", 5, {}, {"checks": "x", "components": {"a": 1}, "version": 7}])
def test_anything_else_is_an_empty_unknown_summary(data: Any) -> None:
    s = summary.normalize(data)
    assert (s.status, s.checks, s.components, s.version) == ("warning", [], [], None)


def test_huge_and_odd_lists_are_cut_and_cleaned() -> None:
    checks: list[Any] = [{"name": f"c{i}", "status": "degraded", "output": "o" * 5000} for i in range(10_000)]
    checks[0] = 5
    checks[1] = {"name": 7, "status": "passing"}
    checks[2] = {"name": "ok", "status": "passing"}
    comps: list[Any] = [{"name": "w", "state": ["x"], "healthy": "yes"}, None] * 100
    s = summary.normalize({"status": "passing", "checks": checks, "components": comps, "version": "v" * 500})
    assert len(s.checks) == summary.MAX_CHECKS - 2
    assert s.checks[0] == {"name": "ok", "status": "passing", "output": ""}
    assert s.checks[1]["status"] == "warning" and s.checks[1]["reported_status"] == "degraded"
    assert len(s.checks[1]["output"]) == summary.MAX_OUTPUT_CHARS
    assert len(s.components) == summary.MAX_COMPONENTS // 2
    assert s.components[0] == {"name": "w", "state": "unknown", "healthy": None}
    assert s.version is not None and len(s.version) == summary.MAX_VERSION_CHARS
