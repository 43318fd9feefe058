"""csync2 without certificates: the group's config, a node's database and its server.

Each node has its own ``CSYNC2_SYSTEM_DIR`` (csync2.cfg, key), database dir (``-D``) and
name (``-N``); its server ``csync2 -ii -v`` runs inside the node's namespace (``wrap``
puts a command there: ``ip netns exec NS``, or more).
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from testbed.util import Wrap

__all__ = ["PORT", "Wrap", "create_tables", "group_config", "listening", "make_key", "start_server", "tables"]

PORT = 30865


def group_config(hosts: Sequence[str], key: Path | str, include: str, backup: Path | str,
                 prefix: Mapping[str, Path | str] | None = None, exclude: Sequence[str] = ("*~",)) -> str:
    """A ``group dags`` for ``hosts``; ``prefix`` (host -> folder) maps ``%dags%`` per host
    when the DAG folders differ. Never exclude ``.*`` wholesale: Airflow reads ``.airflowignore``."""
    lines = ["nossl * *;", "group dags {", f"    host {' '.join(hosts)};", f"    key {key};",
             f"    include {include};", *(f"    exclude {e};" for e in exclude), "    auto younger;",
             f"    backup-directory {backup};", "    backup-generations 3;", "}"]
    if prefix:
        lines += ["prefix dags {", *(f"    on {h}: {d};" for h, d in prefix.items()), "}"]
    return "\n".join(lines) + "\n"


def make_key(path: Path) -> None:
    subprocess.run(["csync2", "-k", str(path)], check=True, capture_output=True, timeout=30)


def tables(db: Path) -> set[str]:
    """The tables of the csync2 database in ``db`` when it has ``file`` and ``dirty``; else empty."""
    found: set[str] = set()
    for f in db.glob("*.db3"):
        with contextlib.closing(sqlite3.connect(f)) as conn:
            found |= {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return found if {"file", "dirty"} <= found else set()


def create_tables(wrap: Wrap, host: str, db: Path, env: Mapping[str, str],
                  cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``csync2 -L``: lists nothing (exit 2) but opens the database, which creates its tables.

    Two server children creating them at once (the first syncs from both peers) race: one
    fails with "table file already exists" and its client sees "Config command failed".
    Made first, no run depends on who wins."""
    return subprocess.run(wrap(["csync2", "-N", host, "-D", str(db), "-L"]), capture_output=True, text=True,
                          timeout=30, env=dict(env), cwd=cwd, check=False)


def start_server(wrap: Wrap, host: str, db: Path, env: Mapping[str, str], log: Path,
                 cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """``csync2 -ii -v`` in a session of its own (signal its group to stop or kill it)."""
    with open(log, "ab") as out:
        return subprocess.Popen(wrap(["csync2", "-ii", "-v", "-N", host, "-D", str(db)]), stdout=out,
                                stderr=subprocess.STDOUT, env=dict(env), cwd=cwd, start_new_session=True)


def listening(ns: str) -> bool:
    """Something listens on TCP :30865 inside namespace ``ns``."""
    r = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Htln", f"sport = :{PORT}"], capture_output=True,
                       text=True, timeout=10)
    return bool(r.stdout.strip())
