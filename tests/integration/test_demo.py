"""scripts/demo-single (one daemon, example components) works from a clean start, leaves nothing behind."""

from __future__ import annotations

import subprocess

import psutil

from tests.conftest import ROOT


def test_demo_once_runs_and_cleans_up():
    r = subprocess.run([str(ROOT / "scripts" / "demo-single"), "--once"], capture_output=True, text=True, timeout=180,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "status: PASSING" in r.stdout
    assert "leftovers_killed" in r.stdout and "restarting at once" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr
    # nothing of the demo survives it
    leftovers = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        marker = (p.info.get("environ") or {}).get("HAFLOWD_SUPERVISOR", "")
        if "haflowd-demo." in cmd or "haflowd-demo." in marker:
            leftovers.append(cmd)
    assert not leftovers, leftovers
