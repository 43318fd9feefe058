"""The soak's detection judge: a failure must be seen dead within the observer's own bound.

Pure: synthetic fault logs, verdicts and polled local-health samples, no daemons.
"""

from __future__ import annotations

from typing import Any

from bench.soak import invariants as inv

NODES = ("n1", "n2", "n3")
T = inv.Timing()


def joined(t: float = 0.0) -> list[dict[str, Any]]:
    return [{"t": t, "observer": o, "peer": p, "new": "alive", "lhm": 0} for o in NODES for p in NODES if o != p]


def stop(node: str, start: float, lasted: float, fid: int = 1, kind: str = "sigstop") -> dict[str, Any]:
    return {"id": fid, "kind": kind, "params": {"node": node}, "start": start, "end": start + lasted, "notes": {}}


def dead(observer: str, peer: str, t: float) -> dict[str, Any]:
    return {"t": t, "observer": observer, "peer": peer, "new": "dead", "lhm": 0}


def test_a_healthy_observer_must_see_a_failure_over_the_bound() -> None:
    f = stop("n3", 100.0, T.detect_bound + 1.0)
    r = inv.detection([*joined(), dead("n2", "n3", 102.0)], [f], T, NODES, health={"n1": [(99.5, 0)]})
    assert not r["ok"]
    assert [(m["observer"], m["peer"]) for m in r["missed"]] == [("n1", "n3")]
    assert r["cases"] == 2 and r["detected"] == 1 and r["stretched"] == []


def test_an_unhealthy_observer_is_held_to_its_stretched_bound_and_listed() -> None:
    lasted = T.detect_bound + 1.0
    assert T.bound(3) > lasted  # (1 + 3) times its probe and suspicion times
    f = stop("n3", 100.0, lasted)
    r = inv.detection([*joined(), dead("n2", "n3", 102.0)], [f], T, NODES,
                      health={"n1": [(98.7, 3), (99.7, 3)], "n2": [(99.7, 0)]})
    assert r["ok"], r["missed"]
    assert r["cases"] == 1 and r["detected"] == 1
    assert r["stretched"] == [{"fault": 1, "kind": "sigstop", "observer": "n1", "peer": "n3",
                               "lasted_s": round(lasted, 2), "local_health": 3, "bound_s": round(T.bound(3), 2),
                               "detected_after_s": None}]
    assert "1 over" in r["summary"]


def test_a_failure_longer_than_the_stretched_bound_is_still_a_miss() -> None:
    f = stop("n3", 100.0, T.bound(3) + 0.5, kind="kill_daemon")
    r = inv.detection(joined(), [f], T, NODES, health={"n1": [(99.7, 3)], "n2": [(99.7, 3)]})
    assert not r["ok"] and len(r["missed"]) == 2 and r["stretched"] == []


def test_health_long_before_or_after_the_start_does_not_excuse() -> None:
    f = stop("n3", 100.0, T.detect_bound + 1.0)
    r = inv.detection(joined(), [f], T, NODES, health={"n1": [(96.0, 8), (101.5, 8)], "n2": [(99.7, 0)]})
    assert not r["ok"] and {m["observer"] for m in r["missed"]} == {"n1", "n2"}


def test_the_multiplier_a_suspicion_began_with_counts() -> None:
    f = stop("n3", 100.0, T.detect_bound + 1.0)
    suspect = {"t": 101.0, "observer": "n1", "peer": "n3", "new": "suspect", "lhm": 2}
    r = inv.detection([*joined(), suspect, dead("n2", "n3", 102.0)], [f], T, NODES)
    assert r["ok"], r["missed"]
    assert [(c["observer"], c["local_health"]) for c in r["stretched"]] == [("n1", 2)]


def test_a_failure_under_the_healthy_bound_is_no_case_at_all() -> None:
    f = stop("n3", 100.0, T.detect_bound - 0.2)
    r = inv.detection(joined(), [f], T, NODES)
    assert r["ok"] and r["cases"] == 0 and r["stretched"] == []


def test_bounds_grow_with_the_multiplier_and_cap_at_its_top() -> None:
    bounds = [T.bound(lhm) for lhm in range(0, 10)]
    assert bounds == sorted(bounds) and bounds[8] == bounds[9] == T.isolated_bound
    assert T.detect_bound < bounds[0] < bounds[1]
