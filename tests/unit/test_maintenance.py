"""The drain state (pure), its file, the gossiped field and the supervisor's drain decisions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from haflowd import maintenance
from haflowd.config import ComponentConfig
from haflowd.gossip import summary
from haflowd.health import CheckRegistry, Status
from haflowd.maintenance import Maintenance
from haflowd.supervisor.supervisor import DRAINED_NOTE, Supervisor
from haflowd.testing import FakeClock


def test_drain_keeps_the_first_time_and_undrain_clears() -> None:
    m = Maintenance().drain(100.0)
    assert m.on and m.since == 100.0
    assert m.drain(200.0).since == 100.0
    assert not m.undrain().on


def test_check_is_a_warning_naming_maintenance_and_its_time() -> None:
    status, out = Maintenance(since=1_796_665_800.0).check()
    assert status is Status.WARNING
    assert out == "node drained for maintenance since 2026-12-07T17:50:00Z"
    assert Maintenance().check()[0] is Status.PASSING
    assert "unknown time" in Maintenance(since=0.0).check()[1]


@pytest.mark.parametrize(("text", "on", "why"), [
    ('{"maintenance": true, "since": 5.5}', True, None),
    ('{"maintenance": false}', False, None),
    ("not json", True, "not valid JSON; kept drained"),
    ("[1]", True, "not a JSON object; kept drained"),
    ('{"maintenance": true, "since": "yesterday"}', True, "no valid 'since'; kept drained"),
    ('{"maintenance": true, "since": -1}', True, "no valid 'since'; kept drained"),
    ('{"maintenance": true, "since": true}', True, "no valid 'since'; kept drained"),
    ("[" * 100_000, True, "not valid JSON; kept drained"),
])
def test_parse_keeps_a_damaged_record_drained(text: str, on: bool, why: str | None) -> None:
    m, reason = maintenance.parse(text)
    assert (m.on, reason) == (on, why)


def test_save_and_load_round_trip_and_undrain_removes_the_file(tmp_path: Path) -> None:
    assert maintenance.load(tmp_path) == (Maintenance(), None)
    maintenance.save(tmp_path / "new", Maintenance(since=42.0))
    assert maintenance.load(tmp_path / "new") == (Maintenance(since=42.0), None)
    assert json.loads((tmp_path / "new" / maintenance.STATE_FILE).read_text()) == {"maintenance": True, "since": 42.0}
    maintenance.save(tmp_path / "new", Maintenance())
    assert not (tmp_path / "new" / maintenance.STATE_FILE).exists()
    maintenance.save(tmp_path / "new", Maintenance())  # twice: no error


def test_load_of_a_huge_file_is_drained_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / maintenance.STATE_FILE).write_text(" " * (maintenance.MAX_BYTES + 1))
    m, why = maintenance.load(tmp_path)
    assert m.on and why is not None and "larger than" in why


@pytest.mark.parametrize(("sent", "shown"), [
    ({"status": "warning", "maintenance": True}, True),
    ({"status": "passing"}, False),  # an older peer
    ({"status": "passing", "maintenance": "yes"}, False),
    ({"status": "passing", "maintenance": 1}, False),
    (None, False),
])
def test_gossiped_maintenance_is_true_only_when_sent_true(sent: object, shown: bool) -> None:
    assert summary.normalize(sent).maintenance is shown


def _comp(name: str, on_drain: str = "stop", after: tuple[str, ...] = ()) -> ComponentConfig:
    return ComponentConfig(name=name, command=("true",), on_drain=on_drain, start_after=after)


def test_supervisor_drains_in_reverse_start_order_and_only_what_is_to_stop(tmp_path: Path) -> None:
    clock = FakeClock()
    sup = Supervisor([_comp("web", after=("db",)), _comp("db"), _comp("side", "keep")],
                     node="n", data_dir=tmp_path, registry=CheckRegistry(clock), clock=clock)
    assert list(sup.children) == ["db", "side", "web"]  # start order
    assert [c.name for c in sup.to_drain()] == ["web", "db"]
    assert all(sup.runs(c) for c in sup.children.values())
    sup.drained = True
    assert [n for n, c in sup.children.items() if sup.runs(c)] == ["side"]
    assert DRAINED_NOTE == "drained for maintenance"
