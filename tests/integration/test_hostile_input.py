"""Hostile input against real daemons: slow and half-sent connections on both TCP
listeners, refusals that must not flood the log, and a peer's summary from another version.

Every wait has a deadline; the daemons are the ``trio`` of test_gossip.py.
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from haflowd.api import limits
from tests.conftest import peer_changes, peer_map, wait_until
from tests.integration.test_gossip import (  # the same cluster and raw-traffic helpers
    BAD,
    NAMES,
    metric,
    metric_samples,
    ping_body,
    send,
    sign,
    trio,  # noqa: F401  (a fixture)
)

MIB = 1024 * 1024
CLOSE_BOUND_S = limits.KEEPALIVE_S + limits.BODY_DEADLINE_S + limits.LINGER_S + 3.0


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


@dataclass
class Slow:
    kind: str
    sock: socket.socket
    opened: float
    closed: float | None = None
    answer: bytes = b""
    sent: int = 0


@dataclass
class Attack:
    conns: list[Slow] = field(default_factory=list)

    def open(self, kind: str, src: str, port: int, data: bytes = b"") -> None:
        s = socket.socket()
        s.bind((src, 0))  # another "host": the loopback range is all ours
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        slow = Slow(kind, s, time.monotonic())
        while slow.sent < len(data):  # what fits in the buffers, then the client stalls
            try:
                slow.sent += s.send(data[slow.sent:slow.sent + 65536])
            except (BlockingIOError, OSError):
                break
        self.conns.append(slow)

    def wait_closed(self, timeout: float, on_tick: Callable[[], object]) -> None:
        sel = selectors.DefaultSelector()
        for c in self.conns:
            sel.register(c.sock, selectors.EVENT_READ, c)
        deadline = time.monotonic() + timeout
        try:
            while sel.get_map() and time.monotonic() < deadline:
                for key, _ in sel.select(0.05):
                    c = key.data
                    try:
                        chunk = c.sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if chunk:
                        c.answer += chunk[:200] if not c.answer else b""
                        continue
                    c.closed = time.monotonic()
                    sel.unregister(c.sock)
                on_tick()
        finally:
            sel.close()
            for c in self.conns:
                c.sock.close()


def head(headers: dict[str, str], length: int, method: str = "POST", path: str = "/gossip") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", f"Content-Length: {length}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_slow_and_half_sent_connections_cost_bounded_memory_and_time(trio):  # noqa: F811
    n1 = trio["n1"]
    gport, aport = trio.gport["n1"], n1.port
    samples = metric_samples(n1)
    pings_in = metric(samples, "haflowd_gossip_messages_total", direction="in", type="ping") or 0
    before = rss(n1.proc.pid)
    big = b"x" * (MIB - 100)  # a body under the limit, of which 100 bytes never come
    forged = sign(os.urandom(32), b"y" * MIB)  # well-formed and fresh, signed with a key nobody has

    attack = Attack()
    for _ in range(10):
        attack.open("gossip idle", "127.0.0.2", gport)
        attack.open("gossip half headers", "127.0.0.3", gport, b"POST /gossip HTTP/1.1\r\nHost: x\r\nContent-Le")
        attack.open("gossip unsigned body", "127.0.0.4", gport, head({}, MIB) + big)
    for _ in range(15):
        attack.open("gossip forged body", "127.0.0.5", gport, head(forged, MIB) + big)
    for _ in range(5):
        attack.open("api idle", "127.0.0.2", aport)
        attack.open("api half headers", "127.0.0.3", aport, b"GET /health HTTP/1.1\r\nHo")
        attack.open("api body", "127.0.0.4", aport, head({}, MIB, "GET", "/health") + big)
    assert len(attack.conns) == 60

    peak = [before]
    attack.wait_closed(CLOSE_BOUND_S + 5, lambda: peak.append(rss(n1.proc.pid)))
    after = rss(n1.proc.pid)
    open_still = [c.kind for c in attack.conns if c.closed is None]
    took = {c.kind: round(max((x.closed if x.closed is not None else float("inf")) - x.opened
                              for x in attack.conns if x.kind == c.kind), 2)
            for c in attack.conns}
    print(f"\n60 slow connections: RSS before {before / MIB:.1f} MiB, peak {max(peak) / MIB:.1f} MiB, "
          f"after {after / MIB:.1f} MiB; closed after (s): {took}")
    assert not open_still, f"still open after {CLOSE_BOUND_S + 5} s: {open_still}"
    assert max(took.values()) <= CLOSE_BOUND_S, took
    assert max(peak) - before < 20 * MIB, (before, max(peak))
    assert after - before < 20 * MIB, (before, after)

    answers = {c.kind: c.answer.split(b"\r\n", 1)[0].decode(errors="replace") for c in attack.conns if c.answer}
    assert answers.get("gossip unsigned body", "").startswith("HTTP/1.1 401"), answers
    samples = metric_samples(n1)
    assert (metric(samples, "haflowd_gossip_rejected_total", reason="timeout") or 0) >= 1
    assert (metric(samples, "haflowd_gossip_rejected_total", reason="busy") or 0) >= 1  # past 8 per address

    # real gossip went on meanwhile: n1 kept hearing its peers, nobody was doubted
    assert (metric(samples, "haflowd_gossip_messages_total", direction="in", type="ping") or 0) > pings_in
    assert trio.all_alive()
    assert trio.bad_events() == {}, "slow connections made a live node look suspect"
    assert n1.live()


def test_refusals_are_counted_each_but_logged_as_a_summary(trio):  # noqa: F811
    n1, port = trio["n1"], trio.gport["n1"]
    body = ping_body("n1", port)
    for _ in range(200):
        assert send(port, body, sign(os.urandom(32), body))[0] == 401
    samples = metric_samples(n1)
    assert metric(samples, "haflowd_gossip_rejected_total", reason="bad_signature") == 200
    lines = [e for e in n1.log_events() if e.get("event") == "gossip_rejected"]
    assert 1 <= len(lines) <= 5, len(lines)  # the first at once, then held back
    summary = wait_until(lambda: [e for e in n1.log_events() if e.get("event") == "gossip_rejected_summary"],
                         15, "the summary line of the held-back refusals")
    assert summary[0]["reason"] == "bad_signature" and summary[0]["count"] == 200 - len(lines)
    assert trio.bad_events() == {}


def test_a_peer_summary_with_an_unknown_status_is_a_warning_not_a_500(trio):  # noqa: F811
    """What a newer peer in a mixed-version cluster sends: a status this version does not
    know, fields of other types, lists far too long. /health/cluster must still answer."""
    key = base64.b64decode(trio.key)
    n1, n2 = trio["n1"], trio["n2"]
    inc = peer_map(n1)["n2"]["incarnation"]
    data = {"status": "maintenance", "version": 4,
            "checks": [{"name": "gossip", "status": "degraded", "output": "o" * 10_000},
                       *[5, "x", {"name": "c", "status": "passing"}] * 2000],
            "components": {"not": "a list"}}
    msg = {"type": "gossip", "from": "n2", "addr": f"127.0.0.1:{trio.gport['n2']}",
           "summaries": [{"node": "n2", "version": [inc, 10**9], "data": data}]}
    raw = json.dumps(msg).encode()
    assert send(trio.gport["n1"], raw, sign(key, raw, sender="n2"))[0] == 200

    def shown() -> dict | None:
        status, body = n1.get("/health/cluster")
        assert status != 500, body
        node = next(x for x in body["nodes"] if x["name"] == "n2")
        return (status, body, node) if node.get("reported_status") == "maintenance" else None

    status, body, node = wait_until(shown, 5, "n2's new summary on n1's /health/cluster")
    assert status == 200 and body["ok"] is True, body
    assert body["status"] == "warning" and node["status"] == "warning"
    assert node["version"] is None and node["components"] == []
    assert len(node["checks"]) == 1 + 63 // 3  # the first 64 items; what is not a check is dropped
    assert node["checks"][0]["status"] == "warning" and node["checks"][0]["reported_status"] == "degraded"
    assert len(node["checks"][0]["output"]) == 1024
    assert n1.ctl("health", "--cluster").returncode == 1  # a warning, said so
    assert n2.get("/health/cluster")[0] == 200
    for n in NAMES:
        assert not peer_changes(trio[n], new=BAD)


def test_connections_past_the_caps_are_answered_busy_at_once(daemon):
    """One address may hold 32 connections to a listener; the next ones get 503 and are
    closed before they are parsed, while other clients are still served."""
    d = daemon("")
    attack = Attack()
    for _ in range(limits.MAX_CONNECTIONS_PER_REMOTE + 8):
        attack.open("idle", "127.0.0.6", d.port)
    busy: list[Slow] = []

    def answered() -> bool:
        for c in attack.conns:
            try:
                chunk = c.sock.recv(4096)
            except BlockingIOError:
                continue
            if chunk and c not in busy:
                c.answer = chunk
                busy.append(c)
        return len(busy) >= 8

    wait_until(answered, 2, "8 connections over the per-address cap answered")
    assert len(busy) == 8 and all(c.answer.startswith(b"HTTP/1.1 503") and b'"busy"' in c.answer for c in busy)
    assert d.get("/liveness")[0] == 200  # another address (127.0.0.1) is served meanwhile
    attack.wait_closed(CLOSE_BOUND_S, lambda: None)
    assert all(c.closed is not None for c in attack.conns)
    events = [e for e in d.log_events() if e.get("event") == "api_refused"]
    assert events and all(e["reason"] == "busy" and e["remote"] == "127.0.0.6" for e in events) and len(events) <= 5
