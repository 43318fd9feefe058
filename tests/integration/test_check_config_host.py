"""``haflowd --check-config`` asks the host for what each component needs to start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_check_config_reports_a_missing_command_and_working_dir(tmp_path: Path) -> None:
    cfg = tmp_path / "h.toml"
    cfg.write_text(f'[[component]]\nname = "a"\ncommand = ["no-such-command-haflowd"]\n'
                   f'working_dir = "{tmp_path}/missing"\n')
    r = subprocess.run([sys.executable, "-m", "haflowd", "--check-config", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stdout
    lines = r.stderr.splitlines()
    assert lines[0] == f'{cfg}: component[0].working_dir: cannot use "{tmp_path}/missing": No such file or directory'
    assert lines[1].startswith(f'{cfg}: component[0].command: "no-such-command-haflowd" is not on haflowd\'s PATH')
    assert len(lines) == 2 and "Traceback" not in r.stderr
    cfg.write_text('[[component]]\nname = "a"\ncommand = ["sleep", "1"]\n')
    r = subprocess.run([sys.executable, "-m", "haflowd", "--check-config", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
