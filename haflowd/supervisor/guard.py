"""The guard: one small process per component, between the daemon and the child.

Why it exists: a child's whole process tree must die with it and with the daemon.
``PR_SET_PDEATHSIG`` reaches only a direct child, a process group misses whoever
called ``setsid``, and cgroups v2 is not writable everywhere. The guard is a
*child subreaper* (``PR_SET_CHILD_SUBREAPER``), so every orphaned descendant of the
component is re-parented to it, wherever its session or group went; it can always
find and kill the whole tree. It notices the daemon's death by EOF on its stdin
(also after SIGKILL) and then kills the tree at once.

Run as ``python -I -S guard.py`` (standard library only, fast to start). Protocol,
one JSON object per line:

  stdin (from the daemon):  {"op": "spawn", "argv": [...], "env": {...}, "cwd": ...,
                             "uid": ..., "gid": ..., "groups": [...]}
                            {"op": "signal", "sig": 15}     to the child's process group
                            {"op": "kill"}                  SIGKILL to the whole tree (its
                                                            "exited" follows, like any exit)
  fd N (to the daemon; N is argv[1]):     {"ev": "started", "pid": N}
                            {"ev": "spawn_failed", "error": "..."}
                            {"ev": "exited", "pid": N, "code": C, "signal": S, "leftovers": K}

EOF on stdin: kill the whole tree, reap it, exit. The child's stdout and stderr are
the guard's own, which the daemon reads.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import signal
import sys
import time
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
REAP_DEADLINE_S = 5.0

_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class Guard:
    def __init__(self, events_fd: int) -> None:
        self.events_fd = events_fd
        self.me = os.getpid()
        self.child: int | None = None
        self.buf = b""
        self.closing = False
        self.child_status: tuple[int, int] | None = None

    # ------------------------------------------------------------------ events

    def emit(self, **event: Any) -> None:
        try:
            os.write(self.events_fd, (json.dumps(event) + "\n").encode())
        except OSError:
            pass

    # ------------------------------------------------------------------ spawning

    def spawn(self, spec: dict[str, Any]) -> None:
        if self.child is not None:
            self.emit(ev="spawn_failed", error="a child is already running")
            return
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(r)
            self._exec_child(spec, w)
        os.close(w)
        err = b""
        while True:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            err += chunk
        os.close(r)
        if err:
            os.waitpid(pid, 0)
            self.emit(ev="spawn_failed", error=err.decode(errors="replace"))
            return
        self.child = pid
        self.emit(ev="started", pid=pid)

    @staticmethod
    def _exec_child(spec: dict[str, Any], errpipe: int) -> None:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            signal.set_wakeup_fd(-1)
            os.setsid()
            fd = os.open(os.devnull, os.O_RDONLY)
            os.dup2(fd, 0)
            os.close(fd)
            os.closerange(3, errpipe)
            os.closerange(errpipe + 1, 65536)
            if spec.get("gid") is not None:
                os.setgroups(spec.get("groups") or [spec["gid"]])
                os.setgid(spec["gid"])
            if spec.get("uid") is not None:
                os.setuid(spec["uid"])
            # after setuid: a credential change clears the parent-death signal
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() == 1:
                os._exit(1)
            if spec.get("cwd"):
                os.chdir(spec["cwd"])
            os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
        except BaseException as e:  # report and die; nothing else may run here
            msg = f"{spec['argv'][0]}: {getattr(e, 'strerror', None) or e}"
            try:
                os.write(errpipe, msg.encode()[:4000])
            finally:
                os._exit(127)

    # ------------------------------------------------------------------ killing

    def _my_children(self) -> list[int]:
        try:
            with open(f"/proc/{self.me}/task/{self.me}/children") as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            out = []
            for name in os.listdir("/proc"):
                if name.isdigit():
                    try:
                        with open(f"/proc/{name}/stat") as f:
                            stat = f.read()
                        if int(stat.rsplit(")", 1)[1].split()[1]) == self.me:
                            out.append(int(name))
                    except (OSError, IndexError, ValueError):
                        continue
            return out

    def kill_tree(self, pgid: int | None) -> int:
        """SIGKILL everything below the guard and reap it; returns how many were killed."""
        killed = 0
        deadline = time.monotonic() + REAP_DEADLINE_S
        seen: set[int] = set()
        while time.monotonic() < deadline:
            if pgid is not None:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except OSError:
                    pgid = None
            kids = self._my_children()
            for pid in kids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    if pid not in seen:
                        seen.add(pid)
                        killed += 1
                except OSError:
                    pass
            try:
                while True:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                    if pid == 0:
                        break
                    if pid == self.child:  # reaped here, not in reap(): remember how it ended
                        self.child = None
                        self.child_status = (pid, status)
            except ChildProcessError:
                if pgid is None or not _group_alive(pgid):
                    return killed
            time.sleep(0.002)
        return killed

    # ------------------------------------------------------------------ main loop

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.child:
                self.child = None
                self.exited(pid, status, self.kill_tree(pid))

    def exited(self, pid: int, status: int, leftovers: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        self.emit(
            ev="exited",
            pid=pid,
            code=code if code >= 0 else None,
            signal=-code if code < 0 else None,
            leftovers=leftovers,
        )

    def command(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
            op = msg["op"]
        except (ValueError, KeyError, TypeError):
            return
        if op == "spawn":
            self.spawn(msg)
        elif op == "signal" and self.child is not None:
            try:
                os.killpg(self.child, int(msg["sig"]))
                os.killpg(self.child, signal.SIGCONT)  # a stopped process must see it too
            except OSError:
                pass
        elif op == "kill":
            child = self.child
            self.child_status = None
            killed = self.kill_tree(child)
            if self.child_status is not None:  # the child was reaped by the kill: say so
                pid, status = self.child_status
                self.child_status = None
                self.exited(pid, status, max(0, killed - 1))

    def run(self) -> int:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        stdin = sys.stdin.fileno()
        while True:
            try:
                ready, _, _ = select.select([stdin, wake_r], [], [])
            except InterruptedError:
                continue
            if wake_r in ready:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                self.reap()
            if stdin in ready:
                try:
                    data = os.read(stdin, 65536)
                except OSError as e:
                    if e.errno == errno.EINTR:
                        continue
                    data = b""
                if not data:  # the daemon is gone or is done with us
                    self.kill_tree(self.child)
                    return 0
                self.buf += data
                while b"\n" in self.buf:
                    line, self.buf = self.buf.split(b"\n", 1)
                    if line.strip():
                        self.command(line)
            self.reap()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


if __name__ == "__main__":
    sys.exit(Guard(int(sys.argv[1])).run())
