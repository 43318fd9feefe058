"""scripts/soak for two minutes with a fixed seed: every invariant of the fault campaign holds.

The campaign runs three real daemons in network namespaces with csync2, components and
DAG writers, and a seeded nemesis (partitions, loss, a rate limit, SIGSTOP, kill -9 of
daemons, guards and children, a full data_dir, conflicting writes, a clock step); see
bench/soak/. This test runs the operator's command itself and reads its report. Needs
root, ``ip netns`` and csync2 (scripts/soak installs nftables and faketime if missing;
the suite's own scripts/setup has run, so the test skips that pass).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bench.soak.nemesis import NET_KINDS, PROC_KINDS
from tests.conftest import ROOT
from tests.fixtures.csync2 import csync2_unavailable

SEED = 21  # a plan with every kind of fault in two minutes
MINUTES = 2


def test_two_minute_campaign_holds_every_invariant(tmp_path: Path) -> None:
    reason = csync2_unavailable()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "out"
    r = subprocess.run([str(ROOT / "scripts" / "soak"), "--minutes", str(MINUTES), "--seed", str(SEED),
                        "--out", str(out)], capture_output=True, text=True, timeout=360, cwd=ROOT,
                       env={**os.environ, "HAFLOWD_SOAK_SKIP_SETUP": "1"})
    assert (out / "soak.json").exists(), f"no report (exit {r.returncode}):\n{r.stderr[-4000:]}"
    report = json.loads((out / "soak.json").read_text())
    print("\n" + r.stdout)

    # what the nemesis did: every kind of fault, for real
    ran = report["faults_run"]
    assert not report["fault_errors"], report["fault_errors"]
    kinds = {*NET_KINDS, *PROC_KINDS, "disk_full"} | ({"clock_step"} if report["machine"]["faketime"] else set())
    assert kinds <= set(ran), (kinds - set(ran), ran)
    assert report["files_written"] >= 20, report["writes"]

    # everything it made is gone: namespaces, mounts, marked processes
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    assert not [ns for ns in report["teardown"]["namespaces"] if ns in left], left
    mounts = Path("/proc/mounts").read_text()
    assert not [m for m in report["teardown"]["mounted"] if f" {m} " in mounts], mounts
    assert report["teardown"]["marked_left"] == [], report["teardown"]

    png = (out / "timeline.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert (out / "summary.md").read_text().startswith("# haflowd soak")

    failed = {i["name"]: i["summary"] for i in report["invariants"] if not i["ok"]}
    assert not failed, "invariants that failed (details in soak.json):\n" + json.dumps(
        [i for i in report["invariants"] if not i["ok"]], indent=1, default=str)[:6000]
    assert r.returncode == 0, r.stderr[-3000:]
