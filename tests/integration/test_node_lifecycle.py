"""A node's end of life on three real daemons (issue 18): a SIGKILLed node forced to leave
by an operator, and one forgotten after ``[gossip] reap_after`` (seconds here, 72 h by
default); both clear ``/health/cluster`` and ``haflowctl peers`` on the survivors, and the
node, started again, joins as before.

Every wait has a deadline; the only fixed sleep is a window in which a forgotten node must
NOT come back.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest

from tests.conftest import Daemon, first_seen, fmt, peer_map, status_of, wait_until
from tests.integration.test_gossip import NAMES, Trio, start_trio
from tests.integration.test_gossip import trio as trio  # the three-node fixture, shared

pytestmark = pytest.mark.integration


def events_of(d: Daemon, type_: str, subject: str) -> list[dict[str, Any]]:
    r = d.ctl("events", "--json")
    assert r.returncode == 0, r.stderr
    return [e for e in map(json.loads, r.stdout.splitlines()) if e.get("type") == type_ and e.get("subject") == subject]


def back_everywhere(t: Trio, old: int) -> dict[str, float]:
    def back(_observer: str, peers: dict[str, dict[str, Any]]) -> bool:
        return (set(peers) == set(NAMES) and all(p["status"] == "alive" for p in peers.values())
                and peers["n3"]["incarnation"] > old)
    return first_seen(t.nodes, back, 10, "n3 alive again everywhere with a higher incarnation")


def test_force_leave_of_a_killed_node_clears_the_cluster_and_it_comes_back(trio):
    survivors = trio.others("n3")
    n1, n2, n3 = trio["n1"], trio["n2"], trio["n3"]
    old = peer_map(n1)["n3"]["incarnation"]

    refused = n1.ctl("force-leave", "n2")  # alive here: an operator's mistake, refused
    assert refused.returncode == 1 and "alive here" in refused.stderr, refused
    unknown = n1.ctl("force-leave", "nobody")
    assert unknown.returncode == 1 and "no member named 'nobody'" in unknown.stderr, unknown
    assert trio.all_alive()

    n3.proc.send_signal(signal.SIGKILL)
    n3.proc.wait(5)
    first_seen(survivors, status_of("n3", "suspect", "dead"), 15, "n3 suspect or dead on n1 and n2")
    assert n1.get("/health/cluster")[0] == 503 or n1.ctl("peers").returncode == 1

    r = n2.ctl("force-leave", "n3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "n3: left (was" in r.stdout
    t0 = time.monotonic()
    left = first_seen(survivors, status_of("n3", "left", min_inc=old - 1), 5, "n3 left on n1 and n2", t0)
    print(f"\nforce-leave n3 on n2 -> left on: {fmt(left)}")
    assert max(left.values()) < 3.0, fmt(left)
    for name, d in survivors.items():
        status, body = d.get("/health/cluster")
        assert status == 200, (name, body)
        peers = d.ctl("peers")
        assert peers.returncode == 0, (name, peers.stdout)
        assert events_of(d, "member-left", "n3"), name
    assert n2.ctl("force-leave", "n3").returncode == 0  # again: already left, still fine

    n3.start()
    seen = back_everywhere(trio, old)
    print(f"restarted n3 -> alive everywhere: {fmt(seen)}")


def test_a_dead_node_is_reaped_everywhere_and_a_left_one_after_its_tombstone(daemon):
    t = start_trio(daemon, 'reap_after = "3s"\ntombstone = "2s"\n')
    survivors = t.others("n3")
    n1, n3 = t["n1"], t["n3"]
    old = peer_map(n1)["n3"]["incarnation"]
    n3.proc.send_signal(signal.SIGKILL)
    n3.proc.wait(5)
    t0 = time.monotonic()
    first_seen(survivors, status_of("n3", "dead"), 15, "n3 dead on n1 and n2", t0)

    def forgotten(_observer: str, peers: dict[str, dict[str, Any]]) -> bool:
        return "n3" not in peers
    gone = first_seen(survivors, forgotten, 15, "n3 forgotten on n1 and n2", t0)
    print(f"\nkill -9 n3, reap_after 3s -> forgotten on: {fmt(gone)}")
    for name, d in survivors.items():
        assert d.get("/health/cluster")[0] == 200, name
        assert d.ctl("peers").returncode == 0, name
        assert events_of(d, "member-dead", "n3") and events_of(d, "member-reaped", "n3"), name
    time.sleep(3.0)  # each node reaped on its own clock: no one's stale dead gossip brings n3 back
    for name, d in survivors.items():
        assert "n3" not in peer_map(d), name

    n3.start()
    back_everywhere(t, old)

    # a graceful leave: left, then forgotten after the tombstone (2 s)
    n3.signal(signal.SIGTERM)
    t1 = time.monotonic()
    first_seen(survivors, status_of("n3", "left"), 5, "n3 left on n1 and n2", t1)
    assert n3.wait_exit(20) == 0
    gone = first_seen(survivors, forgotten, 10, "n3 forgotten after its tombstone", t1)
    print(f"SIGTERM n3, tombstone 2s -> forgotten on: {fmt(gone)}")
    wait_until(lambda: all(d.get("/health/cluster")[0] == 200 for d in survivors.values()), 5,
               "cluster health 200 on n1 and n2")
