"""Two live nodes with the same name: a loud error on both, never a silent flap."""

from __future__ import annotations

from tests.conftest import free_port, gossip_body, new_gossip_key, rename_node, wait_until


def test_duplicate_names_are_critical_on_both(daemon, tmp_path):
    key = tmp_path / "gossip.key"
    key.write_text(new_gossip_key() + "\n")
    p_seed, p_a, p_b = free_port(), free_port(), free_port()
    seed = daemon(gossip_body(f"127.0.0.1:{p_seed}", [], key))
    a = daemon(gossip_body(f"127.0.0.1:{p_a}", [f"127.0.0.1:{p_seed}"], key), start=False)
    b = daemon(gossip_body(f"127.0.0.1:{p_b}", [f"127.0.0.1:{p_seed}"], key), start=False)
    rename_node(a, "twin")
    rename_node(b, "twin")
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
