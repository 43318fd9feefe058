"""``haflowctl doctor`` against real things on loopback: a real seed daemon answering (or
refusing) a signed gossip ping, one under libfaketime for the clock skew, a PostgreSQL
(the session's pg_pair) with and without pg_monitor, a fake RabbitMQ management API
(its ``/api/whoami`` contract), a real ``csync2 -ii`` peer, ports held by our daemon and by
another process, real files with wrong modes. A good node passes with exit 0."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from haflowd import doctor
from haflowd.doctor import FAIL, OK, WARN, Finding
from tests.conftest import Daemon, free_port, gossip_body, new_gossip_key, render_config, wait_until
from tests.fixtures.fake_airflow import fake_venv
from tests.fixtures.postgres import PgPair, pg_pair, pg_template  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


# --------------------------------------------------------------------------- helpers


def key_file(path: Path, key: str | None = None, mode: int = 0o600) -> Path:
    path.write_text((key or new_gossip_key()) + "\n")
    path.chmod(mode)
    return path


class Node:
    """This node's config (no daemon unless a test starts one): node "a", its own ports."""

    def __init__(self, tmp: Path, body: str = "", data_dir: Path | None = None) -> None:
        self.dir = tmp
        self.port = free_port()
        self.config = tmp / "haflowd.toml"
        self.sock = tmp / "control.sock"
        head = f"""
            [node]
            name = "a"
            data_dir = "{data_dir or tmp / 'data'}"

            [api]
            listen = "127.0.0.1:{self.port}"
            control_socket = "{self.sock}"
        """
        self.config.write_text(textwrap.dedent(head) + textwrap.dedent(body))

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def doctor(self) -> list[Finding]:
        return doctor.run(str(self.config), self.api, str(self.sock), timeout=1.0, environ={"PATH": os.defpath})


def only(findings: list[Finding], prefix: str) -> list[Finding]:
    return [f for f in findings if f.check.startswith(prefix)]


def start_daemon(d: Daemon, env: dict[str, str] | None = None) -> Daemon:
    d.dir.mkdir(parents=True, exist_ok=True)
    return d.start(extra_env=env)


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A running daemon (node "test") with gossip on loopback: (its gossip address, its key file)."""
    root = tmp_path_factory.mktemp("seed")
    key = key_file(root / "gossip.key")
    gport = free_port()
    d = Daemon(dir=root / "d", port=free_port(), config=root / "d" / "haflowd.toml")
    d.dir.mkdir()
    d.config.write_text(render_config(d, gossip_body(f"127.0.0.1:{gport}", [], key)))
    start_daemon(d)
    try:
        yield f"127.0.0.1:{gport}", key
    finally:
        d.kill()


class Whoami(BaseHTTPRequestHandler):
    """RabbitMQ's management API as far as ``/api/whoami`` goes: basic auth, the user's tags."""

    users = {"mon": ("pw", ["monitoring"]), "admin": ("pw", ["administrator"]), "plain": ("pw", ["management"])}

    def do_GET(self) -> None:
        import base64

        auth = self.headers.get("Authorization", "")
        user, _, pw = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
        known = self.users.get(user)
        if self.path != "/api/whoami" or known is None or known[0] != pw:
            self.send_response(401)
            body = b'{"error":"not_authorised"}'
        else:
            self.send_response(200)
            body = json.dumps({"name": user, "tags": known[1]}).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def management() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Whoami)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def rabbit_body(url: str, user: str, password: str = "pw") -> str:
    return (f'\n[rabbitmq]\n[[rabbitmq.node]]\nname = "rabbit@a"\nmanagement_url = "{url}"\n'
            f'username = "{user}"\npassword = "{password}"\n')


CSYNC2_CFG = """\
nossl * *;
group dags {{
    host nodea localhost;
    key {key};
    include {include};
    exclude *~;
    auto younger;
    {backup}
}}
"""


class Csync2Peer:
    """This node's csync2 config and a real ``csync2 -ii`` peer (host "localhost") on loopback."""

    def __init__(self, tmp: Path, backup: bool = True, key_mode: int = 0o600, include: Path | None = None) -> None:
        self.sys = tmp / "csync2"
        self.sys.mkdir(parents=True)
        self.dags = tmp / "dags"
        self.dags.mkdir()
        self.key = self.sys / "csync2.key"
        subprocess.run(["csync2", "-k", str(self.key)], check=True, capture_output=True, timeout=10)
        self.key.chmod(key_mode)
        self.port = free_port()
        (self.sys / "csync2.cfg").write_text(CSYNC2_CFG.format(
            key=self.key, include=include or self.dags,
            backup=f"backup-directory {tmp / 'backup'}; backup-generations 3;" if backup else ""))
        self.server: subprocess.Popen[bytes] | None = None

    def start(self) -> Csync2Peer:
        db = self.sys.parent / "db"
        db.mkdir()
        self.server = subprocess.Popen(
            ["csync2", "-ii", "-N", "localhost", "-p", str(self.port), "-D", str(db)],
            env={**os.environ, "CSYNC2_SYSTEM_DIR": str(self.sys)}, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: doctor.tcp_error("127.0.0.1", self.port, 0.2) is None, 5, "csync2 -ii listening")
        return self

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait(5)

    def body(self) -> str:
        command = ["env", f"CSYNC2_SYSTEM_DIR={self.sys}", "csync2", "-N", "nodea", "-D", str(self.sys), "-x"]
        return (f'\n[sync]\ncommand = {json.dumps(command)}\nwatch = ["{self.dags}"]\npeers = ["b"]\n'
                f'port = {self.port}\nhost_map = {{ a = "nodea", b = "localhost" }}\n')


@pytest.fixture
def csync2_peer(tmp_path: Path) -> Iterator[Csync2Peer]:
    if shutil.which("csync2") is None:
        pytest.skip("csync2 is not installed; scripts/setup installs it")
    peer = Csync2Peer(tmp_path / "c2")
    try:
        yield peer.start()
    finally:
        peer.stop()


# --------------------------------------------------------------------------- a good node


def test_good_node_passes_with_exit_0(tmp_path: Path, seed: tuple[str, Path], pg_pair: PgPair,  # noqa: F811
                                      management: str, csync2_peer: Csync2Peer) -> None:
    seed_addr, seed_key = seed
    mine = key_file(tmp_path / "gossip.key", seed_key.read_text().strip())
    venv = fake_venv(tmp_path / "venv", "apache_airflow_core-3.3.2")
    (tmp_path / "work").mkdir()
    body = f"""
        [[component]]
        name = "dags"
        preset = "airflow-dag-processor"
        environment = {{ PATH = "{venv}:/usr/bin:/bin", AIRFLOW_HOME = "{tmp_path}" }}

        [[component]]
        name = "sleeper"
        command = ["sleep", "60"]
        working_dir = "{tmp_path / 'work'}"
    """
    body = textwrap.dedent(body) + gossip_body(f"127.0.0.1:{free_port()}", [seed_addr], mine)
    body += pg_pair.postgres_body("pg1") + rabbit_body(management, "mon") + csync2_peer.body()
    node = Node(tmp_path, body)
    r = subprocess.run([sys.executable, "-m", "haflowd.ctl", "--config", str(node.config), "doctor", "--json"],
                       capture_output=True, text=True, timeout=60)
    found = json.loads(r.stdout)
    assert [f for f in found if f["status"] != OK] == [], r.stdout
    assert r.returncode == 0, r.stderr
    checks = {f["check"] for f in found}
    for expected in ("config", "component dags: command", "component dags: airflow", "component sleeper: working_dir",
                     "data_dir", "secret gossip.key_file", "csync2", "csync2 config", f"csync2 covers {csync2_peer.dags}",
                     "csync2 backups", "secret csync2 key", "csync2 peer localhost", f"gossip seed {seed_addr}",
                     f"clock {seed_addr}", "postgres pg1", "postgres pg2", "rabbitmq rabbit@a", "port api", "port gossip"):
        assert expected in checks, expected
    assert "Airflow 3.3.2" in next(f["what"] for f in found if f["check"] == "component dags: airflow")
    text = subprocess.run([sys.executable, "-m", "haflowd.ctl", "--config", str(node.config), "doctor"],
                          capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and all(line.startswith("OK ") for line in text.stdout.splitlines()), text.stdout


# --------------------------------------------------------------------------- config, files


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory others may enter (pytest's own are 0700, which shields a secret inside)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="haflowd-doctor-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_invalid_config_fails_and_stops_the_checks_that_need_it(tmp_path: Path, open_dir: Path) -> None:
    exposed = key_file(open_dir / "gossip.key", mode=0o644)
    node = Node(tmp_path, gossip_body(f"127.0.0.1:{free_port()}", ["127.0.0.1:1"], exposed)
                + '\n[[component]]\nname = "x"\n')
    out = node.doctor()
    assert {f.check for f in out} == {"config"} and doctor.exit_code(out) == 2
    assert any("chmod 600" in f.what for f in out) and any("component[0]" in f.what for f in out)
    r = subprocess.run([sys.executable, "-m", "haflowd", "--config", str(node.config), "--check-config"],
                       capture_output=True, text=True, timeout=30)
    assert sorted(r.stderr.splitlines()) == sorted(f.what for f in out)


def test_component_command_and_working_dir_missing(tmp_path: Path) -> None:
    node = Node(tmp_path, f"""
        [[component]]
        name = "w"
        command = ["no-such-program-xyz"]
        working_dir = "{tmp_path / 'gone'}"
    """)
    out = node.doctor()
    cmd, wd = only(out, "component w: command")[0], only(out, "component w: working_dir")[0]
    assert cmd.status == FAIL and "no-such-program-xyz" in cmd.what
    assert wd.status == FAIL and "gone" in wd.what


def test_component_working_dir_its_user_cannot_enter(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: another user's view of a directory")
    locked = tmp_path / "locked"
    (locked / "in").mkdir(parents=True)
    locked.chmod(0o700)
    node = Node(tmp_path, f'\n[[component]]\nname = "w"\ncommand = ["/bin/true"]\nuser = "nobody"\n'
                          f'working_dir = "{locked / "in"}"\n')
    wd = only(node.doctor(), "component w: working_dir")[0]
    assert wd.status == FAIL and "cannot be entered" in wd.what and '"nobody"' in wd.what


def test_data_dir_not_writable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    node = Node(tmp_path, "", data_dir=tmp_path / "file" / "data")
    f = only(node.doctor(), "data_dir")[0]
    assert f.status == FAIL and "not writable" in f.what


def test_secret_file_of_another_owner(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    key = key_file(tmp_path / "gossip.key")
    os.chown(key, 4321, 4321)
    node = Node(tmp_path, gossip_body(f"127.0.0.1:{free_port()}", [], key))
    f = only(node.doctor(), "secret gossip.key_file")[0]
    assert f.status == FAIL and "uid 4321" in f.what


# --------------------------------------------------------------------------- csync2


def test_csync2_peer_port_closed(tmp_path: Path, csync2_peer: Csync2Peer) -> None:
    csync2_peer.stop()
    node = Node(tmp_path, csync2_peer.body())
    f = only(node.doctor(), "csync2 peer localhost")[0]
    assert f.status == FAIL and "refused" in f.what


def test_csync2_config_without_backups_warns_and_exposed_key_fails(tmp_path: Path, open_dir: Path) -> None:
    if shutil.which("csync2") is None:
        pytest.skip("csync2 is not installed; scripts/setup installs it")
    peer = Csync2Peer(open_dir / "c2", backup=False, key_mode=0o644)
    out = Node(tmp_path, peer.body()).doctor()
    assert only(out, "csync2 backups")[0].status == WARN
    key = only(out, "secret csync2 key")[0]
    assert key.status == FAIL and "0644" in key.what


def test_csync2_config_not_covering_the_watched_folder(tmp_path: Path) -> None:
    if shutil.which("csync2") is None:
        pytest.skip("csync2 is not installed; scripts/setup installs it")
    peer = Csync2Peer(tmp_path / "c2", include=tmp_path / "elsewhere")
    f = only(Node(tmp_path, peer.body()).doctor(), "csync2 covers")[0]
    assert f.status == FAIL and str(peer.dags) in f.what


def test_csync2_config_not_naming_this_node(tmp_path: Path) -> None:
    if shutil.which("csync2") is None:
        pytest.skip("csync2 is not installed; scripts/setup installs it")
    peer = Csync2Peer(tmp_path / "c2")
    body = peer.body().replace('a = "nodea"', 'a = "nodez"').replace('"-N", "nodea"', '"-N", "nodez"')
    f = only(Node(tmp_path, body).doctor(), "csync2 config")[0]
    assert f.status == FAIL and '"nodez"' in f.what


# --------------------------------------------------------------------------- gossip


def test_gossip_seed_with_another_key_refuses_our_signature(tmp_path: Path, seed: tuple[str, Path]) -> None:
    other = key_file(tmp_path / "other.key")
    node = Node(tmp_path, gossip_body(f"127.0.0.1:{free_port()}", [seed[0]], other))
    f = only(node.doctor(), f"gossip seed {seed[0]}")[0]
    assert f.status == FAIL and f.what == "the seed refused our signature: the gossip keys differ"


def test_gossip_seed_that_does_not_answer(tmp_path: Path) -> None:
    silent = f"127.0.0.1:{free_port()}"
    node = Node(tmp_path, gossip_body(f"127.0.0.1:{free_port()}", [silent], key_file(tmp_path / "k")))
    f = only(node.doctor(), f"gossip seed {silent}")[0]
    assert f.status == FAIL and "no answer" in f.what


@pytest.mark.parametrize(("offset", "ping", "clock"), [("+10s", OK, WARN), ("+60s", FAIL, FAIL)])
def test_gossip_seed_clock_skew(tmp_path: Path, offset: str, ping: str, clock: str) -> None:
    if not os.path.exists(FAKETIME_LIB):
        pytest.skip("libfaketime is not installed (apt-get install faketime)")
    key = key_file(tmp_path / "gossip.key")
    gport = free_port()
    d = Daemon(dir=tmp_path / "seed", port=free_port(), config=tmp_path / "seed" / "haflowd.toml")
    d.dir.mkdir()
    d.config.write_text(render_config(d, gossip_body(f"127.0.0.1:{gport}", [], key)))
    try:
        start_daemon(d, {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME": offset})
        node = Node(tmp_path, gossip_body(f"127.0.0.1:{free_port()}", [f"127.0.0.1:{gport}"], key))
        out = node.doctor()
    finally:
        d.kill()
    assert only(out, "gossip seed")[0].status == ping, out
    skew = only(out, "clock")[0]
    assert skew.status == clock and "+" in skew.what, skew
    if ping == FAIL:
        assert "stale" in only(out, "gossip seed")[0].what


# --------------------------------------------------------------------------- postgres, rabbitmq


def test_postgres_role_without_pg_monitor(tmp_path: Path, pg_pair: PgPair) -> None:  # noqa: F811
    pg_pair.primary.sql("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'doctor_plain') "
                        "THEN CREATE ROLE doctor_plain LOGIN; END IF; END $$")
    dsn = f"host=127.0.0.1 port={pg_pair.primary.port} dbname=postgres user=doctor_plain"
    node = Node(tmp_path, f'\n[postgres]\n[[postgres.node]]\nname = "pg1"\ndsn = "{dsn}"\n')
    f = only(node.doctor(), "postgres pg1")[0]
    assert f.status == FAIL and "pg_monitor" in f.what


def test_postgres_that_refuses_connections(tmp_path: Path) -> None:
    dsn = f"host=127.0.0.1 port={free_port()} dbname=postgres user=postgres password=hunter2"
    node = Node(tmp_path, f'\n[postgres]\n[[postgres.node]]\nname = "pg1"\ndsn = "{dsn}"\n')
    f = only(node.doctor(), "postgres pg1")[0]
    assert f.status == FAIL and "cannot connect" in f.what and "hunter2" not in f.what


@pytest.mark.parametrize(("user", "password", "status", "says"), [
    ("plain", "pw", FAIL, "neither the monitoring nor the administrator tag"),
    ("mon", "wrong", FAIL, "refused the user's credentials"),
    ("admin", "pw", OK, "administrator"),
])
def test_rabbitmq_whoami(tmp_path: Path, management: str, user: str, password: str, status: str, says: str) -> None:
    f = only(Node(tmp_path, rabbit_body(management, user, password)).doctor(), "rabbitmq")[0]
    assert f.status == status and says in f.what


def test_rabbitmq_management_api_down(tmp_path: Path) -> None:
    f = only(Node(tmp_path, rabbit_body(f"http://127.0.0.1:{free_port()}", "mon")).doctor(), "rabbitmq")[0]
    assert f.status == FAIL and "management API" in f.what


# --------------------------------------------------------------------------- ports


def test_ports_held_by_our_running_daemon_are_ok(tmp_path: Path) -> None:
    key = key_file(tmp_path / "gossip.key")
    node = Node(tmp_path, gossip_body(f"127.0.0.1:{free_port()}", [], key))
    d = Daemon(dir=tmp_path, port=node.port, config=node.config)
    try:
        start_daemon(d)
        assert d.proc is not None
        out = only(node.doctor(), "port")
    finally:
        d.kill()
    assert [f.status for f in out] == [OK, OK], out
    assert all(f"our running haflowd (pid {d.proc.pid})" in f.what for f in out)


def test_port_held_by_another_process_fails(tmp_path: Path) -> None:
    node = Node(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", node.port))
        s.listen()
        f = only(node.doctor(), "port api")[0]
    assert f.status == FAIL and f"pid {os.getpid()}" in f.what
