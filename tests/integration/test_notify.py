"""sd_notify client against real AF_UNIX datagram sockets."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from haflowd.notify import SystemdNotifier


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)
    return sock


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = _receiver(path)
    try:
        yield path, sock
    finally:
        sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"haflowd-test-{uuid.uuid4().hex}"
    sock = _receiver("\0" + name)
    try:
        yield "@" + name, sock
    finally:
        sock.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def _recv(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def test_messages_to_path_socket(path_socket: tuple[str, socket.socket]) -> None:
    path, sock = path_socket
    n = SystemdNotifier(path)
    try:
        assert n.enabled
        assert n.ready()
        assert _recv(sock) == b"READY=1"
        assert n.ready("serving 3 components")
        assert _recv(sock) == b"READY=1\nSTATUS=serving 3 components"
        assert n.status("syncing\nDAGs")
        assert _recv(sock) == b"STATUS=syncing DAGs"
        assert n.watchdog()
        assert _recv(sock) == b"WATCHDOG=1"
        assert n.stopping()
        assert _recv(sock) == b"STOPPING=1"
        assert n.send("A=1", "B=2")
        assert _recv(sock) == b"A=1\nB=2"
    finally:
        n.close()


def test_reloading_carries_monotonic_usec(path_socket: tuple[str, socket.socket]) -> None:
    path, sock = path_socket
    n = SystemdNotifier(path)
    try:
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert n.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        lines = _recv(sock).decode().split("\n")
        assert lines[0] == "RELOADING=1"
        key, _, value = lines[1].partition("=")
        assert key == "MONOTONIC_USEC"
        assert before <= int(value) <= after
        assert len(lines) == 2
    finally:
        n.close()


def test_abstract_socket_from_environment(
    abstract_socket: tuple[str, socket.socket], clean_env: pytest.MonkeyPatch
) -> None:
    name, sock = abstract_socket
    clean_env.setenv("NOTIFY_SOCKET", name)
    n = SystemdNotifier()
    try:
        assert n.enabled
        assert n.socket_path == name
        assert n.ready("up")
        assert _recv(sock) == b"READY=1\nSTATUS=up"
    finally:
        n.close()


def test_disabled_without_socket(clean_env: pytest.MonkeyPatch) -> None:
    n = SystemdNotifier()
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    assert SystemdNotifier("").enabled is False
    # A transport we do not speak is treated as absent, not as an error.
    assert SystemdNotifier("vsock:2:1234").enabled is False


def test_missing_socket_returns_false(tmp_path: Path) -> None:
    n = SystemdNotifier(str(tmp_path / "nobody-listens.sock"))
    try:
        assert n.enabled
        assert n.ready() is False
        assert n.send("WATCHDOG=1") is False
    finally:
        n.close()


def test_missing_abstract_socket_returns_false() -> None:
    n = SystemdNotifier(f"@haflowd-test-absent-{uuid.uuid4().hex}")
    try:
        assert n.watchdog() is False
    finally:
        n.close()


def test_send_never_raises(path_socket: tuple[str, socket.socket]) -> None:
    path, _ = path_socket
    n = SystemdNotifier(path)
    try:
        assert n.send() is False
        assert n.send("STATUS=\udcff") is False  # unencodable
        n.close()
        assert n.watchdog() is True  # reopens after close
    finally:
        n.close()


def test_full_socket_buffer_does_not_block(path_socket: tuple[str, socket.socket]) -> None:
    path, _ = path_socket
    n = SystemdNotifier(path)
    try:
        start = time.monotonic()
        results = [n.send("X=" + "y" * 1024) for _ in range(10_000)]
        assert time.monotonic() - start < 5
        assert results[0] is True
        assert results[-1] is False  # nobody reads: the queue fills, we do not wait
    finally:
        n.close()


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 30.0),
        ("2500000", "self", 2.5),
        ("30000000", "other", None),
        ("30000000", "garbage", None),
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval(
    clean_env: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    if usec is not None:
        clean_env.setenv("WATCHDOG_USEC", usec)
    if pid == "self":
        clean_env.setenv("WATCHDOG_PID", str(os.getpid()))
    elif pid == "other":
        clean_env.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    elif pid is not None:
        clean_env.setenv("WATCHDOG_PID", pid)
    assert SystemdNotifier("").watchdog_interval() == expected
