"""haflowctl talks to the local daemon directly, whatever proxy the operator's shell sets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.conftest import Daemon


def _dead_port() -> int:
    """A loopback port that refuses connections: bound (so nobody else takes it) but not listening."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    _held.append(s)
    return port


_held: list[socket.socket] = []


def test_ctl_ignores_proxy_variables(daemon) -> None:
    d: Daemon = daemon('[[component]]\nname = "s"\ncommand = ["sleep", "5200"]\n')
    d.wait_state("s", "running")
    proxy = f"http://127.0.0.1:{_dead_port()}"
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy", "https_proxy",
                                                                      "all_proxy")}
    env.update(http_proxy=proxy, HTTP_PROXY=proxy, https_proxy=proxy, HTTPS_PROXY=proxy,
               all_proxy=proxy, ALL_PROXY=proxy)
    try:
        for args in (["status"], ["components"], ["health"], ["restart", "s"]):
            r = subprocess.run([sys.executable, "-m", "haflowd.ctl", "--api", d.api, "--socket", str(d.socket),
                                *args], capture_output=True, text=True, timeout=60, env=env)
            assert r.returncode == 0, (args, r.returncode, r.stderr)
        # the same with the address from the config file, as an operator runs it
        r = subprocess.run([sys.executable, "-m", "haflowd.ctl", "--config", str(d.config), "components"],
                           capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0, r.stderr
    finally:
        while _held:
            _held.pop().close()
