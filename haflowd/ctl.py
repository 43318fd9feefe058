"""``haflowctl``: the operator's CLI. Tables for people, ``--json`` for scripts.

Reads go to the HTTP API, changes to the control socket, both through client.py. A daemon
that cannot be reached is one line on stderr and exit 3, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import tomllib
import urllib.parse
from collections.abc import Sequence
from typing import Any

from haflowd import __version__, config, doctor
from haflowd.client import Client, Unreachable, stream_lines
from haflowd.client import UnixHTTPConnection as UnixHTTPConnection  # still a name of ctl for callers (tests)

EXIT_UNREACHABLE = 3
EXIT_USAGE = 64  # sysexits.h EX_USAGE: argparse's own 2 would read as "critical"
EXIT_INTERRUPTED = 130
STATUS_EXIT = {"passing": 0, "warning": 1, "critical": 2}
_STATUS_CODES = ((0, "passing"), (1, "warning"), (2, "critical"))
_COMPONENT_ACTION = ((0, "done"), (1, "refused or failed, with the reason (drained: a start or restart is refused)"))
# Each command's own exit codes: its --help epilog comes from this one table, and
# docs/reference.md's haflowctl table is tested against it (tests/unit/test_ctl_exit_codes.py)
EXIT_CODES: dict[str, tuple[tuple[int, str], ...]] = {
    "peers": ((0, "every member alive or left"), (1, "a member is suspect or dead")),
    "status": _STATUS_CODES,
    "health": _STATUS_CODES,
    "components": ((0, "listed"),),
    "restart": _COMPONENT_ACTION,
    "stop": _COMPONENT_ACTION,
    "start": _COMPONENT_ACTION,
    "sync": ((0, "every peer in sync"), (1, "a peer failing, or sync not configured")),
    "reload": ((0, "reloaded"), (1, "config rejected; nothing changed")),
    "leave": ((0, "left"), (1, "refused (no [gossip])")),
    "force-leave": ((0, "left everywhere soon (or already left)"),
                    (1, "refused, with the reason: unknown node, alive here, this node, no [gossip]")),
    "doctor": ((0, "all ok"), (1, "warnings"), (2, "failures")),
    "logs": ((0, "printed"), (1, "unknown component, or refused (too many followers)")),
    "events": ((0, "printed"), (1, "refused (too many followers)")),
    "drain": ((0, "drained (--wait: every component to stop has stopped)"),
              (1, "refused, or --wait gave up (timeout, undrained meanwhile)")),
    "undrain": ((0, "undrained (or was not drained)"), (1, "refused, with the reason")),
}
COMMON_EXIT_CODES = ((EXIT_UNREACHABLE, "haflowd cannot be reached"), (EXIT_USAGE, "usage error"),
                     (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"))


def exit_summary(command: str) -> str:
    """``0 passing, 1 warning, 2 critical``: the command's own codes on one line."""
    return ", ".join(f"{code} {what}" for code, what in EXIT_CODES[command])


def exit_epilog(command: str) -> str:
    common = [c for c in COMMON_EXIT_CODES if command != "doctor" or c[0] != EXIT_UNREACHABLE]
    rows = [*EXIT_CODES[command], *common]
    return "exit codes:\n" + "\n".join(f"  {code:<4}{what}" for code, what in rows)
DEFAULT_SOCKET: str = config.default_of("api.control_socket")


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    mult = units.get(t[-1:], 0)
    value = float(t[:-1] if mult else t)
    if value < 0 or value != value:
        raise ValueError(text)
    return value * (mult or 1)


def cmd_logs(c: Client, a: argparse.Namespace) -> int:
    q = {"lines": str(a.lines)} | ({"follow": "1"} if a.follow else {}) | ({"stream": a.stream} if a.stream else {})
    status, body = stream_lines(c, f"/components/{urllib.parse.quote(a.name, safe='')}/logs?"
                                   + urllib.parse.urlencode(q), a.follow)
    if status != 200:
        _fail(a, body, body.get("error", f"HTTP {status}") if isinstance(body, dict) else f"HTTP {status}")
        return 1
    try:
        for x in body:
            if a.json:
                print(json.dumps(x), flush=True)
            elif "lost" in x:
                print(f"-- {x.get('note', '')} --", flush=True)
            else:
                err = " [stderr]" if x.get("stream") == "stderr" else ""
                print(f"{_ts(x.get('time'))}{err} {x.get('line', '')}", flush=True)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_events(c: Client, a: argparse.Namespace) -> int:
    q: dict[str, str] = {"follow": "1"} if a.follow else {}
    if a.since:
        try:
            q["since"] = str(parse_duration(a.since))
        except ValueError:
            print(f"haflowctl: --since {a.since!r}: say e.g. 30s, 10m, 2h", file=sys.stderr)
            return EXIT_USAGE
    status, body = stream_lines(c, "/events" + ("?" + urllib.parse.urlencode(q) if q else ""), a.follow)
    if status != 200:
        _fail(a, body, body.get("error", f"HTTP {status}") if isinstance(body, dict) else f"HTTP {status}")
        return 1
    try:
        for e in body:
            if a.json:
                print(json.dumps(e), flush=True)
            elif "lost" in e:
                print(f"-- {e.get('note', '')} --", flush=True)
            else:
                detail = " ".join(f"{k}={v}" for k, v in (e.get("detail") or {}).items())
                print(f"{_ts(e.get('time'))} {e.get('node', '')} {e.get('type', '')} {e.get('subject', '')}"
                      + (f" {detail}" if detail else ""), flush=True)
    except KeyboardInterrupt:
        pass
    return 0


class Progress:
    """A line on stderr that says what we wait for and for how long ("waiting for X (12 s)"),
    redrawn while a blocking call runs; only when stderr is a terminal, else nothing."""

    FRAMES = "|/-\\"

    def __init__(self, what: str, stream: Any = None) -> None:
        self.what = what
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self.stream)
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._frame = 0

    def __enter__(self) -> Progress:
        if self.enabled:
            self.draw()
            self._thread = threading.Thread(target=self._run, name="haflowctl-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self.clear()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.draw()

    def draw(self) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._frame += 1
            spin = self.FRAMES[self._frame % len(self.FRAMES)]
            text = f"{spin} waiting for {self.what} ({int(time.monotonic() - self._start)} s)"
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            with self._lock:
                self.stream.write("\r\x1b[K")
                self.stream.flush()

    def say(self, line: str) -> None:
        """A line that stays (one per component stopped), above the redrawn one."""
        with self._lock:
            if self.enabled:
                self.stream.write("\r\x1b[K")
            self.stream.write(line + "\n")
            self.stream.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _from_config(path: str | None) -> dict[str, str]:
    """api.listen and api.control_socket, read leniently: haflowctl must work even
    where the full config (with its secret files) is not readable."""
    try:
        data = tomllib.loads(config.resolve_path(path).read_text())
        api = data.get("api", {})
        out = {}
        if isinstance(api.get("listen"), str):
            hp = config.parse_hostport(api["listen"])
            host = "127.0.0.1" if hp.host in ("0.0.0.0", "") else ("::1" if hp.host == "::" else hp.host)
            out["api"] = f"http://{config.HostPort(host, hp.port)}"
        if isinstance(api.get("control_socket"), str):
            out["socket"] = api["control_socket"]
        return out
    except (OSError, ValueError, tomllib.TOMLDecodeError, AttributeError):
        return {}


# --------------------------------------------------------------------------- output


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}GiB"


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 172800:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def components_table(comps: list[dict[str, Any]]) -> str:
    rows = []
    for c in comps:
        health = {True: "healthy", False: "UNHEALTHY", None: "-"}[c.get("healthy")]
        rows.append([c["name"], c["state"].upper() if c["state"] in ("fatal", "backoff") else c["state"],
                     c.get("pid"), human_age(c.get("uptime_s")), c.get("restarts"), health,
                     f"{c.get('cpu_percent', 0):.1f}%", human_bytes(c.get("rss_bytes")),
                     c.get("last_exit_code"), c.get("note", "")])
    return table(rows, ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "HEALTH", "CPU", "RSS", "EXIT", "NOTE"])


def checks_table(checks: list[dict[str, Any]]) -> str:
    rows = [[c["name"], c["status"].upper() if c["status"] != "passing" else c["status"], c.get("output", "")]
            for c in checks]
    return table(rows, ["CHECK", "STATUS", "OUTPUT"])


def peers_table(peers: list[dict[str, Any]]) -> str:
    rows = [[p["name"] + (" (self)" if p.get("self") else ""), p["address"],
             p["status"] + (" (maintenance)" if p.get("maintenance") is True else ""),
             p["incarnation"], human_age(p.get("last_seen_s")),
             f"{p['rtt_ms']:.1f}ms" if isinstance(p.get("rtt_ms"), int | float) else "-",
             p.get("version") or "-"] for p in peers]
    return table(rows, ["NAME", "ADDRESS", "STATUS", "INCARNATION", "LAST SEEN", "RTT", "VERSION"])


# --------------------------------------------------------------------------- commands


def cmd_peers(c: Client, a: argparse.Namespace) -> int:
    _, peers = c.get("/peers")
    _out(a, peers, lambda: peers_table(peers))
    return 0 if all(p["status"] in ("alive", "left") for p in peers) else 1  # left: no failure, as /health/cluster


def cmd_components(c: Client, a: argparse.Namespace) -> int:
    _, comps = c.get("/components")
    _out(a, comps, lambda: components_table(comps))
    return 0


def cmd_health(c: Client, a: argparse.Namespace) -> int:
    if a.cluster:
        _, body = c.get("/health/cluster")

        def render() -> str:
            parts = [f"cluster: {body['status']}"]
            for n in body.get("nodes", []):
                parts.append(f"\n{n['name']}: {n['status']}" + (" (stale)" if n.get("stale") else ""))
                parts.append(checks_table(n.get("checks", [])))
            return "\n".join(parts)

        _out(a, body, render)
        return STATUS_EXIT.get(body.get("status", "critical"), 2)
    _, body = c.get("/health")
    _out(a, body, lambda: f"{body['node']}: {body['status']}\n" + checks_table(body["checks"]))
    return STATUS_EXIT.get(body.get("status", "critical"), 2)


def cmd_status(c: Client, a: argparse.Namespace) -> int:
    _, s = c.get("/status")

    def render() -> str:
        lines = [f"node {s['node']}  haflowd {s['version']}  pid {s['pid']}  up {human_age(s['uptime_s'])}"
                 f"  status: {s['status'].upper()}", "", components_table(s["components"]) if s["components"]
                 else "no components", ""]
        bad = [ch for ch in s["checks"] if ch["status"] != "passing"]
        lines.append(checks_table(bad) if bad else "all checks passing")
        sync = s.get("sync") or {}
        lines.append("")
        m = s.get("maintenance") or {}
        if m.get("maintenance"):
            left = m.get("still_running") or []
            lines.append(f"MAINTENANCE: drained ({'still stopping: ' + ', '.join(left) if left else 'all stopped'});"
                         " haflowctl undrain ends it")
        lines.append(f"sync: {'enabled' if sync.get('enabled') else 'not configured'}")
        lines.append(f"postgres: {_summary(s.get('postgres'))}")
        lines.append(f"rabbitmq: {_summary(s.get('rabbitmq'))}")
        lines.append(f"peers: {', '.join(p['name'] + '=' + p['status'] for p in s.get('peers', []))}")
        return "\n".join(lines)

    _out(a, s, render)
    return STATUS_EXIT.get(s.get("status", "critical"), 2)


def _summary(part: dict[str, Any] | None) -> str:
    if not part:
        return "not configured"
    return str(part.get("status", "unknown"))


def cmd_action(c: Client, a: argparse.Namespace) -> int:
    path = f"/components/{urllib.parse.quote(a.name, safe='')}/{a.command}"
    if a.command in ("stop", "restart"):
        with Progress(f"{a.name} to {'stop' if a.command == 'stop' else 'restart'}"):
            code, body = c.post(path, timeout=a.timeout)
    else:
        code, body = c.post(path, timeout=a.timeout)
    if code == 404:
        _fail(a, body, f"no component named {a.name!r}")
        return 1
    if not body.get("ok"):
        _fail(a, body, body.get("error", f"HTTP {code}"))
        return 1
    comp = body.get("component", {})
    _out(a, body, lambda: f"{a.name}: {body['result']}; now {comp.get('state')}"
         + (f" (pid {comp['pid']})" if comp.get("pid") else ""))
    return 0


def cmd_reload(c: Client, a: argparse.Namespace) -> int:
    _code, body = c.post("/reload", timeout=a.timeout)
    if not body.get("ok"):
        def render() -> str:
            return "reload rejected; nothing changed:\n" + "\n".join(body.get("errors") or [body.get("error", "")])
        if a.json:
            print(json.dumps(body, indent=2))
        else:
            print(render(), file=sys.stderr)
        return 1

    def render_ok() -> str:
        comps = body.get("components", {})
        parts = [f"{k}: {', '.join(v)}" for k, v in comps.items() if v]
        return "reloaded\n" + "\n".join(parts + body.get("notes", []))

    _out(a, body, render_ok)
    return 0


def cmd_leave(c: Client, a: argparse.Namespace) -> int:
    _, body = c.post("/leave", timeout=a.timeout)
    if not body.get("ok"):
        _fail(a, body, body.get("error", "leave failed"))
        return 1
    _out(a, body, lambda: body.get("result", "left the cluster"))
    return 0


def cmd_force_leave(c: Client, a: argparse.Namespace) -> int:
    code, body = c.post(f"/peers/{urllib.parse.quote(a.name, safe='')}/force-leave", timeout=a.timeout)
    if not body.get("ok"):
        _fail(a, body, body.get("error", f"HTTP {code}"))
        return 1
    _out(a, body, lambda: f"{a.name}: {body.get('result', 'left')}; the other nodes hear it by gossip")
    return 0


def cmd_sync(c: Client, a: argparse.Namespace) -> int:
    if a.now:
        with Progress("the sync run"):
            code, body = c.post("/sync", timeout=a.timeout)
        if not body.get("ok", True) and "peers" not in body:
            _fail(a, body, body.get("error", f"HTTP {code}"))
            return 1
    else:
        _, body = c.get("/sync")
    peers = body.get("peers", {}) if isinstance(body, dict) else {}

    def render() -> str:
        rows = [[n, p.get("state"), _ts(p.get("last_success")), p.get("attempts"), _ts(p.get("next_retry")),
                 p.get("last_error")] for n, p in sorted(peers.items())]
        return table(rows, ["PEER", "STATE", "LAST SUCCESS", "ATTEMPTS", "NEXT RETRY", "LAST ERROR"])

    _out(a, body, render)
    return 1 if any(p.get("state") == "failing" for p in peers.values()) else 0


def cmd_drain(c: Client, a: argparse.Namespace) -> int:
    code, body = c.post("/drain", timeout=a.timeout)
    if not body.get("ok"):
        _fail(a, body, body.get("error", f"HTTP {code}"))
        return 1
    if not a.wait:
        _out(a, body, lambda: f"{body.get('result')}; to stop: {', '.join(body.get('to_stop') or []) or 'nothing'}"
             "\n(haflowctl drain --wait waits for them)")
        return 0
    return _wait_drained(c, a, body)


def _wait_drained(c: Client, a: argparse.Namespace, body: dict[str, Any]) -> int:
    """Poll /status until every component to stop has stopped: one line per component stopped
    on stderr (always), a "waiting for X (N s)" line when stderr is a terminal."""
    to_stop: list[str] = list(body.get("to_stop") or [])
    left = list(body.get("still_running") or [])
    done = [n for n in to_stop if n not in left]
    deadline = time.monotonic() + a.timeout
    with Progress(", ".join(left) or "nothing") as progress:
        while True:
            for n in to_stop:
                if n not in left and n not in done:
                    done.append(n)
                    progress.say(f"stopped {n} ({len(done)}/{len(to_stop)})")
            if not left:
                break
            progress.what = left[-1] if len(left) == 1 else f"{left[0]} (+{len(left) - 1} more)"
            if time.monotonic() >= deadline:
                progress.clear()
                print(f"haflowctl: gave up after {a.timeout:g} s; still running: {', '.join(left)}", file=sys.stderr)
                return 1
            time.sleep(0.5)
            _, st = c.get("/status")
            m = st.get("maintenance") or {}
            if not m.get("maintenance"):
                progress.clear()
                print("haflowctl: the node was undrained meanwhile", file=sys.stderr)
                return 1
            left = list(m.get("still_running") or [])
    _out(a, {**body, "still_running": []}, lambda: f"drained; stopped: {', '.join(to_stop) or 'nothing'}")
    return 0


def cmd_undrain(c: Client, a: argparse.Namespace) -> int:
    code, body = c.post("/undrain", timeout=a.timeout)
    if not body.get("ok"):
        _fail(a, body, body.get("error", f"HTTP {code}"))
        return 1
    _out(a, body, lambda: f"{body.get('result')}; started: {', '.join(body.get('started') or []) or 'nothing'}")
    return 0


def cmd_doctor(c: Client, a: argparse.Namespace) -> int:
    findings = doctor.run(a.config, c.api, c.sock)
    print(doctor.render(findings, a.json))
    return doctor.exit_code(findings)


def _ts(t: float | None) -> str:
    return "-" if t is None else time.strftime("%H:%M:%S", time.localtime(t))


def _out(a: argparse.Namespace, data: Any, render: Any) -> None:
    print(json.dumps(data, indent=2) if a.json else render())


def _fail(a: argparse.Namespace, data: Any, message: str) -> None:
    if a.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"haflowctl: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    # --json may come before or after the command; SUPPRESS keeps the subcommand's
    # default from overwriting a --json given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    p = argparse.ArgumentParser(prog="haflowctl", description="Talk to the local haflowd")
    p.add_argument("--json", action="store_true", default=False, help="machine-readable output")
    p.add_argument("--api", help="read API URL (default: $HAFLOWD_API, the config, http://127.0.0.1:8787)")
    p.add_argument("--socket", help=f"control socket (default: the config, {DEFAULT_SOCKET})")
    p.add_argument("--config", help="haflowd config to read the addresses from")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for an answer (default 10; 900 for changes, which may wait out a stop)")
    p.add_argument("--version", action="version", version=f"haflowctl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("peers", parents=[common], help="cluster members")
    st = sub.add_parser("status", parents=[common], help="this node on one screen")
    st.add_argument("--cluster", action="store_true", help="every node (needs gossip)")
    h = sub.add_parser("health", parents=[common], help="the checks")
    h.add_argument("--cluster", action="store_true", help="every node's checks")
    sub.add_parser("components", parents=[common], help="supervised components")
    for action in ("restart", "stop", "start"):
        sp = sub.add_parser(action, parents=[common], help=f"{action} a component")
        sp.add_argument("name")
    sy = sub.add_parser("sync", parents=[common], help="per-peer DAG sync state")
    sy.add_argument("--now", action="store_true", help="run a sync now and wait for it")
    sub.add_parser("reload", parents=[common], help="re-read the config")
    sub.add_parser("leave", parents=[common], help="leave the cluster gracefully")
    fl = sub.add_parser("force-leave", parents=[common], help="mark a dead or suspect node left on every node")
    fl.add_argument("name")
    sub.add_parser("doctor", parents=[common], help="preflight this node (works without a daemon)")
    lg = sub.add_parser("logs", parents=[common], help="a component's last output lines")
    lg.add_argument("name")
    lg.add_argument("-n", "--lines", type=int, default=100, help="how many lines (default 100, at most 1000)")
    lg.add_argument("-f", "--follow", action="store_true", help="then follow new lines until Ctrl-C")
    lg.add_argument("--stream", choices=("stdout", "stderr"), help="only this stream")
    ev = sub.add_parser("events", parents=[common], help="what happened on this node (the last 1000 events)")
    ev.add_argument("-f", "--follow", action="store_true", help="then follow new events until Ctrl-C")
    ev.add_argument("--since", help="only the last DURATION (e.g. 30s, 10m, 2h)")
    dr = sub.add_parser("drain", parents=[common], help="maintenance: stop components, /readiness 503")
    dr.add_argument("--wait", action="store_true", help="return when every component to stop has stopped")
    sub.add_parser("undrain", parents=[common], help="end maintenance: start the drained components again")
    for name, sp in sub.choices.items():
        sp.epilog = exit_epilog(name)
        sp.formatter_class = argparse.RawDescriptionHelpFormatter
    return p


COMMANDS = {
    "peers": cmd_peers, "status": cmd_status, "health": cmd_health, "components": cmd_components,
    "restart": cmd_action, "stop": cmd_action, "start": cmd_action, "sync": cmd_sync,
    "reload": cmd_reload, "leave": cmd_leave, "force-leave": cmd_force_leave, "doctor": cmd_doctor,
    "logs": cmd_logs, "events": cmd_events, "drain": cmd_drain, "undrain": cmd_undrain,
}


def main(argv: list[str] | None = None) -> int:
    try:
        a = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse: 0 for --help/--version, 2 for a usage error
        return EXIT_USAGE if e.code == 2 else (e.code if isinstance(e.code, int) else 1)
    if a.command == "status" and a.cluster:
        a.command, a.cluster = "health", True
    found = _from_config(a.config)
    api = a.api or os.environ.get("HAFLOWD_API") or found.get("api") or f"http://{config.DEFAULT_API}"
    sock = a.socket or os.environ.get("HAFLOWD_CONTROL_SOCKET") or found.get("socket") or DEFAULT_SOCKET
    if a.timeout is None:
        # a stop may wait out a long stop_timeout; the daemon bounds it
        a.timeout = 900.0 if a.command in ("restart", "stop", "reload", "leave", "sync", "drain", "undrain") else 10.0
    client = Client(api, sock, a.timeout)
    try:
        return COMMANDS[a.command](client, a)
    except Unreachable as e:
        print(f"haflowctl: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as e:
        print(f"haflowctl: unexpected answer from haflowd: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
