"""A rolling upgrade's middle (issue 18): one daemon of the previous release and two of this
one gossip with the same key.

The previous release is built once per commit into a venv under the temp directory
(``haflowd-prev-<commit>``, reused by later runs; about 30-60 s the first time). Both sides
must see each other alive with their summaries (the old node's version shown by the new
ones), ``/health/cluster`` 200 everywhere, no message refused as malformed on either side
(the new ``pv`` field and the rest must not trip the old parser), and a force-leave issued
on a new node must reach the old one as a plain leave.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    Daemon,
    first_seen,
    free_port,
    gossip_body,
    new_gossip_key,
    peer_map,
    rename_node,
    render_config,
    status_of,
    wait_until,
)
from tests.integration.test_gossip import metric, metric_samples, send, sign
from tests.integration.test_gossip import trio as trio  # the three-node fixture, shared

pytestmark = pytest.mark.integration

PREVIOUS_RELEASE = "1890fd04d617056c7b20fb0a6e276bf0e978f814"
"""The commit before issue 18's work (gossip messages without ``pv``, no reap, no force-leave)."""
REPO = Path(__file__).resolve().parents[2]
NAMES = ("old", "new1", "new2")


def build_previous(commit: str = PREVIOUS_RELEASE) -> Path:
    """The python of a venv holding haflowd at ``commit``: built once, then reused."""
    home = Path(tempfile.gettempdir()) / f"haflowd-prev-{commit}"
    python = home / "venv" / "bin" / "python"
    done = home / "installed"
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; xdist workers wait for it
        if done.exists() and python.exists():
            return python
        src = home / "src"
        if not (src / "pyproject.toml").exists():
            src.mkdir(exist_ok=True)
            archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit],
                                     capture_output=True, timeout=60)
            if archive.returncode != 0:
                pytest.skip(f"the previous release {commit[:7]} is not in this checkout: "
                            f"{archive.stderr.decode(errors='replace').strip()}")
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True, timeout=60)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(home / "venv")], check=True, timeout=120)
        r = subprocess.run([str(python), "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True,
                           timeout=600, env={**os.environ, "HAFLOWD_BUILD_SIMULATOR": "0"})
        if r.returncode != 0:
            pytest.skip(f"the previous release {commit[:7]} cannot be installed here: {r.stderr.strip()[-500:]}")
        done.write_text(commit + "\n")
        return python


@pytest.fixture(scope="session")
def previous_python() -> Path:
    return build_previous()


class OldDaemon(Daemon):
    """A daemon of the previous release: its own venv's python runs it."""

    python: Path = Path()

    def start(self, wait: bool = True, extra_env: dict[str, str] | None = None) -> Daemon:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([str(self.python), "-m", "haflowd", "--config", str(self.config)],
                                         stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
                                         cwd=self.dir)
        if wait:
            wait_until(self.live, 15, "the previous release's /liveness")
        return self


@pytest.fixture
def mixed(daemon, previous_python: Path, tmp_path: Path) -> Iterator[tuple[dict[str, Daemon], str]]:
    """old (the previous release, a seed), new1 (a seed) and new2, one key; converged."""
    key = new_gossip_key()
    gport = {n: free_port() for n in NAMES}
    seeds = [f"127.0.0.1:{gport['old']}", f"127.0.0.1:{gport['new1']}"]
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    old = OldDaemon(dir=old_dir, port=free_port(), config=old_dir / "haflowd.toml")
    old.python = previous_python
    nodes: dict[str, Daemon] = {"old": old}
    for n in NAMES[1:]:
        nodes[n] = daemon("", start=False)
    try:
        for n, d in nodes.items():
            key_file = d.dir / "gossip.key"
            key_file.write_text(key + "\n")
            d.config.write_text(render_config(d, gossip_body(f"127.0.0.1:{gport[n]}", seeds, key_file)))
            rename_node(d, n)
            d.start(wait=False)
        for n, d in nodes.items():
            wait_until(d.live, 20, f"{n} /liveness")
        # -I: not the checkout's haflowd from the current directory, the previous release's own
        version = subprocess.run([str(previous_python), "-I", "-c", "import haflowd; print(haflowd.__version__)"],
                                 capture_output=True, text=True, check=True, timeout=30).stdout.strip()
        yield nodes, version
    finally:
        old.kill()


def everyone_alive(nodes: dict[str, Daemon]) -> bool:
    for d in nodes.values():
        peers = peer_map(d)
        if set(peers) != set(NAMES) or any(p["status"] != "alive" for p in peers.values()):
            return False
    return True


def cluster_view(d: Daemon) -> dict[str, Any] | None:
    """/health/cluster when it is 200 with every node's summary in (its checks arrived)."""
    status, body = d.get("/health/cluster")
    if status != 200 or sorted(n["name"] for n in body["nodes"]) != sorted(NAMES):
        return None
    if any(not n["checks"] or n["version"] is None for n in body["nodes"]):
        return None
    return body


def test_previous_and_current_release_gossip_as_one_cluster(mixed):
    nodes, old_version = mixed
    from haflowd import __version__
    assert old_version != __version__, "the two releases must be told apart by their versions"
    t0 = time.monotonic()
    wait_until(lambda: everyone_alive(nodes), 15, "old, new1 and new2 alive on every node")
    print(f"\nprevious release {PREVIOUS_RELEASE[:7]} (haflowd {old_version}) + 2 current: "
          f"all alive everywhere in {time.monotonic() - t0:.2f}s")
    for n, d in nodes.items():
        body = wait_until(lambda d=d: cluster_view(d), 10, f"/health/cluster 200 with every summary on {n}")
        versions = {x["name"]: x["version"] for x in body["nodes"]}
        assert versions == {"old": old_version, "new1": __version__, "new2": __version__}, (n, versions)
    for n in ("new1", "new2"):
        d = nodes[n]
        assert peer_map(d)["old"]["version"] == old_version
        r = d.ctl("peers")
        assert r.returncode == 0, r.stdout + r.stderr
        row = next(ln.split() for ln in r.stdout.splitlines() if ln.startswith("old "))
        assert row[-1] == old_version, r.stdout
    # neither side found the other's messages malformed
    for n, d in nodes.items():
        assert not metric(metric_samples(d), "haflowd_gossip_rejected_total", reason="malformed"), n

    # a force-leave from a current node is a plain leave to the previous release
    new2 = nodes["new2"]
    inc = peer_map(nodes["old"])["new2"]["incarnation"]
    new2.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    new2.proc.wait(5)  # type: ignore[union-attr]
    rest = {"old": nodes["old"], "new1": nodes["new1"]}
    first_seen(rest, status_of("new2", "suspect", "dead"), 15, "new2 suspect or dead on old and new1")
    r = nodes["new1"].ctl("force-leave", "new2")
    assert r.returncode == 0, r.stdout + r.stderr
    first_seen(rest, status_of("new2", "left", min_inc=inc - 1), 5, "new2 left on old and new1")
    for n, d in rest.items():
        wait_until(lambda d=d: d.get("/health/cluster")[0] == 200, 5, f"/health/cluster 200 on {n}")
    assert not metric(metric_samples(nodes["old"]), "haflowd_gossip_rejected_total", reason="malformed")


def test_a_newer_protocol_versions_message_is_read_for_what_this_one_knows(trio):
    """A node of a future release (pv 2) sends an update kind and a message type this one does
    not know: the message is answered, not refused, and the updates this node knows count."""
    key = base64.b64decode(trio.key)
    port = trio.gport["n1"]
    n1 = trio["n1"]
    gossip = json.dumps({
        "pv": 2, "type": "gossip", "from": "n9", "addr": "127.0.0.1:9", "zone": "eu",
        "updates": [{"kind": "decommissioned", "node": "n2", "inc": 99},
                    {"kind": "alive", "node": "n9", "inc": 1, "addr": "127.0.0.1:9", "weight": 3}],
    }).encode()
    status, _, body = send(port, gossip, sign(key, gossip, sender="n9"))
    assert status == 200, body
    rumour = json.dumps({"pv": 2, "type": "rumour", "from": "n9", "addr": "127.0.0.1:9"}).encode()
    status, _, body = send(port, rumour, sign(key, rumour, sender="n9"))
    assert (status, json.loads(body)) == (200, [])
    peers = peer_map(n1)
    assert "n9" in peers and peers["n2"]["status"] == "alive"
    # from its own protocol version, the same unknown type is malformed, as before
    same = json.dumps({"pv": 1, "type": "rumour", "from": "n9", "addr": "127.0.0.1:9"}).encode()
    assert send(port, same, sign(key, same, sender="n9"))[0] == 400
