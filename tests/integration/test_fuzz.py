"""Fuzzing a real daemon's two TCP listeners (the gossip port and the read API) with
10,000+ generated requests from a seeded generator: random methods, paths and headers,
forged and malformed signature headers, garbage JSON, deep nesting, huge Content-Length,
broken chunking, truncated bodies, and some correctly signed requests.

Every request must be answered 2xx/4xx (never 5xx); a request whose headers were cut
off may instead be closed without an answer. The daemon must stay live; what it holds
(its live heap, measured inside it after a full collection once it is quiet) must stay
flat, and its RSS bounded.
"""

from __future__ import annotations

import base64
import json
import os
import random
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from haflowd.gossip import signing
from tests.conftest import Daemon, free_port, gossip_body, new_gossip_key, rename_node, render_config, wait_until
from tests.integration.test_gossip import sign

SEED = int(os.environ.get("HAFLOWD_FUZZ_SEED", "1507"))
REQUESTS = int(os.environ.get("HAFLOWD_FUZZ_REQUESTS", "10400"))
WARMUP = REQUESTS // 5
WORKERS = int(os.environ.get("HAFLOWD_FUZZ_WORKERS", "4"))
MIB = 1024 * 1024

METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "FOO", "get",
           "P0ST", "G\x00T", "POST /x", ""]
# no /health?strict=1: it is 503 by design while the node is "warning", and a flood like this one
# does make it warning (Lifeguard sees the event loop lag and says "this node is slow")
API_PATHS = ["/liveness", "/readiness", "/health", "/health?strict=0", "/health/cluster", "/peers",
             "/components", "/components/x", "/components/%00", "/status", "/metrics", "/openapi.json", "/",
             "/nope", "/gossip"]
GOSSIP_PATHS = ["/gossip", "/gossip?x=1", "/gossip/", "/", "/liveness", "/GOSSIP"]
JUNK_PATHS = ["*", "//", "/..%2f..%2fetc/passwd", "/%ff%fe", "/\u00e9t\u00e9", "http://evil/health",
              "/" + "a" * 9000, "/health?" + "&".join(f"k{i}=v" for i in range(500)), "", " /x", "/a b"]


@dataclass
class Req:
    target: str  # "gossip" or "api"
    kind: str
    data: bytes
    cut: int | None = None  # send only this many bytes, then half-close
    signed_body: bytes | None = None  # signature headers made at sending time, then this body


def _junk(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def _body(rng: random.Random, key: bytes | None) -> tuple[str, bytes]:
    choice = rng.randrange(9)
    if choice == 0:
        return "empty", b""
    if choice == 1:
        return "garbage", _junk(rng, rng.randrange(1, 2000))
    if choice == 2:
        return "broken json", rng.choice([b'{"type": "ping",', b"[1, 2", b'{"a": NaN}', b"\xff\xfe{}", b"nul"])
    if choice == 3:
        depth = rng.choice([100, 1000, 50_000])
        return "deep nesting", b"[" * depth + b"]" * rng.choice([0, depth])
    if choice == 4:
        return "wrong schema", json.dumps(rng.choice([
            {"type": "ping", "seq": "x"}, {"type": "nope"}, [1, 2, 3], {"type": "gossip", "from": "fz",
                                                                         "updates": "x"},
            {"type": "ping", "from": "a" * 500}, {"type": "push-pull", "from": "fz", "summaries": [5]}])).encode()
    if choice == 5:
        return "ping", json.dumps({"type": "ping", "from": "fz", "addr": "127.0.0.1:9", "seq": 1}).encode()
    if choice == 6:
        return "odd summary", json.dumps({"type": "gossip", "from": "fz", "addr": "127.0.0.1:9", "summaries": [
            {"node": "fz", "version": [1, rng.randrange(10**6)],
             "data": {"status": rng.choice(["maintenance", 7, None, ["x"]]), "checks": [1, {"name": 2}] * 50}}]}
        ).encode()
    if choice == 7 or rng.random() < 0.9:  # the big ones are few: each costs the same as the next
        return "large", _junk(rng, rng.randrange(10_000, 100_000))
    return "over 1 MiB", b"z" * (MIB + rng.randrange(1, 5000))


def _sig_headers(rng: random.Random, key: bytes, body: bytes, path: str) -> tuple[str, dict[str, str]]:
    choice = rng.randrange(12)
    if choice == 0:
        return "unsigned", {}
    if choice in (1, 2):
        return "forged", sign(os.urandom(32), body)
    if choice in (3, 4):  # signed with the cluster's key over exactly what is sent
        h = sign(key, body, sender="fz")
        if path != "/gossip":
            return "signed other path", h
        return "signed", h
    h = sign(key, body, sender="fz")
    field, value = rng.choice([
        (signing.TIMESTAMP, "nan"), (signing.TIMESTAMP, "1e309"), (signing.TIMESTAMP, "-1"),
        (signing.TIMESTAMP, "9" * 20), (signing.TIMESTAMP, f"{time.time() - 600:.3f}"),
        (signing.TIMESTAMP, f"{time.time() + 600:.3f}"), (signing.TIMESTAMP, ""),
        (signing.NONCE, "abc"), (signing.NONCE, "g" * 32), (signing.NONCE, "0" * 5000),
        (signing.SIGNATURE, "zz"), (signing.SIGNATURE, "0" * 64), (signing.SIGNATURE, "0" * 63),
        (signing.SENDER, ""), (signing.SENDER, "s" * 200), (signing.SENDER, "a\tb"), (signing.SENDER, "n\u00e9"),
    ])
    h[field] = value
    if rng.random() < 0.2:
        h.pop(rng.choice(list(h)))
    return f"malformed {field[11:].lower()}", h


def valid(rng: random.Random, key: bytes) -> Req:
    """A correctly signed, well-framed gossip request: 200."""
    if rng.random() < 0.5:
        kind, body = "ping", json.dumps({"type": "ping", "from": "fz", "addr": "127.0.0.1:9", "seq": 3}).encode()
    else:
        kind, body = "odd summary", json.dumps({"type": "gossip", "from": "fz", "addr": "127.0.0.1:9", "summaries": [
            {"node": "fz", "version": [1, rng.randrange(10**6)],
             "data": {"status": rng.choice(["maintenance", 7, None]), "checks": [1, {"name": 2}] * 50}}]}).encode()
    return Req("gossip", f"valid {kind}", f"POST /gossip HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode(),
               signed_body=body)


def generate(i: int, key: bytes) -> Req:
    """Request number ``i``: the same for a given seed, whatever the order they are sent in."""
    rng = random.Random(f"{SEED}-{i}")
    target = rng.choice(["gossip", "api"])
    if rng.random() < 0.05:
        return valid(rng, key)
    if rng.random() < 0.02:  # the last valid request sent, again byte for byte
        return Req("gossip", "replay", b"")
    method = "POST" if target == "gossip" and rng.random() < 0.7 else rng.choice(METHODS)
    pool = GOSSIP_PATHS if target == "gossip" else API_PATHS
    path = rng.choice(JUNK_PATHS) if rng.random() < 0.1 else rng.choice(pool)
    if rng.random() < 0.1:
        path += rng.choice(["?", "?a=%00", "?strict=no", "#frag", "?x=" + "y" * 3000, ";p=1"])
    body_kind, body = _body(rng, key)
    sig_kind, headers = _sig_headers(rng, key, body, path) if target == "gossip" else ("", {})
    headers = dict(headers)
    framing = rng.randrange(20)
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    kind = f"{target} {sig_kind} {body_kind}".replace("  ", " ")
    data_body = body
    if framing == 0:
        lines.append("Transfer-Encoding: chunked")
        step = rng.choice([1, 7, 4096])
        data_body = b"".join(f"{len(body[i:i + step]):x}\r\n".encode() + body[i:i + step] + b"\r\n"
                             for i in range(0, len(body), step)) + rng.choice([b"0\r\n\r\n", b"zz\r\n", b""])
        kind += " chunked"
    elif framing == 1:
        lines += [f"Content-Length: {len(body)}", "Transfer-Encoding: chunked"]
        kind += " smuggling"
    elif framing == 2:
        lines.append(f"Content-Length: {rng.choice(['99999999999999999999', '-1', 'abc', '1e3', ' 5'])}")
        kind += " bad length"
    elif framing == 3:
        lines.append(f"Content-Length: {rng.choice([10**9, 2 * MIB, MIB + 1])}")  # the body never comes
        kind += " huge length"
    elif framing == 4:
        lines += [f"Content-Length: {len(body)}", f"Content-Length: {len(body) + 1}"]
        kind += " two lengths"
    elif framing == 5 and method != "HEAD":
        lines.append(f"Content-Length: {len(body) + rng.randrange(1, 1000)}")
        kind += " truncated body"
    elif framing != 6 or body:
        lines.append(f"Content-Length: {len(body)}")
    extra = rng.randrange(10)
    if extra == 0:
        lines += [f"X-Junk-{i}: {'v' * rng.randrange(50)}" for i in range(rng.choice([5, 40]))]
    elif extra == 1:
        lines.append("X-Long: " + "v" * rng.choice([100, 9000]))
    elif extra == 2:
        lines.append("Expect: 100-continue")
    elif extra == 3:
        lines.append(rng.choice(["Bad Header: x", "NoColon", ": empty name", "X-Ctl: a\x01b", "X-Lf: a\rb"]))
    elif extra == 4:
        lines.append("Connection: close")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
    data = head + data_body
    if rng.random() < 0.02:  # the headers cut off, then the client half-closes
        return Req(target, "headers cut", data, cut=rng.randrange(1, len(head)))
    if "truncated body" in kind:
        return Req(target, kind, data, cut=len(data))  # all it promised less some, then EOF
    return Req(target, kind, data)


# Put into the daemon as a sitecustomize.py on its PYTHONPATH: asked (a number written to a file),
# it collects all garbage, then tells what stays allocated - by pymalloc (CPython's objects up to
# 512 B) and by malloc (the rest, C extensions included) - and its RSS.
#
# Why not RSS alone: RSS is what the allocators hold, not what the daemon uses. pymalloc keeps a
# 1 MiB arena while any block in it lives, glibc keeps freed memory for reuse, and the fuzz made
# big piles of cyclic garbage (aiohttp queued a 400 with its traceback for every buffered chunk it
# was handed after a chunked body failed to parse, until haflowd/api/limits.py stopped feeding a
# failed parser: one request made thousands, freed only at the next full collection). Measured on
# 2 cores before that fix: RSS every 1,000 requests swung by 10-20 MiB and its floor ratcheted
# up (+11 MiB between the halves of one CI run; +24 MiB over 80,000 requests even when taken
# after a full collection at a quiet moment), while the live heap stayed within 0.5 MiB. After
# it, the same seed peaked at 47.8 MiB, not 85.1.
PROBE = r"""
import os, threading

def _probe(ask: str) -> None:
    import ctypes, gc, json, time

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL(None)
    mallinfo2 = getattr(libc, "mallinfo2", None)  # glibc 2.33+
    if mallinfo2 is not None:
        mallinfo2.restype = Mallinfo2
    stats = getattr(ctypes.pythonapi, "_PyObject_DebugMallocStats", None)  # what sys._debugmallocstats prints
    if stats is not None:
        stats.argtypes, stats.restype = [ctypes.c_void_p], ctypes.c_int
        libc.tmpfile.restype = ctypes.c_void_p
        libc.fflush.argtypes = libc.fclose.argtypes = libc.fileno.argtypes = [ctypes.c_void_p]

    def pymalloc_bytes():
        if stats is None:
            return None
        fp = libc.tmpfile()
        try:
            stats(fp)
            libc.fflush(fp)
            fd = libc.fileno(fp)
            os.lseek(fd, 0, 0)
            text = b""
            while chunk := os.read(fd, 65536):
                text += chunk
        finally:
            libc.fclose(fp)
        for line in text.decode(errors="replace").splitlines():
            if line.startswith("# bytes in allocated blocks"):
                return int(line.split("=")[1].replace(",", ""))
        return None  # PYTHONMALLOC=malloc: all of it is in malloc's count

    seen = ""
    while True:
        time.sleep(0.01)
        try:
            with open(ask) as f:
                n = f.read()
        except OSError:
            continue
        if n == seen:
            continue
        seen = n
        gc.collect()
        mi = mallinfo2() if mallinfo2 is not None else None
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        out = {"n": n, "pid": os.getpid(), "objects": len(gc.get_objects()), "pymalloc": pymalloc_bytes(),
               "malloc": None if mi is None else mi.uordblks + mi.hblkhd, "rss": rss}
        with open(ask + ".tmp", "w") as f:
            json.dump(out, f)
        os.replace(ask + ".tmp", ask + ".out")

_ask = os.environ.pop("HAFLOWD_TEST_PROBE", "")  # the daemon's own children do not probe
if _ask:
    threading.Thread(target=_probe, args=(_ask,), name="test-probe", daemon=True).start()
"""


def start_probed(d: Daemon) -> Callable[[], dict[str, Any]]:
    """Start ``d`` with :data:`PROBE` in it; a function that asks it."""
    site = d.dir / "probe"
    site.mkdir()
    (site / "sitecustomize.py").write_text(PROBE)
    ask = site / "ask"
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    d.start(extra_env={"PYTHONPATH": path, "HAFLOWD_TEST_PROBE": str(ask)})
    assert d.proc is not None
    pid = d.proc.pid
    asked = [0]

    def probe() -> dict[str, Any]:
        asked[0] += 1
        ask.write_text(str(asked[0]))

        def answer() -> dict[str, Any] | None:
            try:
                out: dict[str, Any] = json.loads((site / "ask.out").read_text())
            except (OSError, ValueError):
                return None
            return out if out["n"] == str(asked[0]) else None

        out = wait_until(answer, 30, "the daemon's memory probe")
        assert out["pid"] == pid, out
        assert out["malloc"] is not None, f"no mallinfo2 (glibc 2.33+) to measure the heap with: {out}"
        out["heap"] = (out["pymalloc"] or 0) + out["malloc"]
        return out

    return probe


LAST_VALID: list[bytes] = [b"POST /gossip HTTP/1.1\r\nContent-Length: 0\r\n\r\n"]


def exchange(port: int, req: Req, key: bytes, source: str = "127.0.0.1", timeout: float = 10.0) -> str:
    """Send one request; the status code of the answer, or "closed"/"timeout"."""
    data = req.data if req.cut is None else req.data[:req.cut]
    if req.signed_body is not None:
        head = "".join(f"{k}: {v}\r\n" for k, v in sign(key, req.signed_body, sender="fz").items())
        data = req.data + f"{head}\r\n".encode() + req.signed_body
        LAST_VALID[0] = data
    elif req.kind == "replay":
        data = LAST_VALID[0]
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    try:
        sent = 0
        while sent < len(data):  # stop sending once the server has answered early
            if select.select([s], [], [], 0)[0]:
                break
            try:
                sent += s.send(data[sent:sent + 65536])
            except OSError:
                break
        if req.cut is not None:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                return "timeout"
            except OSError:
                chunk = b""
            if not chunk:
                return "closed"
            buf += chunk
            while b"\r\n\r\n" in buf:
                status_line = buf.split(b"\r\n", 1)[0]
                parts = status_line.split()
                code = parts[1].decode() if len(parts) > 1 else "?"
                if code != "100":
                    return code
                buf = buf.split(b"\r\n\r\n", 1)[1]
        return "timeout"
    finally:
        s.close()


def test_fuzz_both_listeners(daemon):
    key_b64 = new_gossip_key()
    gport = free_port()
    d = daemon("", start=False)
    (d.dir / "gossip.key").write_text(key_b64 + "\n")
    d.config.write_text(render_config(d, gossip_body(f"127.0.0.1:{gport}", [], d.dir / "gossip.key")))
    rename_node(d, "n1")
    probe = start_probed(d)
    key = base64.b64decode(key_b64)
    reqs = list(range(REQUESTS))
    ports = {"gossip": gport, "api": d.port}
    proc = psutil.Process(d.proc.pid)
    rss_idle = proc.memory_info().rss

    results: list[tuple[Req, str]] = []
    slow: list[tuple[float, str, str]] = []
    lock = threading.Lock()

    def run(batch: list[int]) -> None:
        todo = iter(batch)

        def work(source: str) -> None:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                r = generate(i, key)
                started = time.monotonic()
                out = exchange(ports[r.target], r, key, source)
                r.data = r.data[:200]  # what the report shows; the rest is let go
                with lock:
                    results.append((r, out))
                    slow.append((round(time.monotonic() - started, 2), r.kind, out))

        # one client address per worker, as several clients would be: the per-address caps are not what is fuzzed
        threads = [threading.Thread(target=work, args=(f"127.0.0.{10 + i}",)) for i in range(WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)

    def held() -> dict[str, Any]:
        """What the daemon holds once it has closed every fuzzing connection (one whose body it
        did not read lingers for LINGER_S, 1 s, after the client gave up) and collected its garbage."""
        wait_until(lambda: not [c for c in proc.net_connections("tcp") if c.status != psutil.CONN_LISTEN
                                and c.laddr.port in ports.values()], 30, "the daemon to close the fuzz's connections")
        return {**probe(), "fds": proc.num_fds()}

    t0 = time.monotonic()
    # the first part warms the daemon up (code paths, buffers, caches, the allocators' working set)
    # before RSS and the heap are taken; it is checked like the rest
    run(reqs[:WARMUP])
    rss_before = proc.memory_info().rss
    cpu_before = sum(proc.cpu_times()[:2])
    base = held()
    rss_samples = [rss_before]
    for i in range(WARMUP, len(reqs), 1000):
        run(reqs[i:i + 1000])
        rss_samples.append(proc.memory_info().rss)
    end = held()
    took = time.monotonic() - t0
    rss_after = proc.memory_info().rss
    cpu = sum(proc.cpu_times()[:2]) - cpu_before

    by_status = Counter(out for _, out in results)
    by_target = Counter(f"{r.target} {out}" for r, out in results)
    print(f"\nfuzz: {len(results)} requests (seed {SEED}) in {took:.1f} s; by status: {dict(sorted(by_status.items()))}")
    print(f"fuzz: by listener: {dict(sorted(by_target.items()))}")
    print(f"fuzz: slowest: {sorted(slow, reverse=True)[:8]}")
    print(f"fuzz: daemon CPU {cpu:.1f} s after the warm-up; RSS every 1,000 requests after it (MiB): "
          f"{[round(x / MIB, 1) for x in rss_samples]}")
    print(f"fuzz: RSS idle {rss_idle / MIB:.1f} MiB, after the warm-up {rss_before / MIB:.1f} MiB, at the end {rss_after / MIB:.1f} MiB, "
          f"peak {max(rss_samples) / MIB:.1f} MiB")
    print("fuzz: held after a full collection, after the warm-up -> at the end: " + ", ".join(
        f"{k} {base[k] // q} -> {end[k] // q}{unit}" for k, q, unit in [
            ("heap", 1024, " KiB"), ("pymalloc", 1024, " KiB"), ("malloc", 1024, " KiB"), ("objects", 1, ""),
            ("rss", 1024, " KiB"), ("fds", 1, "")] if base[k] is not None))

    assert len(results) == REQUESTS
    bad = Counter(r.kind for r, out in results
                  if out.startswith("5") or not (out[:1] in ("2", "4") or r.kind == "headers cut"))
    examples = {r.kind: (out, r.data[:160]) for r, out in results
                if out.startswith("5") or not (out[:1] in ("2", "4") or r.kind == "headers cut")}
    assert not bad, f"not 2xx/4xx: {dict(bad)}; e.g. {examples}"
    assert d.live() and d.get("/liveness")[0] == 200
    assert d.get("/health/cluster")[0] == 200
    # flat: what the daemon holds does not grow with the requests. Measured (the heap after a full
    # collection, after the warm-up -> at the end): +485 to +515 KiB in seven runs of 10,400 requests
    # (60 B a request, with or without two busy loops beside it; caches filling up to their bounds),
    # +370 KiB in one of 80,000. The bound is 256 B a request (2 MiB over the 8,320 measured here).
    # Leaks injected into the daemon (not kept) failed it: 1 KiB a connection in malloc (1,141 B a
    # request measured) or in pymalloc (1,222 B), and 300 B (374 B); the RSS check this replaces
    # passed the first (its floor rose 9.7 MiB, under its 10 MiB) and failed once in CI without a leak
    measured = REQUESTS - WARMUP
    grown = end["heap"] - base["heap"]
    assert grown < 256 * measured, (
        f"the daemon's heap grew {grown // 1024} KiB over {measured} requests ({grown // measured} B a request): "
        f"{base} -> {end}")
    assert end["fds"] <= base["fds"] + 8, f"the daemon's open files: {base['fds']} -> {end['fds']}"
    # RSS: bounded (not flat: the allocators keep what they once used, see PROBE)
    mib = [round(x / MIB, 1) for x in rss_samples]
    assert max(rss_samples) - rss_before < 40 * MIB, mib
    events = d.log_events()
    assert not [e for e in events if e.get("event") == "api_error"], "a request made the API fail"
    assert not [e for e in events if e.get("level") in ("error", "critical")], [
        e for e in events if e.get("level") in ("error", "critical")][:3]
    rejected_lines = Counter(e["reason"] for e in events if e.get("event") == "gossip_rejected")
    # the documented rate: 5 lines at once per reason, then one a 10 s; the rest is in summaries
    allowed = 5 + int((time.monotonic() - t0) / 10) + 1
    assert all(n <= allowed for n in rejected_lines.values()), (rejected_lines, allowed)
