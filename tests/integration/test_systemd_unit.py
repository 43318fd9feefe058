"""The shipped systemd unit is accepted by systemd and keeps its contract."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
