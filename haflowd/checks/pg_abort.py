"""Cutting a blocked PostgreSQL probe's connection when the event loop gives up on it.

Shared by the PostgreSQL check (postgres.py) and Airflow's job probe (airflow/jobs.py). It
imports nothing of haflowd: config loading imports airflow/jobs.py, and postgres.py imports
the config, so the job probe taking this from postgres.py closed an import cycle.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading

import psycopg2
import psycopg2.extensions


class ProbeAbort:
    """Lets the event loop cut a probe thread's connection when it gives up on it: shutting the
    socket down makes a read that hangs on a stopped server return at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: psycopg2.extensions.connection | None = None
        self.aborted = False

    def attach(self, conn: psycopg2.extensions.connection) -> bool:
        with self._lock:
            if self.aborted:
                return False
            self._conn = conn
            return True

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            conn = self._conn
            if conn is None or conn.closed:
                return
            # under the lock: the thread cannot close (and the fd be reused) meanwhile
            with contextlib.suppress(OSError):
                s = socket.socket(fileno=os.dup(conn.fileno()))
                try:
                    s.shutdown(socket.SHUT_RDWR)
                finally:
                    s.close()
