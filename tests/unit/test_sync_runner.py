"""The csync2 runner's pure parts (commands, csync2's words) and its bounds (timeout, probe)."""

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
    Csync2Command,
    Csync2Runner,
    RunOutput,
    incoming_sessions,
    parse_pending,
    probe,
    run_bounded,
)
from haflowd.sync.schedule import Outcome

# --------------------------------------------------------------------------- commands


@pytest.mark.parametrize(
    ("base", "check", "update", "pending"),
    [
        (["csync2", "-x"], ["csync2", "-cr", "/"], ["csync2", "-u", "-v", "-P", "nodeb"], ["csync2", "-M"]),
        (["csync2", "-xv"], ["csync2", "-cr", "/"], ["csync2", "-u", "-v", "-P", "nodeb"], ["csync2", "-M"]),
        (["/usr/sbin/csync2", "-N", "nodea", "-D", "/db", "-x"],
         ["/usr/sbin/csync2", "-N", "nodea", "-D", "/db", "-cr", "/"],
         ["/usr/sbin/csync2", "-N", "nodea", "-D", "/db", "-u", "-v", "-P", "nodeb"],
         ["/usr/sbin/csync2", "-N", "nodea", "-D", "/db", "-M"]),
        (["csync2", "-xrB", "-Nnodea", "-C", "dags", "/opt/airflow/dags"],
         ["csync2", "-B", "-Nnodea", "-C", "dags", "-cr", "/opt/airflow/dags"],
         ["csync2", "-B", "-Nnodea", "-C", "dags", "-ur", "-v", "-P", "nodeb", "/opt/airflow/dags"],
         ["csync2", "-B", "-Nnodea", "-C", "dags", "-M"]),
        (["csync2", "-xN", "nodea"], ["csync2", "-N", "nodea", "-cr", "/"],
         ["csync2", "-N", "nodea", "-u", "-v", "-P", "nodeb"], ["csync2", "-N", "nodea", "-M"]),
        (["sudo", "-u", "sync", "csync2", "-x"], ["sudo", "-u", "sync", "csync2", "-cr", "/"],
         ["sudo", "-u", "sync", "csync2", "-u", "-v", "-P", "nodeb"], ["sudo", "-u", "sync", "csync2", "-M"]),
        (["/usr/local/bin/dag-sync"], None, ["/usr/local/bin/dag-sync", "-P", "nodeb"], None),
    ],
)
def test_commands_made_from_the_base(base: list[str], check: list[str] | None, update: list[str],
                                     pending: list[str] | None) -> None:
    cmd = Csync2Command(tuple(base))
    assert cmd.check_argv() == check
    assert cmd.update_argv("nodeb") == update
    assert cmd.pending_argv() == pending
    mark = cmd.mark_all_argv()
    assert mark is None if check is None else mark == [*check[:-2], "-mr", check[-1]]


def test_options_of_the_base() -> None:
    assert Csync2Command(("csync2", "-N", "nodea", "-D", "/db", "-x")).option("-N") == "nodea"
    assert Csync2Command(("csync2", "-xNnodea", "-Cdags")).option("-C") == "dags"
    assert Csync2Command(("csync2", "-x")).option("-N") is None


# --------------------------------------------------------------------------- csync2's words (as it prints them)

OK_RUN = """\
Marking file as dirty: %dags%/f2.py
Connecting to host nodec (PLAIN) ...
Bound to 198.18.0.11:0 as nodea.
Connect to 198.18.0.13:30865 (nodec).
Updating %dags%/f2.py on nodec ...
Connection closed.
Finished with 0 errors.
"""

REFUSED_RUN = """\
Marking file as dirty: %dags%/f3.py
Connecting to host nodeb (PLAIN) ...
Bound to 198.18.0.11:0 as nodea.
Can't create socket: Connection refused
ERROR: Connection to remote host `nodeb' failed.
Host stays in dirty state. Try again later...
Finished with 1 errors.
"""

LOST_YOUNGER = """\
Marking file as dirty: %dags%/c.py
Connecting to host nodeb (PLAIN) ...
Connect to 198.18.0.12:30865 (nodeb).
Updating %dags%/c.py on nodeb ...
Do not auto-resolve conflict: Lost 'younger/older' test.
File stays in dirty state. Try again later...
Connection closed.
Finished with 1 errors.
"""

WON_YOUNGER = """\
Connecting to host nodea (PLAIN) ...
Bound to 198.18.0.12:0 as nodeb.
Connect to 198.18.0.11:30865 (nodea).
Updating %dags%/f.py on nodea ...
Auto-resolving conflict: Won 'younger/older' test.
Updating %dags%/f.py on nodea ...
Connection closed.
Finished with 0 errors.
"""

DIRTY_BOTH = """\
While syncing file /etc/hosts:
ERROR from peer apollo:
    File is also marked dirty here!
Finished with 1 errors.
"""

PEER_ERROR = """\
Updating %dags%/x.py on nodeb ...
ERROR from peer nodeb:
    Permission denied!
Finished with 1 errors.
"""


@pytest.mark.parametrize(
    ("text", "code", "outcome", "detail", "conflicts"),
    [
        (OK_RUN, 0, Outcome.SYNCED, None, ()),
        (REFUSED_RUN, 1, Outcome.ERROR,
         "csync2 exited with 1: Can't create socket: Connection refused; "
         "ERROR: Connection to remote host `nodeb' failed.", ()),
        (LOST_YOUNGER, 1, Outcome.CONFLICT, "1 file(s) in conflict: %dags%/c.py", ("%dags%/c.py",)),
        (DIRTY_BOTH, 1, Outcome.CONFLICT, "1 file(s) in conflict: /etc/hosts", ("/etc/hosts",)),
        (PEER_ERROR, 1, Outcome.ERROR, "csync2 exited with 1: ERROR from peer nodeb: Permission denied!", ()),
        ("This host (vm) is not a member of any configured group.\n", 1, Outcome.ERROR,
         "csync2 exited with 1: This host (vm) is not a member of any configured group.", ()),
        ("", 3, Outcome.ERROR, "csync2 exited with 3: no output", ()),
    ],
)
def test_run_output(text: str, code: int, outcome: Outcome, detail: str | None, conflicts: tuple[str, ...]) -> None:
    out = RunOutput()
    for line in text.splitlines():
        out.feed(line)
    r = out.verdict(code)
    assert (r.outcome, r.detail, r.conflicts) == (outcome, detail, conflicts)
    assert r.detail is None or "\n" not in r.detail


def test_a_conflict_this_node_won_is_named() -> None:
    """csync2 replaced the peer's version with ours (exit 0): not silent any more."""
    out = RunOutput()
    for line in WON_YOUNGER.splitlines():
        out.feed(line)
    r = out.verdict(0)
    assert (r.outcome, r.conflicts, r.resolved) == (Outcome.SYNCED, (), ("%dags%/f.py",))


def test_run_output_is_bounded() -> None:
    out = RunOutput()
    for i in range(100_000):
        out.feed(f"Updating %dags%/f{i}.py on nodeb ...")
        out.feed("Do not auto-resolve conflict: Lost 'younger/older' test.")
        out.feed(f"ERROR: something {i} failed")
    assert len(out.conflicts) == 1000 and len(out.errors) == 5


def test_parse_pending() -> None:
    text = ("chary\tnodea\tnodeb\t%dags%/f3.py\nforce\tnodea\tnodeb\t%dags%/f4.py\n"
            "chary\tnodea\tnodec\t%dags%/f4.py\nnoise\n")
    assert parse_pending(text) == {"nodeb": 2, "nodec": 1}
    assert parse_pending("") == {}


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
