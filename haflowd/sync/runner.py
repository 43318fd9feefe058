"""csync2 itself: a TCP probe of a peer's port, the local check, one update per peer
under a hard timeout in its own process group, the list of what is still pending
(``csync2 -M``), and the reading of csync2's words. Knows nothing of schedules.

csync2 has no connect timeout (a blackholed peer costs minutes) and hangs for ever on a
stopped peer, so every update is bounded: the peer's port is probed first, and the run
is killed, with its whole process group, at ``timeout``.

``csync2 -x`` is split in its two halves, ``-cr /`` (check: local, marks changed files
dirty for every peer) and ``-u -P PEER`` (update: the network part), because killing
csync2 in the middle of a check can lose data: it commits its database every 1000
statements, so a kill can keep a file's new checksum and drop its dirty marks, and that
file is then never sent. Killing an update is harmless (a dirty mark is removed only
after the peer has the file). A check that had to be killed anyway is followed by
``csync2 -mr /`` (mark everything dirty: every peer compares every file once). The
same happens at the next run when haflowd stopped (or died) while a check ran, or when
the check gave up on csync2's database (``Database backend is exceedingly busy``: a
stopped ``csync2 -ii`` child holding its lock; csync2 then exits without committing
what it began): a marker file exists from the start of a check until it has ended
cleanly. A check still running when haflowd stops gets ``CHECK_STOP_GRACE_S`` to
finish before it is killed.
One update per peer (``-P``): a failure or a hang on one peer says exactly who failed
and never rolls back what another got.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from haflowd.sync.schedule import Outcome, PeerResult

CSYNC2_PORT = 30865
_VALUE_OPTIONS = frozenset("CDNpGPsW")  # csync2's options that take a value
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*")  # env's NAME=value (CSYNC2_SYSTEM_DIR=/etc/csync2)
_LINE_LIMIT = 1 << 20
MAX_ERRORS = 5
MAX_CONFLICTS = 1000
PENDING_TIMEOUT_S = 30.0
CHECK_TIMEOUT_MIN_S = 300.0  # the check is local: bounded, but never killed for a peer's sake
LIVE_MISSES = 2  # consecutive failed probes during an update that end it
CHECK_STOP_GRACE_S = 3.0  # haflowd stops during a check: this long to finish before it is killed


@dataclass(frozen=True)
class ProbeResult:
    outcome: Outcome  # SYNCED here means "the port answered"
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.SYNCED


@dataclass(frozen=True)
class Csync2Command:
    """The configured base command, and the commands made from it.

    ``csync2 -N node1 -D /var/lib/csync2 -x`` gives ``... -cr /`` (check),
    ``... -u -v -P PEER`` (update; ``-v`` makes csync2 name the files and peers it works
    on), ``... -mr /`` (mark all dirty) and ``... -M`` (list pending). File arguments
    in the base limit the check and the update to them. A wrapper that is not csync2
    itself is run whole with ``-P PEER`` appended: no split, no pending counts.
    """

    base: tuple[str, ...]

    def _split(self) -> tuple[int, list[str], list[str]]:
        """(index of the csync2 program or -1, its options minus modes, its file arguments)."""
        found = [i for i, arg in enumerate(self.base)
                 if os.path.basename(arg).startswith("csync2") and not _ASSIGNMENT.fullmatch(arg)]
        if not found:
            return -1, [], []
        i = found[0]
        opts: list[str] = []
        files: list[str] = []
        args = self.base[i + 1:]
        j = 0
        while j < len(args):
            a = args[j]
            j += 1
            if not a.startswith("-") or a == "-" or a.startswith("--"):
                files.append(a)
                continue
            kept = ""
            for k, c in enumerate(a[1:]):
                if c in _VALUE_OPTIONS:
                    kept += a[1 + k:]
                    if k + 2 == len(a) and j < len(args):
                        opts += ["-" + kept, args[j]]
                        j += 1
                    else:
                        opts.append("-" + kept)
                    kept = ""
                    break
                if c not in "xcurdhmofTMLHSvi":  # modes and modifiers of a run: ours to choose
                    kept += c
            else:
                if kept:
                    opts.append("-" + kept)
        return i, opts, files

    def options(self) -> list[str]:
        """csync2's own options in the base, without its modes (``-N``, ``-D``, ``-C`` ...)."""
        return self._split()[1]

    def option(self, flag: str) -> str | None:
        """The value of one of csync2's options in the base (``option("-N")``), if given."""
        opts = self.options()
        for i, opt in enumerate(opts):
            if opt.startswith(flag):
                return opt[len(flag):] or (opts[i + 1] if i + 1 < len(opts) else None)
        return None

    @property
    def splittable(self) -> bool:
        return self._split()[0] >= 0

    def _argv(self, *mode: str, files: bool = False) -> list[str]:
        i, opts, paths = self._split()
        return [*self.base[:i + 1], *opts, *mode, *(paths if files else [])]

    def check_argv(self) -> list[str] | None:
        if not self.splittable:
            return None
        paths = self._split()[2]
        return self._argv("-cr", *([] if paths else ["/"]), files=True)

    def update_argv(self, host: str) -> list[str]:
        if not self.splittable:
            return [*self.base, "-P", host]
        return self._argv("-u" + ("r" if self._split()[2] else ""), "-v", "-P", host, files=True)

    def mark_all_argv(self) -> list[str] | None:
        if not self.splittable:
            return None
        paths = self._split()[2]
        return self._argv("-mr", *([] if paths else ["/"]), files=True)

    def pending_argv(self) -> list[str] | None:
        return self._argv("-M") if self.splittable else None

    def force_argv(self, path: str) -> list[str] | None:
        """``-f PATH``: this node's version of PATH wins its next conflict (every peer)."""
        return self._argv("-f", path) if self.splittable else None

    def mark_argv(self, path: str) -> list[str] | None:
        """``-m PATH``: PATH dirty for every peer, not forced (undoes ``-f`` for the rest)."""
        return self._argv("-m", path) if self.splittable else None

    def peer_check_argv(self, me: str, peer: str, path: str) -> list[str] | None:
        """``-vv -T ME PEER PATH``: compares PATH with the peer; ``-vv`` prints the peer's check text."""
        return self._argv("-vv", "-T", me, peer, path) if self.splittable else None


class RunOutput:
    """Reads csync2 -x -v output line by line; keeps only what the verdict needs."""

    _UPDATING = re.compile(r"^(?:Updating|Deleting) (.+) on (\S+) \.\.\.$")
    _WHILE = re.compile(r"^While syncing file (.+):$")
    _CONFLICT = ("Do not auto-resolve conflict", "File is also marked dirty here")
    _WON = "Auto-resolving conflict: Won "  # this node's version replaced the peer's
    # "auto younger/older" lost: the peer is newer (or older) ... or both have the same mtime
    # second, and then the peer loses too: a tie that csync2 never settles (see SyncService)
    _LOST_AGE = "Lost 'younger/older' test"
    _REMOVAL = "This is a removal"  # deleted here, changed there: a deletion never wins
    # csync2 gave up on its database and exited without committing what it had begun
    _DB_ABORT = ("Database backend is exceedingly busy", "Database Error:")
    _NOISE = re.compile(r"^(Finished with \d+ errors\.|(Host|File) stays in dirty state\. Try again later\.\.\.)$")
    _ERROR = re.compile(r"(ERROR|[Ee]rror|[Ff]ailed|Can't|Cannot|[Rr]efused|[Dd]enied|[Ii]dentification|"
                        r"not a member|[Tt]imed out|[Ll]ocked|[Uu]nknown|No such)")

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.conflicts: list[str] = []
        self.resolved: list[str] = []
        self.lost_age: list[str] = []
        self.removals: list[str] = []
        self.db_aborted = False
        self.last: deque[str] = deque(maxlen=3)
        self._file: str | None = None
        self._peer_error: str | None = None  # "ERROR from peer X:": its reason is on the next line

    def feed(self, line: str) -> None:
        s = line.strip()
        if not s:
            return
        self.last.append(s)
        m = self._UPDATING.match(s) or self._WHILE.match(s)
        if m:
            self._file = m.group(1)
            return
        if s.startswith(self._DB_ABORT):
            self.db_aborted = True
        if s.startswith(self._WON):
            if len(self.resolved) < MAX_CONFLICTS and self._file and self._file not in self.resolved:
                self.resolved.append(self._file)
            return
        if any(c in s for c in self._CONFLICT):
            if len(self.conflicts) < MAX_CONFLICTS and self._file and self._file not in self.conflicts:
                self.conflicts.append(self._file)
            for words, found in ((self._LOST_AGE, self.lost_age), (self._REMOVAL, self.removals)):
                if words in s and self._file and self._file not in found and len(found) < MAX_CONFLICTS:
                    found.append(self._file)
            self._peer_error = None
            return
        if self._peer_error is not None:
            self._error(f"{self._peer_error} {s}")
            self._peer_error = None
            return
        if s.startswith("ERROR from peer") and s.endswith(":"):
            self._peer_error = s
            return
        if self._NOISE.match(s):
            return
        if self._ERROR.search(s):
            self._error(s)

    def _error(self, s: str) -> None:
        if s not in self.errors and len(self.errors) < MAX_ERRORS:
            self.errors.append(s)

    def verdict(self, exit_code: int) -> PeerResult:
        conflicts, resolved = tuple(self.conflicts), tuple(self.resolved)
        lost_age = tuple(f for f in self.lost_age if f in conflicts)
        removals = tuple(f for f in self.removals if f in conflicts)
        if self._peer_error is not None:
            self._error(self._peer_error)
        if exit_code == 0:
            return PeerResult(Outcome.SYNCED, None, conflicts, resolved, lost_age, removals)
        if conflicts and not self.errors:
            return PeerResult(Outcome.CONFLICT, f"{len(conflicts)} file(s) in conflict: " + ", ".join(conflicts[:5]),
                              conflicts, resolved, lost_age, removals)
        words = "; ".join(self.errors) or (self.last[-1] if self.last else "no output")
        return PeerResult(Outcome.ERROR, f"csync2 exited with {exit_code}: {words}", conflicts, resolved, lost_age,
                          removals)


_FETCHED = re.compile(r"^Fetched tuple from peer: (.+) \[(\S*)\]$")
_CHECKTXT_MTIME = re.compile(r"(?:^|:)mtime=(-?\d+)(?::|$)")


def parse_peer_mtime(lines: Sequence[str], name: str) -> int | None:
    """The mtime (whole seconds) in the check text a peer's csync2 recorded for ``name``,
    from ``csync2 -vv -T me peer FILE`` (``Fetched tuple from peer: NAME [v1:mtime=...]``)."""
    for line in lines:
        m = _FETCHED.match(line.strip())
        if m and m.group(1) == name:
            t = _CHECKTXT_MTIME.search(m.group(2))
            return int(t.group(1)) if t else None
    return None


def forced_rows(text: str, name: str) -> list[str]:
    """``csync2 -M`` lines: the peers for which ``name`` is still marked dirty *and forced*."""
    out: list[str] = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 4 and parts[0] == "force" and parts[3] == name:
            out.append(parts[2])
    return out


def parse_pending(text: str) -> dict[str, int]:
    """``csync2 -M`` lines (``chary|force<TAB>me<TAB>peer<TAB>file``) -> files per peer."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 4 and parts[2]:
            counts[parts[2]] = counts.get(parts[2], 0) + 1
    return counts


async def probe(host: str, port: int, timeout: float, seen: set[str] | None = None) -> ProbeResult:
    """A TCP connect to ``host:port`` within ``timeout``: does a csync2 server answer?
    The addresses ``host`` resolved to are added to ``seen``."""
    where = f"{host}:{port}"
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            if seen is not None:
                seen.update(str(info[4][0]) for info in infos)
            last: OSError | None = None
            for family, _type, _proto, _name, addr in infos:
                try:
                    _r, w = await asyncio.open_connection(str(addr[0]), port, family=family)
                except ConnectionRefusedError:
                    return ProbeResult(Outcome.REFUSED, f"connection to {where} refused (is csync2 -ii running?)")
                except OSError as e:
                    last = e
                    continue
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()
                return ProbeResult(Outcome.SYNCED)
            reason = last.strerror if last is not None and last.strerror else str(last)
            return ProbeResult(Outcome.UNREACHABLE, f"cannot connect to {where}: {reason}")
    except TimeoutError:
        return ProbeResult(Outcome.UNREACHABLE, f"no answer from {where} within {timeout:g}s")
    except socket.gaierror as e:
        return ProbeResult(Outcome.UNREACHABLE, f"cannot resolve {host}: {e.strerror or e}")
    except OSError as e:
        return ProbeResult(Outcome.UNREACHABLE, f"cannot connect to {where}: {e.strerror or e}")


@dataclass(frozen=True)
class Finished:
    exit_code: int | None  # None: killed at the timeout, or could not start
    timed_out: bool
    duration: float
    error: str | None = None  # could not start it


async def run_bounded(argv: Sequence[str], timeout: float, on_line: Callable[[str], None],
                      env: Mapping[str, str] | None = None, stdout_only: bool = False) -> Finished:
    """Run ``argv`` in a process group of its own; SIGKILL the group at ``timeout`` (and
    when cancelled). Every output line goes to ``on_line``."""
    t0 = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL if stdout_only else asyncio.subprocess.STDOUT,
            start_new_session=True, limit=_LINE_LIMIT, env=dict(env) if env is not None else None,
        )
    except OSError as e:
        return Finished(None, False, time.monotonic() - t0, f"cannot run {argv[0]}: {e.strerror or e}")
    assert proc.stdout is not None
    stream = proc.stdout

    async def pump() -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line over the limit: take what there is
                raw = await stream.read(_LINE_LIMIT)
            if not raw:
                return
            on_line(raw.decode("utf-8", "replace").rstrip("\r\n"))

    try:
        async with asyncio.timeout(timeout):
            await pump()
            code = await proc.wait()
        return Finished(code, False, time.monotonic() - t0)
    except TimeoutError:
        _kill_group(proc.pid)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await proc.wait()
        return Finished(None, True, time.monotonic() - t0)
    finally:
        if proc.returncode is None:  # cancelled (the daemon is stopping): leave nothing behind
            _kill_group(proc.pid)


def _ran_out(done: Finished) -> bool:
    """The process ended on its own (an exit code, even an error), not by a signal: csync2
    committed its database."""
    return done.exit_code is not None and done.exit_code >= 0


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def incoming_sessions(port: int = CSYNC2_PORT) -> list[str]:
    """The remote addresses of established TCP connections *to* ``port`` here: peers'
    csync2 pushing to this node."""
    out: list[str] = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) > 3 and parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        out.append(_proc_addr(parts[2].rsplit(":", 1)[0], family))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _proc_addr(hexaddr: str, family: int) -> str:
    """/proc/net/tcp's address (32-bit words in host order) -> text; an IPv4-mapped v6 as v4."""
    raw = b"".join(int(hexaddr[i:i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(hexaddr), 8))
    text = socket.inet_ntop(family, raw)
    return text.removeprefix("::ffff:") if family == socket.AF_INET6 and "." in text else text


class Csync2Runner:
    """Runs the configured csync2; see the module docstring."""

    def __init__(self, command: Sequence[str], port: int = CSYNC2_PORT, timeout: float = 120.0,
                 probe_timeout: float = 1.0, env: Mapping[str, str] | None = None,
                 trace: Callable[[str, str], None] | None = None, check_marker: Path | None = None) -> None:
        self.command = Csync2Command(tuple(command))
        self.check_marker = check_marker  # exists while a check runs: a leftover means it was interrupted
        self.port = port
        self.timeout = timeout
        self.probe_timeout = probe_timeout
        self.env = env
        self.trace = trace  # (what, line): every line csync2 prints, for a debug log
        self.probe_every = max(1.0, 2 * probe_timeout)
        self.addresses: dict[str, set[str]] = {}  # what each peer's host name resolved to

    def _feed(self, what: str, sink: Callable[[str], None]) -> Callable[[str], None]:
        trace = self.trace
        if trace is None:
            return sink

        def feed(line: str) -> None:
            trace(what, line)
            sink(line)
        return feed

    async def probe(self, host: str) -> ProbeResult:
        return await probe(host, self.port, self.probe_timeout, self.addresses.setdefault(host, set()))

    async def incoming(self) -> list[str]:
        """Remote addresses of the csync2 sessions peers have open to this node."""
        return await asyncio.to_thread(incoming_sessions, self.port)

    async def check(self) -> str | None:
        """``csync2 -cr /``: find local changes and mark them dirty. None, or what went wrong.

        A check left unfinished by an earlier haflowd (the marker file is still there)
        is made good first with ``csync2 -mr /``. When haflowd stops during a check, the
        check gets ``CHECK_STOP_GRACE_S`` to finish; one that is killed leaves the marker."""
        argv = self.command.check_argv()
        if argv is None:
            return None  # a wrapper: its own run checks
        out = RunOutput()
        limit = max(self.timeout, CHECK_TIMEOUT_MIN_S)
        if self.interrupted() and not await self.mark_all(limit, out):
            return "an earlier csync2 check was interrupted, and csync2 -mr / failed: " + \
                (out.last[-1] if out.last else "no output")
        self._set_marker(True)
        run = asyncio.create_task(run_bounded(argv, limit, self._feed("check", out.feed), self.env))
        try:
            done = await asyncio.shield(run)
        except asyncio.CancelledError:  # haflowd is stopping: let a local check finish, briefly
            try:
                finished, _ = await asyncio.wait({run}, timeout=CHECK_STOP_GRACE_S)
                if finished and not run.cancelled() and run.exception() is None and _ran_out(run.result()):
                    self._set_marker(False)
            finally:
                if not run.done():
                    run.cancel()  # run_bounded kills it; the marker stays for the next start
                    with contextlib.suppress(asyncio.CancelledError):
                        await run
            raise
        if done.error is not None:
            return done.error
        if done.timed_out:
            fixed = "marked every file dirty" if await self.mark_all(limit, out) else "could not mark every file dirty"
            return f"csync2 check killed after {limit:g}s; {fixed}"
        if _ran_out(done) and not out.db_aborted:
            self._set_marker(False)
        if done.exit_code != 0:
            r = out.verdict(done.exit_code or 1)
            again = "; every file is marked dirty before the next check" if out.db_aborted else ""
            return f"csync2 check failed: {r.detail}{again}"
        return None

    def interrupted(self) -> bool:
        """Was a check interrupted (haflowd stopped or died while it ran)?"""
        return self.check_marker is not None and self.check_marker.exists()

    async def mark_all(self, limit: float, out: RunOutput) -> bool:
        """``csync2 -mr /``: every file dirty for every peer (each peer compares each file
        once). True when it ran to its end; the check marker goes with it."""
        mark = self.command.mark_all_argv()
        if mark is None:
            return True
        done = await run_bounded(mark, limit, self._feed("mark", out.feed), self.env)
        if done.exit_code != 0:
            return False
        self._set_marker(False)
        return True

    def _set_marker(self, on: bool) -> None:
        if self.check_marker is None:
            return
        try:
            if on:
                self.check_marker.parent.mkdir(parents=True, exist_ok=True)
                self.check_marker.write_text("csync2 -cr is running; a leftover file means it was interrupted\n")
            else:
                self.check_marker.unlink(missing_ok=True)
        except OSError:
            pass  # best effort (data_dir full or read-only): the check itself still runs

    async def sync(self, host: str) -> tuple[PeerResult, float]:
        """One ``csync2 -u -P host``: what the peer got, and how long it took.

        While it runs, the peer's port is probed every ``probe_every``: a peer that stops
        answering (its link went down mid-run; csync2 would wait minutes) ends the run
        after ``LIVE_MISSES`` misses. A peer that accepts but never answers (stopped)
        still costs the whole ``timeout``."""
        out = RunOutput()
        t0 = time.monotonic()
        run = asyncio.create_task(run_bounded(self.command.update_argv(host), self.timeout,
                                              self._feed(host, out.feed), self.env))
        misses = 0
        last_probe: ProbeResult | None = None
        while True:
            finished, _ = await asyncio.wait({run}, timeout=self.probe_every)
            if finished:
                break
            last_probe = await self.probe(host)
            misses = 0 if last_probe.ok else misses + 1
            if misses >= LIVE_MISSES and not run.done():
                run.cancel()  # run_bounded kills the process group
                with contextlib.suppress(asyncio.CancelledError):
                    await run
                last = f"; last words: {out.last[-1]}" if out.last else ""
                return PeerResult(Outcome.UNREACHABLE, f"csync2 stopped after {time.monotonic() - t0:.1f}s: "
                                  f"{last_probe.detail}{last}", tuple(out.conflicts), tuple(out.resolved)), \
                    time.monotonic() - t0
        done = run.result()
        if done.error is not None:
            return PeerResult(Outcome.ERROR, done.error), done.duration
        if done.timed_out:
            last = f"; last words: {out.last[-1]}" if out.last else ""
            return PeerResult(Outcome.TIMEOUT, f"csync2 killed after {self.timeout:g}s (hung){last}",
                              tuple(out.conflicts), tuple(out.resolved)), done.duration
        assert done.exit_code is not None
        return out.verdict(done.exit_code), done.duration

    async def peer_mtime(self, me: str, host: str, name: str, path: str) -> int | None:
        """The mtime (whole seconds) ``host``'s csync2 has for the file (csync2's ``name``,
        ``path`` here) in its database; None if unknown (no answer, not there)."""
        argv = self.command.peer_check_argv(me, host, path)
        if argv is None or not (await self.probe(host)).ok:
            return None
        lines: list[str] = []
        done = await run_bounded(argv, min(self.timeout, PENDING_TIMEOUT_S), self._feed("peer-check", lines.append),
                                 self.env)
        if done.exit_code not in (0, 2):  # 2: in sync
            return None
        return parse_peer_mtime(lines, name)

    async def force(self, path: str) -> str | None:
        """``csync2 -f PATH``: None, or what went wrong."""
        argv = self.command.force_argv(path)
        if argv is None:
            return "the command is not csync2 itself"
        out = RunOutput()
        done = await run_bounded(argv, min(self.timeout, PENDING_TIMEOUT_S), self._feed("force", out.feed), self.env)
        if done.exit_code == 0:
            return None
        return done.error or f"csync2 -f exited with {done.exit_code}: " + (out.last[-1] if out.last else "no output")

    async def unforce(self, name: str, path: str) -> list[str]:
        """Peers other than the one a forced update went to keep the normal rule: if
        ``csync2 -M`` still shows ``name`` forced for any, ``csync2 -m PATH`` (dirty, not
        forced: each compares once). The peers it was still forced for."""
        argv, mark = self.command.pending_argv(), self.command.mark_argv(path)
        if argv is None or mark is None:
            return []
        lines: list[str] = []
        done = await run_bounded(argv, min(self.timeout, PENDING_TIMEOUT_S), lines.append, self.env,
                                 stdout_only=True)
        if done.exit_code not in (0, 2):
            return []
        peers = forced_rows("\n".join(lines), name)
        if peers:
            await run_bounded(mark, min(self.timeout, PENDING_TIMEOUT_S), self._feed("mark", lambda _l: None),
                              self.env)
        return peers

    async def pending(self) -> dict[str, int] | None:
        """Dirty files per csync2 host, from csync2's own database; None if unknown."""
        argv = self.command.pending_argv()
        if argv is None:
            return None
        lines: list[str] = []
        done = await run_bounded(argv, min(self.timeout, PENDING_TIMEOUT_S), lines.append, self.env,
                                 stdout_only=True)
        if done.exit_code not in (0, 2):  # 2: nothing pending
            return None
        return parse_pending("\n".join(lines))
