"""The event ring and its followers: bounded, never blocking, never raising."""

from __future__ import annotations

from haflowd.events import EVENT_TYPES, RING_SIZE, EventBus, matches
from haflowd.testing import FakeClock


def test_ring_keeps_the_last_n_oldest_first() -> None:
    clock = FakeClock()
    bus = EventBus("n1", clock, size=5)
    for i in range(12):
        clock.advance(1)
        bus.emit("member-dead", f"m{i}")
    got = bus.recent()
    assert [e.subject for e in got] == ["m7", "m8", "m9", "m10", "m11"]
    assert got[0].as_dict().keys() == {"time", "type", "node", "subject", "detail"}
    assert got[0].node == "n1"


def test_default_ring_is_1000() -> None:
    bus = EventBus("n1", FakeClock())
    for i in range(RING_SIZE + 50):
        bus.emit("component-started", str(i))
    assert len(bus.recent()) == RING_SIZE


def test_since_filters_by_wall_time() -> None:
    clock = FakeClock()
    bus = EventBus("n1", clock)
    bus.emit("member-alive", "a")
    clock.advance(100)
    bus.emit("member-suspect", "b")
    assert [e.subject for e in bus.recent(since=clock.wall() - 10)] == ["b"]


def test_slow_follower_loses_oldest_counted_and_never_blocks() -> None:
    bus = EventBus("n1", FakeClock())
    f = bus.subscribe(limit=3)
    assert f is not None
    for i in range(10):
        bus.emit("member-dead", str(i))
    events, lost = f.drain()
    assert [e.subject for e in events] == ["7", "8", "9"]
    assert lost == 7
    assert f.drain() == ([], 0)


def test_follower_wake_that_raises_does_not_reach_emit() -> None:
    bus = EventBus("n1", FakeClock())

    def boom() -> None:
        raise RuntimeError("loop closed")

    f = bus.subscribe(wake=boom)
    assert f is not None
    assert bus.emit("member-dead", "x") is not None
    assert bus.emit("member-dead", "y") is not None
    assert bus.followers == 0


def test_follower_count_bounded_and_close_frees_a_slot() -> None:
    bus = EventBus("n1", FakeClock(), max_followers=2)
    a, b = bus.subscribe(), bus.subscribe()
    assert a is not None and b is not None
    assert bus.subscribe() is None
    a.close()
    assert bus.subscribe() is not None


def test_emit_never_raises_on_odd_detail() -> None:
    bus = EventBus("n1", FakeClock())
    assert bus.emit("check-changed", "pg", {"from": object(), "to": None}) is not None
    assert bus.emit("x", 5, None) is not None  # type: ignore[arg-type]


def test_matching() -> None:
    assert matches(["*"], "member-dead")
    assert matches(["member-dead", "component-fatal"], "component-fatal")
    assert not matches(["member-dead"], "member-suspect")
    assert not matches([], "member-dead")
    for t in ("member-reaped", "maintenance-on", "maintenance-off", "split-brain", "config-reloaded"):
        assert t in EVENT_TYPES
