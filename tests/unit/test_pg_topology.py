"""PostgreSQL topology decisions: probes in, status / split brain / endpoint verdicts out. Pure, tables."""

from __future__ import annotations

import pytest

from haflowd.checks import pg_topology as t
from haflowd.checks.pg_topology import NodeProbe, Replica, SyncsProbe, SyncState
from haflowd.health import Status

P, W, C = Status.PASSING, Status.WARNING, Status.CRITICAL
SYS = 7000000000000000001
MiB = 2**20


def primary(name: str = "pg1", lsn: int = 100 * MiB, tl: int = 1, sysid: int = SYS,
            replicas: tuple[Replica, ...] = (), read_only: bool = False) -> NodeProbe:
    return NodeProbe(name=name, up=True, in_recovery=False, timeline=tl, system_identifier=sysid,
                     current_lsn=lsn, server_now=5000.0, replicas=replicas, checked_at=1.0, read_only=read_only)


def standby(name: str = "pg2", replay: int = 100 * MiB, receive: int | None = None, tl: int = 1,
            sysid: int = SYS, receiver: str | None = "streaming", last_replay_at: float | None = 4000.0,
            paused: bool = False) -> NodeProbe:
    return NodeProbe(name=name, up=True, in_recovery=True, timeline=tl, system_identifier=sysid,
                     receive_lsn=replay if receive is None else receive, replay_lsn=replay,
                     last_replay_at=last_replay_at, server_now=5000.0, receiver_status=receiver,
                     replay_paused=paused, checked_at=1.0)


def down(name: str, error: str = "connection refused") -> NodeProbe:
    return NodeProbe(name=name, up=False, error=error, checked_at=1.0)


# =========================================================================== streaming: status and output


@pytest.mark.parametrize(
    ("probes", "status", "split", "primary_name", "output"),
    [
        pytest.param([primary(), standby()], P, False, "pg1",
                     "pg1 primary (timeline 1), pg2 streaming (lag 0 B, 0.0s)", id="healthy"),
        pytest.param([primary(), standby(), standby("pg3")], P, False, "pg1", "pg3 streaming", id="two-standbys"),
        pytest.param([primary()], P, False, "pg1", "pg1 primary (timeline 1)", id="primary-alone-configured"),
        pytest.param([primary(), down("pg2")], W, False, "pg1", "pg2 is down (connection refused)",
                     id="standby-down"),
        pytest.param([primary(), standby(receiver=None)], W, False, "pg1",
                     "standby pg2 is not streaming (wal receiver: none)", id="standby-not-streaming"),
        pytest.param([primary(), standby(receiver="waiting")], W, False, "pg1",
                     "standby pg2 is not streaming (wal receiver: waiting)", id="receiver-waiting"),
        pytest.param([primary(lsn=100 * MiB), standby(replay=80 * MiB)], W, False, "pg1",
                     "standby pg2 is 20.0 MiB behind (max 16.0 MiB)", id="over-max-lag"),
        pytest.param([primary(lsn=100 * MiB), standby(replay=90 * MiB)], P, False, "pg1",
                     "pg2 streaming (lag 10.0 MiB, 1000.0s)", id="within-max-lag"),
        pytest.param([primary(), standby(sysid=SYS + 1)], W, False, "pg1",
                     "standby pg2 is of another system", id="other-system"),
        pytest.param([primary(tl=2), standby(tl=1, receiver=None)], W, False, "pg1",
                     "standby pg2 is not streaming (timeline 1, primary's 2)", id="old-timeline-not-streaming"),
        pytest.param([down("pg1"), standby()], C, False, None, "no primary: pg1 down (connection refused), pg2 standby",
                     id="primary-down"),
        pytest.param([down("pg1"), down("pg2", "timeout")], C, False, None,
                     "no primary: pg1 down (connection refused), pg2 down (timeout)", id="all-down"),
        pytest.param([standby("pg1"), standby("pg2")], C, False, None, "no primary: pg1 standby, pg2 standby",
                     id="two-standbys-no-primary"),
        pytest.param([primary(tl=1), primary("pg2", tl=2)], C, True, None,
                     "split brain: pg1 and pg2 are both primary (timelines 1, 2)", id="split-brain-promoted"),
        pytest.param([primary(), primary("pg2"), primary("pg3", tl=3)], C, True, None,
                     "split brain: pg1, pg2 and pg3 are all primary (timelines 1, 1, 3)", id="three-primaries"),
        pytest.param([primary(tl=2), standby(tl=3)], C, True, None,
                     "split brain: standby pg2 is on timeline 3, later than primary pg1's 2", id="diverged-timeline"),
        pytest.param([primary(tl=2), standby(tl=3, sysid=SYS + 1)], W, False, "pg1", "another system",
                     id="later-timeline-other-system-is-not-split-brain"),
        pytest.param([primary(tl=2), standby(tl=2)], P, False, "pg1", "pg1 primary (timeline 2)",
                     id="standby-followed-the-promotion"),
        pytest.param([primary("pg2", tl=2), down("pg1")], W, False, "pg2", "pg1 is down",
                     id="after-failover-old-primary-gone"),
        pytest.param([down("pg1", "still waiting on the previous probe"), standby()], C, False, None,
                     "no primary: pg1 down (still waiting on the previous probe), pg2 standby", id="hung-primary"),
    ],
)
def test_streaming(probes: list[NodeProbe], status: Status, split: bool, primary_name: str | None,
                   output: str) -> None:
    a = t.assess("streaming", probes, max_lag=16 * MiB)
    assert a.status == status, a.output
    assert a.split_brain is split
    assert a.primary == primary_name
    assert output in a.output


def test_streaming_problems_are_all_named() -> None:
    a = t.assess_streaming([primary(), down("pg2"), standby("pg3", receiver=None)], 16 * MiB)
    assert a.status == W
    assert a.output == "pg2 is down (connection refused); standby pg3 is not streaming (wal receiver: none)"


def test_split_brain_also_names_other_problems() -> None:
    a = t.assess_streaming([primary(), primary("pg2", tl=2), down("pg3")], 16 * MiB)
    assert a.output.startswith("split brain: pg1 and pg2 are both primary (timelines 1, 2)")
    assert "pg3 is down" in a.output
    assert a.primaries == ("pg1", "pg2")


def test_streaming_seen_by_the_primary_counts() -> None:
    """A standby whose own receiver status is unreadable (no pg_monitor) but which the primary
    lists as streaming is streaming."""
    rows = (Replica("pg2", "streaming", 100 * MiB),)
    a = t.assess_streaming([primary(replicas=rows), standby(receiver=None)], 16 * MiB)
    assert a.status == P and a.node("pg2").streaming is True  # type: ignore[union-attr]


def test_node_views() -> None:
    a = t.assess_streaming([primary(lsn=0x3000060), standby(replay=0x3000000, receive=0x3000060),
                            down("pg3")], 16 * MiB)
    pg1, pg2, pg3 = a.nodes
    assert (pg1.role, pg2.role, pg3.role) == ("primary", "standby", None)
    assert (pg1.lag_bytes, pg2.lag_bytes, pg3.lag_bytes) == (None, 0x60, None)
    assert pg2.lag_seconds == 1000.0
    j = pg2.to_json()
    assert j["system_identifier"] == str(SYS) and j["replay_lsn"] == "0/3000000" and j["receive_lsn"] == "0/3000060"
    assert {"name", "up", "role", "lag_bytes", "lag_seconds", "timeline", "system_identifier", "error",
            "checked_at"} <= set(j)
    assert pg3.to_json()["error"] == "connection refused" and pg3.to_json()["up"] is False


# =========================================================================== lag


@pytest.mark.parametrize(
    ("primary_lsn", "replay", "receive", "last_replay_at", "expected"),
    [
        pytest.param(100, 100, 100, 10.0, 0.0, id="idle-primary-caught-up-is-not-lag"),
        pytest.param(100, 100, 100, None, 0.0, id="caught-up-never-replayed-a-transaction"),
        pytest.param(100, 120, 120, 10.0, 0.0, id="standby-read-after-more-writes"),
        pytest.param(120, 100, 100, 4990.0, 10.0, id="received-all-it-got-but-primary-ahead"),
        pytest.param(120, 100, 120, 4900.0, 100.0, id="replay-behind-receive"),
        pytest.param(120, 100, 120, None, None, id="behind-with-no-replayed-transaction"),
        pytest.param(None, 100, 100, 4000.0, 1000.0, id="primary-unknown"),
        pytest.param(120, 100, 120, 5001.0, 0.0, id="clock-skew-never-negative"),
    ],
)
def test_lag_seconds(primary_lsn: int | None, replay: int, receive: int, last_replay_at: float | None,
                     expected: float | None) -> None:
    s = standby(replay=replay, receive=receive, last_replay_at=last_replay_at)
    assert t.lag_seconds(primary_lsn, s) == expected


@pytest.mark.parametrize(
    ("primary_lsn", "replay", "expected"),
    [(100, 100, 0), (100, 40, 60), (100, 140, 0), (None, 100, None), (100, None, None)],
)
def test_lag_bytes(primary_lsn: int | None, replay: int | None, expected: int | None) -> None:
    assert t.lag_bytes(primary_lsn, replay) == expected


# =========================================================================== endpoint verdicts

HEALTHY = t.assess_streaming([primary(lsn=100 * MiB), standby(replay=99 * MiB)], 16 * MiB)
SPLIT = t.assess_streaming([primary(), primary("pg2", tl=2)], 16 * MiB)
NO_PRIMARY = t.assess_streaming([down("pg1"), standby()], 16 * MiB)
NOT_STREAMING = t.assess_streaming([primary(), standby(receiver=None)], 16 * MiB)
STANDBY_DOWN = t.assess_streaming([primary(), down("pg2")], 16 * MiB)
BUCARDO = t.assess_bucardo([primary(), primary("pg2", sysid=SYS + 1)], None)
BUCARDO_RO = t.assess_bucardo([primary(), primary("pg2", read_only=True)], None)


@pytest.mark.parametrize(
    ("a", "local", "stale", "max_lag", "primary_ok", "replica_ok", "read_only_ok"),
    [
        pytest.param(HEALTHY, "pg1", False, 16 * MiB, True, False, True, id="healthy-primary"),
        pytest.param(HEALTHY, "pg2", False, 16 * MiB, False, True, True, id="healthy-standby"),
        pytest.param(HEALTHY, "pg2", False, 0, False, False, False, id="standby-lag-0"),
        pytest.param(HEALTHY, "pg2", False, MiB, False, True, True, id="standby-lag-exactly-max"),
        pytest.param(HEALTHY, "pg2", False, MiB - 1, False, False, False, id="standby-lag-one-over"),
        pytest.param(HEALTHY, "pg1", True, 16 * MiB, False, False, False, id="stale-primary"),
        pytest.param(HEALTHY, "pg2", True, 16 * MiB, False, False, False, id="stale-standby"),
        pytest.param(HEALTHY, None, False, 16 * MiB, False, False, False, id="no-local-node"),
        pytest.param(HEALTHY, "pg9", False, 16 * MiB, False, False, False, id="unknown-local-node"),
        pytest.param(None, "pg1", False, 16 * MiB, False, False, False, id="not-checked-yet"),
        pytest.param(SPLIT, "pg1", False, 16 * MiB, False, False, False, id="split-brain-old-primary"),
        pytest.param(SPLIT, "pg2", False, 16 * MiB, False, False, False, id="split-brain-promoted"),
        pytest.param(NO_PRIMARY, "pg2", False, 16 * MiB, False, False, False, id="standby-without-primary"),
        pytest.param(NO_PRIMARY, "pg1", False, 16 * MiB, False, False, False, id="down-node"),
        pytest.param(NOT_STREAMING, "pg2", False, 16 * MiB, False, False, False, id="standby-not-streaming"),
        pytest.param(STANDBY_DOWN, "pg1", False, 16 * MiB, True, False, True, id="primary-with-standby-down"),
        pytest.param(BUCARDO, "pg1", False, 16 * MiB, True, False, True, id="bucardo-writable"),
        pytest.param(BUCARDO_RO, "pg2", False, 16 * MiB, False, False, False, id="bucardo-read-only"),
    ],
)
def test_verdicts(a: t.Assessment | None, local: str | None, stale: bool, max_lag: int, primary_ok: bool,
                  replica_ok: bool, read_only_ok: bool) -> None:
    assert t.primary_verdict(a, local, stale).ok is primary_ok
    assert t.replica_verdict(a, local, max_lag, stale).ok is replica_ok
    assert t.read_only_verdict(a, local, max_lag, stale).ok is read_only_ok


@pytest.mark.parametrize(
    ("verdict", "reason"),
    [
        (t.primary_verdict(HEALTHY, "pg2"), "pg2 is not the primary (standby)"),
        (t.primary_verdict(SPLIT, "pg1"), "split brain: split brain: pg1 and pg2 are both primary"),
        (t.primary_verdict(NO_PRIMARY, "pg1"), "pg1 is down (connection refused)"),
        (t.primary_verdict(HEALTHY, "pg1", stale=True), "stale"),
        (t.replica_verdict(HEALTHY, "pg2", 0), "pg2 is 1.0 MiB behind (more than 0 B)"),
        (t.replica_verdict(NO_PRIMARY, "pg2", MiB), "pg2's lag is unknown"),
        (t.replica_verdict(BUCARDO, "pg1", MiB), "bucardo topology"),
        (t.read_only_verdict(NOT_STREAMING, "pg2", MiB), "not the primary (standby); pg2 is a standby but not"),
    ],
)
def test_verdict_reasons(verdict: t.Verdict, reason: str) -> None:
    assert reason in verdict.reason


# =========================================================================== bucardo


def sync(**kw: object) -> SyncState:
    base: dict[str, object] = {"name": "s1", "status": "active", "now": 10_000.0, "created_at": 1_000.0}
    return SyncState(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("s", "status", "output"),
    [
        pytest.param(sync(), P, "sync s1 active, no run yet", id="new"),
        pytest.param(sync(last_good_at=9_990.0), P, "last good run 10s ago", id="good"),
        pytest.param(sync(last_empty_at=9_995.0), P, "last good run 5s ago", id="empty-run-is-good"),
        pytest.param(sync(last_good_at=9_990.0, running_since=9_999.0), P, "running for 1s", id="running"),
        pytest.param(sync(status="inactive"), W, "sync s1 is inactive", id="inactive"),
        pytest.param(sync(last_good_at=9_000.0, last_bad_at=9_990.0, last_bad_status="Failed : boom\\nDETAIL x"),
                     C, "sync s1 is failing: its last run failed 10s ago: Failed : boom DETAIL x", id="failing"),
        pytest.param(sync(last_good_at=9_995.0, last_bad_at=9_990.0), P, "last good run", id="recovered"),
        pytest.param(sync(last_good_at=9_000.0, overdue=600.0), W,
                     "sync s1 is stale: last good run 17m ago (overdue after 10m)", id="overdue"),
        pytest.param(sync(last_good_at=1_000.0, overdue=600.0, expired=3600.0), C,
                     "sync s1 is stale: last good run 2.5h ago (expired after 60m)", id="expired"),
        pytest.param(sync(overdue=600.0), W, "created, never run", id="never-ran-overdue"),
        pytest.param(sync(last_good_at=9_900.0, overdue=600.0), P, "last good run", id="within-overdue"),
    ],
)
def test_sync_states(s: SyncState, status: Status, output: str) -> None:
    v = t.assess_sync(s)
    assert v.status == status and output in v.output, v.output


def test_failing_sync_output_is_one_short_line() -> None:
    v = t.assess_sync(sync(last_bad_at=9_990.0, last_bad_status="x\n" * 500))
    assert "\n" not in v.output and len(v.output) < 300 and v.output.endswith("...")


@pytest.mark.parametrize(
    ("probes", "syncs", "status", "output"),
    [
        pytest.param([primary(), primary("pg2")], None, P, "every node writable: pg1, pg2", id="all-writable"),
        pytest.param([primary(), primary("pg2")], SyncsProbe((sync(last_good_at=9_999.0),)), P,
                     "every node writable: pg1, pg2; syncs ok: s1", id="with-syncs"),
        pytest.param([primary(), down("pg2")], None, W, "pg2 is down", id="one-down"),
        pytest.param([primary(), standby("pg2")], None, W, "pg2 is in recovery (read-only)", id="one-in-recovery"),
        pytest.param([primary(), primary("pg2", read_only=True)], None, W, "pg2 is read-only", id="one-read-only"),
        pytest.param([down("pg1"), down("pg2")], None, C, "pg1 is down", id="all-down"),
        pytest.param([primary(), primary("pg2")], SyncsProbe(error="connection refused"), W,
                     "cannot read Bucardo's syncs: connection refused", id="bucardo-db-down"),
        pytest.param([primary(), primary("pg2")], SyncsProbe((sync(status="inactive"),)), W,
                     "sync s1 is inactive", id="sync-inactive"),
        pytest.param([primary(), primary("pg2")], SyncsProbe((sync(last_bad_at=9_000.0),)), C,
                     "sync s1 is failing", id="sync-failing"),
        pytest.param([primary(), primary("pg2", tl=5, sysid=SYS + 9)], None, P, "every node writable",
                     id="timelines-and-systems-differ-by-design"),
    ],
)
def test_bucardo(probes: list[NodeProbe], syncs: SyncsProbe | None, status: Status, output: str) -> None:
    a = t.assess("bucardo", probes, 16 * MiB, syncs)
    assert a.status == status and output in a.output, a.output
    assert a.split_brain is False


# =========================================================================== text and secrets


@pytest.mark.parametrize(("lsn", "text"), [(0, "0/0"), (0x3000060, "0/3000060"), ((0x1A << 32) | 0xFF, "1A/FF")])
def test_lsn_round_trip(lsn: int, text: str) -> None:
    assert t.format_lsn(lsn) == text and t.parse_lsn(text) == lsn


def test_timeline_of_walfile() -> None:
    assert t.timeline_of_walfile("000000020000000000000003") == 2
    assert t.timeline_of_walfile("0000000A0000000000000003") == 10


@pytest.mark.parametrize(
    ("dsn", "message", "parsed", "must_not_contain"),
    [
        pytest.param("host=h password=hunter22", 'bad "host=h password=hunter22"', True, "hunter22", id="whole-dsn"),
        pytest.param("host=h password=hunter22", "auth failed for password=hunter22", True, "hunter22",
                     id="kv"),
        pytest.param("host=h password='a b\\'c'", "oops a b'c here", True, "a b'c", id="kv-quoted"),
        pytest.param("postgresql://u:s3cr%zzet@h/db", 'invalid percent-encoded token: "s3cr%zzet"', False,
                     "s3cr%zzet", id="uri-bad-percent"),
        pytest.param("postgresql://u:p%40ss@h/db", "login p@ss refused", True, "p@ss", id="uri-decoded"),
        pytest.param("host=h password=a b", 'missing "=" after "b" in connection info string', False, '"b"',
                     id="unparsed-fragment"),
        pytest.param("host=h password=x junk=1", "postgresql://u:other@h failed", True, "other",
                     id="uri-in-message"),
    ],
)
def test_scrub(dsn: str, message: str, parsed: bool, must_not_contain: str) -> None:
    out = t.scrub(message, dsn, parsed=parsed)
    assert must_not_contain not in out
    assert "***" in out


def test_scrub_keeps_libpq_option_names() -> None:
    out = t.scrub('invalid connection option "password"', "host=h password", parsed=False)
    assert out == 'invalid connection option "password"'
    assert t.scrub('could not connect to "h"', "host=h", parsed=True) == 'could not connect to "h"'
