"""contrib/'s Grafana dashboard and alert rules name only series the daemon exports (issue 17).

The inventory is the one the reference drift test uses: a real ``/metrics`` registry over a test
state with every section present. The dashboard JSON must also be what
contrib/grafana/make_dashboard.py writes, so the two never drift. (Whether each query parses is
checked by promtool in tests/integration/test_contrib_rules.py.) Pure.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from haflowd.api import metrics
from haflowd.api.server import ReadApi
from tests.unit.test_reference_drift import full_state

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
DASHBOARD = CONTRIB / "grafana" / "haflowd-dashboard.json"
RULES = CONTRIB / "prometheus" / "haflowd-alerts.yml"
DEPRECATED = {"haflowd_sync_peer_pending", "haflowd_sync_conflicts"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def make_dashboard() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_dashboard", CONTRIB / "grafana" / "make_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def panel_exprs() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def names_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(haflowd_[a-z0-9_]+|up)\b(?=\s*[{\[)\s/=<>]|$)", expr))


@pytest.fixture
async def exported(tmp_path: Path) -> set[str]:
    """Every series name the daemon can export (with a counter's _total, a histogram's parts)."""
    text = metrics.render(ReadApi(await full_state(tmp_path)).registry).decode()
    out = {"up"}  # Prometheus' own, per target
    for family in text_string_to_metric_families(text):
        out |= {s.name for s in family.samples}
        out |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return out


def test_the_dashboard_is_what_the_script_writes() -> None:
    assert DASHBOARD.read_text() == make_dashboard().render(), "run contrib/grafana/make_dashboard.py"


def test_every_panel_has_queries_an_id_and_a_place() -> None:
    ps = panels()
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in ps:
        assert p["title"] and p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        cell = (g["x"], g["y"])
        assert cell not in cells, f"{p['title']} overlaps another panel"
        cells.add(cell)
        for t in p["targets"]:
            assert set(re.findall(r"\$\w+", t["expr"])) <= {"$instance", "$__rate_interval"}, t["expr"]


def test_the_dashboard_covers_every_subsystem() -> None:
    used = set().union(*(names_in(e) for e in panel_exprs()))
    for prefix in ("haflowd_component_", "haflowd_peer_", "haflowd_sync_", "haflowd_postgres_", "haflowd_rabbitmq_",
                   "haflowd_gossip_rejected_total", "haflowd_process_"):
        assert any(n.startswith(prefix) for n in used), prefix


def test_every_name_the_dashboard_queries_is_exported(exported: set[str]) -> None:
    queries = panel_exprs() + [v["definition"] for v in json.loads(DASHBOARD.read_text())["templating"]["list"]
                               if "definition" in v]
    used = set().union(*(names_in(q) for q in queries))
    assert len(used) > 40
    assert sorted(used - exported) == []
    assert used & DEPRECATED == set(), "the dashboard uses a deprecated name"


def test_every_name_the_alert_rules_use_is_exported(exported: set[str]) -> None:
    exprs = re.findall(r"^\s*expr:\s*(.+)$", RULES.read_text(), re.M)
    used = set().union(*(names_in(e) for e in exprs))
    assert len(exprs) >= 18 and "haflowd_component_state" in used
    assert sorted(used - exported) == []
    assert used & DEPRECATED == set(), "an alert uses a deprecated name"


def test_the_name_finder_sees_through_functions_and_selectors() -> None:
    assert names_in('max by (node) (haflowd_postgres_up{job="haflowd"}) == 0') == {"haflowd_postgres_up"}
    assert names_in("rate(haflowd_x_total[5m]) / haflowd_y") == {"haflowd_x_total", "haflowd_y"}
    assert names_in('up{job="haflowd"} == 0') == {"up"}
    assert names_in('label_values(haflowd_build_info{job="haflowd"}, instance)') == {"haflowd_build_info"}
