"""Control requests that race each other over the control socket: restarts, stops and
reloads of the same components at once leave exactly one tracked child per component."""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil

from haflowd.ctl import UnixHTTPConnection
from tests.conftest import Daemon, wait_until

ROUNDS = 6

BODY = """
[[component]]
name = "a"
command = ["sleep", "5301"]
stop_timeout = "5s"
environment = {{ ROUND = "{n}" }}
[[component]]
name = "b"
command = ["sh", "-c", "trap 'sleep 0.2; exit 0' TERM; sleep 5302 & wait"]
stop_timeout = "5s"
environment = {{ ROUND = "{n}" }}
"""


def _post(d: Daemon, path: str) -> tuple[int, Any]:
    conn = UnixHTTPConnection(str(d.socket), 60)
    try:
        conn.request("POST", path, body=b"", headers={"Content-Length": "0"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _children(d: Daemon) -> dict[str, list[int]]:
    """The component processes (not guards) that carry this daemon's marker, by component."""
    out: dict[str, list[int]] = {}
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(p.info["cmdline"] or [])
            if "5301" not in cmd and "5302" not in cmd:
                continue
            env = p.environ()
            if str(d.dir) in env.get("HAFLOWD_SUPERVISOR", "") and p.status() != psutil.STATUS_ZOMBIE:
                if cmd.startswith("sleep") and "5302" in cmd:
                    continue  # b's grandchild: counted through its shell
                out.setdefault(env.get("HAFLOWD_COMPONENT", "?"), []).append(p.pid)
    return out


def test_restart_stop_and_reload_at_once_leave_one_child_each(daemon) -> None:
    d: Daemon = daemon(BODY.format(n=0))
    d.wait_state("a", "running")
    d.wait_state("b", "running")
    with ThreadPoolExecutor(max_workers=8) as pool:
        for n in range(1, ROUNDS + 1):
            d.write_config(BODY.format(n=n))  # each reload replaces both components
            calls = ["/components/a/restart", "/reload", "/components/b/restart", "/components/a/restart",
                     "/components/b/stop", "/components/a/start", "/components/b/restart", "/reload"]
            results = list(pool.map(lambda path: (path, *_post(d, path)), calls))
            for path, status, body in results:
                assert status in (200, 422), (path, status, body)
                assert status == 200 or path == "/reload", (path, body)
            _post(d, "/components/b/start")
    d.wait_state("a", "running")
    d.wait_state("b", "running")

    def one_each() -> dict[str, list[int]] | None:
        kids = _children(d)
        return kids if sorted(kids) == ["a", "b"] and all(len(v) == 1 for v in kids.values()) else None

    # let anything a lost request started show up, then it must be only the tracked ones
    try:
        kids = wait_until(one_each, 10, "exactly one process per component")
    except AssertionError:
        raise AssertionError(f"processes: {_children(d)}; tracked: {d.components()}") from None
    comps = d.components()
    assert kids["a"] == [comps["a"]["pid"]]
    assert kids["b"] == [comps["b"]["pid"]]
    assert d.get("/liveness")[0] == 200
