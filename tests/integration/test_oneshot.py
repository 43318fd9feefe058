"""Oneshot components through a real daemon: run to exit 0 and release their dependents;
fail, back off and end fatal while dependents wait; start and reload run them again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import Daemon, wait_until


def _check(d: Daemon, name: str) -> dict[str, Any]:
    _, body = d.get("/health")
    [check] = [c for c in body["checks"] if c["name"] == f"component:{name}"]
    return check


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_oneshot_completes_then_its_dependent_starts(daemon: Any) -> None:
    d = daemon("""
        [[component]]
        name = "migrate"
        oneshot = true
        command = ["sh", "-c", "echo migrate-start >> @DIR@/order; sleep 0.5; echo migrate-done >> @DIR@/order"]

        [[component]]
        name = "app"
        start_after = ["migrate"]
        command = ["sh", "-c", "echo app-start >> @DIR@/order; exec sleep 1000"]
    """)
    order = d.dir / "order"
    running = d.wait_state("migrate", "running")
    assert running["oneshot"] is True and running["completed"] is False
    assert running["note"] == "running once, must exit 0"
    app = d.comp("app")
    assert (app["state"], app["note"], app["pid"]) == ("starting", "waiting for migrate", None)

    done = d.wait_state("migrate", "stopped", completed=True)
    assert (done["last_exit_code"], done["restarts"], done["pid"]) == (0, 0, None)
    assert done["note"] == "exited: exit code 0; completed"
    assert _check(d, "migrate")["status"] == "passing"
    d.wait_state("app", "running")
    wait_until(lambda: len(_lines(order)) == 3, 5, "app to write its start")
    assert _lines(order) == ["migrate-start", "migrate-done", "app-start"]
    assert d.get("/health")[0] == 200

    # a oneshot that completed is not run again by a reload that leaves it unchanged ...
    r = d.ctl("--json", "reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "migrate" in json.loads(r.stdout)["components"]["unchanged"]
    assert d.comp("migrate")["completed"] is True
    assert _lines(order).count("migrate-start") == 1
    # ... but "haflowctl start" runs it once more, and it completes again
    r = d.ctl("start", "migrate")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: _lines(order).count("migrate-done") == 2, 10, "a second run of migrate")
    d.wait_state("migrate", "stopped", completed=True)
    assert d.comp("app")["restarts"] == 0  # the dependent was left alone


def test_failing_oneshot_backs_off_then_is_fatal_and_the_dependent_waits(daemon: Any) -> None:
    d = daemon("""
        [[component]]
        name = "migrate"
        oneshot = true
        command = ["sh", "-c", "echo run >> @DIR@/runs; test -f @DIR@/db-ready || exit 3"]
        backoff_initial = "200ms"
        backoff_max = "400ms"
        crash_loop_failures = 3
        crash_loop_window = "1m"

        [[component]]
        name = "app"
        start_after = ["migrate"]
        command = ["sleep", "1000"]
    """)
    runs = d.dir / "runs"
    backoff = d.wait_state("migrate", "backoff", timeout=10)
    assert backoff["last_exit_code"] == 3 and backoff["completed"] is False
    assert backoff["note"].startswith("restarting in ")
    fatal = d.wait_state("migrate", "fatal", timeout=10)
    assert (fatal["restarts"], fatal["last_exit_code"], fatal["completed"]) == (2, 3, False)
    assert fatal["note"].startswith("crash loop: 3 exits within 60s")
    assert _lines(runs) == ["run"] * 3
    assert _check(d, "migrate")["status"] == "critical"
    assert d.get("/health")[0] == 503
    app = d.comp("app")
    assert (app["state"], app["note"], app["pid"]) == ("starting", "waiting for migrate", None)

    # the database comes up; "haflowctl start" gives the oneshot a fresh budget
    (d.dir / "db-ready").touch()
    r = d.ctl("start", "migrate")
    assert r.returncode == 0, r.stdout + r.stderr
    d.wait_state("migrate", "stopped", completed=True)
    d.wait_state("app", "running")
    assert _lines(runs) == ["run"] * 4


def test_reload_retries_a_fatal_oneshot(daemon: Any) -> None:
    d = daemon("""
        [[component]]
        name = "migrate"
        oneshot = true
        command = ["sh", "-c", "test -f @DIR@/db-ready"]
        backoff_initial = "100ms"
        backoff_max = "100ms"
        crash_loop_failures = 2

        [[component]]
        name = "app"
        start_after = ["migrate"]
        command = ["sleep", "1000"]
    """)
    d.wait_state("migrate", "fatal", timeout=10)
    (d.dir / "db-ready").touch()
    r = d.ctl("--json", "reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["components"]["restarted"] == ["migrate"]
    d.wait_state("migrate", "stopped", completed=True)
    d.wait_state("app", "running")


def test_oneshot_with_restart_never_fails_once(daemon: Any) -> None:
    d = daemon("""
        [[component]]
        name = "check"
        oneshot = true
        restart = "never"
        command = ["sh", "-c", "echo run >> @DIR@/runs; exit 4"]

        [[component]]
        name = "app"
        start_after = ["check"]
        command = ["sleep", "1000"]
    """)
    c = d.wait_state("check", "stopped")
    assert (c["completed"], c["last_exit_code"], c["restarts"]) == (False, 4, 0)
    assert c["note"] == "exited: exit code 4; restart = never"
    assert _check(d, "check")["status"] == "critical"
    assert d.comp("app")["state"] == "starting"
    assert _lines(d.dir / "runs") == ["run"]


def test_a_long_running_component_is_not_completed(daemon: Any) -> None:
    """``completed`` is for oneshots only: null elsewhere, even after a clean exit."""
    d = daemon("""
        [[component]]
        name = "job"
        restart = "on-failure"
        command = ["true"]
    """)
    c = d.wait_state("job", "stopped")
    assert (c["oneshot"], c["completed"], c["last_exit_code"]) == (False, None, 0)
