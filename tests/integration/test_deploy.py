"""docs/deploy.md, followed on three network namespaces standing in for three fresh nodes.

Each node gets ``scripts/install --wheelhouse`` into its own prefix and root (one wheelhouse
for all, made once per session), one node's gossip key copied to the others (0600), one
csync2 key and one ``csync2.cfg`` copied to all, the guide's first config (membership and
DAG sync), a ``csync2 -ii`` server and the *installed* ``haflowd`` started inside its
namespace (no systemd here). Then the guide's checks: every node sees the others alive,
the installed ``haflowctl doctor`` passes on each, a DAG written on one node reaches the
others; then its day-2 steps: rotating the gossip key (add, move first, remove, a reload
each time), rotating the csync2 key, decommissioning a node.

Where the test differs from a real node, and why (the guide says which steps are not
tested): paths live under the test's tmp (``--prefix``/``--destdir``); csync2 finds its
config through ``CSYNC2_SYSTEM_DIR`` and its database through ``-D``, and is told its
name with ``-N`` (the namespaces share this machine's host name); the DAG folders differ
per node (one filesystem), so ``csync2.cfg`` maps them with a ``prefix`` and keeps one
file for all three; no Airflow, PostgreSQL or RabbitMQ sections.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from testbed import csync2 as tbc
from tests.conftest import ROOT, new_gossip_key, wait_until
from tests.fixtures.netns import NsWorker, Topology, netns_unavailable, sweep_stale
from tests.fixtures.wheelhouse import install, ok

pytestmark = pytest.mark.integration

NAMES = ("node1", "node2", "node3")
API = "http://127.0.0.1:8787"  # inside each namespace


def unavailable() -> str | None:
    if shutil.which("csync2") is None:
        return "csync2 is not installed; scripts/setup installs it"
    if shutil.which("nft") is None:
        return "nft is not installed; scripts/setup installs nftables"
    return netns_unavailable()


@dataclass
class Node:
    name: str
    ns: str
    dir: Path
    worker: NsWorker | None = None
    csync2: subprocess.Popen[bytes] | None = None
    daemon: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def prefix(self) -> Path:  # /opt/haflowd
        return self.dir / "opt"

    @property
    def root(self) -> Path:  # /
        return self.dir / "root"

    @property
    def etc(self) -> Path:  # /etc/haflowd
        return self.root / "etc/haflowd"

    @property
    def config(self) -> Path:
        return self.etc / "haflowd.toml"

    @property
    def csync2_dir(self) -> Path:  # /etc (csync2.cfg, csync2.key)
        return self.root / "etc"

    @property
    def csync2_db(self) -> Path:  # /var/lib/csync2
        return self.root / "var/lib/csync2"

    @property
    def dags(self) -> Path:  # /opt/airflow/dags
        return self.dir / "dags"

    @property
    def log(self) -> Path:
        return self.dir / "haflowd.log"

    def get(self, path: str) -> Any:
        def call() -> Any:
            with urllib.request.urlopen(API + path, timeout=3) as r:
                return json.loads(r.read())

        assert self.worker is not None
        return self.worker.call(call)

    def peers(self) -> dict[str, str]:
        return {p["name"]: p["status"] for p in self.get("/peers")}

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The installed haflowctl, inside the node, reading its addresses from the config."""
        return subprocess.run(["ip", "netns", "exec", self.ns, str(self.prefix / "bin/haflowctl"), "--config",
                               str(self.config), *args], capture_output=True, text=True, timeout=timeout,
                              env=self.env, cwd=self.dir)

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.daemon = subprocess.Popen(["ip", "netns", "exec", self.ns, str(self.prefix / "bin/haflowd"),
                                            "--config", str(self.config)], stdout=out, stderr=subprocess.STDOUT,
                                           env=self.env, cwd=self.dir, start_new_session=True)

    def live(self) -> bool:
        assert self.daemon is not None
        if self.daemon.poll() is not None:
            raise AssertionError(f"haflowd on {self.name} exited {self.daemon.returncode}: "
                                 f"{self.log.read_text()[-3000:]}")
        with contextlib.suppress(OSError, ValueError):
            return bool(self.get("/liveness") is not None)
        return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(sig)
            try:
                self.daemon.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait(10)


def first_config(node: Node, nodes: list[Node]) -> str:
    """The guide's first config (docs/deploy.md, "The first config"), with this test's paths."""
    seeds = ", ".join(f'"{n.name}:7946"' for n in nodes if n is not node)
    return f"""\
[node]
name = "{node.name}"
data_dir = "{node.root / 'var/lib/haflowd'}"

[api]
listen = "0.0.0.0:8787"
control_socket = "{node.dir / 'run/control.sock'}"

[gossip]
listen = "0.0.0.0:7946"
advertise = "{node.name}:7946"
seeds = [{seeds}]
key_file = "{node.etc / 'gossip.key'}"

[sync]
command = ["csync2", "-N", "{node.name}", "-D", "{node.csync2_db}", "-x"]
watch = ["{node.dags}"]
interval = "60s"
"""


def csync2_cfg(nodes: list[Node], key: Path, backup: Path) -> str:
    """The guide's csync2.cfg, the DAG folder mapped per node (one filesystem here)."""
    return tbc.group_config([n.name for n in nodes], key, "%dags%", backup, {n.name: n.dags for n in nodes},
                            exclude=("*~", "*.swp", "*.pyc"))


def firewall(addresses: list[str]) -> str:
    """The guide's nftables table (docs/deploy.md, section 9), with this test's node addresses."""
    text = (ROOT / "docs/deploy.md").read_text()
    start = text.index("table inet haflowd {")
    table = text[start:text.index("\n}\n", start) + 3]
    for i, addr in enumerate(addresses, start=11):
        table = table.replace(f"10.0.0.{i},", f"{addr},").replace(f"10.0.0.{i} ", f"{addr} ")
    assert "10.0.0.1" not in table.replace("10.0.0.5", "").replace("10.0.0.6", ""), table
    return table


@dataclass
class Cluster:
    tmp: Path
    topo: Topology
    nodes: list[Node]
    install_s: float = 0.0
    healthy_s: float = 0.0

    def __getitem__(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def wait_peers(self, on: list[Node], expect: dict[str, str], timeout: float = 20) -> None:
        last: dict[str, Any] = {}

        def seen() -> bool:
            for n in on:
                try:
                    last[n.name] = n.peers()
                except OSError as e:
                    last[n.name] = repr(e)
                    return False
                if {k: v for k, v in last[n.name].items() if k in expect} != expect:
                    return False
            return True

        try:
            wait_until(seen, timeout, f"peers {expect}")
        except AssertionError as e:
            raise AssertionError(f"{e}; last seen: {last}") from None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Iterator[Cluster]:
    why = unavailable()
    if why:
        pytest.fail(why)
    sweep_stale()
    tmp = tmp_path_factory.mktemp("deploy")
    topo = Topology(3)
    topo.hosts = {name: topo.addr(i) for i, name in enumerate(NAMES, start=1)}  # /etc/hosts of every node
    nodes = [Node(name, topo.nodes[i], tmp / name) for i, name in enumerate(NAMES)]
    c = Cluster(tmp, topo, nodes)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    try:
        topo.create()
        # 1. install, the three at once (one wheelhouse, offline)
        t0 = time.monotonic()
        with ThreadPoolExecutor(3) as pool:
            done = list(pool.map(lambda n: install("--wheelhouse", wheelhouse, "--prefix", n.prefix,
                                                   "--destdir", n.root), nodes))
        for r in done:
            ok(r)
        c.install_s = time.monotonic() - t0
        # 2. one gossip key for the cluster: node1's, copied as root-only 0600
        key = (nodes[0].etc / "gossip.key").read_bytes()
        for n in nodes[1:]:
            (n.etc / "gossip.key").write_bytes(key)
            (n.etc / "gossip.key").chmod(0o600)
        # 3. csync2: one key, one csync2.cfg, copied to every node (0600 root; 0644)
        backup = tmp / "backup"  # /var/backups/csync2
        tbc.make_key(nodes[0].csync2_dir / "csync2.key")
        (nodes[0].csync2_dir / "csync2.key").chmod(0o600)
        for n in nodes:
            n.dags.mkdir(parents=True)
            n.csync2_db.mkdir(parents=True)
            (n.dir / "run").mkdir()
            if n is not nodes[0]:
                shutil.copy2(nodes[0].csync2_dir / "csync2.key", n.csync2_dir / "csync2.key")
            (n.csync2_dir / "csync2.cfg").write_text(csync2_cfg(nodes, n.csync2_dir / "csync2.key", backup))
            n.env = {**env, "CSYNC2_SYSTEM_DIR": str(n.csync2_dir)}
            wrap = (lambda ns: lambda argv: ["ip", "netns", "exec", ns, *argv])(n.ns)
            tbc.create_tables(wrap, n.name, n.csync2_db, n.env)
            n.csync2 = tbc.start_server(wrap, n.name, n.csync2_db, n.env, n.dir / "csync2-server.log")
        # the cfg mentions each node's own key path; on real nodes it is one file, byte-identical
        for n in nodes:
            wait_until(lambda n=n: tbc.listening(n.ns), 10, f"csync2 -ii on {n.name}")
        # 4. the guide's firewall in every node
        table = firewall([topo.addr(i) for i in range(1, 4)])
        for n in nodes:
            r = subprocess.run(["ip", "netns", "exec", n.ns, "nft", "-f", "-"], input=table, capture_output=True,
                               text=True, timeout=30)
            assert r.returncode == 0, f"nft on {n.name}: {r.stderr}\n{table}"
        # 5. the first config, checked, then haflowd started on each
        for n in nodes:
            n.config.write_text(first_config(n, nodes))
            r = subprocess.run(["ip", "netns", "exec", n.ns, str(n.prefix / "bin/haflowd"), "--check-config",
                                "--config", str(n.config)], capture_output=True, text=True, timeout=30, env=n.env)
            assert r.returncode == 0, f"{n.name}: {r.stdout}{r.stderr}"
            n.worker = NsWorker(n.ns)
        t0 = time.monotonic()
        for n in nodes:
            n.start()
        for n in nodes:
            wait_until(n.live, 20, f"haflowd /liveness on {n.name}")
        c.wait_peers(nodes, dict.fromkeys(NAMES, "alive"))
        c.healthy_s = time.monotonic() - t0
        yield c
    finally:
        for n in nodes:
            with contextlib.suppress(Exception):
                n.stop(signal.SIGKILL)
            if n.csync2 is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(n.csync2.pid, signal.SIGKILL)
                n.csync2.wait(10)
            if n.worker is not None:
                n.worker.close()
        topo.destroy()


def doctor(n: Node) -> list[dict[str, Any]]:
    r = n.ctl("doctor", "--json")
    try:
        findings = json.loads(r.stdout)
    except ValueError:
        raise AssertionError(f"doctor on {n.name} (exit {r.returncode}): {r.stdout}{r.stderr}") from None
    assert r.returncode in (0, 1), f"doctor on {n.name}: {json.dumps(findings, indent=1)}"
    return list(findings)


def test_installed_nodes_form_a_healthy_cluster(cluster: Cluster) -> None:
    print(f"install x3 {cluster.install_s:.1f} s; start to all alive {cluster.healthy_s:.1f} s")
    for n in cluster.nodes:
        # the installed code, not this checkout's
        r = subprocess.run([str(n.prefix / "bin/python"), "-c", "import haflowd; print(haflowd.__file__)"],
                           capture_output=True, text=True, timeout=30, env=n.env, cwd=n.dir)
        assert r.stdout.strip().startswith(str(n.prefix)), r.stdout + r.stderr
        key = n.etc / "gossip.key"
        assert key.stat().st_mode & 0o777 == 0o600 and key.stat().st_uid == 0
        assert (n.csync2_dir / "csync2.key").stat().st_mode & 0o777 == 0o600
        findings = doctor(n)
        problems = [f for f in findings if f["status"] != "ok"]
        assert not [f for f in problems if f["status"] == "fail"], problems
        # expected warnings only: none on a node set up as the guide says
        assert not problems, problems
        # the nodes' summaries ride on gossip (one a second): the cluster view settles in seconds
        last: list[subprocess.CompletedProcess[str]] = []

        def cluster_passing(n: Node = n, last: list[subprocess.CompletedProcess[str]] = last) -> bool:
            last[:] = [n.ctl("status", "--cluster")]
            return last[0].returncode == 0
        with contextlib.suppress(AssertionError):
            wait_until(cluster_passing, 20, "status --cluster")
        assert last[0].returncode == 0, last[0].stdout + last[0].stderr
        assert all(name in last[0].stdout for name in NAMES), last[0].stdout
        r = n.ctl("peers")
        assert r.returncode == 0 and r.stdout.count("alive") == 3, r.stdout


def test_a_dag_written_on_one_node_reaches_the_others(cluster: Cluster) -> None:
    text = "from airflow import DAG  # deploy test\n"
    (cluster["node1"].dags / "hello.py").write_text(text)
    for n in cluster.nodes[1:]:
        wait_until(lambda n=n: (n.dags / "hello.py").is_file() and (n.dags / "hello.py").read_text() == text, 30,
                   f"hello.py on {n.name}")


def test_gossip_key_rotation_add_move_first_remove(cluster: Cluster) -> None:
    """docs/deploy.md "Rotating the gossip key": each step on every node, a reload after each,
    the cluster alive throughout and signing with the new key at the end."""
    old = (cluster.nodes[0].etc / "gossip.key").read_text().strip()
    new = new_gossip_key()
    for lines in ([old, new], [new, old], [new]):
        for n in cluster.nodes:
            (n.etc / "gossip.key").write_text("\n".join(lines) + "\n")
            r = n.ctl("reload")
            assert r.returncode == 0, f"reload on {n.name}: {r.stdout}{r.stderr}"
        cluster.wait_peers(cluster.nodes, dict.fromkeys(NAMES, "alive"), timeout=10)
    # the reloads took: a ping signed with the new key alone is accepted by every seed ...
    for n in cluster.nodes:
        seeds = [f for f in doctor(n) if f["check"].startswith("gossip seed")]
        assert len(seeds) == 2 and all(f["status"] == "ok" for f in seeds), seeds
    # ... and one signed with the old key is refused
    n = cluster.nodes[0]
    stale = n.dir / "old-key"
    stale.mkdir(exist_ok=True)
    (stale / "gossip.key").write_text(old + "\n")
    (stale / "gossip.key").chmod(0o600)
    (stale / "haflowd.toml").write_text(n.config.read_text().replace(str(n.etc / "gossip.key"),
                                                                       str(stale / "gossip.key")))
    r = subprocess.run(["ip", "netns", "exec", n.ns, str(n.prefix / "bin/haflowctl"), "--config",
                        str(stale / "haflowd.toml"), "doctor", "--json"], capture_output=True, text=True, timeout=60,
                       env=n.env, cwd=n.dir)
    seeds = [f for f in json.loads(r.stdout) if f["check"].startswith("gossip seed")]
    assert len(seeds) == 2 and all("gossip keys differ" in f["what"] for f in seeds), seeds


def test_csync2_key_rotation(cluster: Cluster) -> None:
    """A new csync2 key on every node (csync2 reads it per connection): DAGs still travel."""
    first = cluster.nodes[0]
    tbc.make_key(cluster.tmp / "csync2.key.new")
    for n in cluster.nodes:
        dst = n.csync2_dir / "csync2.key"
        shutil.copy2(cluster.tmp / "csync2.key.new", dst)
        dst.chmod(0o600)
    text = "# after the csync2 key changed\n"
    (first.dags / "rotated.py").write_text(text)
    for n in cluster.nodes[1:]:
        wait_until(lambda n=n: (n.dags / "rotated.py").is_file() and (n.dags / "rotated.py").read_text() == text,
                   30, f"rotated.py on {n.name}")


def test_decommission_a_node(cluster: Cluster) -> None:
    """docs/deploy.md "Decommissioning a node": haflowctl leave, stop; the others see "left".
    A node that died instead: force-leave from a survivor."""
    gone = cluster["node3"]
    r = gone.ctl("leave")
    assert r.returncode == 0, r.stdout + r.stderr
    cluster.wait_peers(cluster.nodes[:2], {"node1": "alive", "node2": "alive", "node3": "left"}, timeout=10)
    gone.stop()
    assert gone.daemon is not None and gone.daemon.returncode == 0, gone.log.read_text()[-3000:]
    cluster.wait_peers(cluster.nodes[:2], {"node1": "alive", "node2": "alive", "node3": "left"}, timeout=10)

    # a node that dies without leaving: dead to the others until `haflowctl force-leave` on one of them
    dead, survivor = cluster["node2"], cluster["node1"]
    dead.stop(signal.SIGKILL)
    cluster.wait_peers([survivor], {"node2": "dead"}, timeout=20)
    r = survivor.ctl("force-leave", "node2")
    assert r.returncode == 0, r.stdout + r.stderr
    cluster.wait_peers([survivor], {"node1": "alive", "node2": "left", "node3": "left"}, timeout=10)
    r = survivor.ctl("peers")
    assert r.returncode == 0, r.stdout + r.stderr
