"""Hooks, the pure part: which hooks an event reaches, and each hook's bounded queue."""

from __future__ import annotations

from pathlib import Path

import pytest

from haflowd import config
from haflowd.events import EventBus, OutputRing
from haflowd.hooks import HookQueue, hook_environment, route
from haflowd.testing import FakeClock

HEAD = '[node]\nname = "n1"\ndata_dir = "/tmp/x"\n'


def hooks_of(text: str) -> tuple[config.HookConfig, ...]:
    return config.loads(HEAD + text, Path("/tmp/h.toml"), check_system=False).hooks


def errors_of(text: str) -> list[str]:
    with pytest.raises(config.ConfigError) as e:
        config.loads(HEAD + text, Path("/tmp/h.toml"), check_system=False)
    return e.value.lines


def test_routing_by_type_and_star() -> None:
    hooks = hooks_of("""
[[hook]]
name = "dead"
on = ["member-dead", "component-fatal"]
command = ["true"]
[[hook]]
name = "all"
on = ["*"]
command = ["true"]
timeout = "2s"
""")
    assert [h.timeout for h in hooks] == [30.0, 2.0]
    bus = EventBus("n1", FakeClock())
    dead, suspect = bus.emit("member-dead", "n3"), bus.emit("member-suspect", "n3")
    assert dead is not None and suspect is not None
    assert route(hooks, dead) == ["dead", "all"]
    assert route(hooks, suspect) == ["all"]


@pytest.mark.parametrize(("body", "want"), [
    ('on = ["member-ded"]\ncommand = ["true"]',
     'hook[0].on: unknown event type "member-ded" (did you mean "member-dead"?)'),
    ('on = []\ncommand = ["true"]', "hook[0].on: expected a non-empty list"),
    ('on = ["*"]', "hook[0].command: expected a non-empty list of strings"),
    ('on = ["*"]\ncommand = ["true"]\ntimeout = "2h"', "hook[0].timeout: 2h is above the maximum 1h"),
    ('on = ["*"]\ncommand = ["true"]\nwhen = 1', "hook[0].when: unknown key"),
])
def test_config_errors(body: str, want: str) -> None:
    lines = errors_of(f'[[hook]]\nname = "h"\n{body}\n')
    assert any(want in line for line in lines), lines


def test_duplicate_hook_names() -> None:
    one = '[[hook]]\nname = "h"\non = ["*"]\ncommand = ["a"]\n'
    lines = errors_of(one + one)
    assert any("hook[1].name: duplicate name" in x for x in lines), lines


def test_queue_is_bounded_and_counts_drops() -> None:
    bus = EventBus("n1", FakeClock())
    q = HookQueue(limit=3)
    evs = [bus.emit("member-dead", str(i)) for i in range(5)]
    accepted = [q.offer(e) for e in evs if e is not None]
    assert accepted == [True, True, True, False, False]
    assert q.dropped == 2 and len(q) == 3
    taken = [q.take(), q.take(), q.take(), q.take()]
    assert [e.subject if e else None for e in taken] == ["0", "1", "2", None]


def test_environment_names_the_event() -> None:
    bus = EventBus("n1", FakeClock())
    e = bus.emit("component-fatal", "scheduler", {"reason": "crash loop"})
    assert e is not None
    env = hook_environment({"PATH": "/bin"}, e, "tok")
    assert env["HAFLOWD_EVENT_TYPE"] == "component-fatal"
    assert env["HAFLOWD_EVENT_SUBJECT"] == "scheduler"
    assert env["HAFLOWD_EVENT_NODE"] == "n1"
    assert env["HAFLOWD_HOOK"] == "tok" and env["PATH"] == "/bin"


# --------------------------------------------------------------------------- the output ring


def test_output_ring_bounds_lines_bytes_and_line_length() -> None:
    ring = OutputRing(FakeClock(), max_lines=5, max_bytes=100, line_max=30)
    for i in range(8):
        ring.append("stdout", f"l{i}")
    assert [x.line for x in ring.tail()] == ["l3", "l4", "l5", "l6", "l7"]
    ring.append("stderr", "x" * 500)
    assert len(ring.tail(1)[0].line) == 30
    for _ in range(10):
        ring.append("stdout", "y" * 30)
    assert ring.size_bytes <= 100
    assert [x.stream for x in ring.tail(stream="stderr")] == []  # pushed out by bytes


def test_output_ring_masks_and_filters_streams() -> None:
    ring = OutputRing(FakeClock(), scrub=lambda s: s.replace("hunter2", "***"))
    ring.append("stdout", "password=hunter2")
    ring.append("stderr", "boom")
    assert [x.line for x in ring.tail()] == ["password=***", "boom"]
    assert [x.line for x in ring.tail(stream="stderr")] == ["boom"]
    assert ring.tail(0) == []


def test_output_follower_loses_lines_counted() -> None:
    ring = OutputRing(FakeClock())
    f = ring.subscribe(limit=2)
    assert f is not None
    for i in range(5):
        ring.append("stdout", str(i))
    items, lost = f.drain()
    assert [x.line for x in items] == ["3", "4"] and lost == 3
    f.close()
    ring.append("stdout", "after")
    assert f.drain() == ([], 0)
