"""Real haflowd, real children: crashes, orphans, stops, reloads, hangs, crash loops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.conftest import alive, tree_pids, wait_until

TREE = """
[[component]]
name = "tree"
command = ["sh", "-c", "setsid sleep 3001 & sleep 3002 & sh -c 'sleep 3003 & wait' & exec sleep 3000"]
stable_after = "100ms"
"""


def test_crash_restarts_at_once_and_kills_leftovers(daemon):
    d = daemon(TREE)
    first = d.wait_state("tree", "running")
    old = wait_until(lambda: len(tree_pids(first["pid"]) | _guard_kids(first["guard_pid"])) >= 5 and
                     _guard_kids(first["guard_pid"]), 5, "the child's tree to form")
    time.sleep(0.2)  # let it outlive stable_after so the restart is immediate
    os.kill(first["pid"], signal.SIGKILL)
    second = wait_until(lambda: (c := d.comp("tree"))["pid"] not in (None, first["pid"])
                        and c["state"] == "running" and c, 5, "a new pid")
    assert second["restarts"] == 1
    # the old tree -- including the grandchild that escaped with setsid -- is gone
    assert not alive(old - {first["guard_pid"]}), "leftovers of the old tree survive"
    ev = [e for e in d.log_events() if e.get("event") == "leftovers_killed"]
    assert ev and ev[0]["count"] >= 3 and ev[0]["component"] == "tree"


def _guard_kids(guard_pid: int) -> set[int]:
    return tree_pids(guard_pid) - {guard_pid}


def test_daemon_sigkill_leaves_no_process_behind(daemon):
    body = "".join(
        f"""
[[component]]
name = "c{i}"
command = ["sh", "-c", "setsid sleep 310{i} & sleep 320{i} & exec sleep 330{i}"]
""" for i in range(3))
    d = daemon(body)
    for i in range(3):
        d.wait_state(f"c{i}", "running")
    pids = wait_until(lambda: p if len(p := d.all_pids()) >= 12 else None, 5, "12 processes (3 guards, 9 kids)")
    d.proc.kill()
    d.proc.wait(5)
    wait_until(lambda: not alive(pids), 3, "every process of every child's tree to die within 3 s")


def test_sigterm_stops_in_reverse_order_and_exits_0(daemon, tmp_path):
    log = tmp_path / "order.log"
    body = ""
    prev = None
    for name in ("a", "b", "c"):
        body += f"""
[[component]]
name = "{name}"
command = ["sh", "-c", "trap 'echo stop-{name} >> {log}; exit 0' TERM; echo start-{name} >> {log}; while :; do sleep 0.05; done"]
stop_timeout = "5s"
"""
        if prev:
            body += f'start_after = ["{prev}"]\n'
        prev = name
    d = daemon(body)
    for name in ("a", "b", "c"):
        d.wait_state(name, "running")
    wait_until(lambda: log.read_text().count("start-") == 3, 5, "three starts")
    pids = d.all_pids()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0
    lines = log.read_text().split()
    assert lines == ["start-a", "start-b", "start-c", "stop-c", "stop-b", "stop-a"]
    wait_until(lambda: not alive(pids), 3, "no process left")


def test_stop_timeout_escalates_to_sigkill_of_the_tree(daemon):
    d = daemon("""
[[component]]
name = "stubborn"
command = ["sh", "-c", "trap '' TERM; sleep 3400 & while :; do sleep 0.05; done"]
stop_timeout = "300ms"
""")
    c = d.wait_state("stubborn", "running")
    pids = wait_until(lambda: p if len(p := _guard_kids(c["guard_pid"])) >= 2 else None, 5, "tree")
    r = d.ctl("stop", "stubborn")
    assert r.returncode == 0, r.stderr
    assert d.comp("stubborn")["state"] == "stopped"
    assert not alive(pids)
    assert any(e.get("event") == "stop_timeout" for e in d.log_events())


def test_sighup_restarts_only_changed_components(daemon):
    base = """
[[component]]
name = "same"
command = ["sleep", "3500"]

[[component]]
name = "changed"
command = ["sleep", "3501"]
environment = {{ V = "{v}" }}
{extra}
"""
    d = daemon(base.format(v="1", extra="""
[[component]]
name = "removed"
command = ["sleep", "3502"]
"""))
    before = {n: d.wait_state(n, "running")["pid"] for n in ("same", "changed", "removed")}
    d.write_config(base.format(v="2", extra="""
[[component]]
name = "added"
command = ["sleep", "3503"]
"""))
    d.signal(signal.SIGHUP)
    d.wait_state("added", "running")
    # "changed" is restarted in the same reload; it may still be spawning when "added" runs
    changed = wait_until(lambda: (c := d.comp("changed"))["state"] == "running" and c, 10, "changed running again")
    after = d.components()
    assert after["same"]["pid"] == before["same"]
    assert changed["pid"] not in (None, before["changed"])
    assert "removed" not in after
    assert not alive({before["removed"]})

    # a bad config changes nothing and says why
    d.config.write_text(d.config.read_text() + "\nbogus = 1\n")
    d.signal(signal.SIGHUP)
    ev = wait_until(lambda: [e for e in d.log_events() if e.get("event") == "reload_rejected"], 5, "rejection")
    assert "bogus: unknown key" in ev[0]["error"]
    assert d.comp("same")["pid"] == before["same"]
    r = d.ctl("reload")
    assert r.returncode == 1 and "bogus: unknown key" in r.stderr


def test_hung_child_is_replaced_by_its_http_probe(daemon):
    port = _free_port()
    d = daemon(f"""
[[component]]
name = "web"
command = ["@PY@", "-m", "http.server", "--bind", "127.0.0.1", "{port}"]
stop_timeout = "2s"
[component.health]
http = "http://127.0.0.1:{port}/"
interval = "300ms"
timeout = "250ms"
failures = 2
start_period = "10s"
""")
    first = d.wait_state("web", "running", timeout=15, healthy=True)
    os.kill(first["pid"], signal.SIGSTOP)
    try:
        wait_until(lambda: (c := d.comp("web"))["pid"] not in (None, first["pid"]) and c["healthy"] and c,
                   15, "the hung child to be replaced and healthy again")
    finally:
        if alive({first["pid"]}):
            os.kill(first["pid"], signal.SIGKILL)
    assert not alive({first["pid"]})
    assert any(e.get("event") == "child_unhealthy" for e in d.log_events())


def test_start_interval_notices_a_slow_start_soon(daemon):
    """A server that listens 1.5 s after it starts, probed every 30 s: with start_interval
    the first success is seen within a second or two, not at the next 30 s probe; after it,
    the normal interval applies."""
    port = _free_port()
    d = daemon(f"""
[[component]]
name = "slow"
command = ["sh", "-c", "sleep 1.5; exec @PY@ -m http.server --bind 127.0.0.1 {port}"]
[component.health]
http = "http://127.0.0.1:{port}/"
interval = "30s"
timeout = "1s"
start_period = "60s"
start_interval = "200ms"
""")
    t0 = time.monotonic()
    d.wait_state("slow", "running", timeout=10, healthy=True)
    assert time.monotonic() - t0 < 10
    probes = [e for e in d.log_events() if e.get("component") == "slow" and e.get("event") == "child_healthy"]
    assert len(probes) == 1


def test_crash_loop_goes_fatal_and_start_recovers(daemon, tmp_path):
    ok = tmp_path / "ok"
    d = daemon(f"""
[[component]]
name = "flaky"
command = ["sh", "-c", "test -f {ok} || exit 3; exec sleep 3600"]
backoff_initial = "10ms"
backoff_max = "40ms"
crash_loop_failures = 4
crash_loop_window = "1m"
""")
    c = d.wait_state("flaky", "fatal")
    assert c["last_exit_code"] == 3
    status, health = d.get("/health")
    assert status == 503 and health["status"] == "critical"
    r = d.ctl("components")
    assert "FATAL" in r.stdout
    assert d.ctl("health").returncode == 2
    ok.touch()
    r = d.ctl("start", "flaky")
    assert r.returncode == 0, r.stderr
    d.wait_state("flaky", "running")
    assert d.get("/health")[0] == 200


def test_restart_stop_start_and_unknown_name(daemon):
    d = daemon("""
[[component]]
name = "s"
command = ["sleep", "3700"]
""")
    pid = d.wait_state("s", "running")["pid"]
    r = d.ctl("restart", "s")
    assert r.returncode == 0 and "restarted" in r.stdout
    assert d.comp("s")["pid"] not in (None, pid)
    r = d.ctl("stop", "s")
    assert r.returncode == 0 and d.comp("s")["state"] == "stopped"
    assert d.get("/health")[1]["status"] == "warning"
    r = d.ctl("start", "s", "--json")
    assert r.returncode == 0 and '"ok": true' in r.stdout
    d.wait_state("s", "running")
    r = d.ctl("restart", "nope")
    assert r.returncode == 1 and "no component named 'nope'" in r.stderr


def test_stop_records_how_the_child_ended(daemon):
    """A warm exit (the child handles TERM and exits 0) and a death by the signal look
    different after a stop: the exit is recorded even though the stop ended the lifecycle."""
    d = daemon("""
[[component]]
name = "warm"
command = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]

[[component]]
name = "cold"
command = ["sleep", "3600"]
""")
    for name in ("warm", "cold"):
        d.wait_state(name, "running")
        assert d.ctl("stop", name).returncode == 0
    warm, cold = d.comp("warm"), d.comp("cold")
    assert (warm["state"], warm["last_exit_code"], warm["last_exit_signal"]) == ("stopped", 0, None)
    assert (cold["state"], cold["last_exit_code"], cold["last_exit_signal"]) == ("stopped", None, signal.SIGTERM)
    events = {e["component"]: e for e in d.log_events() if e.get("event") == "child_stopped"}
    assert events["warm"]["code"] == 0 and events["cold"]["signal"] == "SIGTERM"


def test_leftovers_of_an_earlier_daemon_are_killed_at_start(daemon):
    d = daemon("""
[[component]]
name = "old"
command = ["sh", "-c", "sleep 3800 & exec sleep 3801"]
""")
    c = d.wait_state("old", "running")
    grandchild = wait_until(lambda: [p for p in _guard_kids(c["guard_pid"]) if p != c["pid"]], 5, "grandchild")[0]
    # the daemon and its guard die together (an OOM kill, a kill -9 of the group):
    # the direct child dies by PDEATHSIG, the grandchild lives on as an orphan
    os.kill(c["guard_pid"], signal.SIGKILL)
    d.proc.kill()
    d.proc.wait(5)
    time.sleep(0.3)
    assert alive({grandchild}), "the test needs a surviving orphan"
    d.start()
    wait_until(lambda: not alive({grandchild}), 5, "the orphan of the earlier run to be killed")
    assert any(e.get("event") == "leftover_killed" for e in d.log_events())


def test_start_after_waits_for_healthy(daemon, tmp_path):
    port = _free_port()
    d = daemon(f"""
[[component]]
name = "db"
command = ["sh", "-c", "sleep 0.5; exec @PY@ -m http.server --bind 127.0.0.1 {port}"]
[component.health]
http = "http://127.0.0.1:{port}/"
interval = "100ms"
timeout = "100ms"
start_period = "10s"

[[component]]
name = "app"
command = ["sleep", "3900"]
start_after = ["db"]
""")
    wait_until(lambda: "waiting for db" in d.comp("app")["note"], 5, "app to wait for db")
    assert d.comp("db")["healthy"] is not True and d.comp("app")["pid"] is None
    d.wait_state("app", "running")
    assert d.comp("db")["healthy"] is True
    assert d.comp("app")["started_at"] >= d.comp("db")["started_at"]


def test_output_is_logged_tagged_and_rate_limited(daemon):
    d = daemon("""
[[component]]
name = "chatty"
command = ["sh", "-c", "echo hello-out; echo hello-err >&2; i=0; while [ $i -lt 2000 ]; do echo spam$i; i=$((i+1)); done; exec sleep 4000"]
log_rate_limit = 50
""")
    d.wait_state("chatty", "running")
    def accounted() -> bool:
        events = d.log_events()
        shown = sum(1 for e in events if e.get("event") == "output")
        dropped = sum(e["lines"] for e in events if e.get("event") == "output_suppressed")
        return shown + dropped == 2002  # every line is either logged or counted as dropped

    wait_until(accounted, 15, "every line logged or counted")
    supp = [e for e in d.log_events() if e.get("event") == "output_suppressed"]
    assert supp[0]["component"] == "chatty" and supp[0]["stream"] == "stdout"
    ev = [e for e in d.log_events() if e.get("event") == "output"]
    lines = {e["line"]: e for e in ev}
    assert lines["hello-out"]["stream"] == "stdout" and lines["hello-out"]["component"] == "chatty"
    assert lines["hello-err"]["stream"] == "stderr"
    assert len(ev) < 200, "the rate limit did not hold"


def test_spawn_failure_is_reported_not_crashing(daemon):
    d = daemon("""
[[component]]
name = "missing"
command = ["/nonexistent/program"]
backoff_initial = "10ms"
backoff_max = "20ms"
crash_loop_failures = 3
""")
    c = d.wait_state("missing", "fatal")
    assert "could not start" in c["note"]
    ev = [e for e in d.log_events() if e.get("event") == "spawn_failed"]
    assert ev and "No such file" in ev[0]["error"]
    assert d.get("/liveness")[0] == 200


def test_resources_are_summed_over_the_tree(daemon):
    d = daemon("""
[[component]]
name = "busy"
command = ["sh", "-c", "sh -c 'while :; do :; done' & sleep 4100 & exec sleep 4101"]
""", env={})
    d.wait_state("busy", "running")
    c = wait_until(lambda: (c := d.comp("busy"))["cpu_seconds"] > 0.2 and c["processes"] >= 3 and c["cpu_percent"] > 10 and c, 20,
                   "CPU seconds of the busy grandchild")
    assert c["rss_bytes"] > 1_000_000
    assert c["cpu_percent"] > 10


def _free_port() -> int:
    from tests.conftest import free_port

    return free_port()


def test_bad_config_exits_2_with_one_line_each(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[api]\nlisten = "nowhere"\n[[component]]\nname = "x"\nrestart = "sometimes"\n')
    r = subprocess.run([sys.executable, "-m", "haflowd", "--config", str(bad)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert f'{bad}: api.listen: expected an address "host:port"; got "nowhere"' in lines
    assert f'{bad}: component[0].restart: expected one of always, on-failure, never; got "sometimes"' in lines
    assert any("component[0].command" in line for line in lines)
    r = subprocess.run([sys.executable, "-m", "haflowd", "--config", str(tmp_path / "none.toml")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "cannot read" in r.stderr and "Traceback" not in r.stderr


def test_check_config_and_env_var(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[node]\nname = "n"\n[api]\nlisten = "127.0.0.1:1"\n')
    env = {**os.environ, "HAFLOWD_CONFIG": str(good)}
    r = subprocess.run([sys.executable, "-m", "haflowd", "--check-config"], capture_output=True, text=True,
                       env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    assert str(good) in r.stdout


def test_port_in_use_is_one_line_exit_1(daemon, tmp_path):
    d = daemon('[[component]]\nname = "x"\ncommand = ["sleep", "4200"]\n')
    other = tmp_path / "o.toml"
    other.write_text(f'[node]\nname = "o"\ndata_dir = "{tmp_path}/o"\n[api]\nlisten = "127.0.0.1:{d.port}"\n'
                     f'control_socket = "{tmp_path}/o.sock"\n')
    r = subprocess.run([sys.executable, "-m", "haflowd", "--config", str(other)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1
    assert "cannot listen on" in r.stderr and "Traceback" not in r.stderr + r.stdout
    # a second daemon on the same control socket is refused, the first keeps it
    same_sock = tmp_path / "s.toml"
    same_sock.write_text(f'[node]\nname = "o"\ndata_dir = "{tmp_path}/o2"\n[api]\nlisten = "127.0.0.1:{_free_port()}"\n'
                         f'control_socket = "{d.socket}"\n')
    r = subprocess.run([sys.executable, "-m", "haflowd", "--config", str(same_sock)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and "another haflowd" in r.stderr
    assert d.ctl("components").returncode == 0


def test_user_and_working_dir(daemon, tmp_path):
    if os.geteuid() != 0:
        import pytest

        pytest.skip("dropping privileges needs root")
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="haflowd-user-", dir="/tmp"))
    os.chmod(shared, 0o777)
    out = shared / "who"
    d = daemon(f"""
[[component]]
name = "nob"
user = "nobody"
working_dir = "/tmp"
command = ["sh", "-c", "echo $(id -un) $(pwd) $HOME > {out}; exec sleep 4300"]
""")
    d.wait_state("nob", "running")
    text = wait_until(lambda: out.exists() and out.read_text().strip(), 5, "output")
    user, cwd, _home = text.split()
    assert (user, cwd) == ("nobody", "/tmp")
    assert psutil.Process(d.comp("nob")["pid"]).username() == "nobody"


def test_control_socket_mode_0600(daemon):
    d = daemon('[[component]]\nname = "x"\ncommand = ["sleep", "4400"]\n')
    assert (Path(d.socket).stat().st_mode & 0o777) == 0o600


def test_command_probe_restarts_when_it_fails(daemon, tmp_path):
    flag = tmp_path / "healthy"
    flag.touch()
    d = daemon(f"""
[[component]]
name = "svc"
command = ["sleep", "4500"]
stop_timeout = "1s"
[component.health]
command = ["sh", "-c", "test -f {flag} || {{ echo flag missing; exit 1; }}"]
interval = "300ms"
timeout = "300ms"
failures = 2
start_period = "0s"
""")
    first = d.wait_state("svc", "running", healthy=True)
    flag.unlink()
    c = wait_until(lambda: (c := d.comp("svc"))["pid"] not in (None, first["pid"]) and c, 10, "a restart")
    assert c["restarts"] >= 1
    failed = [e for e in d.log_events() if e.get("event") == "probe_failed"]
    assert failed and "flag missing" in failed[0]["output"]
    flag.touch()
    d.wait_state("svc", "running", timeout=10, healthy=True)


def test_secrets_never_reach_the_log_or_the_api(daemon):
    d = daemon("""
[[component]]
name = "leaky"
command = ["sh", "-c", "echo the password is hunter2-secret; exec sleep 4600"]

[rabbitmq]
amqp_url = "amqp://haflowd:hunter2-secret@127.0.0.1:1/%2F"
[[rabbitmq.node]]
name = "rabbit@x"
management_url = "http://127.0.0.1:1"
password = "hunter2-secret"
""")
    d.wait_state("leaky", "running")
    wait_until(lambda: "the password is" in d.log_text(), 5, "the child's line")
    assert "hunter2-secret" not in d.log_text()
    assert "the password is ***" in d.log_text()
    for path in ("/status", "/health", "/components", "/metrics"):
        body = d.get(path)[1]
        assert "hunter2-secret" not in (body.decode() if isinstance(body, bytes) else str(body))
