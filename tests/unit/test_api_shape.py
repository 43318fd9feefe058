"""The API's shape (issue 16): api/ owns every route and reads the daemon only through
api/state.py; the checks and sync publish plain data and know nothing of HTTP.

The import graph is read from the source (every ``import`` statement, lazy and
TYPE_CHECKING ones included), nothing is imported to draw it. The routes are the app's
own, built on a test state; no socket is opened.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from aiohttp import web
from prometheus_client import generate_latest

from haflowd.api import metrics
from haflowd.api.control import ControlApi
from haflowd.api.openapi import OPENAPI
from haflowd.api.server import REFUSAL_REASONS, ReadApi
from tests.fixtures.api_state import FakeState, FakeSync

PACKAGE = Path(__file__).resolve().parents[2] / "haflowd"
HTTP_SERVER = ("aiohttp.web",)  # aiohttp's client (aiohttp.ClientSession) is fine


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def parse(path: Path, attempts: int = 5) -> ast.Module:
    """``ast.parse``, tried again on CPython 3.11's "AST constructor recursion depth mismatch":
    its AST conversion keeps its depth count per interpreter, not per thread, and another
    thread of the test process may convert at the same moment (3.11's traceback formatting
    calls ``ast.parse``), which trips the check though the source is fine."""
    source = path.read_text(encoding="utf-8")
    for _ in range(attempts - 1):
        try:
            return ast.parse(source, str(path))
        except SystemError:
            continue
    return ast.parse(source, str(path))


def imports_of(name: str, path: Path) -> Iterator[str]:
    """Every module name an ``import`` in ``path`` names (``from a import b``: ``a`` and ``a.b``)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target
            for alias in node.names:
                yield f"{target}.{alias.name}"


def graph() -> dict[str, set[str]]:
    """haflowd's modules → the haflowd modules their import statements name."""
    mods = modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for target in imports_of(name, path):
            if target in mods and target != name:
                edges[name].add(target)
    return edges


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components (iterative: no recursion limit to meet)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.add(member)
                    if member == node:
                        break
                out.append(comp)
    return out


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    return [c for c in strongly_connected(edges) if len(c) > 1 or any(m in edges[m] for m in c)]


def test_the_graph_reader_sees_relative_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    src = ("from __future__ import annotations\nfrom typing import TYPE_CHECKING\nfrom . import b\n"
           "from .c import d\nif TYPE_CHECKING:\n    from haflowd.daemon import Daemon\n"
           "def f():\n    import haflowd.x.y\n")
    path = tmp_path / "a.py"
    path.write_text(src)
    found = set(imports_of("haflowd.api.a", path))
    assert {"haflowd.api.b", "haflowd.api.c", "haflowd.api.c.d", "haflowd.daemon", "haflowd.x.y"} <= found
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_runs_through_the_api_or_the_daemon() -> None:
    edges = graph()
    assert "haflowd.daemon" in edges and "haflowd.api.server" in edges
    involved = [sorted(c) for c in cycles(edges)
                if any(m == "haflowd.daemon" or m.startswith("haflowd.api") for m in c)]
    assert involved == []
    api = {m for m in edges if m.startswith("haflowd.api")}
    assert not any("haflowd.daemon" in edges[m] for m in api), "api/ reads the daemon through api/state.py"


def test_no_import_cycle_anywhere_in_haflowd() -> None:
    """Issue 16: ``ls haflowd/`` shows layers only if the modules form them; two modules that
    import each other (even lazily, inside a function) are one module in two files."""
    assert [sorted(c) for c in cycles(graph())] == []


def test_checks_and_sync_know_nothing_of_http_serving_or_of_the_api() -> None:
    offenders: list[str] = []
    for name, path in modules().items():
        if not name.startswith(("haflowd.checks", "haflowd.sync")):
            continue
        for target in imports_of(name, path):
            if target.startswith(HTTP_SERVER) or target.startswith("haflowd.api"):
                offenders.append(f"{name} imports {target}")
    assert offenders == []


def routes(app: web.Application) -> set[str]:
    return {r.resource.canonical for r in app.router.routes() if r.resource is not None}


def test_every_route_is_in_the_openapi_document_and_every_path_has_a_route() -> None:
    app = ReadApi(FakeState(postgres=_Pg(), rabbitmq=FakeSync(), sync=FakeSync())).app()
    assert routes(app) == set(OPENAPI["paths"])


def test_a_section_that_is_not_configured_has_no_route() -> None:
    bare = routes(ReadApi(FakeState()).app())
    assert not any(p.startswith(("/postgres", "/rabbitmq", "/sync")) for p in bare)
    assert "/health" in bare and "/metrics" in bare


def test_get_routes_answer_head_too() -> None:
    app = ReadApi(FakeState(postgres=_Pg(), rabbitmq=FakeSync(), sync=FakeSync())).app()
    methods: dict[str, set[str]] = {}
    for r in app.router.routes():
        methods.setdefault(r.resource.canonical if r.resource else "", set()).add(r.method)
    assert all(m == {"GET", "HEAD"} for m in methods.values()), methods


def test_the_read_apis_refusals_are_exported_by_reason() -> None:
    api = ReadApi(FakeState())
    text = generate_latest(api.registry).decode()
    for reason in REFUSAL_REASONS:  # every reason there from the start
        assert f'haflowd_api_refused_total{{reason="{reason}"}} 0.0' in text
    api.refuse("busy", "10.0.0.1")
    api.refuse("busy", "10.0.0.2")
    api.refuse("bad_request", "10.0.0.1")
    text = generate_latest(api.registry).decode()
    assert 'haflowd_api_refused_total{reason="busy"} 2.0' in text
    assert 'haflowd_api_refused_total{reason="bad_request"} 1.0' in text
    assert "# TYPE haflowd_api_refused_total counter" in text


def test_the_control_api_has_the_documented_routes() -> None:
    app = ControlApi(FakeState()).app()
    assert routes(app) == {"/components/{name}/{action}", "/reload", "/leave", "/sync", "/components",
                           "/components/{name}/logs", "/events", "/peers/{name}/force-leave",
                           "/drain", "/undrain"}


def test_metrics_read_components_through_the_state() -> None:
    text = metrics.render(metrics.make_registry(FakeState())).decode()
    assert 'haflowd_component_up{component="web"} 1.0' in text
    assert 'haflowd_component_memory_rss_bytes{component="web"} 4096.0' in text
    assert "haflowd_api_refused_total" not in text  # only the read API keeps those counters


class _Pg(FakeSync):
    """The smallest PostgresView: every verdict is a yes."""

    name = "postgres"
    max_lag_bytes = 1024

    class _Yes:
        ok = True
        reason = "yes"

    def primary_verdict(self) -> _Pg._Yes:
        return self._Yes()

    def replica_verdict(self, max_lag: int) -> _Pg._Yes:
        return self._Yes()

    def read_only_verdict(self, max_lag: int) -> _Pg._Yes:
        return self._Yes()
