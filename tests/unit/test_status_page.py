"""The status page (``GET /``, haflowd/api/page.py) rendered from a test state: every section,
every value escaped, a dead peer and a fatal component shown as such, no secret, no script,
and fast. Pure: the route's handler is called with a mocked request; real daemons and a real
browser are tests/integration/test_status_page.py's.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from haflowd.api import page
from haflowd.api.openapi import OPENAPI
from haflowd.api.server import ReadApi
from haflowd.checks import pg_topology as t
from haflowd.checks.postgres import PostgresChecker, ProbeAbort, _error_text
from haflowd.config import PostgresNode, Secret
from haflowd.health import Status
from tests.fixtures.api_state import FakeComponent, FakeState
from tests.unit.test_postgres_checker import cfg as pg_config
from tests.unit.test_reference_drift import full_state

HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
PASSWORD = "Hunter2-not-for-pages"


# --------------------------------------------------------------------------- reading the page back


@dataclass
class Cell:
    text: str = ""
    kinds: list[str] = field(default_factory=list)  # the colour of each badge in the cell


class Page(HTMLParser):
    """The page's tables by section id, each row a list of cells (text and badge colours);
    also counts what must never be there (script, img, iframe, link, object elements)."""

    FORBIDDEN = ("script", "img", "iframe", "link", "object", "embed", "base", "form")

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, list[list[Cell]]] = {}
        self.forbidden: list[str] = []
        self.meta: list[dict[str, str | None]] = []
        self._section: str | None = None
        self._row: list[Cell] | None = None
        self._cell: Cell | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in self.FORBIDDEN:
            self.forbidden.append(tag)
        if tag == "meta":
            self.meta.append(a)
        if tag == "section":
            self._section = a.get("id") or "?"
            self.sections[self._section] = []
        elif tag == "tr":
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = Cell()
        elif tag == "span" and self._cell is not None:
            classes = (a.get("class") or "").split()
            if "b" in classes:
                self._cell.kinds.append(next((c for c in classes if c not in ("b", "big")), "?"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self._cell.text = " ".join(self._cell.text.split())
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row and self._section is not None:
                self.sections[self._section].append(self._row)
            self._row = None
        elif tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.text += data

    def rows(self, section: str, *first: str) -> list[list[Cell]]:
        """The rows of a section whose leading cells start with ``first``."""
        return [r for r in self.sections[section]
                if len(r) >= len(first) and all(c.text.startswith(f) for c, f in zip(r, first, strict=False))]

    def row(self, section: str, *first: str) -> list[Cell]:
        found = self.rows(section, *first)
        assert len(found) == 1, (section, first, [[c.text for c in r] for r in self.sections[section]])
        return found[0]


# --------------------------------------------------------------------------- a three-node state


@dataclass
class NotedComponent(FakeComponent):
    note: str = ""
    uptime_s: float | None = 12.0

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "note": self.note, "uptime_s": self.uptime_s}


@dataclass
class ThreeNodes(FakeState):
    """n1 (this node), a peer whose name and summary are hostile, and n3, dead."""

    peer_name: str = "n2"
    peer_text: str = "all good"

    def peers(self) -> list[dict[str, Any]]:
        return [
            {"name": "n1", "address": "127.0.0.1:7946", "status": "alive", "incarnation": 0, "last_seen_s": 0.0,
             "rtt_ms": None, "suspect_since": None, "self": True},
            {"name": self.peer_name, "address": "127.0.0.1:7947", "status": "alive", "incarnation": 2,
             "last_seen_s": 0.4, "rtt_ms": 0.61, "suspect_since": None, "self": False},
            {"name": "n3", "address": "127.0.0.1:7948", "status": "dead", "incarnation": 1, "last_seen_s": 31.0,
             "rtt_ms": 0.55, "suspect_since": None, "self": False},
        ]

    def cluster_health(self) -> dict[str, Any]:
        own = self.registry.to_json(self.node)
        comps = [{"name": c.name, "state": c.state, "healthy": c.healthy} for c in self.components_]
        nodes = [
            {"name": "n1", "member_status": "alive", "status": own["status"], "stale": False, "version": "1.0",
             "checks": [{k: c[k] for k in ("name", "status", "output")} for c in own["checks"]], "components": comps},
            {"name": self.peer_name, "member_status": "alive", "status": "warning", "stale": False,
             "version": self.peer_text, "reported_status": self.peer_text,
             "checks": [{"name": self.peer_text, "status": "warning", "output": self.peer_text}],
             "components": [{"name": self.peer_text, "state": self.peer_text, "healthy": None}]},
            {"name": "n3", "member_status": "dead", "status": "critical", "stale": True, "version": "1.0",
             "checks": [{"name": "supervisor", "status": "passing", "output": "1 running"}],
             "components": [{"name": "web", "state": "running", "healthy": True}]},
        ]
        return {"status": "critical", "ok": False, "nodes": nodes}


def three_nodes(**kw: Any) -> ThreeNodes:
    s = ThreeNodes(components_=[NotedComponent("web"),
                                NotedComponent("flaky", state="fatal", healthy=None, restarts=3, uptime_s=None,
                                               note=kw.pop("note", "crash loop: 3 exits in 60s"))], **kw)
    s.registry.set("supervisor", Status.CRITICAL, "flaky is fatal")
    s.registry.set("gossip", Status.PASSING, "2 of 3 members alive")
    return s


# --------------------------------------------------------------------------- the tests


async def test_every_section_renders_from_the_real_checkers(tmp_path: Path) -> None:
    state = await full_state(tmp_path)  # real PostgresChecker, RabbitChecker, SyncService
    p = Page(page.render(state))
    assert set(p.sections) == {"nodes", "components", "checks", "sync", "postgres", "rabbitmq"}
    assert p.forbidden == []
    assert {"http-equiv": "refresh", "content": "5"} in p.meta
    assert p.row("nodes", "n1")[1].text == "alive"
    assert [c.text for c in p.row("components", "n1", "web")][2:4] == ["running", "healthy"]
    assert p.row("postgres", "pg1")[1].text == "up"
    assert p.row("rabbitmq", "rabbit@a")  # not checked yet: a row, its error said


def test_without_optional_sections_only_the_three_always_there() -> None:
    p = Page(page.render(FakeState()))
    assert set(p.sections) == {"nodes", "components", "checks"}
    assert p.sections["nodes"][0][0].text.startswith("n1")


def test_a_dead_peer_and_a_fatal_component_are_shown_as_such() -> None:
    p = Page(page.render(three_nodes()))
    n3 = p.row("nodes", "n3")
    assert (n3[1].text, n3[1].kinds) == ("dead", ["bad"])
    assert n3[2].text.startswith("critical") and "last known" in n3[2].text
    assert p.row("nodes", "n1")[1].kinds == ["good"]
    flaky = p.row("components", "n1", "flaky")
    assert (flaky[2].text, flaky[2].kinds) == ("fatal", ["bad"])
    assert flaky[5].text == "3" and flaky[6].text == "crash loop: 3 exits in 60s"
    n3_components = p.row("peer-components", "n3")  # a dead peer's components: its last summary
    assert "last known" in n3_components[0].text and n3_components[1].text == "web running"
    sup = p.row("checks", "n1", "supervisor")
    assert (sup[2].text, sup[2].kinds) == ("critical", ["bad"])


def test_every_status_word_is_written_and_coloured() -> None:
    for word, kind in (("passing", "good"), ("warning", "warn"), ("critical", "bad"), ("alive", "good"),
                       ("suspect", "warn"), ("dead", "bad"), ("left", "muted"), ("fatal", "bad"),
                       ("backoff", "warn"), ("stopped", "muted"), ("failing", "bad"), ("ok", "good")):
        assert page.badge(word) == f'<span class="b {kind}">{word}</span>'
    assert page.badge("Critical\"><x>") == '<span class="b muted">Critical&quot;&gt;&lt;x&gt;</span>'


@pytest.mark.parametrize("where", ["note", "peer"])
def test_hostile_text_is_escaped_everywhere(where: str) -> None:
    state = three_nodes(note=HOSTILE) if where == "note" else three_nodes(peer_name=HOSTILE, peer_text=HOSTILE)
    text = page.render(state)
    p = Page(text)
    assert p.forbidden == [] and "<script" not in text and "<img" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img" in text
    if where == "note":
        assert p.row("components", "n1", "flaky")[6].text == HOSTILE  # shown, as text
    else:
        peer = p.row("nodes", HOSTILE)
        assert peer[1].text == "alive" and peer[3].text == HOSTILE
        comp = p.row("peer-components", HOSTILE)
        assert (comp[1].text, comp[1].kinds) == (f"{HOSTILE} {HOSTILE}", ["muted"])
        assert p.row("checks", HOSTILE, HOSTILE)[4].text == HOSTILE


async def test_a_dsn_password_never_reaches_the_page() -> None:
    """Even a probe error that echoes the DSN: the checker scrubs it before the page reads it."""
    state = three_nodes()
    dsn = f"host=127.0.0.1 port=1 user=airflow password={PASSWORD}"

    def echoing(node: PostgresNode, timeout: float, abort: ProbeAbort) -> t.NodeProbe:
        return t.NodeProbe(node.name, False, error=_error_text(RuntimeError(f"cannot connect with {dsn}"), dsn))

    c = pg_config()
    c = dataclasses.replace(c, nodes=tuple(PostgresNode(n.name, Secret(dsn)) for n in c.nodes))
    state.postgres = PostgresChecker(c, state.registry, state.clock, node_prober=echoing)
    await state.postgres.probe_round()
    text = page.render(state)
    assert PASSWORD not in text
    assert Page(text).row("postgres", "pg1")[1].text == "down"


def test_sync_peers_show_state_retries_pending_and_conflicts() -> None:
    class Sync:
        name = "sync"
        enabled = True

        def snapshot(self) -> dict[str, Any]:
            return {"enabled": True, "running": False, "last_run": now - 4, "last_success": now - 4,
                    "last_result": "partial", "next_run": now + 26, "conflicts": [], "peers": {
                        "n2": {"state": "ok", "last_success": now - 4, "attempts": 0, "next_retry": None,
                               "pending_files": 0, "conflicts": [], "last_error": None},
                        "n3": {"state": "failing", "last_success": now - 3600, "attempts": 4,
                               "next_retry": now + 30, "pending_files": 7,
                               "conflicts": [f"/dags/d{i}.py" for i in range(7)], "last_error": HOSTILE}}}

        def collect(self) -> Any:
            return iter(())

        async def sync_now(self) -> dict[str, Any]:
            return {}

    state = three_nodes()
    now = state.clock.wall()
    state.sync = Sync()
    text = page.render(state)
    p = Page(text)
    n3 = [c.text for c in p.row("sync", "n3")]
    assert n3[:7] == ["n3", "failing", "60 min ago", "4", "in 30 s", "7",
                      "7 /dags/d0.py, /dags/d1.py, /dags/d2.py, /dags/d3.py, /dags/d4.py and 2 more"]
    assert n3[7] == HOSTILE and "<script" not in text
    assert p.row("sync", "n3")[1].kinds == ["bad"] and p.row("sync", "n2")[1].kinds == ["good"]
    assert p.row("sync", "n3")[6].kinds == ["bad"] and p.row("sync", "n2")[6].text == "none"


def test_rabbitmq_partitions_and_alarms_are_red() -> None:
    class Rabbit:
        name = "rabbitmq"

        def snapshot(self) -> dict[str, Any]:
            node = {"name": "rabbit@a", "status": "critical", "running": True, "partitions": ["rabbit@b"],
                    "alarms": ["memory"], "amqp_roundtrip_ms": 2.5, "error": None}
            down = {"name": "rabbit@b", "status": "critical", "running": False, "partitions": [], "alarms": [],
                    "amqp_roundtrip_ms": None, "error": "node is not running"}
            return {"status": "critical", "checked_at": None, "stale": False, "output": "partitioned",
                    "nodes": [node, down], "amqp_roundtrip_ms": 2.5, "amqp_error": None, "error": None}

        def collect(self) -> Any:
            return iter(())

    state = three_nodes()
    state.rabbitmq = Rabbit()
    p = Page(page.render(state))
    a = p.row("rabbitmq", "rabbit@a")
    assert [(c.text, c.kinds) for c in a[1:6]] == [("critical", ["bad"]), ("yes", ["good"]),
                                                    ("rabbit@b", ["bad"]), ("memory", ["bad"]), ("2.5 ms", [])]
    assert p.row("rabbitmq", "rabbit@b")[2].kinds == ["bad"]


async def test_the_route_serves_html_with_a_strict_policy_and_answers_head() -> None:
    api = ReadApi(three_nodes(note=HOSTILE))
    r = await api.page(make_mocked_request("GET", "/"))
    assert r.status == 200 and r.content_type == "text/html" and r.charset == "utf-8"
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "unsafe" not in csp
    assert isinstance(r.text, str) and Page(r.text).row("components", "n1", "flaky")[2].text == "fatal"
    methods = {route.method for route in api.app().router.routes() if route.resource is not None
               and route.resource.canonical == "/"}
    assert methods == {"GET", "HEAD"}
    assert OPENAPI["paths"]["/"]["get"]["responses"]["200"]["content"].keys() == {"text/html"}


def test_rendering_three_nodes_is_fast() -> None:
    state = three_nodes()
    runs = []
    for _ in range(50):
        t0 = time.perf_counter()
        page.render(state)
        runs.append(time.perf_counter() - t0)
    median = statistics.median(runs)
    assert median < 0.005, f"median render {median * 1000:.2f} ms"  # measured about 0.2 ms


def test_odd_numbers_and_times_render_as_dashes() -> None:
    for value in (None, float("nan"), float("inf"), -float("inf"), True, "12", [1]):
        assert page.duration(value) == page.num(value) == page.until(value, 0.0) == page.DASH
        assert page.ago(value, 0.0) == "never"
    assert page.utc(1e20) == "?" and page.ago(1e20, 0.0).endswith("ago</span>")
