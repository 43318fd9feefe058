"""The shipped systemd unit is accepted by systemd and keeps its contract."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import alive, tree_pids, wait_until

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "haflowd.service"


def _unit_text() -> str:
    return UNIT.read_text(encoding="utf-8")


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {raw!r}"
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def _existing_executable() -> str:
    # systemd-analyze checks that ExecStart names an executable; the real path
    # (/opt/haflowd/bin/haflowd) only exists on an installed node.
    script = Path(sys.executable).parent / "haflowd"
    return str(script) if script.exists() else sys.executable


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (scripts/test installs systemd)")
    text, count = re.subn(
        r"^ExecStart=\S+",
        f"ExecStart={_existing_executable()}",
        _unit_text(),
        flags=re.MULTILINE,
    )
    assert count == 1
    copy = tmp_path / "haflowd.service"
    copy.write_text(text, encoding="utf-8")
    proc = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    problems = [line for line in output.splitlines() if "haflowd.service" in line]
    assert problems == [], output


def test_unit_contract() -> None:
    d = _directives(_unit_text())
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"]
    assert d["WatchdogSec"] == ["30s"]
    assert d["KillMode"] == ["mixed"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["ExecStart"] == ["/opt/haflowd/bin/haflowd --config /etc/haflowd/haflowd.toml"]
    assert d["RuntimeDirectory"] == ["haflowd"]
    assert d["StateDirectory"] == ["haflowd"]
    assert d["WantedBy"] == ["multi-user.target"]
    assert "network-online.target" in d["After"][0]
    assert "network-online.target" in d["Wants"][0]
    # Children are started as other users and Airflow may run sudo: the
    # flag that would break that must stay off.
    assert "NoNewPrivileges" not in d


def test_bad_config_is_not_restarted() -> None:
    """A refused config exits 2 (haflowd/__main__.py); restarting cannot fix it."""
    d = _directives(_unit_text())
    assert d["Restart"] == ["on-failure"]
    assert d["RestartPreventExitStatus"] == ["2"]


CAPABILITIES = {
    # what haflowd and the tree below it need (docs/supervision.md, "systemd")
    "CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER", "CAP_CHOWN", "CAP_FSETID", "CAP_AUDIT_WRITE",
}


def unit_capabilities() -> set[str]:
    """The unit's CapabilityBoundingSet (one line, an allow list)."""
    values = _directives(_unit_text())["CapabilityBoundingSet"]
    assert len(values) == 1 and not values[0].startswith("~"), values
    return set(values[0].split())


def test_capability_bounding_set_keeps_what_children_of_other_users_need() -> None:
    assert unit_capabilities() == CAPABILITIES
    d = _directives(_unit_text())
    # no directive that would make a setuid child, or sudo under it, impossible
    for key in ("User", "DynamicUser", "PrivateUsers", "NoNewPrivileges", "ProtectHome",
                "ProtectProc", "ProcSubset", "MemoryDenyWriteExecute"):
        assert key not in d, key
    assert d["SystemCallFilter"] == ["@system-service"]
    assert d["SystemCallErrorNumber"] == ["EPERM"]


EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) ")


def test_security_exposure_at_most_5() -> None:
    """`systemd-analyze security --offline=true` (systemd 250 and later; Debian 12 has 252)
    rates the unit 5.0 or better; it was 8.3 ("EXPOSED") before the hardening."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (scripts/test installs systemd)")
    proc = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    output = proc.stdout + proc.stderr
    if "offline" in output and proc.returncode != 0 and EXPOSURE.search(output) is None:
        pytest.fail(f"this systemd-analyze has no --offline (systemd 250 and later): {output.strip()[:300]}")
    last = [line for line in output.splitlines() if line.strip()][-1]
    m = EXPOSURE.search(last)
    assert m is not None, output
    assert float(m.group(1)) <= 5.0, output


# ------------------------------------------------------------------ the capability set, for real
#
# Without a booted systemd the unit cannot be started as it is. What can be run: the daemon
# under exactly the unit's CapabilityBoundingSet (setpriv narrows the bounding set, as
# systemd does before exec), doing what needs privileges.

CAP_NUMBERS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
               "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SYS_PTRACE": 19,
               "CAP_AUDIT_WRITE": 29}


def bounded(caps: set[str]) -> list[str]:
    """argv prefix: run what follows with only ``caps`` in its bounding set."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv (util-linux)")
    keep = ",".join("+" + c.removeprefix("CAP_").lower() for c in sorted(caps))
    return [setpriv, "--inh-caps=-all", f"--bounding-set=-all,{keep}", "--"]


def cap_mask(caps: set[str]) -> int:
    return sum(1 << CAP_NUMBERS[c] for c in caps)


def proc_status(pid: int, key: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{key} not in /proc/{pid}/status")


def _cmdline(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


NOBODY_BODY = """
[[component]]
name = "asnobody"
user = "nobody"
command = ["sh", "-c", "setsid sleep 3960 & exec sleep 3961"]
stop_timeout = "5s"
"""


def test_daemon_under_the_units_capabilities_runs_stops_and_kills_other_users(daemon: Any) -> None:
    """With only the unit's capabilities the daemon still starts a component as `nobody`,
    kills that user's orphans when the component dies and restarts it, finds and kills a
    leftover of `nobody` carrying its marker at start (reading another user's
    /proc/PID/environ), and stops everything on SIGTERM."""
    caps = unit_capabilities()
    prefix = bounded(caps)
    d = daemon(NOBODY_BODY, start=False)
    marker = f"test:{(d.dir / 'data').resolve()}"
    leftover = subprocess.Popen(
        [*prefix[:-1], "--reuid=nobody", "--regid=nogroup", "--clear-groups", "sleep", "3950"],
        env={"PATH": os.environ["PATH"], "HAFLOWD_SUPERVISOR": marker, "HAFLOWD_COMPONENT": "asnobody"},
        start_new_session=True,
    )
    try:
        with open(d.log, "ab") as out:
            d.proc = subprocess.Popen([*prefix, sys.executable, "-m", "haflowd", "--config", str(d.config)],
                                      stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy(), cwd=d.dir)
        wait_until(d.live, 15, "haflowd /liveness")
        assert int(proc_status(d.proc.pid, "CapBnd"), 16) == cap_mask(caps)
        assert leftover.wait(10) == -signal.SIGKILL
        assert any(e.get("event") == "leftover_killed" for e in d.log_events()), d.log_text()[-2000:]

        c = d.wait_state("asnobody", "running")
        assert psutil.Process(c["pid"]).uids().real == 65534
        orphan = wait_until(lambda: [p for p in tree_pids(c["guard_pid"]) if _cmdline(p) == ["sleep", "3960"]],
                            5, "the orphan")[0]
        assert psutil.Process(orphan).uids().real == 65534
        os.kill(c["pid"], signal.SIGKILL)  # the main child dies; its setsid'd orphan must go too
        wait_until(lambda: not alive({orphan}), 5, "nobody's orphan to be killed by the guard")
        c2 = wait_until(lambda: (x := d.comp("asnobody"))["state"] == "running" and x["pid"] != c["pid"] and x,
                        10, "asnobody restarted")
        assert psutil.Process(c2["pid"]).uids().real == 65534
        pids = d.all_pids()
        d.signal(signal.SIGTERM)
        assert d.wait_exit(20) == 0
        wait_until(lambda: not alive(pids), 5, "every child of the daemon to be gone")
        assert "Traceback" not in d.log_text()
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait(5)


CSYNC2_LIKE = """
import os, sys
d = sys.argv[1]
p = os.path.join(d, "dag.py")
with open(p, "w") as f:            # a file in a folder of the airflow user (0755)
    f.write("x")
os.chown(p, 65534, 65534)          # csync2 gives it its owner
os.chmod(p, 0o640)                 # and its mode
os.utime(p, (1, 1))                # and its mtime
with open(os.path.join(d, "secret"), "rb") as f:   # and reads what only that user may
    f.read()
"""


@pytest.mark.parametrize("without", [None, "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_CHOWN"])
def test_file_work_of_csync2_needs_the_kept_capabilities(tmp_path: Path, without: str | None) -> None:
    """csync2, run by the daemon as root, writes DAG files into the airflow user's folders
    and restores owner, mode and mtime: the unit's set allows it, and each of the
    capabilities kept for it is needed (without it the same work fails)."""
    caps = unit_capabilities() - {without} if without else unit_capabilities()
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "secret").write_text("s")
    os.chmod(folder / "secret", 0o600)
    os.chown(folder / "secret", 65534, 65534)
    os.chown(folder, 65534, 65534)
    folder.chmod(0o755)
    tmp_path.chmod(0o755)
    proc = subprocess.run([*bounded(caps), sys.executable, "-I", "-c", CSYNC2_LIKE, str(folder)],
                          capture_output=True, text=True, timeout=30, check=False)
    if without is None:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode != 0 and "PermissionError" in proc.stderr, proc.stderr
