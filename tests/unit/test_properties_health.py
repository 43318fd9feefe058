"""Properties of health aggregation (haflowd/health.py), for any set of results and ages.

What the module and docs/reference.md promise: statuses are ordered critical > warning >
passing and an aggregate is the worst of its parts (none: passing); a result older than
three of its intervals counts as critical, at exactly three it does not yet; an
event-driven result (no interval) never goes stale; the aggregate does not depend on the
order the checks reported in; an unknown status label is refused (KeyError), never read
as some status.
"""

from __future__ import annotations

import string

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from haflowd.health import CheckRegistry, CheckResult, Status, worst
from haflowd.testing import FakeClock

THREE = 3  # docs/reference.md: "older than three of its intervals is stale"; not the module's constant
# derandomize: the same examples on every run and in CI; no explain phase: it traces every line,
# which costs minutes on a failure in a long run
PROPS = settings(max_examples=150, deadline=None, derandomize=True, phases=set(Phase) - {Phase.explain})

statuses = st.sampled_from(list(Status))
intervals = st.none() | st.floats(min_value=0.01, max_value=3600.0)
ages = st.floats(min_value=0.0, max_value=20_000.0)
# one check: its status, its interval, and how long before "now" it last reported
checks = st.lists(st.tuples(statuses, intervals, ages), max_size=12)


def stale(interval: float | None, age: float) -> bool:
    return interval is not None and age > THREE * interval


def fill(items: list[tuple[Status, float | None, float]], order: list[int]) -> tuple[CheckRegistry, FakeClock]:
    """A registry whose check ``i`` reported ``age_i`` seconds before the end, set in ``order``."""
    clock = FakeClock()
    reg = CheckRegistry(clock)
    end = clock.now + max((a for _, _, a in items), default=0.0)
    for i in order:
        status, interval, age = items[i]
        clock.now = end - age  # each check reports at its own time
        reg.set(f"check{i}", status, f"out{i}", interval)
    clock.now = end
    return reg, clock


@PROPS
@given(st.lists(statuses, max_size=10))
def test_worst_is_the_maximum_and_passing_for_nothing(items: list[Status]) -> None:
    w = worst(items)
    assert w is (max(items) if items else Status.PASSING)
    assert all(s <= w for s in items)
    assert w in items or not items


@PROPS
@given(statuses, intervals, ages)
def test_a_result_is_critical_exactly_when_older_than_three_intervals(
        status: Status, interval: float | None, age: float) -> None:
    r = CheckResult("x", status, "said", checked_at=0.0, checked_mono=100.0, interval=interval)
    e = r.effective(100.0 + age)
    if stale(interval, age):
        assert e.status is Status.CRITICAL
        assert "stale" in e.output and "said" in e.output
    else:
        assert e is r
    assert e.status >= status  # staleness never improves a result
    assert (e.name, e.checked_at, e.checked_mono, e.interval) == ("x", 0.0, 100.0, interval)


@PROPS
@given(statuses, st.floats(min_value=0.01, max_value=3600.0))
def test_three_intervals_is_the_boundary(status: Status, interval: float) -> None:
    r = CheckResult("x", status, "said", checked_at=0.0, checked_mono=0.0, interval=interval)
    limit = THREE * interval
    assert r.effective(limit).status is status
    assert r.effective(limit + max(1e-6, limit * 1e-9)).status is Status.CRITICAL


@PROPS
@given(checks, st.data())
def test_the_aggregate_is_the_worst_effective_status_whatever_the_order(
        items: list[tuple[Status, float | None, float]], data: st.DataObject) -> None:
    order = list(range(len(items)))
    shuffled = data.draw(st.permutations(order))
    reg, _ = fill(items, order)
    again, _ = fill(items, shuffled)
    expected = worst(Status.CRITICAL if stale(i, a) else s for s, i, a in items)
    assert reg.status() is expected
    assert reg.to_json("n")["status"] == expected.label
    assert again.status() is expected
    assert again.to_json("n") == reg.to_json("n")  # the same body, whatever the order of reports
    names = [c["name"] for c in reg.to_json("n")["checks"]]
    assert names == sorted(names)


@PROPS
@given(checks, st.floats(min_value=0.0, max_value=20_000.0))
def test_time_only_makes_things_worse(items: list[tuple[Status, float | None, float]], later: float) -> None:
    """Without new reports, waiting never improves a check or the aggregate."""
    reg, clock = fill(items, list(range(len(items))))
    before = {r.name: r.status for r in reg.results()}
    agg = reg.status()
    clock.advance(later)
    after = {r.name: r.status for r in reg.results()}
    assert before.keys() == after.keys()
    assert all(after[n] >= before[n] for n in before)
    assert reg.status() >= agg


@PROPS
@given(st.text(alphabet=string.ascii_letters + string.digits + " -_", max_size=12))
def test_an_unknown_label_is_refused_not_guessed(text: str) -> None:
    known = {s.label: s for s in Status}
    try:
        parsed = Status.parse(text)
    except KeyError:
        assert text.lower() not in known
    else:
        assert parsed is known[text.lower()]


@PROPS
@given(statuses)
def test_labels_round_trip(status: Status) -> None:
    assert Status.parse(status.label) is status
    assert Status.parse(status.label.upper()) is status
