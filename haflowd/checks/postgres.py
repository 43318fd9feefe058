"""The PostgreSQL checker: probe every node each interval, keep the last assessment.

Thin I/O around :mod:`haflowd.checks.pg_topology`. Each probe is psycopg2 in a worker
thread, bounded three ways: libpq's ``connect_timeout``, the server's
``statement_timeout``, and an ``asyncio.wait_for`` around the thread. A thread that
outlives the bound (a blackholed connect) is not waited for, and no second one is started
for that node until it returns: the node is reported down, "still waiting on the previous
probe", instead.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg2
import psycopg2.extensions
import structlog
from prometheus_client.core import GaugeMetricFamily, Metric

from haflowd import workers
from haflowd.checks import Checker
from haflowd.checks import pg_topology as topo
from haflowd.checks.pg_abort import ProbeAbort
from haflowd.clock import Clock
from haflowd.config import PostgresConfig, PostgresNode, Secret
from haflowd.health import STALE_AFTER_INTERVALS, CheckRegistry, Status

log = structlog.get_logger()

CHECK_NAME = "postgres"
BUCARDO_KEY = "bucardo database"


# --------------------------------------------------------------------------- blocking probes (worker thread)


def connect(dsn: str, timeout: float, abort: ProbeAbort) -> psycopg2.extensions.connection:
    """A connection bounded by ``timeout``: libpq's connect_timeout (whole seconds, at least 2)
    and the server's statement_timeout."""
    params = psycopg2.extensions.parse_dsn(dsn)
    options = (params.get("options", "") + f" -c statement_timeout={max(1, int(timeout * 1000))}").strip()
    extra: dict[str, Any] = {"connect_timeout": max(2, math.ceil(timeout)), "options": options}
    if "application_name" not in params:
        extra["application_name"] = "haflowd"
    conn: psycopg2.extensions.connection = psycopg2.connect(dsn, **extra)
    conn.autocommit = True
    if not abort.attach(conn):
        conn.close()
        raise psycopg2.OperationalError("probe abandoned")
    return conn


def _num(v: Any) -> Any:
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    return v


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def query_node(conn: psycopg2.extensions.connection, name: str, checked_at: float) -> topo.NodeProbe:
    with conn.cursor() as cur:
        cur.execute("""
            SELECT pg_is_in_recovery(),
                   (SELECT system_identifier FROM pg_control_system()),
                   extract(epoch FROM now())::float8,
                   current_setting('default_transaction_read_only') = 'on'""")
        row = cur.fetchone()
        assert row is not None
        in_recovery, sysid, server_now, read_only = row
        if not in_recovery:
            cur.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, pg_walfile_name(pg_current_wal_lsn())")
            lsn_row = cur.fetchone()
            assert lsn_row is not None
            cur.execute("SELECT application_name, state, replay_lsn - '0/0'::pg_lsn FROM pg_stat_replication")
            replicas = tuple(topo.Replica(a or "", s or "", _int(_num(r))) for a, s, r in cur.fetchall())
            return topo.NodeProbe(
                name=name, up=True, checked_at=checked_at, in_recovery=False, read_only=bool(read_only),
                timeline=topo.timeline_of_walfile(lsn_row[1]), system_identifier=_int(sysid),
                current_lsn=_int(_num(lsn_row[0])), server_now=_float(server_now), replicas=replicas,
            )
        cur.execute("""
            SELECT pg_last_wal_receive_lsn() - '0/0'::pg_lsn,
                   pg_last_wal_replay_lsn() - '0/0'::pg_lsn,
                   extract(epoch FROM pg_last_xact_replay_timestamp())::float8,
                   pg_is_wal_replay_paused(),
                   (SELECT timeline_id FROM pg_control_checkpoint())""")
        sb = cur.fetchone()
        assert sb is not None
        cur.execute("SELECT status, received_tli FROM pg_stat_wal_receiver")
        wr = cur.fetchone()
        receiver_status, received_tli = (wr[0], wr[1]) if wr else (None, None)
        return topo.NodeProbe(
            name=name, up=True, checked_at=checked_at, in_recovery=True, read_only=bool(read_only),
            timeline=_int(received_tli) or _int(sb[4]), system_identifier=_int(sysid),
            receive_lsn=_int(_num(sb[0])), replay_lsn=_int(_num(sb[1])), last_replay_at=_float(sb[2]),
            server_now=_float(server_now), receiver_status=receiver_status, replay_paused=bool(sb[3]),
        )


SYNCS_SQL = """
    SELECT s.name, s.status, extract(epoch FROM now())::float8, extract(epoch FROM s.cdate)::float8,
           extract(epoch FROM g.ended)::float8, extract(epoch FROM e.ended)::float8,
           extract(epoch FROM b.ended)::float8, b.status, extract(epoch FROM r.started)::float8,
           extract(epoch FROM s.overdue)::float8, extract(epoch FROM s.expired)::float8
    FROM bucardo.sync s
    LEFT JOIN LATERAL (SELECT ended FROM bucardo.syncrun
                       WHERE sync = s.name AND lastgood ORDER BY ended DESC LIMIT 1) g ON true
    LEFT JOIN LATERAL (SELECT ended FROM bucardo.syncrun
                       WHERE sync = s.name AND lastempty ORDER BY ended DESC LIMIT 1) e ON true
    LEFT JOIN LATERAL (SELECT ended, status FROM bucardo.syncrun
                       WHERE sync = s.name AND lastbad ORDER BY ended DESC LIMIT 1) b ON true
    LEFT JOIN LATERAL (SELECT started FROM bucardo.syncrun
                       WHERE sync = s.name AND ended IS NULL ORDER BY started LIMIT 1) r ON true
    ORDER BY s.name"""


def query_syncs(conn: psycopg2.extensions.connection) -> topo.SyncsProbe:
    with conn.cursor() as cur:
        cur.execute(SYNCS_SQL)
        rows = cur.fetchall()
    return topo.SyncsProbe(tuple(
        topo.SyncState(name=r[0], status=r[1], now=float(r[2]), created_at=float(r[3]),
                       last_good_at=_float(r[4]), last_empty_at=_float(r[5]), last_bad_at=_float(r[6]),
                       last_bad_status=r[7], running_since=_float(r[8]),
                       overdue=_float(r[9]) or 0.0, expired=_float(r[10]) or 0.0)
        for r in rows))


def _error_text(e: BaseException, dsn: str) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    try:
        psycopg2.extensions.parse_dsn(dsn)
        parsed = True
    except psycopg2.Error:
        parsed = False
    return topo.scrub(text, dsn, parsed=parsed)


def probe_node(node: PostgresNode, timeout: float, abort: ProbeAbort) -> topo.NodeProbe:
    """Blocking: run in a worker thread. Never raises; a failure is a node that is down."""
    dsn = node.dsn.reveal()
    checked_at = time.time()
    try:
        conn = connect(dsn, timeout, abort)
        try:
            return query_node(conn, node.name, checked_at)
        finally:
            abort.close()
    except Exception as e:  # psycopg2.Error, and anything odd: a result, never a crash
        return topo.NodeProbe(name=node.name, up=False, error=_error_text(e, dsn), checked_at=checked_at)


def probe_syncs(dsn_secret: Secret, timeout: float, abort: ProbeAbort) -> topo.SyncsProbe:
    dsn = dsn_secret.reveal()
    try:
        conn = connect(dsn, timeout, abort)
        try:
            return query_syncs(conn)
        finally:
            abort.close()
    except Exception as e:
        return topo.SyncsProbe(error=_error_text(e, dsn))


NodeProber = Callable[[PostgresNode, float, ProbeAbort], topo.NodeProbe]
SyncsProber = Callable[[Secret, float, ProbeAbort], topo.SyncsProbe]


# --------------------------------------------------------------------------- the checker


@dataclass(frozen=True)
class Round:
    assessment: topo.Assessment
    checked_at: float  # wall
    checked_mono: float
    duration: float


class PostgresChecker(Checker):
    name = CHECK_NAME

    def __init__(self, cfg: PostgresConfig, registry: CheckRegistry, clock: Clock,
                 node_prober: NodeProber = probe_node, syncs_prober: SyncsProber = probe_syncs) -> None:
        super().__init__(registry, clock)
        self.cfg = cfg
        self.node_prober = node_prober
        self.syncs_prober = syncs_prober
        self.last: Round | None = None
        self._inflight: dict[str, float] = {}  # key → monotonic start; written from worker threads
        self._inflight_lock = threading.Lock()

    # ------------------------------------------------------------------ probing

    async def run(self) -> None:
        while True:
            start = self.clock.monotonic()
            try:
                await self.probe_round()
            except Exception:  # a bug here must not end the checks (cancellation is not an Exception)
                log.exception("postgres_round_failed")
            await asyncio.sleep(max(0.0, start + self.cfg.interval - self.clock.monotonic()))

    def inflight(self) -> dict[str, float]:
        with self._inflight_lock:
            return dict(self._inflight)

    async def _bounded(self, key: str, fn: Callable[[ProbeAbort], Any], busy: Callable[[str], Any]) -> Any:
        """``fn`` in a worker thread, at most one per ``key``, waited for at most ``timeout``."""
        now = self.clock.monotonic()
        with self._inflight_lock:
            started = self._inflight.get(key)
            if started is None:
                self._inflight[key] = now
        if started is not None:
            return busy(f"still waiting on the previous probe (started {now - started:.1f}s ago, "
                        f"timeout {self.cfg.timeout:g}s)")
        abort = ProbeAbort()

        def work() -> Any:
            try:
                return fn(abort)
            finally:
                with self._inflight_lock:
                    self._inflight.pop(key, None)

        try:  # a budget of its own: hung servers cannot take the threads other users need
            return await workers.budget(workers.POSTGRES).call(work, timeout=self.cfg.timeout)
        except workers.WorkerBusy as e:  # refused before ``work`` ran: free its key here
            with self._inflight_lock:
                self._inflight.pop(key, None)
            return busy(str(e))
        except TimeoutError:
            abort.abort()
            return busy(f"no answer within {self.cfg.timeout:g}s")

    async def probe_round(self) -> Round:
        cfg = self.cfg
        t0 = self.clock.monotonic()
        wall = self.clock.wall()

        def node_task(node: PostgresNode) -> Any:
            return self._bounded(
                node.name, lambda abort: self.node_prober(node, cfg.timeout, abort),
                lambda why: topo.NodeProbe(name=node.name, up=False, error=why, checked_at=wall))

        tasks: list[Any] = [node_task(n) for n in cfg.nodes]
        bucardo = cfg.topology == topo.BUCARDO and cfg.bucardo_dsn is not None
        if bucardo:
            secret = cfg.bucardo_dsn
            assert secret is not None
            tasks.append(self._bounded(
                BUCARDO_KEY, lambda abort: self.syncs_prober(secret, cfg.timeout, abort),
                lambda why: topo.SyncsProbe(error=why)))
        results = await asyncio.gather(*tasks)
        probes: list[topo.NodeProbe] = list(results[: len(cfg.nodes)])
        syncs: topo.SyncsProbe | None = results[-1] if bucardo else None
        assessment = topo.assess(cfg.topology, probes, cfg.max_lag_bytes, syncs)
        end = self.clock.monotonic()
        rnd = Round(assessment, self.clock.wall(), end, end - t0)
        self._publish(rnd)
        return rnd

    def _publish(self, rnd: Round) -> None:
        a = rnd.assessment
        prev = self.last.assessment if self.last is not None else None
        self.last = rnd
        self.registry.set(CHECK_NAME, a.status, a.output, interval=self.cfg.interval)
        if prev is None or (prev.status, prev.split_brain, prev.primaries) != (a.status, a.split_brain, a.primaries):
            emit = {Status.PASSING: log.info, Status.WARNING: log.warning, Status.CRITICAL: log.error}[a.status]
            emit("postgres_status", status=a.status.label, output=a.output, split_brain=a.split_brain,
                 primaries=list(a.primaries), was=prev.status.label if prev else None)
        for v in a.nodes:
            old = prev.node(v.name) if prev is not None else None
            if old is None or (old.up, old.role) != (v.up, v.role):
                log.info("postgres_node", pg_node=v.name, up=v.up, role=v.role, error=v.error,
                         was_up=old.up if old else None, was_role=old.role if old else None)

    # ------------------------------------------------------------------ views

    def stale(self) -> bool:
        if self.last is None:
            return False
        return self.clock.monotonic() - self.last.checked_mono > STALE_AFTER_INTERVALS * self.cfg.interval

    def snapshot(self) -> dict[str, Any]:
        cfg = self.cfg
        base: dict[str, Any] = {"topology": cfg.topology, "local_node": cfg.local_node,
                                "max_lag_bytes": cfg.max_lag_bytes, "interval": cfg.interval}
        if self.last is None:
            return {"status": Status.CRITICAL.label, "output": "not checked yet", "split_brain": False,
                    "stale": False, "checked_at": None, "primary": None, **base,
                    "nodes": [{"name": n.name, "up": False, "role": None, "lag_bytes": None, "lag_seconds": None,
                               "timeline": None, "system_identifier": None, "error": "not checked yet",
                               "checked_at": None} for n in cfg.nodes]}
        a = self.last.assessment
        stale = self.stale()
        status, output = a.status, a.output
        if stale:
            age = self.clock.monotonic() - self.last.checked_mono
            status, output = Status.CRITICAL, f"stale: last checked {age:.0f}s ago; was: {a.output}"
        body: dict[str, Any] = {
            "status": status.label, "output": output, "split_brain": a.split_brain, "stale": stale,
            "checked_at": self.last.checked_at, "duration_s": round(self.last.duration, 3),
            "primary": a.primary, **base, "nodes": [v.to_json() for v in a.nodes],
        }
        if cfg.topology == topo.BUCARDO:
            body["syncs"] = [s.to_json() for s in a.syncs]
            body["syncs_error"] = a.syncs_error
        return body

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("haflowd_postgres_up", "1 when the node answered the last probe", labels=["node"])
        primary = GaugeMetricFamily("haflowd_postgres_is_primary", "1 when the node is out of recovery",
                                    labels=["node"])
        lag_b = GaugeMetricFamily("haflowd_postgres_replication_lag_bytes",
                                  "bytes of WAL the standby has not replayed yet", labels=["node"])
        lag_s = GaugeMetricFamily("haflowd_postgres_replication_lag_seconds",
                                  "seconds the standby's replay is behind (0 when caught up)", labels=["node"])
        tl = GaugeMetricFamily("haflowd_postgres_timeline", "the node's timeline", labels=["node"])
        split = GaugeMetricFamily("haflowd_postgres_split_brain", "1 when more than one primary is seen")
        checked = GaugeMetricFamily("haflowd_postgres_last_check_timestamp_seconds",
                                    "when the last probe round finished (UNIX seconds)")
        a = self.last.assessment if self.last is not None else None
        if a is None:
            for n in self.cfg.nodes:
                up.add_metric([n.name], 0)
        else:
            for v in a.nodes:
                up.add_metric([v.name], 1 if v.up else 0)
                primary.add_metric([v.name], 1 if v.role == "primary" else 0)
                if v.lag_bytes is not None:
                    lag_b.add_metric([v.name], v.lag_bytes)
                if v.lag_seconds is not None:
                    lag_s.add_metric([v.name], v.lag_seconds)
                if v.timeline is not None:
                    tl.add_metric([v.name], v.timeline)
        split.add_metric([], 1 if a is not None and a.split_brain else 0)
        if self.last is not None:
            checked.add_metric([], self.last.checked_at)
        yield from (up, primary, lag_b, lag_s, tl, split, checked)
        if a is not None and self.cfg.topology == topo.BUCARDO and self.cfg.bucardo_dsn is not None:
            sync = GaugeMetricFamily("haflowd_postgres_bucardo_sync_status",
                                     "a Bucardo sync: 0 passing, 1 warning, 2 critical", labels=["sync"])
            for s in a.syncs:
                sync.add_metric([s.name], int(s.status))
            yield sync

    # ------------------------------------------------------------------ verdicts

    @property
    def max_lag_bytes(self) -> int:
        return self.cfg.max_lag_bytes

    def _assessment(self) -> topo.Assessment | None:
        return self.last.assessment if self.last is not None else None

    def primary_verdict(self) -> topo.Verdict:
        """Is this host's node (``local_node``) the one primary, with no split brain, by the
        last round (a stale one is a no)? ``GET /postgres/primary`` is 200 or 503 from this."""
        return topo.primary_verdict(self._assessment(), self.cfg.local_node, self.stale())

    def replica_verdict(self, max_lag: int) -> topo.Verdict:
        """Is it a streaming standby within ``max_lag`` bytes? (``GET /postgres/replica``)"""
        return topo.replica_verdict(self._assessment(), self.cfg.local_node, max_lag, self.stale())

    def read_only_verdict(self, max_lag: int) -> topo.Verdict:
        """Is it the primary, or a standby within ``max_lag`` bytes? (``GET /postgres/read-only``)"""
        return topo.read_only_verdict(self._assessment(), self.cfg.local_node, max_lag, self.stale())
