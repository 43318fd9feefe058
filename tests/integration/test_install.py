"""scripts/install on this machine, into a temporary prefix and destdir, offline from the
session's wheelhouse (tests/fixtures/wheelhouse.py: made once with --make-wheelhouse)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from tests.fixtures.wheelhouse import INSTALL, install, ok, wheels

pytestmark = pytest.mark.integration


def test_install_into_a_prefix_is_idempotent(tmp_path, wheelhouse):
    prefix, dest = tmp_path / "opt", tmp_path / "root"
    cmd = [str(INSTALL), "--wheelhouse", str(wheelhouse), "--prefix", str(prefix), "--destdir", str(dest)]
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


# --------------------------------------------------------------------------- the pins


def pinned(text: str) -> dict[str, str]:
    """name -> version of ``name==version`` lines (names normalised as pip does)."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def test_the_wheelhouse_holds_every_pin_and_only_wheels(wheelhouse):
    pins = pinned((ROOT / "constraints.txt").read_text())
    assert pins and "haflowd" not in pins
    found = {}
    for w in wheels(wheelhouse):
        name, version = w.name.split("-")[:2]
        found[re.sub(r"[-_.]+", "-", name).lower()] = version
    assert found.pop("haflowd", None), f"no haflowd wheel in {sorted(found)}"
    assert found == pins, "the wheelhouse and constraints.txt differ"
    assert not list(wheelhouse.glob("*.tar.gz")), "a node never compiles: wheels only"
    assert (wheelhouse / "constraints.txt").read_text() == (ROOT / "constraints.txt").read_text()


def test_offline_install_upgrade_uninstall_purge(tmp_path, wheelhouse):
    """Installed with --no-index from the wheelhouse, the venv holds exactly the pinned
    versions: nothing unpinned slipped in (pip freeze, minus haflowd, pip, setuptools).
    The paths come from the environment (HAFLOWD_*) this time, --destdir in the test above."""
    prefix, etc, data, units = tmp_path / "p", tmp_path / "e", tmp_path / "d", tmp_path / "u"
    completions = tmp_path / "c"
    env = {"HAFLOWD_PREFIX": str(prefix), "HAFLOWD_ETC_DIR": str(etc), "HAFLOWD_DATA_DIR": str(data),
           "HAFLOWD_UNIT_DIR": str(units), "HAFLOWD_COMPLETION_DIR": str(completions)}
    ok(install("--no-systemd", "--wheelhouse", wheelhouse, env=env))
    assert (completions / "haflowctl").is_file()  # nothing written outside the test's paths
    assert (prefix / "bin/haflowd").exists() and (etc / "haflowd.toml").exists() and data.is_dir()
    unit = units / "haflowd.service"
    assert f"ExecStart={prefix}/bin/haflowd" in unit.read_text()
    r = subprocess.run([str(prefix / "bin" / "python"), "-m", "pip", "freeze", "--all"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    frozen = pinned(r.stdout)
    for tool in ("pip", "setuptools", "wheel"):
        frozen.pop(tool, None)
    assert frozen == pinned((ROOT / "constraints.txt").read_text())
    assert "haflowd @ file://" in r.stdout or "haflowd==" in r.stdout

    # an upgrade in place: the operator's config and both keys byte-identical (and their
    # modes), data kept, haflowd's files put back from the wheel even at the same version
    config, key = etc / "haflowd.toml", etc / "gossip.key"
    config.write_bytes(config.read_bytes() + b"\n# edited by the operator\n")
    (etc / "csync2.key").write_bytes(b"not touched\n")
    (etc / "csync2.key").chmod(0o600)
    (data / "incarnation").write_text("7\n")
    before = {p: p.read_bytes() for p in (config, key, etc / "csync2.key", data / "incarnation")}
    modes = {p: p.stat().st_mode for p in before}
    (init,) = prefix.glob("lib/python3*/site-packages/haflowd/__init__.py")
    pristine = init.read_bytes()
    init.write_bytes(pristine + b"\n# changed in place\n")
    r = ok(install("--no-systemd", "--wheelhouse", wheelhouse, env=env))
    assert "(exists, left as it is)" in r.stdout
    assert {p: p.read_bytes() for p in before} == before
    assert {p: p.stat().st_mode for p in before} == modes
    assert init.read_bytes() == pristine

    # --uninstall: venv, unit and completion gone, config and data kept
    completion = completions / "haflowctl"
    completions.mkdir(exist_ok=True)
    completion.write_text("complete -F _haflowctl haflowctl\n")
    r = ok(install("--no-systemd", "--uninstall", "--completion-dir", completions, env=env))
    assert not prefix.exists() and not unit.exists() and not completion.exists()
    assert {p: p.read_bytes() for p in before} == before
    # and again: nothing left to remove is not an error
    ok(install("--no-systemd", "--uninstall", env=env))

    # --uninstall --purge: config, keys and data gone too
    ok(install("--no-systemd", "--uninstall", "--purge", env=env))
    assert not etc.exists() and not data.exists()


def test_every_option_is_in_the_help(tmp_path):
    text = (ROOT / "scripts" / "install").read_text()
    options = set(re.findall(r"^\s+(--[a-z-]+)\)", text, re.M))
    assert {"--wheelhouse", "--make-wheelhouse", "--uninstall", "--purge", "--prefix"} <= options
    r = install("--help")
    assert r.returncode == 0
    documented = set(re.findall(r"^\s+(--[a-z-]+)", r.stdout, re.M))
    assert options <= documented, f"undocumented in --help: {sorted(options - documented)}"
    r = install("--purge")
    assert r.returncode != 0 and "--purge goes with --uninstall" in r.stderr
    r = install("--no-such-option")
    assert r.returncode != 0 and "unknown argument" in r.stderr

    notvenv = tmp_path / "notvenv"
    notvenv.mkdir()
    (notvenv / "precious").write_text("x")
    r = install("--uninstall", "--prefix", notvenv, "--destdir", tmp_path / "root")
    assert r.returncode != 0 and "not a venv" in r.stderr and (notvenv / "precious").exists()

    # --purge of a system folder is refused before anything at all is removed
    units = tmp_path / "u"
    units.mkdir()
    (units / "haflowd.service").write_text("[Service]\n")
    r = install("--uninstall", "--purge", "--no-systemd", "--prefix", tmp_path / "p", "--etc-dir", "/etc/",
                "--data-dir", tmp_path / "d", "--unit-dir", units)
    assert r.returncode != 0 and "will not remove /etc/" in r.stderr and (units / "haflowd.service").exists()
    r = install("--no-such-option")
    assert r.returncode != 0 and "unknown argument" in r.stderr
