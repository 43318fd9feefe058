"""The PostgreSQL check against a real primary and streaming standby, with real clients.

Two daemons, one per PostgreSQL node (``local_node`` pg1 and pg2), as on two hosts.
Tests that only read share the session's pair; tests that stop, promote or SIGSTOP a
server get a fresh pair of their own. HAProxy and Prometheus are the real clients.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator

import psutil
import psycopg2
import pytest

from haflowd.checks.postgres import ProbeAbort, connect
from tests.conftest import Daemon, free_port, wait_until
from tests.fixtures.postgres import PgPair

pytestmark = pytest.mark.integration


def start_daemons(daemon, pair: PgPair, **kw: str) -> tuple[Daemon, Daemon]:
    """A daemon on each PostgreSQL "host", both with every node configured; started side by side."""
    d1 = daemon(pair.postgres_body("pg1", **kw), start=False)
    d2 = daemon(pair.postgres_body("pg2", **kw), start=False)
    for d in (d1, d2):
        d.start(wait=False)
    for d in (d1, d2):
        wait_until(d.live, 15, "haflowd /liveness")
    return d1, d2


def pg_state(d: Daemon) -> dict:
    status, body = d.get("/postgres")
    assert status == 200, body
    return body


def pg_check(d: Daemon) -> dict:
    checks = {c["name"]: c for c in d.get("/health")[1]["checks"]}
    return checks["postgres"]


def nodes(body: dict) -> dict[str, dict]:
    return {n["name"]: n for n in body["nodes"]}


def wait_check(d: Daemon, status: str, contains: str = "", timeout: float = 10) -> dict:
    def ok() -> dict | None:
        c = pg_check(d)
        return c if c["status"] == status and contains in c["output"] else None
    return wait_until(ok, timeout, f"postgres check {status!r} containing {contains!r} on {d.api}")


def wait_code(d: Daemon, path: str, code: int, timeout: float = 10) -> None:
    wait_until(lambda: d.get(path)[0] == code, timeout, f"{path} → {code} on {d.api}")


# --------------------------------------------------------------------------- the healthy pair


def test_roles_endpoints_head_and_body(daemon, pg_pair):
    d1, d2 = start_daemons(daemon, pg_pair)
    wait_check(d1, "passing")
    wait_check(d2, "passing")
    for path, on1, on2 in (("/postgres/primary", 200, 503), ("/postgres/replica", 503, 200),
                           ("/postgres/read-only", 200, 200), ("/postgres", 200, 200)):
        assert d1.get(path)[0] == on1, path
        assert d2.get(path)[0] == on2, path
        for d, code in ((d1, on1), (d2, on2)):
            status, body = d.get(path, method="HEAD")
            assert status == code and not body, (path, d.api)
    body = pg_state(d2)
    assert body["status"] == "passing" and body["split_brain"] is False and body["primary"] == "pg1"
    assert isinstance(body["checked_at"], float) and abs(body["checked_at"] - time.time()) < 5
    by = nodes(body)
    for n in by.values():
        assert {"name", "up", "role", "lag_bytes", "lag_seconds", "timeline", "system_identifier", "error",
                "checked_at"} <= set(n)
    assert (by["pg1"]["role"], by["pg2"]["role"]) == ("primary", "standby")
    assert by["pg1"]["timeline"] == by["pg2"]["timeline"] == 1
    assert by["pg1"]["system_identifier"] == by["pg2"]["system_identifier"] is not None
    assert by["pg2"]["streaming"] is True and by["pg2"]["lag_bytes"] is not None
    # an idle primary is not lag, however old the last replayed transaction
    wait_until(lambda: nodes(pg_state(d2))["pg2"]["lag_seconds"] == 0, 5, "pg2's lag to be 0 s")
    status, body = d2.get("/postgres/replica")
    assert body["reason"].startswith("pg2 is a streaming standby")
    status, body = d1.get("/postgres/replica")
    assert status == 503 and "not a standby (primary)" in body["reason"]
    assert pg_check(d1)["output"].startswith("pg1 primary (timeline 1), pg2 streaming")
    assert d1.get("/postgres/replica?lag=lots")[0] == 400
    assert "postgres" in d1.get("/status")[1]

    status, text = d1.get("/metrics")
    metrics = text.decode()
    assert 'haflowd_postgres_is_primary{node="pg1"} 1.0' in metrics
    assert 'haflowd_postgres_is_primary{node="pg2"} 0.0' in metrics
    assert 'haflowd_postgres_up{node="pg2"} 1.0' in metrics
    assert 'haflowd_postgres_timeline{node="pg1"} 1.0' in metrics
    assert re.search(r'haflowd_postgres_replication_lag_bytes\{node="pg2"\} \d', metrics)
    assert re.search(r'haflowd_postgres_replication_lag_seconds\{node="pg2"\} \d', metrics)
    assert "haflowd_postgres_split_brain 0.0" in metrics
    if shutil.which("promtool"):
        r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=10)
        assert (r.stdout + r.stderr).strip() == b"", (r.stdout + r.stderr).decode()
    doc = d1.get("/openapi.json")[1]
    assert {"/postgres", "/postgres/primary", "/postgres/replica", "/postgres/read-only"} <= set(doc["paths"])


def test_lag_parameter_with_paused_replay(daemon, pg_pair):
    primary, standby = pg_pair.primary, pg_pair.standby
    d2 = daemon(pg_pair.postgres_body("pg2"))
    wait_code(d2, "/postgres/replica?lag=0", 200)
    primary.sql("CREATE TABLE IF NOT EXISTS lagtest (x text)")
    primary.sql("INSERT INTO lagtest VALUES ('a replayed transaction dates the lag')")
    wait_until(lambda: standby.sql("SELECT pg_last_xact_replay_timestamp() IS NOT NULL")[0][0], 10,
               "the standby to replay a transaction")
    wait_code(d2, "/postgres/replica?lag=0", 200)
    try:
        standby.sql("SELECT pg_wal_replay_pause()")
        primary.sql("INSERT INTO lagtest SELECT repeat('x', 100) FROM generate_series(1, 2000)")

        def lagging() -> int:
            n = nodes(pg_state(d2))["pg2"]
            return n["lag_bytes"] if n["lag_bytes"] and n["lag_bytes"] > 1024 else 0
        lag = wait_until(lagging, 10, "pg2 to be behind")
        assert nodes(pg_state(d2))["pg2"]["replay_paused"] is True
        assert d2.get("/postgres/replica?lag=0")[0] == 503
        assert d2.get("/postgres/replica?lag=1KiB")[0] == 503
        status, body = d2.get("/postgres/read-only?lag=0")
        assert status == 503 and "behind" in body["reason"]
        assert d2.get("/postgres/replica", method="HEAD")[0] == 200  # default: max_lag_bytes (16 MiB)
        assert d2.get(f"/postgres/replica?lag={lag + 2**20}")[0] == 200
        assert d2.get("/postgres/replica?lag=1MiB")[0] == 200
        n2 = nodes(pg_state(d2))["pg2"]
        assert n2["lag_seconds"] is not None and n2["lag_seconds"] > 0, n2
        # a tiny max_lag_bytes in the config turns the check itself to warning
        d3 = daemon(pg_pair.postgres_body("pg2", extra="max_lag_bytes = 1024\n"))
        wait_check(d3, "warning", "standby pg2 is")
        assert "behind (max 1.0 KiB)" in pg_check(d3)["output"]
    finally:
        standby.sql("SELECT pg_wal_replay_resume()")
    wait_code(d2, "/postgres/replica?lag=0", 200)


# --------------------------------------------------------------------------- breaking things (fresh pairs)


def test_standby_stopped_is_warning(daemon, pg_pair_factory):
    pair = pg_pair_factory()
    d1, d2 = start_daemons(daemon, pair)
    wait_check(d1, "passing")
    pair.standby.stop("immediate")
    c = wait_check(d1, "warning", "pg2 is down")
    assert "Connection refused" in c["output"] or "connection" in c["output"].lower()
    wait_check(d2, "warning", "pg2 is down")
    assert d1.get("/postgres/primary")[0] == 200  # the primary still serves
    assert d2.get("/postgres/replica")[0] == 503
    assert d1.get("/health")[0] == 200
    body = pg_state(d1)
    assert nodes(body)["pg2"]["up"] is False and nodes(body)["pg2"]["role"] is None
    assert body["duration_s"] < 0.9  # a refusal is quick: nobody waits for the 1 s timeout
    assert 'haflowd_postgres_up{node="pg2"} 0.0' in d1.get("/metrics")[1].decode()


def test_primary_stopped_is_critical(daemon, pg_pair_factory):
    pair = pg_pair_factory()
    d1, d2 = start_daemons(daemon, pair)
    wait_check(d2, "passing")
    pair.primary.stop("immediate")
    for d in (d1, d2):
        c = wait_check(d, "critical", "no primary")
        assert "pg1 down" in c["output"] and "pg2 standby" in c["output"]
        assert d.get("/health")[0] == 503
        assert d.get("/postgres/primary")[0] == 503
    # the standby cannot tell its lag without a primary: not a replica to send reads to
    assert d2.get("/postgres/replica")[0] == 503
    assert d2.get("/postgres/read-only")[0] == 503


def test_promoted_standby_is_split_brain_on_both(daemon, pg_pair_factory):
    pair = pg_pair_factory()
    d1, d2 = start_daemons(daemon, pair)
    wait_check(d1, "passing")
    wait_code(d1, "/postgres/primary", 200)
    pair.standby.promote()
    for d in (d1, d2):
        c = wait_check(d, "critical", "split brain")
        assert c["output"].startswith("split brain: pg1 and pg2 are both primary (timelines 1, 2)"), c["output"]
        body = pg_state(d)
        assert body["split_brain"] is True and body["primary"] is None
        assert (nodes(body)["pg1"]["timeline"], nodes(body)["pg2"]["timeline"]) == (1, 2)
        assert nodes(body)["pg1"]["system_identifier"] == nodes(body)["pg2"]["system_identifier"]
        status, body = d.get("/postgres/primary")
        assert status == 503 and body["reason"].startswith("split brain")
        assert d.get("/postgres/primary", method="HEAD")[0] == 503
        assert "haflowd_postgres_split_brain 1.0" in d.get("/metrics")[1].decode()


def test_hung_postmaster_is_critical_and_health_stays_fast(daemon, pg_pair_factory):
    """SIGSTOP on the primary's postmaster: connects hang until libpq's connect_timeout (2 s),
    longer than the 1 s timeout and the 0.5 s interval, so probe threads would pile up and a
    probe on the event loop would stall it. Neither happens."""
    pair = pg_pair_factory()
    d1, d2 = start_daemons(daemon, pair, interval="500ms", timeout="1s")
    wait_check(d2, "passing")
    pid = pair.primary.postmaster_pid()
    assert pid is not None
    threads_before = psutil.Process(d2.proc.pid).num_threads()
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    seen_critical: float | None = None
    errors: set[str] = set()

    def window(seconds: float) -> float:
        """Poll /health for ``seconds`` while pg1 hangs; the slowest answer."""
        nonlocal seen_critical
        worst, end = 0.0, time.monotonic() + seconds
        while time.monotonic() < end:
            s = time.monotonic()
            status, body = d2.get("/health")
            worst = max(worst, time.monotonic() - s)
            pg = {c["name"]: c for c in body["checks"]}["postgres"]
            if pg["status"] == "critical" and seen_critical is None:
                seen_critical = time.monotonic() - t0
                assert status == 503 and "no primary: pg1 down (" in pg["output"], pg
            if seen_critical is not None:
                errors.add(re.sub(r"\(started .*", "", nodes(pg_state(d2))["pg1"]["error"] or ""))
            time.sleep(0.02)
        return worst

    try:
        worst = window(3.0)
        if worst >= 0.1:
            # one more window of the same hang: a stalled loop is slow in every window (each round
            # blocks for >= 1 s); a one-off scheduler hiccup on a busy test machine is not
            worst = min(worst, window(3.0))
        assert seen_critical is not None and seen_critical < 0.5 + 1 + 0.5, seen_critical
        assert worst < 0.1, f"/health took {worst * 1000:.0f} ms while pg1 hung"
        # rounds every 0.5 s, each probe given up after 1 s: the next round finds the thread still in
        # its 2 s connect and skips the node instead of starting a second one
        assert "still waiting on the previous probe " in errors
        assert errors <= {"no answer within 1s", "still waiting on the previous probe "}, errors
        body = pg_state(d2)
        assert nodes(body)["pg2"]["up"] is True  # the hung node does not hold back the other's result
        assert body["duration_s"] < 1.5
        # at most one probe thread per node: none piled up over ~6 rounds
        assert psutil.Process(d2.proc.pid).num_threads() <= threads_before + 2
        assert d1.get("/postgres/primary")[0] == 503
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_check(d2, "passing", timeout=15)


def test_passwords_never_shown(daemon, pg_pair):
    secret = "Sup3rS3cretPw"
    body = f"""
[postgres]
local_node = "pg1"
interval = "300ms"
timeout = "1s"
[[postgres.node]]
name = "pg1"
dsn = "host=127.0.0.1 port={pg_pair.primary.port} dbname=postgres user=no_such_role password={secret}"
[[postgres.node]]
name = "pg2"
dsn = "postgresql://postgres:{secret}%zz@127.0.0.1:{pg_pair.standby.port}/postgres"
[[postgres.node]]
name = "pg3"
dsn = "host=127.0.0.1 port={free_port()} user=postgres password='{secret} x'"
"""
    d = daemon(body)
    c = wait_check(d, "critical", "no primary")
    by = nodes(pg_state(d))
    assert 'role "no_such_role" does not exist' in by["pg1"]["error"]
    assert "invalid percent-encoded token" in by["pg2"]["error"]
    assert "refused" in by["pg3"]["error"]
    seen = [c["output"], json.dumps(pg_state(d)), json.dumps(d.get("/status")[1]),
            d.get("/metrics")[1].decode(), json.dumps(d.get("/postgres/primary")[1]), d.log_text()]
    for text in seen:
        assert secret not in text


# --------------------------------------------------------------------------- real clients


HAPROXY_CFG = """
global
    maxconn 64
defaults
    mode tcp
    timeout connect 1s
    timeout client 10s
    timeout server 10s
frontend pg
    bind 127.0.0.1:{port}
    default_backend primary
backend primary
    option httpchk HEAD /postgres/primary
    http-check expect status 200
{servers}
"""


@pytest.fixture
def haproxy(tmp_path) -> Iterator:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed; scripts/setup installs it")
    procs: list[subprocess.Popen[bytes]] = []

    def start(servers: list[tuple[str, int, int]]) -> int:
        port = free_port()
        lines = "\n".join(f"    server {name} 127.0.0.1:{pg} check port {api} inter 200 fall 1 rise 1"
                          for name, pg, api in servers)
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(port=port, servers=lines))
        r = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stdout + r.stderr
        log = open(tmp_path / "haproxy.log", "wb")
        procs.append(subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
        log.close()
        return port

    try:
        yield start
    finally:
        for p in procs:
            p.kill()
            p.wait(10)


def through(port: int) -> tuple[bool, int] | None:
    """(in recovery, server port) of whatever HAProxy's frontend leads to; None when it leads nowhere."""
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2)
    except psycopg2.Error:
        return None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery(), inet_server_port()")
            row = cur.fetchone()
            return (bool(row[0]), int(row[1])) if row else None
    finally:
        conn.close()


def test_haproxy_follows_the_primary(daemon, pg_pair_factory, haproxy):
    pair = pg_pair_factory()
    d1, d2 = start_daemons(daemon, pair, interval="300ms", timeout="1s")
    port = haproxy([("pg1", pair.primary.port, d1.port), ("pg2", pair.standby.port, d2.port)])
    # servers start UP in HAProxy until their first check: wait for five in a row on pg1
    first = (False, pair.primary.port)
    wait_until(lambda: all(through(port) == first for _ in range(5)), 15, "HAProxy to lead to pg1 only")
    pair.standby.promote()
    pair.primary.stop("immediate")
    second = (False, pair.standby.port)
    wait_until(lambda: all(through(port) == second for _ in range(5)), 15, "HAProxy to lead to pg2 only")
    c = pg_check(d2)
    assert c["status"] == "warning" and "pg1 is down" in c["output"]


@pytest.fixture
def prometheus(tmp_path) -> Iterator:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed; scripts/setup installs it")
    procs: list[subprocess.Popen[bytes]] = []

    def start(targets: list[str]) -> str:
        port = free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
                       "  - job_name: haflowd\n    static_configs:\n"
                       f"      - targets: [{', '.join(repr(t) for t in targets)}]\n")
        log = open(tmp_path / "prometheus.log", "wb")
        procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True))
        log.close()
        return f"http://127.0.0.1:{port}"

    try:
        yield start
    finally:
        for p in procs:
            p.kill()
            p.wait(10)


def promql(base: str, query: str) -> list[dict]:
    url = f"{base}/api/v1/query?query={urllib.parse.quote(query)}"
    with urllib.request.urlopen(url, timeout=2) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_both_daemons(daemon, pg_pair, prometheus):
    d1, d2 = start_daemons(daemon, pg_pair)
    wait_check(d1, "passing")
    base = prometheus([f"127.0.0.1:{d1.port}", f"127.0.0.1:{d2.port}"])

    def both() -> list[dict] | None:
        res = promql(base, "haflowd_postgres_is_primary")
        return res if len({r["metric"]["instance"] for r in res}) == 2 else None
    res = wait_until(both, 30, "Prometheus to scrape both daemons", interval=0.25)
    seen = {(r["metric"]["instance"], r["metric"]["node"]): r["value"][1] for r in res}
    for d in (d1, d2):
        inst = f"127.0.0.1:{d.port}"
        assert seen[(inst, "pg1")] == "1" and seen[(inst, "pg2")] == "0"
    assert all(r["value"][1] == "1" for r in promql(base, "up"))
    assert {r["value"][1] for r in promql(base, "haflowd_postgres_split_brain")} == {"0"}


def test_an_abandoned_probe_thread_is_cut_loose_at_once(pg_pair):
    """When the loop gives up on a probe, shutting its socket down ends a read that would hang."""
    abort = ProbeAbort()
    conn = connect(pg_pair.primary.dsn, 30.0, abort)  # statement_timeout 30 s: only the abort can end it
    outcome: list[BaseException | None] = []

    def query() -> None:
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_sleep(20)")
            outcome.append(None)
        except psycopg2.Error as e:
            outcome.append(e)
        finally:
            abort.close()

    th = threading.Thread(target=query)
    th.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    abort.abort()
    th.join(5)
    assert not th.is_alive() and time.monotonic() - t0 < 1
    assert isinstance(outcome[0], psycopg2.OperationalError)
    assert conn.closed
