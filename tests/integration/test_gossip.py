"""Gossip between three real daemons on loopback: discovery, crash, hang, restart, leave,
hostile traffic on the gossip port, key rotation, metrics.

Every wait has a deadline; the only fixed sleeps are windows in which something must
NOT happen (no false suspicion, a left node stays left).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import secrets
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from haflowd.clock import SYSTEM_CLOCK
from haflowd.gossip import signing
from tests.conftest import (
    Daemon,
    first_seen,
    fmt,
    free_port,
    gossip_body,
    new_gossip_key,
    peer_changes,
    peer_map,
    rename_node,
    render_config,
    status_of,
    wait_until,
)

NAMES = ("n1", "n2", "n3")
BAD = ("suspect", "dead")
PEER_KEYS = {"name", "address", "status", "incarnation", "last_seen_s", "rtt_ms", "suspect_since", "self"}


# --------------------------------------------------------------------------- the cluster


@dataclass
class Trio:
    nodes: dict[str, Daemon]
    gport: dict[str, int]
    key: str  # key A, base64

    def __getitem__(self, name: str) -> Daemon:
        return self.nodes[name]

    def others(self, name: str) -> dict[str, Daemon]:
        return {n: d for n, d in self.nodes.items() if n != name}

    def key_file(self, name: str) -> Any:
        return self.nodes[name].dir / "gossip.key"

    def all_alive(self, names: Iterable[str] = NAMES) -> bool:
        for n in names:
            peers = peer_map(self.nodes[n])
            if set(peers) != set(NAMES) or any(p["status"] != "alive" for p in peers.values()):
                return False
        return True

    def bad_events(self, names: Iterable[str] = NAMES) -> dict[str, list[dict[str, Any]]]:
        """Every peer_status event to suspect/dead, by observer."""
        return {n: ev for n in names if (ev := peer_changes(self.nodes[n], new=BAD))}


@pytest.fixture
def trio(daemon) -> Trio:
    """n1, n2, n3 on loopback with distinct ports, seeds n1 and n2, one shared key; converged."""
    return start_trio(daemon)


def start_trio(daemon, gossip_extra: str = "") -> Trio:
    """The ``trio`` fixture's cluster; ``gossip_extra``: more ``[gossip]`` lines for every node."""
    key = new_gossip_key()
    gport = {n: free_port() for n in NAMES}
    seeds = [f"127.0.0.1:{gport['n1']}", f"127.0.0.1:{gport['n2']}"]
    nodes: dict[str, Daemon] = {}
    for n in NAMES:
        d = daemon("", start=False)
        key_file = d.dir / "gossip.key"
        key_file.write_text(key + "\n")
        d.config.write_text(render_config(d, gossip_body(f"127.0.0.1:{gport[n]}", seeds, key_file) + gossip_extra))
        rename_node(d, n)
        nodes[n] = d
    for d in nodes.values():
        d.start(wait=False)
    for n, d in nodes.items():
        wait_until(d.live, 15, f"{n} /liveness")
    t = Trio(nodes, gport, key)
    wait_until(t.all_alive, 10, "every node to see n1, n2, n3 alive")
    return t


# --------------------------------------------------------------------------- raw gossip traffic


def sign(key: bytes, body: bytes, sender: str = "intruder", ts: float | None = None,
         nonce: str | None = None) -> dict[str, str]:
    """Signature headers built by hand from signing.canonical (not through Signer)."""
    stamp = f"{time.time() if ts is None else ts:.3f}"
    nonce = nonce or secrets.token_hex(16)
    mac = hmac.new(key, signing.canonical("POST", "/gossip", stamp, nonce, sender, body), hashlib.sha256)
    return {signing.SENDER: sender, signing.TIMESTAMP: stamp, signing.NONCE: nonce,
            signing.SIGNATURE: mac.hexdigest(), "Content-Type": "application/json"}


def ping_body(target: str, target_port: int, sender: str = "intruder") -> bytes:
    return json.dumps({"type": "ping", "from": sender, "addr": "127.0.0.1:9", "seq": 7, "target": target,
                       "target_addr": f"127.0.0.1:{target_port}"}).encode()


def send(port: int, body: bytes, headers: dict[str, str], method: str = "POST",
         chunked: bool = False, pause: float = 0.0) -> tuple[int, dict[str, str], bytes]:
    """One request straight to a gossip port; tolerant of a server that answers before reading it all.

    ``pause``: send the body in two halves with this pause between them (as a slow network would)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, "/gossip", skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        else:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        try:
            if chunked:
                step = 64 * 1024
                for i in range(0, len(body), step):
                    part = body[i:i + step]
                    conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                conn.send(b"0\r\n\r\n")
            elif pause:
                conn.send(body[:len(body) // 2])
                time.sleep(pause)
                conn.send(body[len(body) // 2:])
            elif body:
                conn.send(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused early (413): the answer is already on its way
        r = conn.getresponse()
        return r.status, dict(r.headers), r.read()
    finally:
        conn.close()


def metric_samples(d: Daemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = d.get("/metrics")
    assert status == 200
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


# --------------------------------------------------------------------------- (a) discovery


def test_nodes_find_each_other_from_seeds(trio):
    for n in NAMES:
        status, body = trio[n].get("/peers")
        assert status == 200
        assert sorted(p["name"] for p in body) == list(NAMES)
        for p in body:
            assert PEER_KEYS <= set(p), p
            assert p["status"] == "alive" and p["incarnation"] >= 1
            assert p["address"] == f"127.0.0.1:{trio.gport[p['name']]}"
            assert p["self"] is (p["name"] == n)
            assert p["suspect_since"] is None

    r = trio["n1"].ctl("peers")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "STATUS", "INCARNATION", "LAST", "SEEN", "RTT", "VERSION"]
    rows = {ln.split()[0]: ln.split() for ln in lines[1:]}
    assert set(rows) == set(NAMES) and "(self)" in rows["n1"]
    assert all("alive" in row for row in rows.values())
    r = trio["n2"].ctl("peers", "--json")
    assert r.returncode == 0 and {p["name"] for p in json.loads(r.stdout)} == set(NAMES)

    def cluster_ok(d: Daemon) -> dict[str, Any] | None:
        status, body = d.get("/health/cluster")
        if status != 200 or sorted(x["name"] for x in body["nodes"]) != list(NAMES):
            return None
        for node in body["nodes"]:
            checks = {c["name"]: c for c in node["checks"]}
            if checks.get("gossip", {}).get("output") != "3 of 3 members alive":
                return None
        return body

    for n in NAMES:
        body = wait_until(lambda n=n: cluster_ok(trio[n]), 10, f"/health/cluster on {n}: 200, 3 nodes with checks")
        assert body["status"] == "passing"
        for node in body["nodes"]:
            assert node["status"] == "passing" and node["checks"]
            assert all({"name", "status", "output"} <= set(c) for c in node["checks"])

    # once a peer is not alive, `haflowctl peers` says so and exits 1
    trio["n3"].kill()
    first_seen({"n1": trio["n1"]}, status_of("n3", *BAD), 10, "n1 to stop seeing n3 alive")
    r = trio["n1"].ctl("peers")
    assert r.returncode == 1, r.stdout + r.stderr
    row = next(ln.split() for ln in r.stdout.splitlines() if ln.startswith("n3 "))
    assert row[2] in BAD


# --------------------------------------------------------------------------- (b) crash


def test_kill_9_is_dead_on_both_others(trio):
    incarnation = peer_map(trio["n1"])["n3"]["incarnation"]
    trio["n3"].proc.send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    trio["n3"].proc.wait(5)
    survivors = trio.others("n3")
    dead = first_seen(survivors, status_of("n3", "dead"), 15, "n3 dead on n1 and n2", t0)
    print(f"\nkill -9 n3 -> dead on: {fmt(dead)}")
    assert max(dead.values()) < 6.0, f"dead detection too slow: {fmt(dead)}"
    for d in survivors.values():
        peers = peer_map(d)
        assert peers["n3"]["incarnation"] == incarnation
        assert all(peers[m]["status"] == "alive" for m in survivors)
        status, body = d.get("/health/cluster")
        assert status == 503, body
        n3 = next(x for x in body["nodes"] if x["name"] == "n3")
        assert n3["member_status"] == "dead" and n3["status"] == "critical" and n3["stale"] is True
        # the log tells the same story: alive -> suspect -> dead
        assert [e["new"] for e in peer_changes(d, "n3")][-2:] == ["suspect", "dead"]
        # with the observer's local health then, which stretches its suspicions
        assert all(isinstance(e.get("local_health"), int) and 0 <= e["local_health"] <= 8
                   for e in peer_changes(d, "n3")), peer_changes(d, "n3")
    assert trio["n1"].ctl("peers").returncode == 1
    # the survivors never doubted each other
    for n, d in survivors.items():
        assert not [e for e in peer_changes(d, new=BAD) if e["peer"] != "n3"], n


# --------------------------------------------------------------------------- (c) hang


def test_sigstop_is_suspect_then_dead_and_sigcont_refutes(trio):
    old = peer_map(trio["n1"])["n3"]["incarnation"]
    survivors = trio.others("n3")
    n3 = trio["n3"]
    n3.signal(signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        suspect = first_seen(survivors, status_of("n3", *BAD), 10, "n3 suspect on n1 and n2", t0)
        dead = first_seen(survivors, status_of("n3", "dead"), 15, "n3 dead on n1 and n2", t0)
    finally:
        n3.signal(signal.SIGCONT)
    t1 = time.monotonic()
    print(f"\nSIGSTOP n3 -> suspect on: {fmt(suspect)}; dead on: {fmt(dead)}")
    for d in survivors.values():
        assert [e["new"] for e in peer_changes(d, "n3")][-2:] == ["suspect", "dead"]

    def back(observer: str, peers: dict[str, dict[str, Any]]) -> bool:
        return (set(peers) == set(NAMES) and all(p["status"] == "alive" for p in peers.values())
                and peers["n3"]["incarnation"] > old)

    alive = first_seen(trio.nodes, back, 15, "n3 alive again everywhere with a higher incarnation", t1)
    print(f"SIGCONT n3 -> alive with a higher incarnation on: {fmt(alive)}")
    refuted = [e for e in peer_changes(n3, "n3") if e["new"] == "alive" and str(e["reason"]).startswith("refuted")]
    assert refuted, "n3 did not log that it refuted"
    incs = {n: peer_map(d)["n3"]["incarnation"] for n, d in trio.nodes.items()}
    assert min(incs.values()) > old, incs
    # n1 and n2 never doubted each other
    for d in survivors.values():
        assert not [e for e in peer_changes(d, new=BAD) if e["peer"] != "n3"]


# --------------------------------------------------------------------------- (d) restart


def test_restarted_node_is_alive_at_once_with_a_higher_incarnation(trio):
    n3 = trio["n3"]
    old = peer_map(trio["n1"])["n3"]["incarnation"]
    n3.kill()
    n3.start()  # same config, same data_dir; returns once /liveness answers
    t_live = time.monotonic()

    def rejoined(observer: str, peers: dict[str, dict[str, Any]]) -> bool:
        return (set(peers) == set(NAMES) and all(p["status"] == "alive" for p in peers.values())
                and peers["n3"]["incarnation"] > old)

    seen = first_seen(trio.nodes, rejoined, 3.0, "the restarted n3 alive everywhere within 3 s of /liveness",
                      t_live)
    print(f"\nrestarted n3 (incarnation {old} -> {peer_map(n3)['n3']['incarnation']}) alive on: {fmt(seen)}")
    saved = json.loads((n3.dir / "data" / "gossip.json").read_text())["incarnation"]
    assert saved > old


# --------------------------------------------------------------------------- (e) leave


def test_sigterm_and_haflowctl_leave_are_left_not_dead(trio):
    survivors = trio.others("n3")
    n3 = trio["n3"]
    n3.signal(signal.SIGTERM)
    t0 = time.monotonic()
    left = first_seen(survivors, status_of("n3", "left"), 5, "n3 left on n1 and n2", t0)
    assert n3.wait_exit(20) == 0
    print(f"\nSIGTERM n3 -> left on: {fmt(left)}")
    time.sleep(2.5)  # longer than a dead verdict takes (~1.5-3 s): it must not come
    for d in survivors.values():
        assert peer_map(d)["n3"]["status"] == "left"
        assert not peer_changes(d, "n3", new=BAD)
        assert trio["n1"].get("/health/cluster")[0] == 200  # a left node is no failure
    after_term = peer_map(trio["n1"])["n3"]["incarnation"]

    # the same node comes back (a higher incarnation), then leaves by haflowctl
    n3.start()
    first_seen(trio.nodes, status_of("n3", "alive", min_inc=after_term), 5, "n3 back after its SIGTERM")
    wait_until(trio.all_alive, 10, "all alive again")
    r = n3.ctl("leave")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "left" in r.stdout
    t1 = time.monotonic()
    left = first_seen(survivors, status_of("n3", "left"), 5, "n3 left on n1 and n2 after haflowctl leave", t1)
    print(f"haflowctl leave on n3 -> left on: {fmt(left)}")
    assert n3.proc.poll() is None, "leave must not stop the daemon"
    assert peer_map(n3)["n3"]["status"] == "left"
    assert n3.ctl("leave").returncode == 0  # again: already left, still fine
    time.sleep(2.5)
    for d in survivors.values():
        assert peer_map(d)["n3"]["status"] == "left"
        assert not peer_changes(d, "n3", new=BAD)
    assert trio.bad_events() == {}


# --------------------------------------------------------------------------- (f) hostile traffic


def test_forged_unsigned_replayed_stale_oversized_malformed_are_refused(trio):
    key = base64.b64decode(trio.key)
    port = trio.gport["n1"]
    ping = ping_body("n1", port)
    results: dict[str, int] = {}

    results["forged"] = send(port, ping, sign(os.urandom(32), ping))[0]
    results["unsigned"] = send(port, ping, {"Content-Type": "application/json"})[0]
    # refused before the body is parsed: an unsigned body that is not JSON is still 401, not 400
    results["unsigned_garbage"] = send(port, b"{not json", {})[0]

    headers = sign(key, ping)
    first = send(port, ping, headers)
    assert first[0] == 200, first
    # the genuine request got a genuine, signed answer (an ack)...
    verdict = signing.Verifier(signing.Keyring([key]), SYSTEM_CLOCK).verify_response(
        "/gossip", headers[signing.NONCE], first[1], first[2])
    assert verdict.ok and verdict.sender == "n1", verdict
    assert json.loads(first[2])[0]["type"] == "ack"
    results["replayed"] = send(port, ping, headers)[0]  # ...the very same bytes again are not

    results["stale"] = send(port, ping, sign(key, ping, ts=time.time() - 60))[0]
    big = b"x" * (1024 * 1024 + 1)
    results["too_large"] = send(port, big, sign(key, big))[0]
    for name, body in {"not_json": b"{not json", "wrong_schema": b'{"type": "ping", "seq": "x"}',
                       "not_an_object": b"[1, 2, 3]",
                       "sender_mismatch": ping_body("n1", port, sender="someone-else")}.items():
        results[f"malformed_{name}"] = send(port, body, sign(key, body))[0]
    results["wrong_method"] = send(port, b"", sign(key, b""), method="GET")[0]

    assert results == {
        "forged": 401, "unsigned": 401, "unsigned_garbage": 401, "replayed": 401, "stale": 401,
        "too_large": 413, "malformed_not_json": 400, "malformed_wrong_schema": 400,
        "malformed_not_an_object": 400, "malformed_sender_mismatch": 400, "wrong_method": 405,
    }

    samples = metric_samples(trio["n1"])
    counted = {r: metric(samples, "haflowd_gossip_rejected_total", reason=r)
               for r in ("bad_signature", "missing_headers", "replay", "stale", "too_large", "malformed",
                         "wrong_method")}
    assert counted == {"bad_signature": 1, "missing_headers": 2, "replay": 1, "stale": 1, "too_large": 1,
                       "malformed": 4, "wrong_method": 1}
    reasons = sorted(e["reason"] for e in trio["n1"].log_events() if e.get("event") == "gossip_rejected")
    assert reasons == sorted(["bad_signature", "missing_headers", "missing_headers", "replay", "stale",
                              "too_large", *["malformed"] * 4, "wrong_method"])

    # membership unchanged: nobody new, nobody doubted, on any node
    time.sleep(1.0)  # a window in which no suspicion may start
    assert trio.all_alive()
    assert trio.bad_events() == {}
    for n in NAMES:
        assert "intruder" not in peer_map(trio[n])
        assert not [e for e in trio[n].log_events() if e.get("event") == "peer_status" and e.get("old") is not None]


def test_a_body_is_read_whole_before_it_is_verified(trio):
    key = base64.b64decode(trio.key)
    port = trio.gport["n1"]
    msg = json.loads(ping_body("n1", port))
    msg["pad"] = "p" * (300 * 1024)  # under the 1 MiB limit; unknown keys are ignored
    body = json.dumps(msg).encode()
    results = {"split": send(port, body, sign(key, body), pause=0.3)[0]}
    big = b"x" * (1024 * 1024 + 1)
    results["too_large_chunked"] = send(port, big, sign(key, big), chunked=True)[0]
    assert results == {"split": 200, "too_large_chunked": 413}


def test_a_peers_dead_verdict_about_a_live_member_is_only_a_suspicion(trio):
    key = base64.b64decode(trio.key)
    n1 = trio["n1"]
    inc = peer_map(n1)["n2"]["incarnation"]
    # exactly what a healed minority node gossips once its suspicion from the isolation runs out
    body = json.dumps({"type": "gossip", "from": "n3", "addr": f"127.0.0.1:{trio.gport['n3']}",
                       "updates": [{"kind": "dead", "node": "n2", "inc": inc,
                                    "addr": f"127.0.0.1:{trio.gport['n2']}", "from": "n3"}]}).encode()
    assert send(trio.gport["n1"], body, sign(key, body, sender="n3"))[0] == 200
    # n2 hears of the accusation and refutes; everyone ends alive, n2 at a higher incarnation
    first_seen(trio.nodes, status_of("n2", "alive", min_inc=inc), 10, "n2 to refute and be alive everywhere")
    assert not peer_changes(n1, "n2", new=("dead",)), "n1 took another node's word and declared n2 dead"


# --------------------------------------------------------------------------- (g) key rotation


def test_key_rotation_causes_no_suspicion(trio):
    key_a, key_b = trio.key, new_gossip_key()

    def reload_all(lines: list[str], hold: float = 0.6) -> None:
        for n in NAMES:
            d = trio[n]
            before = sum(1 for e in d.log_events() if e.get("event") == "reloaded")
            trio.key_file(n).write_text("\n".join(lines) + "\n")
            d.signal(signal.SIGHUP)
            wait_until(lambda d=d, before=before: sum(1 for e in d.log_events() if e.get("event") == "reloaded")
                       > before, 10, f"{n} to reload")
            time.sleep(hold)  # the cluster runs with mixed keyrings for a while: nothing may break

    reload_all([key_a, key_b])  # add B after A: A still signs, both verify
    reload_all([key_b, key_a])  # move B first: B signs, A still verifies
    reload_all([key_b])  # remove A
    time.sleep(1.0)

    assert trio.all_alive()
    assert trio.bad_events() == {}, "a key rotation step caused suspicion"
    for n in NAMES:
        events = trio[n].log_events()
        assert not [e for e in events if e.get("event") in ("gossip_rejected", "gossip_refused_by_peer",
                                                            "reload_rejected")], n
        text = trio[n].log_text()
        assert key_a not in text and key_b not in text, "a gossip key appeared in a log"

    port = trio.gport["n2"]
    ping = ping_body("n2", port)
    old = base64.b64decode(key_a)
    new = base64.b64decode(key_b)
    assert send(port, ping, sign(old, ping))[0] == 401  # A is gone
    samples = metric_samples(trio["n2"])
    assert metric(samples, "haflowd_gossip_rejected_total", reason="bad_signature") == 1
    assert send(port, ping, sign(new, ping))[0] == 200  # B is the key now


# --------------------------------------------------------------------------- (h) metrics


def test_peer_metrics(trio):
    samples = metric_samples(trio["n1"])
    for n in NAMES:
        assert metric(samples, "haflowd_peer_up", peer=n) == 1, (n, trio.bad_events())
        assert metric(samples, "haflowd_peer_status", peer=n, status="alive") == 1, (n, trio.bad_events())
        for s in ("suspect", "dead", "left"):
            assert metric(samples, "haflowd_peer_status", peer=n, status=s) == 0, (n, s, trio.bad_events())

    def counted() -> bool:
        got = metric_samples(trio["n1"])
        return all((metric(got, "haflowd_gossip_messages_total", direction=dr, type=ty) or 0) > 0
                   for dr, ty in (("out", "ping"), ("in", "ack"), ("in", "push-pull"), ("in", "ping")))

    wait_until(counted, 5, "n1 to count gossip messages in and out")
    for reason in ("bad_signature", "missing_headers", "replay", "stale", "too_large", "malformed"):
        assert metric(samples, "haflowd_gossip_rejected_total", reason=reason) == 0
    raw = trio["n1"].get("/metrics")[1].decode()
    assert 'haflowd_peer_up{peer="n2"} 1.0' in raw

    # a dead peer flips its metrics
    trio["n3"].kill()
    first_seen({"n1": trio["n1"]}, status_of("n3", "dead"), 15, "n3 dead on n1")
    samples = metric_samples(trio["n1"])
    assert metric(samples, "haflowd_peer_up", peer="n3") == 0
    assert metric(samples, "haflowd_peer_status", peer="n3", status="dead") == 1
    assert metric(samples, "haflowd_peer_status", peer="n3", status="alive") == 0
    assert metric(samples, "haflowd_peer_up", peer="n2") == 1
