"""haflowctl's one-line answers when the control socket cannot be used, and a non-JSON answer."""

from __future__ import annotations

import http.client

from haflowd.client import answer, unreachable

SOCK = "/run/haflowd/control.sock"


def test_each_socket_fault_is_one_line_naming_the_socket() -> None:
    assert str(unreachable(SOCK, PermissionError(13, "denied"))) == (
        f"permission denied on {SOCK}: run as root or as haflowd's user")
    assert str(unreachable(SOCK, FileNotFoundError(2, "gone"))) == f"cannot reach haflowd: no control socket at {SOCK}"
    assert str(unreachable(SOCK, ConnectionRefusedError(111, "refused"))) == (
        f"cannot reach haflowd at {SOCK}: [Errno 111] refused")
    assert str(unreachable(SOCK, http.client.BadStatusLine("x"))).startswith(f"cannot reach haflowd at {SOCK}: ")


def test_an_answer_is_its_json_or_an_error_naming_the_status() -> None:
    assert answer(200, b'{"ok": true}') == {"ok": True}
    assert answer(502, b"<html>") == {"ok": False, "error": "HTTP 502"}
