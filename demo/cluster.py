"""A local three-node HA Airflow cluster on one machine, each node run by its own haflowd.

The namespace layout, the default (``P`` is ``hfdemo<pid>``; 198.18.0.0/15 is reserved for
tests, RFC 2544)::

    P-br   a bridge namespace: br0 and one veth port per namespace below
    P-db   198.18.7.10  PostgreSQL primary :5432 and streaming standby :5433,
                        RabbitMQ cluster of three nodes (AMQP :5672-5674, management :15672-15674)
    P-n1   198.18.7.11  hostname n1: haflowd + Airflow (scheduler, api-server, dag-processor,
    P-n2   198.18.7.12  hostname n2:   triggerer, Celery worker; Flower on n1) + a csync2 server
    P-n3   198.18.7.13  hostname n3

Each node process runs in its own UTS namespace (its own host name, which Airflow
records in its job table and Celery names its worker after) and its own mount namespace,
where the node's DAG folder is bound on the same path as on every other node, as on real
machines. csync2 keeps the three folders in step, driven by each node's haflowd.

The namespaces, PostgreSQL, RabbitMQ and csync2 are set up by :mod:`testbed`, the builders
the tests and the benchmarks use, with the demo's options. From the root namespace,
nothing is routed to the bridge: ports on 127.0.0.1 forward to
127.0.0.1 inside a namespace (each haflowd's API, n1's Airflow UI, Flower), through a
socket made by a thread that entered that namespace. Everything is torn down by
``down()``: processes in our namespaces, the namespaces, /etc/netns entries, files.

The loopback layout, where namespaces cannot be made (or with ``loopback=True``)::

    127.0.1.10  PostgreSQL :5432/:5433, RabbitMQ AMQP :5672-5674, management :15672-15674
    127.0.1.11  n1: haflowd (API :8787, gossip :7946), api-server :8080, scheduler health
    127.0.1.12  n2:   :8974, Flower :5555 (n1), csync2 :30865 - each bound to the node's own
    127.0.1.13  n3:   address; the log servers (which bind every address) get ports per node

Linux routes all of 127.0.0.0/8 to lo, so the three addresses need no setup. A node's
identity is no longer its host name: Airflow asks ``demo.identity.node_hostname`` (which
reads ``HFDEMO_NODE``), the Celery worker gets ``--celery-hostname``, the job probes a
``hostname``. Each node has its own DAG folder; csync2 knows the nodes by address (``-N``
binds the server and names the node) and maps the folders with a ``prefix``. Every process
the demo starts carries ``HFDEMO_CLUSTER=<P>`` (and ``HFDEMO_NODE``) in its environment,
which is how a node is killed and the whole cluster removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from testbed import csync2, netns, postgres, rabbitmq
from testbed.netns import NsWorker
from testbed.util import TestbedError, free_port

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"
SUBNET = "198.18.7"
DB_ADDR = f"{SUBNET}.10"
NODES = ("n1", "n2", "n3")
API_PORT = 8787
GOSSIP_PORT = 7946
AIRFLOW_UI_PORT = 8080
FLOWER_PORT = 5555
PG_PORTS = (5432, 5433)
RMQ = ((5672, 15672), (5673, 15673), (5674, 15674))
RMQ_USER = "haflowd"
NAME_RE = re.compile(r"^hfdemo(\d+)-")
LOOP_NET = "127.0.1"
LOOP_DB = f"{LOOP_NET}.10"
LOG_PORTS = (8793, 8794)  # the worker's and the triggerer's log servers: + 10 per node in loopback
CLUSTER_ENV = "HFDEMO_CLUSTER"  # every process the demo starts carries it
NODE_ENV = "HFDEMO_NODE"

DEMO_DAG = '''\
"""haflowd demo: runs on whichever node's Celery worker takes it."""
from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG("haflowd_demo", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["haflowd"]):
    BashOperator(task_id="hello", bash_command="echo hello from $(hostname)")
'''

CHAOS_DAG = '''\
"""Written on n1 while n3 was down: csync2 carries it to n2 at once and to n3 when it is back."""
from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG("haflowd_chaos", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["haflowd"]):
    BashOperator(task_id="survived", bash_command="echo written while n3 was down")
'''


def say(msg: str) -> None:
    print(msg, flush=True)


class DemoError(Exception):
    pass


def _run(argv: list[str], timeout: float = 60, env: dict[str, str] | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                           stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise DemoError(f"{' '.join(argv[:6])}: no answer in {timeout:g}s") from None
    if check and r.returncode != 0:
        raise DemoError(f"{' '.join(argv[:8])} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-800:]}")
    return r


def wait_for(what: str, timeout: float, check: Callable[[], Any], every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, ValueError, KeyError, DemoError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(every)
    raise DemoError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


# ---------------------------------------------------------------------------- namespaces


def kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


Match = Callable[[dict[str, str], str], bool]


def demo_pids(match: Match) -> list[int]:
    """Processes (never this one) whose environment and working directory ``match``
    accepts. Both: Airflow's retitled processes (setproctitle) have their environment
    overwritten, but keep the working directory the daemon gave them."""
    out = []
    for p in psutil.process_iter():
        if p.pid == os.getpid():
            continue
        try:
            env, cwd = p.environ(), p.cwd().removesuffix(" (deleted)")
        except psutil.Error:
            continue
        if match(env, cwd):
            out.append(p.pid)
    return out


def under(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(f"{root}/")


def kill_until_gone(find: Callable[[], list[int]], rounds: int, pause: float) -> None:
    """SIGKILL what ``find`` returns, again until it returns nothing (a dying parent may
    have forked one more), at most ``rounds`` times."""
    for _ in range(rounds):
        pids = find()
        if not pids:
            return
        kill_pids(pids)
        time.sleep(pause)


def kill_demo_pids(match: Match) -> None:
    """SIGKILL every process ``match`` accepts, until none is left."""
    kill_until_gone(lambda: demo_pids(match), 10, 0.3)


def sweep_stale() -> None:
    """What an earlier demo left when it was killed: its namespaces (kill what runs there,
    delete them) and, in the loopback layout, its marked processes, those working in the
    temp dirs the marked ones work in, and those dirs."""
    if shutil.which("ip") and (stale := netns.sweep_stale(NAME_RE)):
        say(f"removed {len(stale)} namespaces left by an earlier demo that was killed")

    # the loopback layout's: marked ones, and any working in the temp dir of one of those
    dirs: set[Path] = set()

    def orphan(env: dict[str, str], cwd: str) -> bool:
        m = re.match(r"^hfdemo(\d+)$", env.get(CLUSTER_ENV, ""))
        if m is not None and not psutil.pid_exists(int(m.group(1))):
            tmp = tempfile.gettempdir()
            if cwd.startswith((f"{tmp}/haflowd-demo-cluster-", f"{tmp}/haflowd-demo-pg-")):
                dirs.add(Path(tmp) / Path(cwd).relative_to(tmp).parts[0])
            return True
        return any(under(cwd, d) for d in dirs)

    if left := demo_pids(orphan):
        kill_demo_pids(orphan)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
        say(f"killed {len(left)} processes left by an earlier demo that was killed")


def namespaces_unavailable(prefix: str) -> str | None:
    """Why this machine cannot run the namespace layout, or None: it tries what the layout
    does (a namespace, a veth pair in it, new UTS and mount namespaces inside) on a
    throwaway namespace."""
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = f"{prefix}-probe"
    try:
        for argv in (["ip", "netns", "add", probe],
                     ["ip", "-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                     ["ip", "netns", "exec", probe, "unshare", "--uts", "--mount", "--", "true"]):
            r = _run(argv, timeout=20, check=False)
            if r.returncode != 0:
                err = (r.stderr or r.stdout).strip().splitlines()
                return f"'{' '.join(argv)}' failed: {err[-1] if err else f'exit {r.returncode}'}"
    except DemoError as e:
        return str(e)
    finally:
        _run(["ip", "netns", "del", probe], timeout=20, check=False)
    return None


# ---------------------------------------------------------------------------- forwarding


class Forwarder:
    """127.0.0.1:``local`` in the root namespace → 127.0.0.1:``remote`` inside a namespace."""

    def __init__(self, worker: NsWorker, remote: int, local: int) -> None:
        self.worker, self.remote = worker, remote
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind(("127.0.0.1", local))
        except OSError:
            self.sock.bind(("127.0.0.1", 0))  # the usual port is taken: any port
        self.port = self.sock.getsockname()[1]
        self.sock.listen(64)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True, name=f"fwd-{self.port}").start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = self.worker.call(socket.create_connection, ("127.0.0.1", self.remote), 5, timeout=10)
            except Exception:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()


# ---------------------------------------------------------------------------- the cluster


@dataclass
class Node:
    name: str
    index: int
    ns: str
    addr: str
    dir: Path
    components: list[str] = field(default_factory=list)
    daemon: subprocess.Popen[bytes] | None = None
    csync2: subprocess.Popen[bytes] | None = None
    worker: NsWorker | None = None
    api: Forwarder | None = None


@dataclass
class DemoCluster:
    """``profile``: "full" (every Airflow component on every node, Flower on n1) or "small"
    (scheduler and dag-processor everywhere, the api-server on n1: for the headless test).
    ``loopback``: the loopback layout instead of namespaces (see the module docstring)."""

    profile: str = "full"
    loopback: bool = False
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="haflowd-demo-cluster-")))
    prefix: str = field(default_factory=lambda: f"hfdemo{os.getpid()}")
    nodes: dict[str, Node] = field(default_factory=dict)
    topo: netns.Topology | None = None
    forwarders: list[Forwarder] = field(default_factory=list)
    db_worker: NsWorker | None = None
    pg_dirs: list[Path] = field(default_factory=list)
    pg: postgres.PgPair | None = None
    rmq: rabbitmq.RabbitCluster | None = None
    ui_url: str | None = None
    flower_url: str | None = None
    started: float = field(default_factory=time.monotonic)
    hurry: threading.Event = field(default_factory=threading.Event)  # a second Ctrl-C: skip the warm stop

    def __post_init__(self) -> None:
        self.dags = self.tmp / "dags"  # namespaces: the path every node sees its own DAG folder at
        self.password = "rmq-" + secrets.token_urlsafe(12)
        net = LOOP_NET if self.loopback else SUBNET
        # where the nodes reach PostgreSQL and RabbitMQ, and where the demo itself does
        self.db_addr = LOOP_DB if self.loopback else DB_ADDR
        self.db_local = LOOP_DB if self.loopback else "127.0.0.1"
        for i, name in enumerate(NODES, start=1):
            self.nodes[name] = Node(name, i, f"{self.prefix}-{name}", f"{net}.{10 + i}", self.tmp / name)

    @property
    def layout(self) -> str:
        return "loopback" if self.loopback else "namespaces"

    def dag_folder(self, n: Node) -> Path:
        """Where node ``n``'s Airflow and csync2 see its DAG folder (files are written in
        ``n.dir / "dags"``, which namespaces bind on the common path)."""
        return n.dir / "dags" if self.loopback else self.dags

    def env(self, n: Node | None = None, **extra: str) -> dict[str, str]:
        """This process's environment plus the marks every demo process carries."""
        env = {**os.environ, CLUSTER_ENV: self.prefix, **extra}
        if n is not None:
            env[NODE_ENV] = n.name
        return env

    def _mine(self, node: str | None = None) -> Match:
        """Processes of this demo (of one node): marked, or working in its directories."""
        roots = [self.tmp / node] if node else [self.tmp, *self.pg_dirs]

        def match(env: dict[str, str], cwd: str) -> bool:
            if env.get(CLUSTER_ENV) == self.prefix and (node is None or env.get(NODE_ENV) == node):
                return True
            return any(under(cwd, r) for r in roots)
        return match

    def leftovers(self, node: str | None = None) -> list[int]:
        """Processes of this demo (of one node) still running."""
        return demo_pids(self._mine(node))

    # ------------------------------------------------------------------ network

    def _ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def create_network(self) -> None:
        """The bridge namespace and four on it (testbed.netns): db first (port p0), then the nodes."""
        members = {"db": DB_ADDR, **{n.name: n.addr for n in self.nodes.values()}}
        self.topo = netns.Topology(prefix=self.prefix, names=list(members), addresses=list(members.values()),
                                   hosts=members, port_base=0)
        try:
            self.topo.create()
            self.db_worker = NsWorker(self._ns("db"), workers=4, timeout=20)
            for n in self.nodes.values():
                n.worker = NsWorker(n.ns, workers=4, timeout=20)
        except (netns.NetnsError, OSError) as e:
            raise DemoError(f"the network namespaces could not be made: {e}") from None

    def link(self, name: str, up: bool) -> None:
        assert self.topo is not None
        try:
            self.topo.link(self.topo.names.index(name) + 1, up)
        except netns.NetnsError as e:
            raise DemoError(str(e)) from None

    def db_argv(self, argv: list[str]) -> list[str]:
        """Run ``argv`` where PostgreSQL and RabbitMQ run."""
        return list(argv) if self.loopback else ["ip", "netns", "exec", self._ns("db"), *argv]

    def node_argv(self, n: Node, argv: list[str]) -> list[str]:
        """Run ``argv`` as node ``n``: its network, its host name, its DAG folder at the common
        path (namespaces); in the loopback layout the environment and config say who it is."""
        if self.loopback:
            return list(argv)
        script = 'hostname "$0" && mount --bind "$1" "$2" && shift 2 && exec "$@"'
        return ["ip", "netns", "exec", n.ns, "unshare", "--uts", "--", "sh", "-c", script,
                n.name, str(n.dir / "dags"), str(self.dags), *argv]

    # ------------------------------------------------------------------ PostgreSQL

    def start_postgres(self) -> None:
        """A primary and a streaming standby on the db address (testbed.postgres); in
        namespaces, also on the db namespace's 127.0.0.1, where the demo's own SQL goes."""
        bindir = postgres.pg_bin()
        if bindir is None:
            raise DemoError("PostgreSQL is not installed (scripts/setup installs it)")
        root = postgres._private_dir("haflowd-demo-pg-", shm=False)
        self.pg_dirs.append(root)
        listen = LOOP_DB if self.loopback else f"127.0.0.1,{DB_ADDR}"
        try:
            self.pg = postgres.make_pair(
                None, bindir, root=root, ports=PG_PORTS, host=self.db_local, wrap=self.db_argv,
                worker=None if self.loopback else self.db_worker, env=self.env(),
                conf_extra=f"listen_addresses = '{listen}'\nmax_connections = 300\nshared_buffers = 64MB\n",
                hba_extra=f"host all all {SUBNET}.0/24 trust\nhost all all 127.0.0.0/8 trust\n"
                          "host replication all 127.0.0.0/8 trust\n")
            self.pg.primary.sql("CREATE DATABASE airflow", timeout=30)
        except (RuntimeError, AssertionError, OSError, subprocess.SubprocessError) as e:
            raise DemoError(f"PostgreSQL did not start: {e}") from None

    def pg_sql(self, query: str) -> list[tuple[Any, ...]]:
        if self.pg is None:
            raise DemoError("PostgreSQL is not running")
        return self.pg.primary.sql(query, dbname="airflow")

    # ------------------------------------------------------------------ RabbitMQ

    def start_rabbitmq(self) -> None:
        """Three nodes on the db address (testbed.rabbitmq); in namespaces, AMQP on the db
        namespace's 127.0.0.1 too and the checks made from a thread inside it."""
        epmd_port = 4369  # in its own namespace, epmd's usual port; on loopback a private one: the
        if self.loopback:  # machine's own (or a test's) may run on 4369
            epmd_port = free_port()
        try:
            self.rmq = rabbitmq.start_cluster(
                self.tmp / "rabbitmq", password=self.password, host=self.db_addr,
                listen=[self.db_addr] if self.loopback else [self.db_addr, "127.0.0.1"],
                ports=[(amqp, mgmt, 25672 + i) for i, (amqp, mgmt) in enumerate(RMQ, start=1)],
                epmd_port=epmd_port, wrap=self.db_argv, worker=None if self.loopback else self.db_worker,
                extra_env={CLUSTER_ENV: self.prefix},
                settings=("collect_statistics_interval = 2000", "log.console = false"), start_timeout=120)
        except (TestbedError, OSError, subprocess.SubprocessError) as e:
            raise DemoError(f"RabbitMQ did not start: {e}") from None

    def amqp_url(self, i: int) -> str:
        return f"amqp://{RMQ_USER}:{self.password}@{self.db_addr}:{RMQ[i - 1][0]}/%2F"

    # ------------------------------------------------------------------ csync2

    def setup_csync2(self) -> None:
        key = self.tmp / "csync2.key"
        _run(["csync2", "-k", str(key)])
        prefix: dict[str, Path] | None = None
        if self.loopback:
            # one machine, three csync2 nodes: each is known by its address (csync2 -N binds the
            # server to it and takes it as the node's name; a peer is checked by resolving its
            # name, so an address needs no hosts file), and a prefix maps the three DAG folders
            hosts = [n.addr for n in self.nodes.values()]
            include = "%dags%"
            prefix = {n.addr: n.dir / "dags" for n in self.nodes.values()}
        else:
            hosts, include = list(NODES), str(self.dags)
            self.dags.mkdir()
        for n in self.nodes.values():
            for sub in ("dags", "csync2", "csync2db", "state", "airflow", "backup"):
                (n.dir / sub).mkdir(parents=True, exist_ok=True)
            # backup-directory: where csync2 keeps the version that lost a conflict (haflowd
            # reports it in /sync and warns without one); each node its own
            cfg = csync2.group_config(hosts, key, include, n.dir / "backup", prefix,
                                      exclude=("*~", "*.pyc", "*/__pycache__"))
            (n.dir / "csync2" / "csync2.cfg").write_text(cfg)
            self.start_csync2(n)

    def csync2_name(self, n: Node) -> str:
        return n.addr if self.loopback else n.name

    def start_csync2(self, n: Node) -> None:
        """Its database's tables first (see testbed.csync2.create_tables), then its server, as the node."""
        env = self.env(n, CSYNC2_SYSTEM_DIR=str(n.dir / "csync2"))

        def wrap(argv: list[str]) -> list[str]:
            return self.node_argv(n, argv)

        csync2.create_tables(wrap, self.csync2_name(n), n.dir / "csync2db", env, cwd=n.dir)
        n.csync2 = csync2.start_server(wrap, self.csync2_name(n), n.dir / "csync2db", env,
                                       n.dir / "csync2-server.log", cwd=n.dir)

    # ------------------------------------------------------------------ haflowd and Airflow

    def airflow_env(self, n: Node) -> dict[str, str]:
        pg = f"postgres@{self.db_addr}:{PG_PORTS[0]}/airflow"
        env = {
            "PATH": f"{AIRFLOW_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "AIRFLOW_HOME": str(n.dir / "airflow"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dag_folder(n)),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": self.fernet,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{AIRFLOW_UI_PORT}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg}",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "3",
            "AIRFLOW__CELERY__BROKER_URL": ";".join(self.amqp_url(i) for i in (1, 2, 3)),
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{pg}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": self.secret,
            "AIRFLOW__API_AUTH__JWT_SECRET": self.secret,
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            # a new DAG file is noticed within seconds, not the default five minutes
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        }
        if self.loopback:
            i = n.index - 1
            env.update({
                # who this node is: Airflow records node_hostname() (HFDEMO_NODE) in its job table
                "PYTHONPATH": str(ROOT),
                NODE_ENV: n.name,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "demo.identity.node_hostname",
                # every server on the node's own address, or its own port where Airflow binds all
                "AIRFLOW__API__HOST": n.addr,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{n.addr}:{AIRFLOW_UI_PORT}/execution/",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": n.addr,
                "AIRFLOW__CELERY__FLOWER_HOST": n.addr,
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(LOG_PORTS[0] + 10 * i),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(LOG_PORTS[1] + 10 * i),
                # one log folder for the three nodes (one machine): n1's UI reads every task's
                # log from the file, not from a log server at a host name nothing resolves
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.tmp / "logs"),
            })
        return env

    def node_components(self, n: Node) -> list[tuple[str, str, str]]:
        """(name, preset, extra TOML) for node ``n`` in this profile."""
        after = 'start_after = ["migrate"]\n'
        # loopback: the job probes look for the node's own name, the worker is named after it
        job_health = '[component.health]\ninterval = "10s"\n'
        worker = after + 'stop_timeout = "60s"\n'
        if self.loopback:
            job_health += f'hostname = "{n.name}"\n'
            worker += f'command = ["airflow", "celery", "worker", "--celery-hostname", "{n.name}"]\n'
        comps = [("migrate", "airflow-db-migrate", ""), ("scheduler", "airflow-scheduler", after),
                 ("dag-processor", "airflow-dag-processor", after + job_health)]
        if self.profile == "full" or n.name == "n1":
            comps.append(("api-server", "airflow-api-server", after))
        if self.profile == "full":
            comps.append(("triggerer", "airflow-triggerer", after + job_health))
            comps.append(("worker", "airflow-celery-worker", worker))
            if n.name == "n1":
                comps.append(("flower", "airflow-flower", after))
        return comps

    def haflowd_config(self, n: Node) -> str:
        others = [m for m in self.nodes.values() if m.name != n.name]
        env = self.airflow_env(n)
        env_toml = "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in env.items()) + " }"
        parts = [textwrap.dedent(f"""\
            # haflowd on demo node {n.name} (generated by demo/cluster.py)
            [node]
            name = "{n.name}"
            data_dir = "{n.dir / 'state'}"

            [api]
            listen = "{n.addr if self.loopback else '127.0.0.1'}:{API_PORT}"
            control_socket = "{n.dir / 'state' / 'control.sock'}"

            [gossip]
            listen = "{n.addr}:{GOSSIP_PORT}"
            seeds = [{', '.join(json.dumps(f'{m.addr}:{GOSSIP_PORT}') for m in others)}]
            key_file = "{self.tmp / 'gossip.key'}"

            [sync]
            command = ["csync2", "-N", "{self.csync2_name(n)}", "-D", "{n.dir / 'csync2db'}", "-x"]
            watch = ["{self.dag_folder(n)}"]
            peers = [{', '.join(json.dumps(m.name) for m in others)}]
            host_map = {{ {', '.join(f'{m.name} = "{self.csync2_name(m)}"' for m in others)} }}
            interval = "60s"
            debounce = "500ms"
            timeout = "60s"
            retry_initial = "1s"
            retry_max = "10s"

            [postgres]
            topology = "streaming"
            interval = "5s"
            timeout = "3s"
            [[postgres.node]]
            name = "pg1"
            dsn = "host={self.db_addr} port={PG_PORTS[0]} dbname=postgres user=postgres connect_timeout=3"
            [[postgres.node]]
            name = "pg2"
            dsn = "host={self.db_addr} port={PG_PORTS[1]} dbname=postgres user=postgres connect_timeout=3"

            [rabbitmq]
            interval = "10s"
            timeout = "5s"
            amqp_url = "{self.amqp_url(n.index)}"
        """)]
        for i, (_, mgmt) in enumerate(RMQ, start=1):
            parts.append(f'[[rabbitmq.node]]\nname = "hf{i}@localhost"\nmanagement_url = "http://{self.db_addr}:{mgmt}"\n'
                         f'username = "{RMQ_USER}"\npassword = "{self.password}"\n')
        for name, preset, extra in self.node_components(n):
            parts.append(f'\n[[component]]\nname = "{name}"\npreset = "{preset}"\nenvironment = {env_toml}\n{extra}')
            n.components.append(name)
        return "\n".join(parts)

    def start_daemon(self, n: Node) -> None:
        cfg = n.dir / "haflowd.toml"
        if not cfg.exists():
            n.components.clear()
            cfg.write_text(self.haflowd_config(n))
        env = self.env(n, CSYNC2_SYSTEM_DIR=str(n.dir / "csync2"))
        with open(n.dir / "haflowd.log", "ab") as log:
            n.daemon = subprocess.Popen(self.node_argv(n, [str(VENV_PY), "-m", "haflowd", "--config", str(cfg)]),
                                        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=n.dir,
                                        start_new_session=True)

    # ------------------------------------------------------------------ views

    def api_url(self, node: str) -> str:
        """Node ``node``'s haflowd API as this machine's shell reaches it."""
        n = self.nodes[node]
        if self.loopback:
            return f"http://{n.addr}:{API_PORT}"
        assert n.api is not None
        return f"http://127.0.0.1:{n.api.port}"

    def get(self, node: str, path: str, timeout: float = 5) -> tuple[int, Any]:
        host = self.nodes[node].addr if self.loopback else "127.0.0.1"

        def fetch() -> tuple[int, Any]:
            try:
                with urllib.request.urlopen(f"http://{host}:{API_PORT}{path}", timeout=timeout) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read() or b"null")

        if self.loopback:
            return fetch()
        w = self.nodes[node].worker
        assert w is not None
        return w.call(fetch, timeout=timeout + 5)

    def node_view(self, name: str) -> dict[str, Any]:
        """What one daemon says: components healthy, peers alive, overall status."""
        _, comps = self.get(name, "/components")
        _, peers = self.get(name, "/peers")
        status, health = self.get(name, "/health")
        ok = [c["name"] for c in comps if (c["completed"] if c.get("oneshot") else c["healthy"] is True)]
        alive = [p["name"] for p in peers if p.get("status") == "alive" and p.get("name") != name]
        return {"components": comps, "ok": ok, "alive": alive, "status": health.get("status") if health else None,
                "http": status}

    def healthy(self, names: Iterable[str] = NODES) -> bool:
        names = list(names)
        for name in names:
            v = self.node_view(name)
            if len(v["ok"]) < len(self.nodes[name].components):
                return False
            if set(names) - {name} - set(v["alive"]):
                return False
            if v["status"] not in ("passing", "warning"):
                return False
        return True

    def progress_line(self) -> str:
        parts = []
        for name in NODES:
            try:
                v = self.node_view(name)
                parts.append(f"{name}: {len(v['ok'])}/{len(self.nodes[name].components)} components, "
                             f"{len(v['alive'])}/2 peers, {v['status']}")
            except Exception:
                parts.append(f"{name}: starting")
        return f"[{time.monotonic() - self.started:5.0f}s] " + " | ".join(parts)

    def memory(self) -> tuple[int, int]:
        """(processes, summed PSS) of everything the demo runs: PSS shares each page among
        the processes that map it, so the sum is the memory really in use."""
        pids = sorted(set(netns.pids_in(self.topo.made if self.topo else [])) | set(self.leftovers()))
        pss = 0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                pss += psutil.Process(pid).memory_full_info().pss
        return len(pids), pss

    # ------------------------------------------------------------------ up and down

    def up(self, timeout: float = 900, progress: Callable[[str], None] = say) -> float:
        """Start everything; returns seconds until the whole cluster was healthy."""
        self.fernet = _fernet_key()
        self.secret = secrets.token_urlsafe(24)
        sweep_stale()
        if self.loopback:
            progress(f"network: loopback addresses, db {LOOP_DB}, "
                     + ", ".join(f"{n.name} {n.addr}" for n in self.nodes.values()))
        else:
            progress(f"network: namespaces {self.prefix}-{{br,db,n1,n2,n3}} on {SUBNET}.0/24")
            self.create_network()
        (self.tmp / "gossip.key").write_text(_gossip_key() + "\n")
        progress(f"PostgreSQL: primary :5432 and streaming standby :5433 on db ({self.db_addr})")
        self.start_postgres()
        progress(f"RabbitMQ: a three-node cluster on db ({self.db_addr}; about a minute)")
        self.start_rabbitmq()
        progress("csync2: a server on every node")
        self.setup_csync2()
        (self.nodes["n1"].dir / "dags" / "haflowd_demo.py").write_text(DEMO_DAG)
        progress("haflowd: one daemon per node, each starting its Airflow components")
        for n in self.nodes.values():
            self.start_daemon(n)
        self._expose()
        t0 = time.monotonic()
        deadline = t0 + timeout
        last = 0.0
        while not self._healthy_quiet():
            self._check_daemons()
            if time.monotonic() > deadline:
                raise DemoError(f"the cluster was not healthy after {timeout:g}s: {self.progress_line()}")
            if time.monotonic() - last >= 5:
                progress(self.progress_line())
                last = time.monotonic()
            time.sleep(1)
        progress(self.progress_line())
        return time.monotonic() - self.started

    def _expose(self) -> None:
        """The URLs of n1's Airflow UI and Flower; in namespaces, through forwarders."""
        n1 = self.nodes["n1"]
        if self.loopback:
            self.ui_url = f"http://{n1.addr}:{AIRFLOW_UI_PORT}/"
            if self.profile == "full":
                self.flower_url = f"http://{n1.addr}:{FLOWER_PORT}/"
            return
        for n in self.nodes.values():
            assert n.worker is not None
            n.api = Forwarder(n.worker, API_PORT, 18786 + n.index)
            self.forwarders.append(n.api)
        assert n1.worker is not None
        self.forwarders.append(ui := Forwarder(n1.worker, AIRFLOW_UI_PORT, 18080))
        self.ui_url = f"http://127.0.0.1:{ui.port}/"
        if self.profile == "full":
            self.forwarders.append(fl := Forwarder(n1.worker, FLOWER_PORT, 15555))
            self.flower_url = f"http://127.0.0.1:{fl.port}/"

    def _healthy_quiet(self) -> bool:
        try:
            return self.healthy()
        except Exception:
            return False

    def _check_daemons(self, names: Iterable[str] = NODES) -> None:
        for name in names:
            d = self.nodes[name].daemon
            if d is not None and d.poll() is not None:
                tail = (self.nodes[name].dir / "haflowd.log").read_text(errors="replace")[-1500:]
                raise DemoError(f"haflowd on {name} exited with {d.returncode}:\n{tail}")

    def kill_node(self, name: str) -> None:
        """Power loss: the node's cable is cut and every process on it dies at once. In the
        loopback layout there is no cable: every process of the node is killed."""
        n = self.nodes[name]
        if self.loopback:
            kill_demo_pids(self._mine(name))
        else:
            self.link(name, False)
            kill_pids(netns.pids_in([n.ns]))
        for p in (n.daemon, n.csync2):
            if p is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(10)
        n.daemon = n.csync2 = None

    def revive_node(self, name: str) -> None:
        n = self.nodes[name]
        if not self.loopback:
            self.link(name, True)
        self.start_csync2(n)
        self.start_daemon(n)

    def down(self, graceful: bool = True) -> None:
        """Stop everything and leave nothing behind."""
        for f in self.forwarders:
            f.close()
        if graceful:
            for n in self.nodes.values():
                if n.daemon is not None and n.daemon.poll() is None:
                    n.daemon.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 90  # Celery workers drain their tasks first
            while not self.hurry.is_set() and time.monotonic() < deadline:
                if all(n.daemon is None or n.daemon.poll() is not None for n in self.nodes.values()):
                    break
                time.sleep(0.2)
        if self.pg is not None:
            self.pg.destroy()  # pg_ctl stop -m immediate in its namespace, then its files
        for w in [self.db_worker] + [n.worker for n in self.nodes.values()]:
            if w is not None:
                w.close()
        if self.topo is not None:
            self.topo.destroy()  # what runs inside, SIGKILLed; the namespaces and hosts files deleted
        kill_demo_pids(self._mine())  # the loopback layout's processes (and epmd)
        for rn in self.rmq.nodes if self.rmq else []:
            if rn.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    rn.proc.wait(5)
        for d in self.pg_dirs:
            shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _fernet_key() -> str:
    import base64

    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _gossip_key() -> str:
    import base64

    return base64.b64encode(secrets.token_bytes(32)).decode()


def unavailable() -> str | None:
    """Why the demo cannot run here in either layout, or None (``namespaces_unavailable``
    says whether the namespace layout can)."""
    if os.geteuid() != 0:
        return "the demo runs PostgreSQL as the postgres user and makes network namespaces: run it as root"
    for tool in ("csync2", "epmd", "runuser"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/setup installs it)"
    if not (AIRFLOW_BIN / "airflow").exists():
        return "Airflow is not installed in .venv-airflow (scripts/setup installs it)"
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return "PostgreSQL is not installed (scripts/setup installs it)"
    return None


if __name__ == "__main__":  # pragma: no cover - scripts/demo runs demo.main
    sys.exit("run scripts/demo")
