"""The client of the local haflowd: reads over the HTTP API, changes and followed streams over
the control socket. Its own module so that ``haflowctl`` (ctl.py) and ``haflowctl doctor``
(doctor.py), which both talk to the daemon, share it without importing each other.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from typing import Any


class Unreachable(Exception):
    """The daemon did not answer: one line for the operator, exit 3."""


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


class Client:
    """Reads over HTTP, changes over the control socket. Never through a proxy: the daemon
    is local, and an ``http_proxy`` meant for the internet must not take haflowctl there."""

    def __init__(self, api: str, sock: str, timeout: float) -> None:
        self.api = api.rstrip("/")
        self.sock = sock
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, path: str) -> tuple[int, Any]:
        url = self.api + path
        try:
            with self._opener.open(url, timeout=self.timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            try:
                return e.code, json.loads(e.read())
            except ValueError:
                return e.code, {"error": f"HTTP {e.code}"}
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise Unreachable(f"cannot reach haflowd at {self.api}: {reason}") from None

    def post(self, path: str, timeout: float | None = None) -> tuple[int, Any]:
        conn = UnixHTTPConnection(self.sock, timeout or self.timeout)
        try:
            conn.request("POST", path, body=b"", headers={"Content-Length": "0"})
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise unreachable(self.sock, e) from None
        finally:
            conn.close()
        return resp.status, answer(resp.status, body)


def unreachable(sock: str, e: OSError | http.client.HTTPException) -> Unreachable:
    """What went wrong talking to the control socket, in one line for the operator."""
    if isinstance(e, PermissionError):
        return Unreachable(f"permission denied on {sock}: run as root or as haflowd's user")
    if isinstance(e, FileNotFoundError):
        return Unreachable(f"cannot reach haflowd: no control socket at {sock}")
    return Unreachable(f"cannot reach haflowd at {sock}: {e}")


def answer(status: int, body: bytes) -> Any:
    """A control answer's JSON, or an error object when it is not JSON."""
    try:
        return json.loads(body)
    except ValueError:
        return {"ok": False, "error": f"HTTP {status}"}


def stream_lines(c: Client, path: str, follow: bool) -> tuple[int, Any]:
    """GET over the control socket: (status, an iterator of parsed JSON lines) or, for an
    error, (status, its body). A follow waits for lines with no timeout (Ctrl-C ends it)."""
    conn = UnixHTTPConnection(c.sock, c.timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
    except (OSError, http.client.HTTPException) as e:
        raise unreachable(c.sock, e) from None
    if resp.status != 200:
        body = resp.read()
        conn.close()
        return resp.status, answer(resp.status, body)
    if follow and conn.sock is not None:
        conn.sock.settimeout(None)

    def lines() -> Any:
        try:
            for raw in resp:
                with_text = raw.strip()
                if with_text:
                    yield json.loads(with_text)
        except (OSError, http.client.HTTPException, ValueError):
            return  # the daemon went away mid-stream
        finally:
            conn.close()

    return 200, lines()
