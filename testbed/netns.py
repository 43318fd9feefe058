"""Network namespaces: a bridge namespace and node namespaces on it, and threads inside them.

Layout (``prefix`` carries the pid of the run that made it, so a later run can tell a
leftover from a namespace still in use)::

    PREFIX-br     bridge namespace: br0, one veth port per node (p1..pN by default)
    PREFIX-NAME   eth0 = ADDRESS/24, lo up; its /etc/netns/PREFIX-NAME/hosts when asked

Nothing is made in the root namespace: each veth pair is created inside a node's
namespace with its other end moved straight into the bridge's. A thread talks to a
node's own 127.0.0.1 by entering its namespace (``setns``, what ``ip netns exec`` does
for a process); a socket keeps the namespace it was made in.

:meth:`Topology.destroy` SIGKILLs whatever still runs inside, deletes the namespaces and
their hosts files; :func:`sweep_stale` does the same for the namespaces of a run whose
pid is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
IFACE = "eth0"


class NetnsError(RuntimeError):
    """An ``ip`` command failed."""


def ip(*args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    """``ip ARGS``; NetnsError when it fails or does not exit within ``timeout``."""
    try:
        r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise NetnsError(f"ip {' '.join(args)}: no exit within {timeout:g}s") from e
    if r.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def netns_unavailable(probe: str) -> str | None:
    """Why namespaces cannot be made here, or None: tries ``ip netns add probe`` (and deletes it)."""
    if os.geteuid() != 0:
        return "network namespace tests need root (ip netns add)"
    if shutil.which("ip") is None:
        return "network namespace tests need iproute2's `ip`"
    try:
        ip("netns", "add", probe)
    except (NetnsError, OSError) as e:
        return f"`ip netns add` does not work here: {e}"
    finally:
        with contextlib.suppress(NetnsError, OSError):
            ip("netns", "del", probe)
    return None


# ---------------------------------------------------------------------------- threads inside


def enter_netns(name: str) -> None:
    """Move the *calling thread* into namespace ``name`` and check that it is there.

    Sockets this thread opens afterwards, and processes it spawns, live in that namespace.
    """
    path = NETNS_DIR / name
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns({path}): {os.strerror(e)}")
    finally:
        os.close(fd)
    # never talk to the wrong namespace's 127.0.0.1 by accident
    if os.stat("/proc/thread-self/ns/net").st_ino != os.stat(path).st_ino:
        raise OSError(errno.EINVAL, f"thread is not in network namespace {name}")


class NsWorker:
    """Threads living inside a network namespace; ``call`` runs a function there."""

    def __init__(self, ns: str, workers: int = 1, timeout: float = 15) -> None:
        self.ns = ns
        self.timeout = timeout
        self.pool = ThreadPoolExecutor(max_workers=workers, initializer=enter_netns, initargs=(ns,),
                                       thread_name_prefix=f"ns-{ns}")
        self.call(lambda: None)  # enter now: a failure shows here, not in the middle of a run

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        return self.pool.submit(fn, *args).result(self.timeout if timeout is None else timeout)

    def close(self, wait: bool = False) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=True)


# ---------------------------------------------------------------------------- teardown


def ns_inode(ns: str) -> int | None:
    with contextlib.suppress(OSError):
        return os.stat(NETNS_DIR / ns).st_ino
    return None


def pids_in(names: Iterable[str]) -> list[int]:
    """Every process (never this one) whose network namespace is one of ``names``."""
    want = {i for i in (ns_inode(ns) for ns in names) if i is not None}
    out = []
    if not want:
        return out
    for pid in psutil.pids():
        if pid == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{pid}/ns/net").st_ino in want:
                out.append(pid)
    return out


def kill_inside(names: Sequence[str], rounds: int = 3) -> int:
    """SIGKILL every process inside ``names``, again while any is left (a dying parent may
    have forked one more), at most ``rounds`` times; how many were killed."""
    killed = 0
    for _ in range(rounds):
        procs = []
        for pid in pids_in(names):
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                p.send_signal(signal.SIGKILL)
                procs.append(p)
        if not procs:
            break
        killed += len(procs)
        psutil.wait_procs(procs, timeout=5)
    return killed


def delete_namespaces(names: Sequence[str], kill: bool = True) -> list[str]:
    """Kill what runs inside (``kill``), delete the namespaces and their /etc/netns entries;
    the names that could not be deleted."""
    if kill:
        kill_inside(names)
    failed = []
    for ns in names:
        try:
            ip("netns", "del", ns)
        except (NetnsError, OSError) as e:
            if "No such file" not in str(e):
                failed.append(ns)
        shutil.rmtree(ETC_NETNS / ns, ignore_errors=True)
    return failed


def sweep_stale(pattern: re.Pattern[str]) -> list[str]:
    """Delete the namespaces (and /etc/netns entries) of earlier runs that were killed:
    ``pattern`` captures the run's pid as group 1, and that pid no longer runs."""
    def stale(name: str) -> bool:
        m = pattern.match(name)
        return bool(m) and int(m.group(1)) != os.getpid() and not psutil.pid_exists(int(m.group(1)))

    try:
        names = [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()]
    except (NetnsError, OSError):
        names = []
    gone = sorted((n for n in names if stale(n)), key=lambda n: n.endswith("-br"))  # the bridge's last
    if gone:
        delete_namespaces(gone)
    if ETC_NETNS.is_dir():
        for d in ETC_NETNS.iterdir():
            if pattern.match(d.name) and not (NETNS_DIR / d.name).exists():
                shutil.rmtree(d, ignore_errors=True)
    return gone


# ---------------------------------------------------------------------------- the topology


@dataclass
class Topology:
    """A bridge namespace ``PREFIX-br`` and one namespace ``PREFIX-NAME`` per entry of ``names``.

    ``addresses``: one per name (default ``SUBNET.(10 + i)`` for the i-th, 1-based).
    ``hosts``: host name -> address, written as every node namespace's hosts file.
    ``port_base``: the number of the first node's port on the bridge (``p1`` by default).
    """

    prefix: str
    names: list[str]
    addresses: list[str] = field(default_factory=list)
    subnet: str = "198.18.0"  # 198.18.0.0/15 is reserved for benchmarking/testing (RFC 2544)
    hosts: dict[str, str] | None = None
    port_prefix: str = "p"
    port_base: int = 1
    bridge: str = field(init=False)
    nodes: list[str] = field(init=False)
    made: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.addresses:
            self.addresses = [f"{self.subnet}.{10 + i}" for i in range(1, len(self.names) + 1)]
        self.bridge = f"{self.prefix}-br"
        self.nodes = [f"{self.prefix}-{name}" for name in self.names]

    def ns(self, name: str) -> str:
        """The namespace of node ``name``."""
        return self.nodes[self.names.index(name)]

    def addr(self, i: int) -> str:
        """The address of node ``i`` (1-based)."""
        return self.addresses[i - 1]

    def port(self, i: int) -> str:
        """Node ``i``'s veth end on the bridge, in the bridge namespace."""
        return f"{self.port_prefix}{self.port_base + i - 1}"

    def create(self) -> Topology:
        br = self.bridge
        ip("netns", "add", br)
        self.made.append(br)
        ip("-n", br, "link", "set", "lo", "up")
        ip("-n", br, "link", "add", "br0", "type", "bridge")
        ip("-n", br, "link", "set", "br0", "up")
        hosts = None
        if self.hosts is not None:
            hosts = "127.0.0.1 localhost\n" + "".join(f"{a} {h}\n" for h, a in self.hosts.items())
        for i, ns in enumerate(self.nodes, start=1):
            ip("netns", "add", ns)
            self.made.append(ns)
            if hosts is not None:
                etc = ETC_NETNS / ns
                etc.mkdir(parents=True, exist_ok=True)
                (etc / "hosts").write_text(hosts)
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "add", IFACE, "type", "veth", "peer", "name", self.port(i), "netns", br)
            ip("-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", IFACE)
            ip("-n", ns, "link", "set", IFACE, "up")
            ip("-n", br, "link", "set", self.port(i), "master", "br0")
            ip("-n", br, "link", "set", self.port(i), "up")
        return self

    def destroy(self, kill: bool = True) -> list[str]:
        """Kill what still runs inside (``kill``), delete every namespace made and its hosts
        file (nodes before the bridge); the ones that could not be deleted."""
        made, self.made = list(reversed(self.made)), []
        return delete_namespaces(made, kill=kill)

    # ------------------------------------------------------------------ faults

    def link(self, i: int, up: bool) -> None:
        """Node ``i``'s own interface down/up: a cut cable as the node sees it."""
        ip("-n", self.nodes[i - 1], "link", "set", IFACE, "up" if up else "down")

    def bridge_port(self, i: int, up: bool) -> None:
        """Node ``i``'s port on the bridge down/up: the switch drops it; the node's own link stays up."""
        ip("-n", self.bridge, "link", "set", self.port(i), "up" if up else "down")
