"""The csync2 runner's bounds with real processes: timeouts, process groups, the probe, a
check interrupted at shutdown. Its pure parts: tests/unit/test_sync_runner.py."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

import haflowd.sync.runner as runner_mod
from haflowd.sync.runner import (
    Csync2Runner,
    incoming_sessions,
    probe,
    run_bounded,
)
from haflowd.sync.schedule import Outcome

# --------------------------------------------------------------------------- bounds


async def test_a_hung_run_is_killed_with_its_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    script = f"sleep 60 & echo $! > {pidfile}; echo started; sleep 60"
    lines: list[str] = []
    t0 = time.monotonic()
    done = await run_bounded(["sh", "-c", script], 0.5, lines.append)
    assert done.timed_out and done.exit_code is None
    assert time.monotonic() - t0 < 3
    assert lines == ["started"]
    grandchild = int(pidfile.read_text())
    for _ in range(100):
        if not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"the background sleep {grandchild} survived the timeout")


async def test_a_cancelled_run_leaves_nothing_behind(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    task = asyncio.create_task(run_bounded(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"], 30, print))
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.01)
    pid = int(pidfile.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_run_that_cannot_start() -> None:
    done = await run_bounded(["/nonexistent/csync2"], 5, print)
    assert done.exit_code is None and not done.timed_out
    assert done.error is not None and "No such file" in done.error


async def test_runner_reports_a_hang_as_timeout(tmp_path: Path) -> None:
    fake = tmp_path / "csync2"
    fake.write_text("#!/bin/sh\necho 'Connecting to host nodeb (PLAIN) ...'\nexec sleep 60\n")
    fake.chmod(0o755)
    runner = Csync2Runner([str(fake), "-x"], timeout=0.3)
    result, took = await runner.sync("nodeb")
    assert result.outcome == Outcome.TIMEOUT and took < 3
    assert result.detail == "csync2 killed after 0.3s (hung); last words: Connecting to host nodeb (PLAIN) ..."


async def test_runner_pending_reads_csync2_m(tmp_path: Path) -> None:
    fake = tmp_path / "csync2"
    fake.write_text(f"#!{sys.executable}\nimport sys\n"
                    "if '-M' in sys.argv:\n"
                    "    print('chary\\tnodea\\tnodeb\\t%dags%/a.py'); print('noise on stderr', file=sys.stderr)\n"
                    "    sys.exit(0)\n"
                    "sys.exit(1)\n")
    fake.chmod(0o755)
    assert await Csync2Runner([str(fake), "-x"]).pending() == {"nodeb": 1}


async def test_probe_outcomes() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        assert (await probe("127.0.0.1", port, 1.0)).ok
    refused = await probe("127.0.0.1", port, 1.0)
    assert refused.outcome == Outcome.REFUSED and "refused" in (refused.detail or "")
    unresolved = await probe("no-such-host.invalid", port, 1.0)
    assert unresolved.outcome == Outcome.UNREACHABLE


async def test_a_killed_check_marks_everything_dirty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = tmp_path / "calls"
    fake = tmp_path / "csync2"
    fake.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\ncase \"$*\" in *-cr*) exec sleep 60;; esac\nexit 0\n")
    fake.chmod(0o755)
    runner = Csync2Runner([str(fake), "-x"], timeout=0.2)
    monkeypatch.setattr(runner_mod, "CHECK_TIMEOUT_MIN_S", 0.3)
    problem = await runner.check()
    assert problem == "csync2 check killed after 0.3s; marked every file dirty"
    assert calls.read_text().splitlines() == ["-cr /", "-mr /"]


def test_incoming_sessions_counts_connections_to_the_port() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        assert incoming_sessions(port) == []
        with socket.create_connection(("127.0.0.1", port)):
            conn, _ = srv.accept()
            with conn:
                assert incoming_sessions(port) == ["127.0.0.1"]


async def test_an_update_ends_when_the_peer_stops_answering(tmp_path: Path) -> None:
    """A link cut in the middle of an update: csync2 would wait minutes; the probes end it."""
    fake = tmp_path / "csync2"
    fake.write_text("#!/bin/sh\necho 'Updating %dags%/a.py on nodeb ...'\nexec sleep 60\n")
    fake.chmod(0o755)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
    runner = Csync2Runner([str(fake), "-x"], port=port, timeout=30, probe_timeout=0.2)
    t0 = time.monotonic()
    result, _ = await runner.sync("127.0.0.1")  # nothing listens on the port any more: refused
    assert time.monotonic() - t0 < 5
    assert result.outcome == Outcome.UNREACHABLE and result.detail is not None
    assert "refused" in result.detail and "last words: Updating %dags%/a.py on nodeb ..." in result.detail


def _fake_csync2(tmp_path: Path, check: str) -> tuple[Path, Path]:
    """A csync2 that logs its arguments; its check runs ``check`` (shell)."""
    calls = tmp_path / "calls"
    fake = tmp_path / "csync2"
    fake.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\ncase \"$*\" in *-cr*) {check};; esac\nexit 0\n")
    fake.chmod(0o755)
    return fake, calls


def _check_started(calls: Path) -> bool:
    return calls.exists() and "-cr /" in calls.read_text()


async def _cancel_when_started(task: asyncio.Task[str | None], calls: Path) -> None:
    for _ in range(500):
        if _check_started(calls):
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_check_running_at_shutdown_may_finish(tmp_path: Path) -> None:
    fake, calls = _fake_csync2(tmp_path, f"sleep 0.3; echo done >> {tmp_path / 'finished'}")
    marker = tmp_path / "data" / "sync-check.running"
    runner = Csync2Runner([str(fake), "-x"], check_marker=marker)
    await _cancel_when_started(asyncio.create_task(runner.check()), calls)
    assert (tmp_path / "finished").exists(), "the check was killed instead of finishing"
    assert not marker.exists() and not runner.interrupted()
    assert await runner.check() is None
    assert calls.read_text().splitlines() == ["-cr /", "-cr /"]  # no csync2 -mr /: nothing was lost


async def test_a_check_killed_at_shutdown_is_made_good_at_the_next_start(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fake, calls = _fake_csync2(tmp_path, "exec sleep 60")
    monkeypatch.setattr(runner_mod, "CHECK_STOP_GRACE_S", 0.3)
    marker = tmp_path / "data" / "sync-check.running"
    t0 = time.monotonic()
    await _cancel_when_started(asyncio.create_task(Csync2Runner([str(fake), "-x"], check_marker=marker).check()),
                               calls)
    assert time.monotonic() - t0 < 3 and marker.exists()
    fake.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\nexit 0\n")  # the next haflowd: a normal csync2
    again = Csync2Runner([str(fake), "-x"], check_marker=marker)
    assert again.interrupted()
    assert await again.check() is None
    assert calls.read_text().splitlines() == ["-cr /", "-mr /", "-cr /"]
    assert not marker.exists()


async def test_a_check_that_gave_up_on_the_database_is_made_good_at_the_next_run(tmp_path: Path) -> None:
    """csync2 -cr exits on a busy database (a stopped csync2 -ii child holds the lock)
    without committing what it began: the next check starts with csync2 -mr /."""
    fake, calls = _fake_csync2(
        tmp_path, "echo 'Database backend is exceedingly busy => Terminating (requesting retry).'; exit 1")
    runner = Csync2Runner([str(fake), "-x"], check_marker=tmp_path / "sync-check.running")
    problem = await runner.check()
    assert problem is not None and "exceedingly busy" in problem and "marked dirty" in problem
    assert runner.interrupted()
    fake.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\nexit 0\n")  # the lock is free again
    assert await runner.check() is None
    assert calls.read_text().splitlines() == ["-cr /", "-mr /", "-cr /"] and not runner.interrupted()
