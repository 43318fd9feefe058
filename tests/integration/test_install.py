"""scripts/install on this machine, into a temporary prefix and destdir."""

from __future__ import annotations

import base64
import shutil
import subprocess

import pytest

from tests.conftest import ROOT


def test_install_into_a_prefix_is_idempotent(tmp_path):
    prefix, dest = tmp_path / "opt", tmp_path / "root"
    cmd = [str(ROOT / "scripts" / "install"), "--prefix", str(prefix), "--destdir", str(dest)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (prefix / "bin" / "haflowd").exists() and (prefix / "bin" / "haflowctl").exists()
    unit = (dest / "etc/systemd/system/haflowd.service").read_text()
    assert f"ExecStart={prefix}/bin/haflowd" in unit
    config = dest / "etc/haflowd/haflowd.toml"
    assert config.read_text() == (ROOT / "etc" / "haflowd.toml").read_text()
    key = dest / "etc/haflowd/gossip.key"
    assert len(base64.b64decode(key.read_text().strip())) == 32
    assert key.stat().st_mode & 0o777 == 0o600
    r = subprocess.run([str(prefix / "bin" / "haflowd"), "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("haflowd ")
    # pure Python (the simulator, which compiles, is tools/gossip-sim, never part of a node's install)
    assert not list(prefix.glob("lib/python3*/site-packages/haflowd/**/*.so"))
    assert list(prefix.glob("lib/python3*/site-packages/haflowd/gossip/membership.py"))
    assert not list(prefix.glob("lib/python3*/site-packages/gossip_sim"))
    (wheel,) = prefix.glob("lib/python3*/site-packages/haflowd-*.dist-info/WHEEL")
    assert "Tag: py3-none-any" in wheel.read_text().splitlines()
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: scripts/setup installs systemd")
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(dest / "etc/systemd/system/haflowd.service")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr

    # a second run keeps the operator's config and key
    config.write_text(config.read_text() + "\n# edited by the operator\n")
    before_key = key.read_text()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-2000:]
    assert config.read_text().endswith("# edited by the operator\n")
    assert key.read_text() == before_key
