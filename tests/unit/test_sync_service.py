"""The sync service's wiring, with a fake csync2: requests, coalescing, the watch filter,
state on disk, views. (Real csync2 is in tests/integration/test_sync.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from haflowd.config import SyncConfig
from haflowd.health import CheckRegistry, Status
from haflowd.sync.conflicts import TIE_MAX_ATTEMPTS, TIE_RULE, TieBudget
from haflowd.sync.runner import Csync2Command, ProbeResult
from haflowd.sync.schedule import Outcome, PeerResult
from haflowd.sync.service import SyncService, is_change


class FakeRunner:
    """csync2 as the test wants it: per-host outcomes, a gate to hold a run open."""

    def __init__(self) -> None:
        self.outcomes: dict[str, PeerResult] = {}
        self.probes: dict[str, ProbeResult] = {}
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()
        self.pending_counts: dict[str, int] = {}
        self.crash = False

    async def probe(self, host: str) -> ProbeResult:
        return self.probes.get(host, ProbeResult(Outcome.SYNCED))

    addresses: dict[str, set[str]] = {}
    command = Csync2Command(("fake-sync",))  # not csync2 itself: no csync2.cfg is read
    env = None

    async def incoming(self) -> list[str]:
        return []

    def interrupted(self) -> bool:
        return False

    async def check(self) -> str | None:
        self.calls.append("check")
        self.started.set()
        await self.gate.wait()
        if self.crash:
            raise RuntimeError("boom")
        return None

    async def sync(self, host: str) -> tuple[PeerResult, float]:
        self.calls.append(host)
        return self.outcomes.get(host, PeerResult(Outcome.SYNCED)), 0.01

    async def pending(self) -> dict[str, int] | None:
        return dict(self.pending_counts)


def config(**over: Any) -> SyncConfig:
    base: dict[str, Any] = dict(enabled=True, command=("csync2", "-x"), interval=3600.0, watch=(), debounce=0.05,
                                timeout=5.0, retry_initial=0.2, retry_max=1.0, peers=("n2", "n3"),
                                host_map={"n2": "nodeb", "n3": "nodec"}, debounce_max=1.0)
    base.update(over)
    return SyncConfig(**base)


@contextlib.asynccontextmanager
async def running(svc: SyncService) -> AsyncIterator[SyncService]:
    task = asyncio.create_task(svc.run())
    try:
        yield svc
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await svc.close()


async def until(cond: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s")


@pytest.fixture
def fake() -> FakeRunner:
    return FakeRunner()


def make(tmp_path: Path, fake: FakeRunner, **over: Any) -> tuple[SyncService, CheckRegistry]:
    reg = CheckRegistry()
    svc = SyncService(config(**over), "n1", tmp_path, reg, runner=fake)  # type: ignore[arg-type]
    return svc, reg


@pytest.mark.parametrize(
    ("event", "is_dir", "path", "change"),
    [
        ("created", False, "/dags/etl.py", True),
        ("modified", False, "/dags/etl.py", True),
        ("deleted", False, "/dags/etl.py", True),
        ("moved", False, "/dags/new.py", True),
        ("attrib", False, "/dags/etl.py", True),
        ("closed", False, "/dags/etl.py", True),
        ("opened", False, "/dags/etl.py", False),  # csync2 reading it
        ("closed_no_write", False, "/dags/etl.py", False),
        ("modified", True, "/dags", False),
        ("created", True, "/dags/sub", True),
        ("created", False, "/dags/.etl.py.Xa81Qz", False),  # csync2's scratch file
        ("moved", False, "/dags/.airflowignore", True),
        ("created", False, "/dags/.airflowignore", True),
    ],
)
def test_what_counts_as_a_change(event: str, is_dir: bool, path: str, change: bool) -> None:
    assert is_change(event, is_dir, path) is change


async def test_sync_now_answers_with_what_each_peer_got(tmp_path: Path, fake: FakeRunner) -> None:
    fake.probes["nodec"] = ProbeResult(Outcome.REFUSED, "connection to nodec:30865 refused")
    fake.pending_counts = {"nodec": 4}
    svc, reg = make(tmp_path, fake)
    async with running(svc):
        body = await asyncio.wait_for(svc.sync_now(), 5)
    assert body["ok"] is False and body["result"] == "partial"
    assert body["peers"]["n2"]["outcome"] == "synced" and body["peers"]["n2"]["state"] == "ok"
    assert body["peers"]["n3"]["outcome"] == "refused" and body["peers"]["n3"]["state"] == "failing"
    assert body["peers"]["n3"]["pending_files"] == 4 and body["peers"]["n3"]["host"] == "nodec"
    assert "nodec" not in fake.calls  # refused at the probe: csync2 was not run against it
    snap = svc.snapshot()
    assert snap["peers"]["n3"]["next_retry"] is not None and snap["last_result"] == "partial"
    assert {r.name: r.status for r in reg.results()}["sync"] == Status.PASSING  # not failing for long yet


async def test_requests_during_a_run_get_the_follow_up(tmp_path: Path, fake: FakeRunner) -> None:
    svc, _ = make(tmp_path, fake)
    fake.gate.clear()
    async with running(svc):
        await until(fake.started.is_set)  # the startup run is in its check
        first = asyncio.create_task(svc.sync_now())
        second = asyncio.create_task(svc.sync_now())
        for _ in range(20):
            svc._file_changed()
        await asyncio.sleep(0.2)
        assert not first.done()
        fake.gate.set()
        a, b = await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert a == b and "manual" in a["reasons"]
    assert fake.calls.count("check") == 2  # startup, then one follow-up for all of it


async def test_a_crash_in_a_run_does_not_stop_syncing(tmp_path: Path, fake: FakeRunner) -> None:
    svc, _ = make(tmp_path, fake)
    fake.crash = True
    async with running(svc):
        body = await asyncio.wait_for(svc.sync_now(), 5)
        assert body["result"] == "failed" and "RuntimeError: boom" in body["peers"]["n2"]["detail"]
        fake.crash = False
        body = await asyncio.wait_for(svc.sync_now(), 5)
        assert body["result"] == "ok"


async def test_state_is_saved_and_restored(tmp_path: Path, fake: FakeRunner) -> None:
    fake.probes["nodeb"] = ProbeResult(Outcome.UNREACHABLE, "no answer from nodeb:30865 within 1s")
    svc, _ = make(tmp_path, fake, retry_initial=60.0, retry_max=60.0)
    async with running(svc):
        await asyncio.wait_for(svc.sync_now(), 5)
    saved = json.loads((tmp_path / "sync-state.json").read_text())
    assert saved["peers"]["n2"]["state"] == "pending" and saved["peers"]["n2"]["attempts"] >= 1

    again, _ = make(tmp_path, FakeRunner(), retry_initial=60.0, retry_max=60.0)
    p = again.snapshot()["peers"]["n2"]
    assert p["state"] == "pending" and p["attempts"] == saved["peers"]["n2"]["attempts"]
    assert p["last_error"] == "no answer from nodeb:30865 within 1s" and p["next_retry"] is not None


async def test_gossip_members_feed_the_core(tmp_path: Path, fake: FakeRunner) -> None:
    reg = CheckRegistry()
    svc = SyncService(config(peers=()), "n1", tmp_path, reg, gossip=True, runner=fake)  # type: ignore[arg-type]
    svc.set_members({"n1": "alive", "n2": "alive", "n3": "dead"})
    assert set(svc.snapshot()["peers"]) == {"n2", "n3"}  # every other member, dynamically
    async with running(svc):
        body = await asyncio.wait_for(svc.sync_now(), 5)
    assert body["peers"]["n3"]["outcome"] == "down" and body["peers"]["n3"]["state"] == "pending"
    assert "n3" not in fake.calls and "nodec" not in fake.calls


async def test_disabled_sync_runs_nothing_and_says_so(tmp_path: Path, fake: FakeRunner) -> None:
    svc, reg = make(tmp_path, fake, enabled=False)
    async with running(svc):
        await asyncio.sleep(0.1)
    assert fake.calls == []
    snap = svc.snapshot()
    assert snap["enabled"] is False and {p["state"] for p in snap["peers"].values()} == {"skipped"}
    assert {r.name: r.output for r in reg.results()}["sync"].startswith("sync disabled")


async def test_metrics(tmp_path: Path, fake: FakeRunner) -> None:
    svc, _ = make(tmp_path, fake)
    async with running(svc):
        await asyncio.wait_for(svc.sync_now(), 5)

    class One(Collector):
        def collect(self) -> Any:
            return svc.collect()

    reg = CollectorRegistry(auto_describe=False)
    reg.register(One())
    text = generate_latest(reg).decode()
    assert 'haflowd_sync_runs_total{result="ok"} 2.0' in text
    assert "haflowd_sync_duration_seconds_count 2.0" in text
    assert 'haflowd_sync_peer_pending{peer="n2"} 0.0' in text
    assert 'haflowd_sync_peer_state{peer="n3",state="ok"} 1.0' in text
    assert 'haflowd_sync_peer_last_success_timestamp_seconds{peer="n2"} 1.' in text


CFG = """\
nossl * *;
group dags {{
    host nodea nodeb nodec;
    key /k;
    include %dags%;
    auto younger;
    {backup}
}}
prefix dags {{ on *: /srv/dags; }}
"""


async def test_a_conflict_won_here_is_shown_counted_and_saved(tmp_path: Path, fake: FakeRunner) -> None:
    (tmp_path / "csync2_dags.cfg").write_text(CFG.format(backup="backup-directory /bak;"))
    fake.command = Csync2Command(("csync2", "-N", "nodea", "-C", "dags", "-x"))
    fake.env = {"CSYNC2_SYSTEM_DIR": str(tmp_path)}  # type: ignore[assignment]
    fake.outcomes["nodeb"] = PeerResult(Outcome.SYNCED, resolved=("%dags%/x.py",))
    svc, reg = make(tmp_path, fake, host_map={"n1": "nodea", "n2": "nodeb", "n3": "nodec"})
    async with running(svc):
        await asyncio.wait_for(svc.sync_now(), 5)
    [c] = svc.snapshot()["conflicts"]
    assert c["file"] == "%dags%/x.py" and c["path"] == "/srv/dags/x.py" and c["peer"] == "n2"
    assert (c["winner"], c["loser"], c["kept_on"], c["kept_at"], c["resolved"]) == \
        ("n1", "n2", "n2", "/bak/srv/dags/x.py", True)
    assert {r.name: r.status for r in reg.results()}["sync"] == Status.PASSING  # settled: nothing to do

    class One(Collector):
        def collect(self) -> Any:
            return svc.collect()

    r = CollectorRegistry(auto_describe=False)
    r.register(One())
    assert "haflowd_sync_conflicts_resolved_total 1.0" in generate_latest(r).decode()
    again, _ = make(tmp_path, FakeRunner())
    assert again.snapshot()["conflicts"] == [c]  # saved with the sync state


async def test_csync2_without_backups_is_a_warning(tmp_path: Path, fake: FakeRunner) -> None:
    (tmp_path / "csync2.cfg").write_text(CFG.format(backup=""))
    fake.command = Csync2Command(("csync2", "-N", "nodea", "-x"))  # -N: csync2's name for this node
    fake.env = {"CSYNC2_SYSTEM_DIR": str(tmp_path)}  # type: ignore[assignment]
    svc, reg = make(tmp_path, fake, host_map={"n2": "nodeb", "n3": "nodec"})
    async with running(svc):
        await asyncio.wait_for(svc.sync_now(), 5)
    result = {r.name: r for r in reg.results()}["sync"]
    assert result.status == Status.WARNING and "keeps no backups (group dags" in result.output, result


class TieRunner(FakeRunner):
    """Updates to nodeb lose csync2's younger test on one file; the peer's mtime is given."""

    def __init__(self, name: str, peer_mtime: int | None, forced_update_settles: bool = True) -> None:
        super().__init__()
        self.name = name
        self.peer_mtimes: dict[str, int | None] = {"nodeb": peer_mtime}
        self.settles = forced_update_settles
        self.forced: list[str] = []
        self.unforced: list[str] = []
        self.looks = 0
        self.settled = False
        self.command = Csync2Command(("csync2", "-x"))  # csync2 itself ...
        self.env = {"CSYNC2_SYSTEM_DIR": "/nonexistent"}  # type: ignore[assignment]  # ... without a config

    async def sync(self, host: str) -> tuple[PeerResult, float]:
        self.calls.append(host)
        if self.settles and self.calls[-2:] == ["force", "nodeb"]:
            self.settled = True  # the forced version replaced the peer's
        if host == "nodeb" and not self.settled:
            return PeerResult(Outcome.CONFLICT, "1 file(s) in conflict", (self.name,), (), (self.name,)), 0.01
        return PeerResult(Outcome.SYNCED), 0.01

    async def peer_mtime(self, me: str, host: str, name: str, path: str) -> int | None:
        self.looks += 1
        return self.peer_mtimes.get(host)

    async def force(self, path: str) -> str | None:
        self.calls.append("force")
        self.forced.append(path)
        return None

    async def unforce(self, name: str, path: str) -> list[str]:
        self.unforced.append(path)
        return []


def _dag(tmp_path: Path, mtime: int) -> str:
    p = tmp_path / "dags" / "tie.py"
    p.parent.mkdir(exist_ok=True)
    p.write_text("x = 1\n")
    os.utime(p, (mtime, mtime))
    return str(p)


async def test_a_same_second_tie_is_forced_by_the_first_host_name(tmp_path: Path) -> None:
    name = _dag(tmp_path, 1_700_000_000)
    fake = TieRunner(name, 1_700_000_000)
    svc, reg = make(tmp_path, fake)  # this node is csync2's "n1": before "nodeb"
    async with running(svc):
        body = await asyncio.wait_for(svc.sync_now(), 5)
    assert fake.forced == [name] and fake.unforced == [name]
    assert fake.calls[fake.calls.index("force") + 1] == "nodeb"  # the forced update follows at once
    assert body["peers"]["n2"]["outcome"] == "synced"
    [c] = [x for x in svc.snapshot()["conflicts"] if x["file"] == name]
    assert (c["winner"], c["loser"], c["kept_on"], c["resolved"], c["rule"]) == ("n1", "n2", "n2", True, TIE_RULE)
    assert {r.name: r.status for r in reg.results()}["sync"] == Status.PASSING


async def test_a_real_younger_loss_is_left_to_csync2(tmp_path: Path) -> None:
    name = _dag(tmp_path, 1_700_000_000)
    fake = TieRunner(name, 1_700_000_001)  # the peer's edit is a second younger: it wins, from its side
    svc, _ = make(tmp_path, fake)
    async with running(svc):
        await asyncio.wait_for(svc.sync_now(), 5)
        await asyncio.wait_for(svc.sync_now(), 5)
    assert fake.forced == [] and fake.looks == 1  # decided once: not asked again while it is open
    [c] = [x for x in svc.snapshot()["conflicts"] if x["file"] == name]
    assert (c["winner"], c["resolved"], c["rule"]) == ("n2", False, None)


async def test_in_a_tie_the_node_that_sorts_second_waits(tmp_path: Path) -> None:
    name = _dag(tmp_path, 1_700_000_000)
    fake = TieRunner(name, 1_700_000_000)
    svc, _ = make(tmp_path, fake, host_map={"n1": "nodez", "n2": "nodeb", "n3": "nodec"})
    async with running(svc):
        await asyncio.wait_for(svc.sync_now(), 5)
    assert fake.forced == []
    [c] = [x for x in svc.snapshot()["conflicts"] if x["file"] == name]
    assert (c["winner"], c["loser"], c["kept_on"], c["resolved"], c["rule"]) == ("n2", "n1", "n1", False, TIE_RULE)


async def test_forcing_a_tie_that_keeps_losing_is_bounded(tmp_path: Path) -> None:
    name = _dag(tmp_path, 1_700_000_000)
    fake = TieRunner(name, 1_700_000_000, forced_update_settles=False)  # the peer re-marks it every time
    svc, _ = make(tmp_path, fake)
    svc.ties = TieBudget(backoff=0.0)
    async with running(svc):
        for _ in range(3 * TIE_MAX_ATTEMPTS):
            await asyncio.wait_for(svc.sync_now(), 5)
    assert len(fake.forced) == TIE_MAX_ATTEMPTS
    [c] = [x for x in svc.snapshot()["conflicts"] if x["file"] == name]
    assert c["resolved"] is False and c["rule"] == TIE_RULE  # left open, for the operator


async def test_an_unreadable_peer_mtime_is_asked_again_a_bounded_number_of_times(tmp_path: Path) -> None:
    name = _dag(tmp_path, 1_700_000_000)
    fake = TieRunner(name, None)
    svc, _ = make(tmp_path, fake)
    svc.ties = TieBudget(backoff=0.0)
    async with running(svc):
        for _ in range(3 * TIE_MAX_ATTEMPTS):
            await asyncio.wait_for(svc.sync_now(), 5)
    assert fake.forced == [] and fake.looks == TIE_MAX_ATTEMPTS


async def test_a_wrapper_command_is_never_forced(tmp_path: Path) -> None:
    name = _dag(tmp_path, 1_700_000_000)
    fake = TieRunner(name, 1_700_000_000)
    fake.command = Csync2Command(("/usr/local/bin/dag-sync",))
    svc, _ = make(tmp_path, fake)
    async with running(svc):
        await asyncio.wait_for(svc.sync_now(), 5)
    assert fake.forced == [] and fake.looks == 0


async def test_a_peer_that_cannot_say_its_mtime_is_asked_once_per_run(tmp_path: Path) -> None:
    """A hung peer would cost a csync2 -T timeout per file: one look per run is enough."""
    names = [_dag(tmp_path, 1_700_000_000), str(tmp_path / "dags" / "other.py")]
    fake = TieRunner(names[0], None)

    async def sync(host: str) -> tuple[PeerResult, float]:
        fake.calls.append(host)
        if host == "nodeb":
            return PeerResult(Outcome.CONFLICT, "2 file(s) in conflict", tuple(names), (), tuple(names)), 0.01
        return PeerResult(Outcome.SYNCED), 0.01

    fake.sync = sync  # type: ignore[method-assign]
    svc, _ = make(tmp_path, fake)
    async with running(svc):
        await asyncio.wait_for(svc.sync_now(), 5)
    assert fake.looks >= 1 and fake.looks == svc.core.runs["conflict"] and fake.forced == []
