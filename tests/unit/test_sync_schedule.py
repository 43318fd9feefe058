"""The sync core: triggers, coalescing, per-peer state and backoff, on a fake clock."""

from __future__ import annotations

import itertools
import random

import pytest

from haflowd.health import Status
from haflowd.sync.schedule import (
    FAILING,
    OK,
    PENDING,
    Outcome,
    PeerResult,
    ScheduleSettings,
    SyncSchedule,
    run_result,
)
from haflowd.testing import FakeClock

S = ScheduleSettings(interval=60.0, debounce=0.5, debounce_max=5.0, retry_initial=2.0, retry_max=300.0, jitter=0.1)
SYNCED = PeerResult(Outcome.SYNCED)
AWAY = PeerResult(Outcome.UNREACHABLE, "no answer from b:30865 within 1s")
REFUSED = PeerResult(Outcome.REFUSED, "connection to b:30865 refused")
HUNG = PeerResult(Outcome.TIMEOUT, "csync2 killed after 3s (hung)")


def make(peers: tuple[str, ...] = ("b", "c"), settings: ScheduleSettings = S, dynamic: bool = False,
         ) -> tuple[SyncSchedule, FakeClock]:
    clock = FakeClock()
    return SyncSchedule(clock, settings, peers, dynamic=dynamic, rng=random.Random(7)), clock


def settle(core: SyncSchedule) -> None:
    """Run the startup run with every peer synced."""
    plan = core.start_run()
    assert plan is not None and "startup" in plan.reasons
    core.finish_run({p: SYNCED for p in plan.peers})


def run_all(core: SyncSchedule, outcome: dict[str, PeerResult]) -> tuple[str, ...]:
    plan = core.start_run()
    assert plan is not None
    core.finish_run({p: outcome.get(p, SYNCED) for p in plan.peers})
    return plan.peers


# --------------------------------------------------------------------------- triggers


def test_startup_runs_at_once_against_every_peer() -> None:
    core, _ = make()
    assert core.wake_at() == pytest.approx(1000.0)
    plan = core.start_run()
    assert plan is not None
    assert plan.peers == ("b", "c") and plan.full and plan.reasons == ("startup",)


def test_nothing_due_after_the_startup_run_until_the_schedule() -> None:
    core, clock = make()
    settle(core)
    assert core.start_run() is None
    at = core.wake_at()
    assert at is not None and 1000 + 54 <= at <= 1000 + 66  # interval ±10 %
    clock.advance(at - clock.monotonic())
    plan = core.start_run()
    assert plan is not None and plan.reasons == ("schedule",) and plan.peers == ("b", "c")


def test_schedule_is_jittered_so_nodes_drift_apart() -> None:
    starts = set()
    for seed in range(20):
        core = SyncSchedule(FakeClock(), S, ("b",), rng=random.Random(seed))
        plan = core.start_run()
        assert plan is not None
        core.finish_run({"b": SYNCED})
        at = core.wake_at()
        assert at is not None
        starts.add(round(at, 3))
    assert len(starts) > 10


@pytest.mark.parametrize(
    ("events", "expected_at"),
    [
        ([0.0], 0.5),                                 # one change: run after debounce
        ([0.0, 0.3], 0.8),                            # quiet period restarts with each change
        ([0.0, 0.3, 0.6, 0.9], 1.4),
        ([i * 0.4 for i in range(13)], 5.0),          # a steady stream: at the latest debounce_max
    ],
)
def test_watch_is_debounced(events: list[float], expected_at: float) -> None:
    core, clock = make()
    settle(core)
    t0 = clock.monotonic()
    for t in events:
        clock.advance(t0 + t - clock.monotonic())
        assert core.start_run() is None
        core.file_changed()
    assert core.wake_at() == pytest.approx(t0 + expected_at)
    clock.advance(t0 + expected_at - clock.monotonic())
    plan = core.start_run()
    assert plan is not None and plan.reasons == ("watch",)


def test_triggers_during_a_run_coalesce_into_one_follow_up() -> None:
    core, clock = make()
    settle(core)
    core.file_changed()
    clock.advance(0.5)
    plan = core.start_run()
    assert plan is not None
    for _ in range(50):  # a storm of changes, requests and a schedule while csync2 runs
        core.file_changed()
        core.request()
        clock.advance(0.1)
        assert core.start_run() is None  # one run at a time
    clock.advance(61)
    core.finish_run({"b": SYNCED, "c": SYNCED})
    follow = core.start_run()
    assert follow is not None and follow.manual
    assert set(follow.reasons) == {"manual", "watch", "schedule"}
    core.finish_run({"b": SYNCED, "c": SYNCED})
    assert core.start_run() is None  # and nothing more


def test_request_runs_now_even_against_peers_in_backoff() -> None:
    core, clock = make()
    settle(core)
    core.request()
    plan = core.start_run()
    assert plan is not None and plan.manual
    core.finish_run({"b": AWAY, "c": SYNCED})
    assert core.peers["b"].retry_at is not None
    clock.advance(0.1)
    core.request()
    plan = core.start_run()
    assert plan is not None and plan.peers == ("c", "b")  # good standing first, then the retry


# --------------------------------------------------------------------------- per-peer state


@pytest.mark.parametrize(
    ("result", "state"),
    [
        (SYNCED, OK),
        (PeerResult(Outcome.CONFLICT, "1 file(s) in conflict", ("%dags%/x.py",)), OK),
        (AWAY, PENDING),
        (PeerResult(Outcome.DOWN), PENDING),
        (REFUSED, FAILING),
        (PeerResult(Outcome.ERROR, "csync2 exited with 1: ..."), FAILING),
        (HUNG, FAILING),
    ],
)
def test_outcome_to_state(result: PeerResult, state: str) -> None:
    core, _ = make(("b",))
    plan = core.start_run()
    assert plan is not None
    core.finish_run({"b": result})
    p = core.peers["b"]
    assert p.state == state
    if state == OK:
        assert p.attempts == 0 and p.last_success is not None and p.retry_at is None
    else:
        assert p.attempts == 1 and p.last_success is None and p.last_error
        assert (p.retry_at is None) == (result.outcome == Outcome.DOWN)


def test_a_failing_peer_backs_off_while_the_others_sync_on_every_trigger() -> None:
    core, clock = make(settings=ScheduleSettings(interval=1000, debounce=0.1, debounce_max=1, retry_initial=2,
                                                 retry_max=30, jitter=0.1))
    settle(core)
    retries: list[float] = []
    attempts: list[int] = []
    c_runs = 0
    core.file_changed()
    end = clock.monotonic() + 200
    while clock.monotonic() < end:
        plan = core.start_run()
        if plan is None:
            if int(clock.monotonic() * 10) % 7 == 0:
                core.file_changed()  # the DAG folder keeps changing
            clock.advance(0.1)
            continue
        if "c" in plan.peers:
            c_runs += 1
        if "b" in plan.peers:
            retries.append(clock.monotonic())
        core.finish_run({p: (AWAY if p == "b" else SYNCED) for p in plan.peers})
        if "b" in plan.peers:
            attempts.append(core.peers["b"].attempts)
    gaps = [b - a for a, b in itertools.pairwise(retries)]
    assert attempts == list(range(1, len(attempts) + 1))
    growing = [g for g in gaps if g < 27]  # below the cap (30 s -10 %)
    assert growing == sorted(growing) and len(growing) >= 3
    assert 1.8 <= gaps[0] <= 4.5
    assert all(g <= 30.2 for g in gaps)
    assert c_runs > 100  # c kept syncing
    assert core.peers["c"].state == OK and core.peers["b"].state == PENDING


@pytest.mark.parametrize(
    ("attempts", "lo", "hi"),
    [(1, 1.8, 2.2), (2, 3.6, 4.4), (3, 7.2, 8.8), (8, 230.4, 281.6), (9, 270.0, 300.0), (50, 270.0, 300.0),
     (10_000, 270.0, 300.0)],
)
def test_backoff_doubles_with_jitter_up_to_the_max(attempts: int, lo: float, hi: float) -> None:
    core, _ = make()
    for _ in range(50):
        assert lo <= core.backoff(attempts) <= hi


def test_retry_runs_the_failing_peer_on_its_own() -> None:
    core, clock = make()
    plan = core.start_run()
    assert plan is not None
    core.finish_run({"b": REFUSED, "c": SYNCED})
    at = core.peers["b"].retry_at
    assert at is not None
    clock.advance(at - clock.monotonic())
    plan = core.start_run()
    assert plan is not None
    assert plan.peers == ("b",) and plan.reasons == ("retry",) and not plan.full
    core.finish_run({"b": SYNCED})
    assert core.peers["b"].state == OK and core.peers["b"].attempts == 0


def test_gossip_dead_peer_is_not_tried_and_is_retried_at_once_when_alive() -> None:
    core, clock = make()
    core.set_members({"b": "alive", "c": "alive"})
    settle(core)
    core.set_members({"b": "dead", "c": "alive"})
    assert core.peers["b"].state == PENDING
    core.file_changed()
    clock.advance(1)
    plan = core.start_run()
    assert plan is not None and plan.peers == ("c",) and plan.down == ("b",)
    core.finish_run({"c": SYNCED})
    assert core.peers["b"].retry_at is None  # no retries against a dead node
    clock.advance(500)
    for _ in range(10):
        plan = core.start_run()
        if plan is not None:
            assert "b" not in plan.peers
            core.finish_run({p: SYNCED for p in plan.peers})
        clock.advance(60)
    core.set_members({"b": "alive", "c": "alive"})
    plan = core.start_run()
    assert plan is not None and plan.peers[-1] == "b" and "alive" in plan.reasons
    core.finish_run({p: SYNCED for p in plan.peers})
    assert core.peers["b"].state == OK


def test_alive_again_cuts_a_long_backoff_short() -> None:
    core, clock = make(settings=ScheduleSettings(interval=10_000, retry_initial=2, retry_max=300))
    core.set_members({"b": "alive", "c": "alive"})
    plan = core.start_run()
    assert plan is not None
    core.finish_run({"b": AWAY, "c": SYNCED})
    for _ in range(6):  # attempts 2..7: the next retry is minutes away
        clock.advance(core.peers["b"].retry_at - clock.monotonic())  # type: ignore[operator]
        plan = core.start_run()
        assert plan is not None and plan.peers == ("b",)
        core.finish_run({"b": AWAY})
    assert core.peers["b"].retry_at - clock.monotonic() > 60  # type: ignore[operator]
    core.set_members({"b": "suspect", "c": "alive"})
    core.set_members({"b": "dead", "c": "alive"})
    core.set_members({"b": "alive", "c": "alive"})
    plan = core.start_run()
    assert plan is not None and "b" in plan.peers and "alive" in plan.reasons


def test_suspect_is_still_tried() -> None:
    core, _ = make()
    core.set_members({"b": "suspect", "c": "alive"})
    plan = core.start_run()
    assert plan is not None and plan.peers == ("b", "c")


def test_dynamic_peers_follow_gossip_membership() -> None:
    core, _ = make(peers=(), dynamic=True)
    assert core.peers == {}
    core.set_members({"b": "alive"})
    assert list(core.peers) == ["b"]
    settle(core)
    core.set_members({"b": "alive", "c": "alive"})
    plan = core.start_run()
    assert plan is not None and plan.peers == ("c",)  # a new member is synced at once
    core.finish_run({"c": SYNCED})
    core.set_members({"c": "alive"})
    assert list(core.peers) == ["c"]


def test_static_peers_ignore_other_members() -> None:
    core, _ = make(peers=("b",))
    core.set_members({"b": "alive", "x": "alive"})
    assert list(core.peers) == ["b"]


# --------------------------------------------------------------------------- results and health


@pytest.mark.parametrize(
    ("outcomes", "result"),
    [
        ([], "skipped"),
        ([Outcome.DOWN], "skipped"),
        ([Outcome.SYNCED, Outcome.SYNCED], "ok"),
        ([Outcome.SYNCED, Outcome.CONFLICT], "conflict"),
        ([Outcome.SYNCED, Outcome.UNREACHABLE], "partial"),
        ([Outcome.REFUSED, Outcome.ERROR], "failed"),
        ([Outcome.SYNCED, Outcome.TIMEOUT], "timeout"),
    ],
)
def test_run_result(outcomes: list[Outcome], result: str) -> None:
    assert run_result([PeerResult(o) for o in outcomes]) == result


def test_runs_are_counted_by_result() -> None:
    core, _ = make()
    settle(core)
    core.request()
    run_all(core, {"b": AWAY})
    assert core.runs["ok"] == 1 and core.runs["partial"] == 1
    assert core.last_result == "partial"


def test_pending_counts_come_from_csync2() -> None:
    core, _ = make()
    plan = core.start_run()
    assert plan is not None
    core.finish_run({"b": AWAY, "c": SYNCED}, pending={"b": 7})
    assert core.peers["b"].pending_files == 7 and core.peers["c"].pending_files == 0


@pytest.mark.parametrize(
    ("down_for", "status"),
    [(10.0, Status.PASSING), (299.0, Status.PASSING), (301.0, Status.WARNING), (1801.0, Status.CRITICAL)],
)
def test_health_escalates_with_time_since_the_last_success(down_for: float, status: Status) -> None:
    core, clock = make()
    settle(core)
    clock.advance(1)
    core.request()
    run_all(core, {"b": REFUSED})
    clock.advance(down_for - 1)
    got, output = core.health(warn_after=300, critical_after=1800)
    assert got == status, output
    assert "b failing" in output or "b: no successful sync" in output


def test_a_gone_peer_does_not_raise_the_sync_check() -> None:
    core, clock = make()
    core.set_members({"b": "alive", "c": "alive"})
    settle(core)
    core.set_members({"b": "dead", "c": "alive"})
    clock.advance(10_000)
    status, output = core.health(300, 1800)
    assert status == Status.PASSING and "b pending" in output


def test_never_synced_peer_counts_from_when_it_was_first_seen() -> None:
    core, clock = make()
    plan = core.start_run()
    assert plan is not None
    core.finish_run({"b": AWAY, "c": SYNCED})
    clock.advance(400)
    assert core.health(300, 1800)[0] == Status.WARNING


def test_conflicts_are_a_warning_with_the_file_names() -> None:
    core, _ = make()
    plan = core.start_run()
    assert plan is not None
    core.finish_run({"b": PeerResult(Outcome.CONFLICT, "lost", ("%dags%/a.py",)), "c": SYNCED})
    status, output = core.health(300, 1800)
    assert status == Status.WARNING and "%dags%/a.py (with b)" in output
    core.request()
    run_all(core, {})
    assert core.health(300, 1800)[0] == Status.PASSING  # gone once a run to b has none


def test_no_peers_is_a_warning() -> None:
    core, _ = make(peers=())
    assert core.health(300, 1800)[0] == Status.WARNING


# --------------------------------------------------------------------------- persistence


def test_state_survives_a_restart_with_its_backoff() -> None:
    core, clock = make()
    plan = core.start_run()
    assert plan is not None
    core.finish_run({"b": AWAY, "c": SYNCED}, pending={"b": 3})
    for _ in range(3):
        clock.advance(core.peers["b"].retry_at - clock.monotonic())  # type: ignore[operator]
        run_all(core, {"b": AWAY})
    saved = core.to_state()
    wait = core.peers["b"].retry_at - clock.monotonic()  # type: ignore[operator]

    clock2 = FakeClock(start=5.0, wall_offset=clock.wall() - 5.0 + 1.0)  # a new boot, one second later
    again = SyncSchedule(clock2, S, ("b", "c"), rng=random.Random(1))
    again.restore(saved)
    b = again.peers["b"]
    assert (b.state, b.attempts, b.pending_files) == (PENDING, 4, 3)
    assert b.last_error == AWAY.detail
    assert b.retry_at == pytest.approx(5.0 + wait - 1.0, abs=0.01)
    assert again.peers["c"].state == OK and again.peers["c"].last_success == core.peers["c"].last_success
    plan = again.start_run()
    assert plan is not None and plan.peers == ("c",)  # b keeps its backoff


@pytest.mark.parametrize(
    "data",
    [{}, {"peers": []}, {"peers": {"b": "x"}}, {"peers": {"b": {"state": "bogus", "attempts": -1}}},
     {"last_run": "yesterday", "runs": {"ok": "many"}}],
)
def test_restore_ignores_garbage(data: dict[str, object]) -> None:
    core, _ = make()
    core.restore(data)
    assert core.peers["b"].state == PENDING and core.peers["b"].attempts == 0


def test_restore_drops_peers_no_longer_configured() -> None:
    core, _ = make(peers=("b",))
    core.restore({"peers": {"z": {"state": "ok"}}})
    assert list(core.peers) == ["b"]


def test_files_left_for_a_peer_outside_the_run_are_synced_at_once() -> None:
    """A retry run against b only; csync2 -M then counts a file for c (a peer's
    conflicting update re-marked it here): c is run now, not at the next schedule."""
    core, clock = make()
    settle(core)
    clock.advance(1)
    core.request()
    run_all(core, {"b": REFUSED})
    clock.advance(3)  # b's retry (2s +-10%) is due; the schedule (60s) is not
    plan = core.start_run()
    assert plan is not None and plan.peers == ("b",)
    core.finish_run({"b": SYNCED}, pending={"c": 1})
    follow = core.start_run()
    assert follow is not None and follow.peers == ("c",), follow
    core.finish_run({"c": SYNCED}, pending={})
    assert core.start_run() is None  # nothing left: no loop


def test_a_file_still_in_conflict_does_not_cause_a_loop_of_runs() -> None:
    core, clock = make()
    settle(core)
    clock.advance(1)
    core.request()
    plan = core.start_run()
    assert plan is not None
    lost = PeerResult(Outcome.CONFLICT, "1 file(s) in conflict: %dags%/x.py", ("%dags%/x.py",))
    core.finish_run({"b": lost, "c": SYNCED}, pending={"b": 1})
    assert core.start_run() is None
