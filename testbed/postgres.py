"""PostgreSQL: a primary and a streaming standby (docs: /work/shared/TESTING.md).

The standby is a copy of the same cleanly shut down cluster as the primary (a valid base
backup; both share its system identifier), streaming through the physical slot ``pg2``
with ``application_name=pg2``, as ``pg_basebackup -R -C -S pg2`` sets up, about 0.7 s
sooner. As root, every binary runs as the ``postgres`` user through ``runuser``, in a
directory ``chown``ed to it.

Options for the demo: fixed ports, the address the pair is reached at (``host``), a
``wrap`` that runs every command in another namespace, a ``worker`` (a thread there) for
SQL, more settings and ``pg_hba.conf`` lines, more environment (a marker).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from testbed.netns import NsWorker
from testbed.util import Wrap, free_port, same_place, wait_until


def pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<ver>/bin`` with a server in it."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    return Path(found[-1]).parent if found else None


def pg_unavailable() -> str | None:
    if pg_bin() is None:
        return "PostgreSQL is not installed (/usr/lib/postgresql/<ver>/bin); scripts/setup installs it"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "no postgres user to run the server as"
    return None


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], timeout: float = 30, wrap: Wrap = same_place,
         env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``cmd`` as the postgres user, where ``wrap`` puts it; RuntimeError when it fails."""
    r = subprocess.run(wrap(_as_postgres(cmd)), capture_output=True, text=True, timeout=timeout,
                       env=None if env is None else dict(env))
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def _private_dir(prefix: str, shm: bool = True) -> Path:
    """A directory the postgres user owns; in /dev/shm when there is one (and ``shm``): copying
    a cluster there takes 0.2 s instead of 2 s on a busy disk."""
    base = "/dev/shm" if shm and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(d, pw.pw_uid, pw.pw_gid)
    d.chmod(0o700)
    return d


@dataclass
class PgNode:
    name: str
    data: Path
    port: int
    bin: Path
    host: str = "127.0.0.1"
    wrap: Wrap = same_place  # where its commands run
    worker: NsWorker | None = None  # where its SQL runs (None: this thread)
    env: Mapping[str, str] | None = None

    @property
    def dsn(self) -> str:
        return f"host={self.host} port={self.port} dbname=postgres user=postgres"

    @property
    def log(self) -> Path:
        return self.data.parent / f"{self.name}.log"

    def pg_ctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return _run([str(self.bin / "pg_ctl"), "-D", str(self.data), *args], timeout, self.wrap, self.env)

    def start(self) -> None:
        try:
            self.pg_ctl("-w", "-t", "20", "-l", str(self.log), "start")
        except RuntimeError as e:  # pg_ctl says "examine the log output": show it
            raise RuntimeError(f"{e}\n{self.log} ends:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 8) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as e:
            return f"(unreadable: {e})"

    def stop(self, mode: str = "immediate") -> None:
        self.pg_ctl("-w", "-t", "20", "-m", mode, "stop")

    def promote(self) -> None:
        self.pg_ctl("-w", "-t", "20", "promote")

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        pid = self.postmaster_pid()
        return pid is not None and psutil.pid_exists(pid)

    def sql(self, query: str, params: Any = None, timeout: int = 3, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        import psycopg2

        def q() -> list[tuple[Any, ...]]:
            conn = psycopg2.connect(self.dsn, dbname=dbname, connect_timeout=timeout,
                                    options=f"-c statement_timeout={timeout * 1000}")
            try:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(query, params)
                    return cur.fetchall() if cur.description else []
            finally:
                conn.close()

        return q() if self.worker is None else self.worker.call(q, timeout=timeout * 2 + 5)

    def kill(self) -> None:
        """Whatever state it is in (stopped by SIGSTOP too): gone, at once."""
        pid = self.postmaster_pid()
        if pid is None or not psutil.pid_exists(pid):
            return
        try:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGCONT)
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
            return
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(procs, timeout=5)


@dataclass
class PgPair:
    """``primary`` (pg1) and ``standby`` (pg2), streaming through slot ``pg2``."""

    dir: Path
    primary: PgNode
    standby: PgNode
    nodes: list[PgNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nodes = [self.primary, self.standby]

    def destroy(self) -> None:
        for n in self.nodes:
            with contextlib.suppress(Exception):
                n.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def postgres_body(self, local: str, interval: str = "500ms", timeout: str = "1s",
                      extra: str = "") -> str:
        """A ``[postgres]`` section for the ``daemon`` fixture, naming ``local`` as this host's node."""
        nodes = "".join(f'\n[[postgres.node]]\nname = "{n.name}"\ndsn = "{n.dsn}"\n' for n in self.nodes)
        return (f'\n[postgres]\ntopology = "streaming"\nlocal_node = "{local}"\ninterval = "{interval}"\n'
                f'timeout = "{timeout}"\n{extra}{nodes}')

    def wait_streaming(self, timeout: float = 15) -> None:
        def streaming() -> bool:
            rows = self.primary.sql("SELECT application_name, state FROM pg_stat_replication")
            return ("pg2", "streaming") in rows
        wait_until(streaming, timeout, "pg2 to stream from pg1")


CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = replica
max_replication_slots = 5
hot_standby = on
wal_receiver_status_interval = 1s
shared_buffers = 16MB
logging_collector = off
"""


def _init_template(bindir: Path, root: Path | None = None) -> Path:
    """An initdb'd cluster in ``ROOT/data`` (a new private dir by default) to copy pairs from."""
    root = _private_dir("haflowd-pgtpl-") if root is None else root
    data = root / "data"
    _run([str(bindir / "initdb"), "-A", "trust", "-U", "postgres", "--no-sync", "-D", str(data)], timeout=120)
    with open(data / "pg_hba.conf", "a") as f:
        f.write("host replication all 127.0.0.1/32 trust\n")
    return root


def make_pair(template: Path | None, bindir: Path, *, root: Path | None = None,
              ports: tuple[int, int] | None = None, host: str = "127.0.0.1", wrap: Wrap = same_place,
              worker: NsWorker | None = None, conf_extra: str = "", hba_extra: str = "",
              env: Mapping[str, str] | None = None) -> PgPair:
    """Two copies of the template (initdb'd into ``ROOT/template`` when None); the second starts
    as a standby streaming from the first through the physical slot ``pg2``.

    ``root``: a directory the postgres user owns (a new private dir by default); ``host``: the
    address the pair is reached at, by the standby too; ``conf_extra``: settings after the
    defaults (they win), ``hba_extra``: lines for ``pg_hba.conf``."""
    root = _private_dir("haflowd-pg-") if root is None else root
    p1, p2 = (free_port(), free_port()) if ports is None else ports
    primary, standby = (PgNode(name, root / name, port, bindir, host, wrap, worker, env)
                        for name, port in (("pg1", p1), ("pg2", p2)))
    pair = PgPair(root, primary, standby)
    try:
        if template is None:
            template = _init_template(bindir, root / "template")
        sockets = root / "sockets"
        src = template / "data"
        _run(["sh", "-c", f'mkdir -p "{sockets}" && cp -a "{src}" "{primary.data}" & '
                          f'cp -a "{src}" "{standby.data}" & wait'])
        for n in (primary, standby):
            with open(n.data / "postgresql.conf", "a") as f:
                f.write(CONF.format(port=n.port, sockets=sockets) + conf_extra)
            if hba_extra:
                with open(n.data / "pg_hba.conf", "a") as f:
                    f.write(hba_extra)
        with open(standby.data / "postgresql.conf", "a") as f:
            f.write(f"primary_conninfo = 'host={host} port={primary.port} user=postgres application_name=pg2'\n"
                    "primary_slot_name = 'pg2'\n")
        (standby.data / "standby.signal").write_text("")
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(standby.data / "standby.signal", pw.pw_uid, pw.pw_gid)
        primary.start()
        primary.sql("SELECT pg_create_physical_replication_slot('pg2', true)")
        standby.start()
        pair.wait_streaming()
    except BaseException:
        pair.destroy()
        raise
    return pair


