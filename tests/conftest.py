"""Shared fixtures: a real haflowd subprocess with its own ports, socket and data dir."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from testbed.util import free_port as free_port  # one copy, shared with the builders in testbed/
from testbed.util import wait_until as wait_until  # (an AssertionError at the deadline, as before)

ROOT = Path(__file__).resolve().parent.parent


def tree_pids(pid: int) -> set[int]:
    """A process and all its descendants."""
    try:
        p = psutil.Process(pid)
        return {pid, *(c.pid for c in p.children(recursive=True))}
    except psutil.Error:
        return set()


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.Error:
            continue
    return out


@dataclass
class Daemon:
    dir: Path
    port: int
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.log = self.dir / "haflowd.log"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def socket(self) -> Path:
        return self.dir / "control.sock"

    def start(self, wait: bool = True, extra_env: dict[str, str] | None = None) -> Daemon:
        env = {**os.environ, **self.env, **(extra_env or {})}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "haflowd", "--config", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.dir,
            )
        if wait:
            wait_until(self.live, 15, "haflowd /liveness")
        return self

    def live(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"haflowd exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
        try:
            return self.get("/liveness")[0] == 200
        except OSError:
            return False

    def get(self, path: str, method: str = "GET") -> tuple[int, Any]:
        req = urllib.request.Request(self.api + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                body = r.read()
                return r.status, (json.loads(body) if body and path != "/metrics" else body)
        except urllib.error.HTTPError as e:
            body = e.read()
            return e.code, (json.loads(body) if body else None)

    def components(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.get("/components")[1]}

    def comp(self, name: str) -> dict[str, Any]:
        return self.components()[name]

    def wait_state(self, name: str, state: str, timeout: float = 10.0, **more: Any) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            c = self.comp(name)
            if c["state"] == state and all(c.get(k) == v for k, v in more.items()):
                return c
            return None
        return wait_until(check, timeout, f"{name} to be {state} {more or ''}")

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "haflowd.ctl", "--api", self.api, "--socket", str(self.socket), *args],
            capture_output=True, text=True, timeout=timeout,
        )

    def write_config(self, body: str) -> None:
        self.config.write_text(render_config(self, body))

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def guard_pids(self) -> set[int]:
        return {c["guard_pid"] for c in self.components().values() if c.get("guard_pid")}

    def all_pids(self) -> set[int]:
        """Every process below the daemon: guards, children, grandchildren."""
        assert self.proc is not None
        return tree_pids(self.proc.pid) - {self.proc.pid}

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            pids = self.all_pids()
            self.proc.kill()
            self.proc.wait(10)
            for pid in pids:
                with contextlib.suppress(psutil.Error):
                    psutil.Process(pid).kill()


def render_config(d: Daemon, body: str) -> str:
    head = f"""
        [node]
        name = "test"
        data_dir = "{d.dir / 'data'}"

        [api]
        listen = "127.0.0.1:{d.port}"
        control_socket = "{d.socket}"
    """
    return textwrap.dedent(head) + textwrap.dedent(body)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """``daemon(config_body)`` → a started haflowd; everything it started dies at teardown."""
    made: list[Daemon] = []

    def make(body: str, start: bool = True, env: dict[str, str] | None = None) -> Daemon:
        d = Daemon(dir=tmp_path / f"d{len(made)}", port=free_port(), config=Path())
        d.dir.mkdir()
        d.config = d.dir / "haflowd.toml"
        d.env = env or {}
        d.write_config(body.replace("@DIR@", str(d.dir)).replace("@PY@", sys.executable))
        made.append(d)
        return d.start() if start else d

    yield make
    for d in made:
        d.kill()
        # whatever carries this daemon's marker must be gone too
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if str(d.dir) in p.environ().get("HAFLOWD_SUPERVISOR", ""):
                    p.send_signal(signal.SIGKILL)


# --------------------------------------------------------------------------- gossip helpers


def new_gossip_key() -> str:
    """A fresh gossip key: 32 random bytes, base64 (one line of a key file)."""
    import base64

    return base64.b64encode(os.urandom(32)).decode()


def gossip_body(listen: str, seeds: list[str], key_file: Path, advertise: str | None = None) -> str:
    """A ``[gossip]`` section for the ``daemon`` fixture's body."""
    seed_list = ", ".join(f'"{s}"' for s in seeds)
    adv = f'advertise = "{advertise}"\n' if advertise else ""
    return f'\n[gossip]\nlisten = "{listen}"\n{adv}seeds = [{seed_list}]\nkey_file = "{key_file}"\n'


def rename_node(d: Daemon, name: str) -> None:
    """Give a daemon made by ``daemon(..., start=False)`` its own node name (the default is "test")."""
    d.config.write_text(d.config.read_text().replace('name = "test"', f'name = "{name}"', 1))


def peer_map(d: Daemon) -> dict[str, dict[str, Any]]:
    """``GET /peers`` by name."""
    status, body = d.get("/peers")
    assert status == 200, body
    return {p["name"]: p for p in body}


def peer_changes(d: Daemon, peer: str | None = None, new: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The ``peer_status`` events in a daemon's JSON log, optionally about one peer / to some statuses."""
    return [e for e in d.log_events() if e.get("event") == "peer_status"
            and (peer is None or e.get("peer") == peer) and (not new or e.get("new") in new)]


def first_seen(observers: dict[str, Daemon], pred: Callable[[str, dict[str, dict[str, Any]]], bool],
               timeout: float, what: str, t0: float | None = None) -> dict[str, float]:
    """Poll every observer's /peers; the time (from t0) at which each first satisfied ``pred``."""
    t0 = time.monotonic() if t0 is None else t0
    deadline = time.monotonic() + timeout
    seen: dict[str, float] = {}
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        for name, d in observers.items():
            if name in seen:
                continue
            try:
                peers = peer_map(d)
            except OSError as e:
                last[name] = e
                continue
            last[name] = {p: (v["status"], v["incarnation"]) for p, v in peers.items()}
            if pred(name, peers):
                seen[name] = time.monotonic() - t0
        if len(seen) == len(observers):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; seen: {seen}; last views: {last}")


def status_of(peer: str, *statuses: str, min_inc: int = -1) -> Callable[[str, dict[str, dict[str, Any]]], bool]:
    """A ``first_seen`` predicate: ``peer`` has one of ``statuses`` at an incarnation above ``min_inc``."""

    def pred(_observer: str, peers: dict[str, dict[str, Any]]) -> bool:
        p = peers.get(peer)
        return p is not None and p["status"] in statuses and p["incarnation"] > min_inc
    return pred


def fmt(times: dict[str, float]) -> str:
    """``first_seen``'s answer for people: "n1 1.61s, n2 1.62s"."""
    return ", ".join(f"{n} {t:.2f}s" for n, t in sorted(times.items()))


from tests.fixtures.airflow import *  # noqa: E402,F403  (Airflow 3 in .venv-airflow: airflow_sqlite)
from tests.fixtures.csync2 import *  # noqa: E402,F403  (csync2 in namespaces: csync2_cluster)
from tests.fixtures.postgres import *  # noqa: E402,F403  (PostgreSQL fixtures: pg_pair, pg_pair_factory)
from tests.fixtures.rabbitmq import *  # noqa: E402,F403  (a three-node RabbitMQ cluster: rabbit_cluster)
from tests.fixtures.wheelhouse import *  # noqa: E402,F403  (one wheelhouse per run: wheelhouse)

SHARED_SERVICE_GROUPS = {"rabbit_cluster": "rabbitmq", "wheelhouse": "wheelhouse"}
"""Session fixtures heavy enough that every test using one runs on the same xdist worker
(a RabbitMQ cluster costs 135 MB a node and 10-14 s to form; one per run is enough)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tiers by directory: everything under tests/integration is `integration` (select
    with `-m integration`, skip with `-m "not integration"`), everything under tests/unit
    is `unit`.

    Under pytest-xdist (`--dist loadgroup`, as scripts/test runs), a file's tests stay on
    one worker, so its module fixtures start once; the tests of every file that uses a
    shared service share a worker with it."""
    file_group: dict[Path, str] = {}
    for item in items:  # a file one of whose tests uses a shared service joins its group
        fixtures = getattr(item, "fixturenames", ())
        for fixture, group in SHARED_SERVICE_GROUPS.items():
            if fixture in fixtures:
                file_group[Path(str(item.fspath))] = group
    for item in items:
        path = Path(str(item.fspath))
        if "integration" in path.parts:
            item.add_marker(pytest.mark.integration)
        elif "unit" in path.parts:
            item.add_marker(pytest.mark.unit)
        item.add_marker(pytest.mark.xdist_group(file_group.get(path, str(path.relative_to(ROOT)))))
