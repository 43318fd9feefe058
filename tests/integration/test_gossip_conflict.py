"""Two live nodes with the same name: a loud error on both, never a silent flap."""

from __future__ import annotations

import base64
import os

from tests.conftest import free_port, wait_until


def _gossip(port: int, seeds: list[int], key: str) -> str:
    seed_list = ", ".join(f'"127.0.0.1:{p}"' for p in seeds)
    return f"""
[gossip]
listen = "127.0.0.1:{port}"
seeds = [{seed_list}]
key_file = "{key}"
"""


def test_duplicate_names_are_critical_on_both(daemon, tmp_path):
    key = tmp_path / "gossip.key"
    key.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    p_seed, p_a, p_b = free_port(), free_port(), free_port()
    seed = daemon(_gossip(p_seed, [], str(key)))
    a = daemon(_gossip(p_a, [p_seed], str(key)))
    a.config.write_text(a.config.read_text().replace('name = "test"', 'name = "twin"'))
    b = daemon(_gossip(p_b, [p_seed], str(key)), start=False)
    b.config.write_text(b.config.read_text().replace('name = "test"', 'name = "twin"'))
    # restart a under its new name, then start its twin
    a.kill()
    a.start()
    wait_until(lambda: any(p["name"] == "twin" and p["status"] == "alive" for p in seed.get("/peers")[1]), 10,
               "the first twin to join")
    b.start()

    def alarmed(d):
        checks = {c["name"]: c for c in d.get("/health")[1]["checks"]}
        g = checks.get("gossip")
        return g is not None and g["status"] == "critical" and "another live node uses the name" in g["output"]

    wait_until(lambda: alarmed(a) and alarmed(b), 15, "both twins to report the conflict")
    assert a.get("/health")[0] == 503 and b.get("/health")[0] == 503
    assert any(e.get("event") == "gossip_name_conflict" for e in a.log_events())
    assert any(e.get("event") == "gossip_name_conflict" for e in b.log_events())
