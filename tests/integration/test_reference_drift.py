"""A real daemon (with gossip) serves only routes and metric families that docs/reference.md
names. The unit test (tests/unit/test_reference_drift.py) covers every section with a test
state; this one holds the real wiring to the same reference."""

from __future__ import annotations

import re

import pytest

from tests.conftest import free_port, gossip_body, new_gossip_key, render_config
from tests.unit.test_reference_drift import documented_routes, section, tokens

pytestmark = pytest.mark.integration


def test_a_real_daemons_routes_and_metrics_are_in_the_reference(daemon) -> None:
    d = daemon("", start=False)
    key_file = d.dir / "gossip.key"
    key_file.write_text(new_gossip_key() + "\n")
    key_file.chmod(0o600)
    body = '[[component]]\nname = "sleeper"\ncommand = ["sleep", "5000"]\n'
    d.config.write_text(render_config(d, body + gossip_body(f"127.0.0.1:{free_port()}", [], key_file)))
    d.start()
    d.wait_state("sleeper", "running")

    status, doc = d.get("/openapi.json")
    assert status == 200
    assert sorted(set(doc["paths"]) - documented_routes()) == []

    status, text = d.get("/metrics")
    assert status == 200
    exposed = set(re.findall(r"^# TYPE (\S+) ", text.decode(), re.M))
    assert {"haflowd_gossip_local_health", "haflowd_api_refused_total", "haflowd_component_up"} <= exposed
    assert sorted(exposed - tokens(section("Metrics"))) == []
    assert 'haflowd_api_refused_total{reason="busy"} 0.0' in text.decode()
