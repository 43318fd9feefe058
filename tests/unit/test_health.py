"""Health: the worst status wins, results go stale after three intervals, one JSON shape."""

from __future__ import annotations

import json

import pytest

from haflowd.health import STALE_AFTER_INTERVALS, CheckRegistry, CheckResult, Status, worst
from haflowd.testing import FakeClock

P, W, C = Status.PASSING, Status.WARNING, Status.CRITICAL


def registry() -> tuple[CheckRegistry, FakeClock]:
    clock = FakeClock()
    return CheckRegistry(clock), clock


# =========================================================================== statuses


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], P),
        ([P], P),
        ([W], W),
        ([C], C),
        ([P, P, P], P),
        ([P, W], W),
        ([W, P], W),
        ([P, C], C),
        ([W, C, P], C),
        ([C, W], C),
        ([W, W], W),
        ([C, C, C], C),
    ],
)
def test_worst(statuses: list[Status], expected: Status) -> None:
    assert worst(statuses) is expected
    assert worst(iter(statuses)) is expected


@pytest.mark.parametrize(
    ("text", "status", "label"),
    [("passing", P, "passing"), ("WARNING", W, "warning"), ("Critical", C, "critical")],
)
def test_status_labels_are_lowercase(text: str, status: Status, label: str) -> None:
    assert Status.parse(text) is status
    assert status.label == label


def test_status_parse_rejects_unknown() -> None:
    with pytest.raises(KeyError):
        Status.parse("degraded")


# =========================================================================== aggregation


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], P),
        ([P], P),
        ([P, P], P),
        ([P, W], W),
        ([W, W, P], W),
        ([P, C], C),
        ([C, W, P], C),
    ],
)
def test_registry_status_is_the_worst(statuses: list[Status], expected: Status) -> None:
    reg, _ = registry()
    for i, s in enumerate(statuses):
        reg.set(f"check{i}", s, f"output {i}", interval=10.0)
    assert reg.status() is expected
    assert reg.to_json("node1")["status"] == expected.label


def test_empty_registry_is_passing() -> None:
    reg, _ = registry()
    assert reg.status() is P
    assert reg.results() == []
    assert reg.to_json("node1") == {"status": "passing", "node": "node1", "checks": []}


def test_set_replaces_the_previous_result() -> None:
    reg, clock = registry()
    reg.set("pg", C, "down", interval=10.0)
    clock.advance(5)
    reg.set("pg", P, "up", interval=10.0)
    [r] = reg.results()
    assert (r.status, r.output, r.checked_mono) == (P, "up", clock.monotonic())
    assert reg.status() is P


# =========================================================================== staleness


@pytest.mark.parametrize(
    ("interval", "age", "stale"),
    [
        (10.0, 0.0, False),
        (10.0, 10.0, False),
        (10.0, 29.5, False),
        (10.0, 30.0, False),  # exactly three intervals: not yet stale
        (10.0, 30.5, True),
        (10.0, 1000.0, True),
        (0.5, 1.5, False),
        (0.5, 1.75, True),
        (60.0, 180.0, False),
        (60.0, 181.0, True),
        (None, 0.0, False),
        (None, 1e6, False),  # event-driven results never go stale
    ],
)
@pytest.mark.parametrize("status", [P, W, C])
def test_staleness(interval: float | None, age: float, stale: bool, status: Status) -> None:
    reg, clock = registry()
    reg.set("probe", status, "all good", interval=interval)
    clock.advance(age)
    [r] = reg.results()
    if stale:
        assert r.status is C
        assert "stale" in r.output
        assert "all good" in r.output  # the last real answer is kept for the operator
        assert reg.status() is C
    else:
        assert r.status is status
        assert r.output == "all good"
        assert reg.status() is status


def test_stale_output_says_how_old() -> None:
    reg, clock = registry()
    reg.set("probe", P, "HTTP 200", interval=10.0)
    clock.advance(45)
    [r] = reg.results()
    assert r.output == "stale: last checked 45s ago (every 10s); was: HTTP 200"


def test_a_fresh_result_is_no_longer_stale() -> None:
    reg, clock = registry()
    reg.set("probe", P, "ok", interval=10.0)
    clock.advance(31)
    assert reg.status() is C
    reg.set("probe", P, "ok", interval=10.0)
    assert reg.status() is P


def test_one_stale_check_makes_the_node_critical() -> None:
    reg, clock = registry()
    reg.set("slow", P, "ok", interval=10.0)
    clock.advance(31)
    reg.set("fresh", P, "ok", interval=10.0)
    reg.set("event", P, "ok")
    assert {r.name: r.status for r in reg.results()} == {"event": P, "fresh": P, "slow": C}
    assert reg.to_json("n")["status"] == "critical"


def test_effective_keeps_the_stored_result() -> None:
    r = CheckResult("x", W, "meh", checked_at=1.0, checked_mono=100.0, interval=1.0)
    assert r.effective(100.0 + STALE_AFTER_INTERVALS) is r
    stale = r.effective(100.0 + STALE_AFTER_INTERVALS + 0.1)
    assert stale.status is C
    assert (r.status, r.output) == (W, "meh")  # frozen: the original is untouched
    assert (stale.name, stale.checked_at, stale.checked_mono, stale.interval) == ("x", 1.0, 100.0, 1.0)


# =========================================================================== JSON


def test_to_json_shape() -> None:
    reg, clock = registry()
    reg.set("postgres:pg1", C, "connection refused", interval=10.0)
    set_at = clock.wall()
    clock.advance(2)
    reg.set("component:scheduler", W, "starting: spawning")
    reg.set("gossip", P, "3 alive", interval=1.0)
    clock.advance(1)  # gossip's result is 1 s old: within 3 intervals

    body = reg.to_json("node1")
    assert json.loads(json.dumps(body)) == body
    assert list(body) == ["status", "node", "checks"]
    assert body["status"] == "critical"
    assert body["node"] == "node1"
    assert body["checks"] == [  # sorted by name
        {"name": "component:scheduler", "status": "warning", "output": "starting: spawning",
         "checked_at": set_at + 2},
        {"name": "gossip", "status": "passing", "output": "3 alive", "checked_at": set_at + 2},
        {"name": "postgres:pg1", "status": "critical", "output": "connection refused", "checked_at": set_at},
    ]


def test_to_json_reports_staleness_but_the_original_time() -> None:
    reg, clock = registry()
    reg.set("probe", P, "ok", interval=1.0)
    set_at = clock.wall()
    clock.advance(10)
    [check] = reg.to_json("n")["checks"]
    assert check["status"] == "critical"
    assert check["output"].startswith("stale")
    assert check["checked_at"] == set_at


@pytest.mark.parametrize("status", [P, W, C])
def test_check_result_to_json(status: Status) -> None:
    r = CheckResult("name", status, "out", checked_at=1700000000.5, checked_mono=1.0, interval=None)
    assert r.to_json() == {"name": "name", "status": status.name.lower(), "output": "out",
                           "checked_at": 1700000000.5}


# =========================================================================== removal


def test_remove() -> None:
    reg, _ = registry()
    reg.set("a", C, "bad")
    reg.set("b", P, "good")
    reg.remove("a")
    assert [r.name for r in reg.results()] == ["b"]
    assert reg.status() is P
    reg.remove("a")  # removing twice is fine
    reg.remove("never-there")
    assert [r.name for r in reg.results()] == ["b"]


NAMES = ["component:scheduler", "component:triggerer", "componentx", "postgres:pg1", "postgres:pg2", "gossip"]


@pytest.mark.parametrize(
    ("prefix", "left"),
    [
        ("component:", ["componentx", "gossip", "postgres:pg1", "postgres:pg2"]),
        ("component", ["gossip", "postgres:pg1", "postgres:pg2"]),
        ("postgres:", ["component:scheduler", "component:triggerer", "componentx", "gossip"]),
        ("postgres:pg1", ["component:scheduler", "component:triggerer", "componentx", "gossip", "postgres:pg2"]),
        ("nothing", sorted(NAMES)),
        ("", []),
    ],
)
def test_remove_prefix(prefix: str, left: list[str]) -> None:
    reg, _ = registry()
    for name in NAMES:
        reg.set(name, C, "x")
    reg.remove_prefix(prefix)
    assert [r.name for r in reg.results()] == left
