"""A RabbitMQ cluster of ``size`` nodes on one host (docs: /work/shared/TESTING.md).

Each node ``hfN@localhost`` has its own AMQP, management and distribution ports, its own
config, database and log directories; all share an Erlang cookie (a private ``HOME``,
mode 0400) and a private epmd, bound to 127.0.0.1 like Erlang distribution. Node 1 has no
peer discovery; the others find it with ``classic_config`` (and join it explicitly when
that races). A user ``haflowd`` (administrator, all permissions on ``/``) is made.

Options for the demo: the listeners' addresses (``host``, ``listen``), fixed ports, a
``wrap`` that runs every command in another namespace, a ``worker`` (a thread there) for
the HTTP and TCP checks, more environment (a marker), other settings.

Teardown never asks RabbitMQ politely (``rabbitmqctl stop`` can stall for seconds):
SIGKILL to each node's process group, then ``epmd -port P -kill``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

from testbed.netns import NsWorker
from testbed.util import TestbedError, Wrap, free_port, same_place, wait_until

T = TypeVar("T")
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
USER = "haflowd"
VHOST = "/"
START_TIMEOUT_S = 60.0
CTL_TIMEOUT_S = 30.0
# Three nodes share few CPUs: schedulers that spin while idle would steal them from each other.
QUIET_ERL = "+sbwt none +sbwtdcpu none +sbwtdio none"


def rabbitmq_unavailable() -> str | None:
    """Why the cluster cannot be started here, or None when it can."""
    if not (RABBIT_BIN / "rabbitmq-server").exists():
        return "rabbitmq-server is not installed (scripts/test installs the apt package rabbitmq-server)"
    if shutil.which("epmd") is None:
        return "epmd (erlang-base) is not installed"
    return None


@dataclass
class RabbitNode:
    """One broker process: its ports, its environment and how to poke it."""

    index: int
    amqp_port: int
    mgmt_port: int
    dist_port: int
    dir: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"  # where its AMQP and management listeners are reached
    wrap: Wrap = same_place

    @property
    def name(self) -> str:
        return f"hf{self.index}@localhost"

    @property
    def management_url(self) -> str:
        return f"http://{self.host}:{self.mgmt_port}"

    @property
    def pidfile(self) -> Path:
        return self.dir / "rabbit.pid"

    def ctl(self, *args: str, timeout: float = CTL_TIMEOUT_S, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl -n NODE ARGS``, in its own process group, killed whole at the deadline."""
        p = subprocess.Popen(self.wrap([str(RABBIT_BIN / "rabbitmqctl"), "-n", self.name, *args]), env=self.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            raise TestbedError(f"rabbitmqctl -n {self.name} {' '.join(args)}: no answer in {timeout}s") from None
        r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
        if check and r.returncode != 0:
            raise TestbedError(f"rabbitmqctl -n {self.name} {' '.join(args)} failed ({r.returncode}): "
                                 f"{r.stderr.strip() or r.stdout.strip()}")
        return r

    def signal(self, sig: int) -> None:
        """Signal the node's whole process group (beam.smp and its helpers)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


@dataclass
class RabbitCluster:
    nodes: list[RabbitNode]
    password: str
    epmd_port: int
    dir: Path
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"  # where the listeners are reached (by ``worker``'s threads when there is one)
    wrap: Wrap = same_place
    worker: NsWorker | None = None

    def here(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """``fn()`` where the listeners are reachable: on ``worker`` when there is one."""
        return fn() if self.worker is None else self.worker.call(fn, timeout=timeout)

    def node(self, i: int) -> RabbitNode:
        """Node ``hf{i}@localhost`` (1-based, as named)."""
        return self.nodes[i - 1]

    def amqp_url(self, i: int = 1, password: str | None = None) -> str:
        pw = self.password if password is None else password
        return f"amqp://{USER}:{pw}@{self.host}:{self.node(i).amqp_port}/%2F"

    def toml(self, interval: str = "500ms", timeout: str = "1s", extra: str = "",
             per_node_amqp: bool = False) -> str:
        """A ``[rabbitmq]`` section for the ``daemon`` fixture, every node listed."""
        out = [f'\n[rabbitmq]\ninterval = "{interval}"\ntimeout = "{timeout}"\n'
               f'amqp_url = "{self.amqp_url(1)}"\n{extra}']
        for n in self.nodes:
            out.append(f'\n[[rabbitmq.node]]\nname = "{n.name}"\nmanagement_url = "{n.management_url}"\n'
                       f'username = "{USER}"\npassword = "{self.password}"\n')
            if per_node_amqp:
                out.append(f'amqp_url = "{self.amqp_url(n.index)}"\n')
        return "".join(out)

    def api(self, path: str, i: int = 1, method: str = "GET", timeout: float = 5.0) -> Any:
        """The management API of node ``i`` as the test user; raises on an HTTP error."""
        req = urllib.request.Request(self.node(i).management_url + path, method=method)
        auth = base64.b64encode(f"{USER}:{self.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {auth}")

        def fetch() -> bytes:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return bytes(r.read())

        body = self.here(fetch, timeout + 5)
        return json.loads(body) if body else None

    def healthy(self) -> bool:
        """Every node answers, sees all three running and no partition; no alarm anywhere."""
        names = {n.name for n in self.nodes}
        for n in self.nodes:
            try:
                view = self.api("/api/nodes?columns=name,running,partitions", n.index, timeout=2)
                self.api("/api/health/checks/alarms", n.index, timeout=2)  # 503 while an alarm is in effect
            except (OSError, ValueError):
                return False
            if {e["name"] for e in view} != names:
                return False
            if any(not e.get("running") or e.get("partitions") for e in view):
                return False
        return True

    def wait_healthy(self, timeout: float = 30.0) -> None:
        wait_until(self.healthy, timeout, "the RabbitMQ cluster to be healthy again", interval=0.2)

    def destroy(self) -> None:
        for n in self.nodes:
            n.kill()
        # epmd refuses to die while it still lists a node ("living nodes in database"), which
        # it does for a moment after the nodes were killed: ask again, then kill it by pid
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                r = subprocess.run(self.wrap(["epmd", "-port", str(self.epmd_port), "-kill"]), env=self.env,
                                   capture_output=True, text=True, timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                break
            if "Killed" in r.stdout or (r.returncode != 0 and "living nodes" not in r.stdout):
                return
            time.sleep(0.1)
        for p in psutil.process_iter(["name", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                if (p.info["name"] == "epmd" and str(self.epmd_port) in (p.info["cmdline"] or [])
                        and p.environ().get("HOME") == self.env.get("HOME")):  # ours, never the machine's
                    p.kill()


# what the tests run with: statistics often (their checks read them), a low memory alarm
TEST_SETTINGS = ("collect_statistics_interval = 500", "vm_memory_high_watermark.relative = 0.4",
                 "log.console = false", "log.file.level = info")


def _node_config(listen: Sequence[str], host: str, amqp_port: int, mgmt_port: int, seed: str | None,
                 settings: Sequence[str]) -> str:
    lines = [
        *(f"listeners.tcp.{i} = {a}:{amqp_port}" for i, a in enumerate(listen, start=1)),
        f"management.tcp.port = {mgmt_port}",
        f"management.tcp.ip = {host}",
        *settings,
    ]
    if seed is not None:
        lines += ["cluster_formation.peer_discovery_backend = classic_config",
                  f"cluster_formation.classic_config.nodes.1 = {seed}"]
    return "\n".join(lines) + "\n"


def start_cluster(root: Path, size: int = 3, *, password: str | None = None, host: str = "127.0.0.1",
                  listen: Sequence[str] | None = None, ports: Sequence[tuple[int, int, int]] | None = None,
                  epmd_port: int | None = None, wrap: Wrap = same_place, worker: NsWorker | None = None,
                  extra_env: Mapping[str, str] | None = None, settings: Sequence[str] = TEST_SETTINGS,
                  start_timeout: float = START_TIMEOUT_S) -> RabbitCluster:
    """Start ``size`` nodes at once and wait until they form one healthy cluster with the user.

    ``host``: the listeners' address (AMQP also on each of ``listen`` when given); ``ports``:
    (AMQP, management, distribution) per node, free ones by default; ``wrap``: how a command
    runs where the nodes run; ``worker``: a thread there, for the TCP and HTTP checks."""
    home = root / "home"
    home.mkdir(parents=True)
    cookie = home / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(16).upper())
    cookie.chmod(0o400)
    plugins = root / "enabled_plugins"
    plugins.write_text("[rabbitmq_management].\n")
    epmd_port = free_port() if epmd_port is None else epmd_port
    base_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
        "RABBITMQ_CTL_ERL_ARGS": f"-kernel inet_dist_use_interface {{127,0,0,1}} {QUIET_ERL}",
        **(extra_env or {}),
    }
    cluster = RabbitCluster(nodes=[], password=password or "rmq-" + secrets.token_urlsafe(12),
                            epmd_port=epmd_port, dir=root, env=base_env, host=host, wrap=wrap, worker=worker)
    try:
        subprocess.run(wrap(["epmd", "-daemon", "-port", str(epmd_port), "-address", "127.0.0.1"]), env=base_env,
                       check=True, capture_output=True, timeout=10)
        for i in range(1, size + 1):
            d = root / f"hf{i}"
            d.mkdir()
            amqp, mgmt, dist = (free_port(), free_port(), free_port()) if ports is None else ports[i - 1]
            conf = d / "rabbitmq.conf"
            conf.write_text(_node_config(listen or [host], host, amqp, mgmt, None if i == 1 else "hf1@localhost",
                                         settings))
            env = {
                **base_env,
                "RABBITMQ_NODENAME": f"hf{i}@localhost",
                "RABBITMQ_NODE_PORT": str(amqp),
                "RABBITMQ_DIST_PORT": str(dist),
                "RABBITMQ_CONFIG_FILE": str(conf),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
                "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
                "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
                "RABBITMQ_LOG_BASE": str(d / "log"),
                "RABBITMQ_PID_FILE": str(d / "rabbit.pid"),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": f"-kernel inet_dist_use_interface {{127,0,0,1}} {QUIET_ERL}",
            }
            cluster.nodes.append(RabbitNode(index=i, amqp_port=amqp, mgmt_port=mgmt, dist_port=dist, dir=d, env=env,
                                            host=host, wrap=wrap))
        for n in cluster.nodes:
            _boot(n)
        # rabbitmqctl costs most of a second of CPU per call, which three booting nodes on few
        # CPUs feel: let them boot first (their AMQP ports open late in the boot), then wait
        # properly, and grant the user's tag and permissions at once. A node that gave up
        # while booting (seen under heavy load: it exits 0 when it cannot reach its seed in
        # time) is booted once more.
        rebooted: set[int] = set()

        def up(n: RabbitNode) -> bool:
            if n.proc is not None and n.proc.poll() is not None and n.index not in rebooted:
                rebooted.add(n.index)
                print(f"{n.name} exited with {n.proc.returncode} while booting; booting it again")
                _boot(n)
                return False
            return cluster.here(lambda: _port_open(host, n.amqp_port)) or _exited(n)

        for n in cluster.nodes:
            wait_until(lambda n=n: up(n), start_timeout, f"{n.name} to listen on {n.amqp_port}", interval=0.1)
        with ThreadPoolExecutor(max_workers=size) as pool:
            for f in [pool.submit(n.ctl, "wait", "--timeout", str(int(start_timeout)), str(n.pidfile),
                                  timeout=start_timeout + 10) for n in cluster.nodes]:
                f.result()
            # peer discovery at boot is a race when three nodes boot at once on a busy machine:
            # a node that came up on its own joins hf1's cluster explicitly
            first = cluster.node(1)
            for n in cluster.nodes[1:]:
                status = n.ctl("cluster_status", "--formatter", "json").stdout
                if first.name not in json.loads(status[status.find("{"):]).get("running_nodes", []):
                    for step in (("stop_app",), ("reset",), ("join_cluster", first.name), ("start_app",)):
                        n.ctl(*step, timeout=start_timeout)
            first.ctl("add_user", USER, cluster.password)
            for f in [pool.submit(first.ctl, "set_user_tags", USER, "administrator"),
                      pool.submit(first.ctl, "set_permissions", "-p", VHOST, USER, ".*", ".*", ".*")]:
                f.result()
        cluster.wait_healthy(2 * start_timeout)
    except BaseException:
        for n in cluster.nodes:
            log = n.dir / "stdout.log"
            if log.exists():
                print(f"--- {n.name} stdout ---\n{log.read_text(errors='replace')[-2000:]}")
        cluster.destroy()
        raise
    return cluster


def _boot(n: RabbitNode) -> None:
    with open(n.dir / "stdout.log", "ab") as out:
        n.proc = subprocess.Popen(n.wrap([str(RABBIT_BIN / "rabbitmq-server")]), env=n.env, stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _exited(n: RabbitNode) -> bool:
    """A node that died while booting: fail now, with its output, not at the deadline."""
    if n.proc is not None and n.proc.poll() is not None:
        raise TestbedError(f"{n.name} exited with {n.proc.returncode} while starting")
    return False


