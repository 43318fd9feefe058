"""contrib/'s monitoring kit end to end (issue 17): a real Prometheus, configured from
contrib/prometheus/haflowd-scrape.yml (targets swapped for loopback, intervals 1 s) with a copy
of haflowd-alerts.yml whose ``for:`` are all 0 s, scrapes three real daemons that gossip.

A component driven into ``fatal`` fires HaflowdComponentFatal for its node and clears after
``haflowctl start``; a SIGKILLed daemon fires one HaflowdPeerDead (its two peers both see it
dead: one alert, not two) and HaflowdDown, and both clear once it is back. The alerts are read
from Prometheus' own ``/api/v1/alerts``.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, wait_until
from tests.integration.test_contrib_rules import RULES, SCRAPE, haproxy_expect
from tests.integration.test_gossip import Trio, trio  # noqa: F401  (the three-node fixture, shared)

pytestmark = pytest.mark.integration

FLAKY = """
[[component]]
name = "flaky"
command = ["sh", "-c", "test -f {ok} || exit 3; exec sleep 3600"]
backoff_initial = "10ms"
backoff_max = "40ms"
crash_loop_failures = 3
crash_loop_window = "1m"
"""


def substitute(text: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        assert old in text, f"the contrib file no longer holds {old!r}: update this test"
        text = text.replace(old, new)
    return text


def prometheus_config(targets: dict[str, int], rules: Path) -> str:
    """contrib's scrape config with node1..3 swapped for the daemons, and everything at 1 s."""
    pairs = [("scrape_interval: 15s", "scrape_interval: 1s"), ("evaluation_interval: 15s", "evaluation_interval: 1s"),
             ("scrape_timeout: 10s", "scrape_timeout: 1s"), ("- haflowd-alerts.yml", f"- {rules}")]
    for i, (name, port) in enumerate(targets.items(), start=1):
        pairs += [(f"node{i}.example.com:8787", f"127.0.0.1:{port}"), (f"__haflowd_node: node{i}", f"__haflowd_node: {name}")]
    return substitute(SCRAPE.read_text(), pairs)


def fast_rules(path: Path) -> Path:
    text, n = re.subn(r"^(\s*)for: \S+$", r"\1for: 0s", RULES.read_text(), flags=re.M)
    assert n >= 18
    path.write_text(text)
    return path


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[dict[str, int]], str]]:
    """``prometheus({node: api_port})`` → the base URL of a Prometheus running contrib's kit."""
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed; scripts/setup installs it")
    procs: list[subprocess.Popen[bytes]] = []

    def start(targets: dict[str, int]) -> str:
        port = free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(prometheus_config(targets, fast_rules(tmp_path / "alerts-fast.yml")))
        with open(tmp_path / "prometheus.log", "wb") as log:
            procs.append(subprocess.Popen(
                ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))
        return f"http://127.0.0.1:{port}"

    try:
        yield start
    finally:
        for p in procs:
            p.kill()
            p.wait(10)


def api(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=2) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]


def firing(base: str, name: str) -> list[dict[str, str]]:
    """The labels of every firing alert called ``name``."""
    return [a["labels"] for a in api(base, "/api/v1/alerts")["alerts"]
            if a["labels"]["alertname"] == name and a["state"] == "firing"]


def test_fatal_component_and_dead_peer_fire_their_alerts_and_clear(trio: Trio, prometheus,  # noqa: F811
                                                                   tmp_path: Path) -> None:
    n1, n3 = trio["n1"], trio["n3"]
    ok = tmp_path / "ok"
    n1.config.write_text(n1.config.read_text() + FLAKY.format(ok=ok))
    assert n1.ctl("reload").returncode == 0
    n1.wait_state("flaky", "fatal")
    base = prometheus({name: d.port for name, d in trio.nodes.items()})

    def scraped() -> bool:
        up = api(base, "/api/v1/query?query=" + urllib.parse.quote('up{job="haflowd"} == 1'))["result"]
        return {r["metric"]["instance"] for r in up} == {"n1", "n2", "n3"}
    wait_until(scraped, 30, "Prometheus to scrape n1, n2, n3 (instance = node name)", interval=0.25)

    # a crash loop gone fatal: one alert, naming the node and the component
    fatal = wait_until(lambda: firing(base, "HaflowdComponentFatal"), 20, "HaflowdComponentFatal", interval=0.25)
    assert [(a["instance"], a["component"], a["severity"]) for a in fatal] == [("n1", "flaky", "critical")]
    component = haproxy_expect("haproxy-airflow-api.cfg", "airflow_api_servers_by_haflowd")
    assert not component.search(json.dumps(n1.comp("flaky")))  # HAProxy's check agrees: out of the pool
    ok.touch()
    assert n1.ctl("start", "flaky").returncode == 0
    n1.wait_state("flaky", "running")
    assert component.search(json.dumps(n1.comp("flaky"), separators=(",", ":")))  # and back in
    wait_until(lambda: not firing(base, "HaflowdComponentFatal"), 20, "HaflowdComponentFatal to clear",
               interval=0.25)

    # a dead peer: n1 and n2 both see it, one alert; and its own scrape fails
    assert n3.proc is not None
    n3.proc.send_signal(signal.SIGKILL)
    dead = wait_until(lambda: firing(base, "HaflowdPeerDead"), 30, "HaflowdPeerDead", interval=0.25)
    assert [(a["peer"], a["severity"]) for a in dead] == [("n3", "critical")]
    assert "instance" not in dead[0]
    down = wait_until(lambda: firing(base, "HaflowdDown"), 20, "HaflowdDown", interval=0.25)
    assert [a["instance"] for a in down] == ["n3"]
    assert len(firing(base, "HaflowdPeerDead")) == 1  # still one, with both survivors reporting it

    n3.kill()  # reap it
    n3.start()
    wait_until(lambda: not firing(base, "HaflowdPeerDead") and not firing(base, "HaflowdDown"), 30,
               "HaflowdPeerDead and HaflowdDown to clear", interval=0.25)
