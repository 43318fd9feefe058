"""``haflowctl doctor``: a preflight of this node, with or without a running daemon.

Each check is a pure decision (``*_finding``: facts in, :class:`Finding` out, tested with
fake inputs) behind a thin probe that gathers the facts (a stat, a bind, a TCP connect,
a signed gossip ping, one SQL query, one HTTP GET), each bounded by a short timeout.
Nothing here raises to the operator: a probe that fails in an unforeseen way is a
``fail`` line naming the check. Exit 0 all ok, 1 warnings, 2 failures.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import errno
import fnmatch
import functools
import http.client
import importlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from haflowd import config
from haflowd import secrets as masking
from haflowd.client import Client, Unreachable
from haflowd.config import ComponentConfig, Config, ConfigError, HostPort, SyncConfig

OK, WARN, FAIL = "ok", "warn", "fail"
EXIT = {OK: 0, WARN: 1, FAIL: 2}
TIMEOUT_S = 2.0
SKEW_WARN_S = 5.0
SKEW_FAIL_S = 30.0  # the signing window (signing.MAX_SKEW_S)
CSYNC2_CONFIGS = ("/etc/csync2.cfg", "/etc/csync2/csync2.cfg")
MONITOR_TAGS = ("monitoring", "administrator")
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"  # on root's PATH under systemd, where csync2 is installed


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok | warn | fail
    what: str
    fix: str = ""

    def line(self) -> str:
        tail = f" -- fix: {self.fix}" if self.fix and self.status != OK else ""
        return f"{self.status.upper():<4}  {self.check}: {self.what}{tail}"


def exit_code(findings: Iterable[Finding]) -> int:
    return max((EXIT.get(f.status, 2) for f in findings), default=0)


# --------------------------------------------------------------------------- decisions (pure)


def config_findings(path: str, errors: Sequence[str] | None, components: int = 0) -> list[Finding]:
    """The config's validity: its error lines as they are (``haflowd --check-config``)."""
    if errors is None:
        return [Finding("config", OK, f"{path}: valid ({components} components)")]
    return [Finding("config", FAIL, e, "correct the config; `haflowd --check-config` lists the same") for e in errors]


def command_finding(name: str, problem: str | None, argv0: str) -> Finding:
    check = f"component {name}: command"
    if problem is None:
        return Finding(check, OK, f"{json.dumps(argv0)} resolves on its PATH for its user")
    return Finding(check, FAIL, problem, "install it, or set environment.PATH / command to where it is, "
                   "executable by the component's user")


def version_finding(name: str, version: str | Exception | None) -> Finding:
    check = f"component {name}: airflow"
    if isinstance(version, Exception):
        return Finding(check, FAIL, f"the installed Airflow does not tell its version: {version}",
                       "repair the Airflow install the component's PATH leads to")
    if version is None:
        return Finding(check, FAIL, "no `airflow` on the component's PATH",
                       "install Airflow, or set environment.PATH to its venv's bin")
    return Finding(check, OK, f"runs Airflow {version}")


def working_dir_finding(name: str, wd: Path | None, problem: str | None) -> Finding:
    check = f"component {name}: working_dir"
    if problem is None:
        return Finding(check, OK, f"{wd} can be entered by its user" if wd else "haflowd's own (not set)")
    return Finding(check, FAIL, problem, "create it, or give the component's user search (x) permission on it")


def data_dir_finding(path: Path, error: str | None, created: bool = False) -> Finding:
    if error is None:
        return Finding("data_dir", OK, f"{path} is writable" + (" (its parent is; haflowd creates it)" if created
                                                                 else ""))
    return Finding("data_dir", FAIL, f"{path} is not writable: {error}",
                   f"mkdir -p {path} and make it writable by haflowd's user")


def secret_finding(what: str, path: Path, st: os.stat_result | None, error: str | None, owners: Iterable[int],
                   root_only: bool = False, shielded: bool = False) -> Finding:
    """A key or secret file: owned by root (or the daemon's user), no access for group or others
    (``shielded``: the mode allows it, but a directory above only its owner can enter, as the
    config reader accepts)."""
    check = f"secret {what}"
    if st is None:
        return Finding(check, FAIL, f"cannot read {path}: {error}", f"create {path}, readable by haflowd's user")
    allowed = {0} if root_only else set(owners)
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in allowed:
        who = "root" if root_only else "root or haflowd's user"
        return Finding(check, FAIL, f"{path} is owned by uid {st.st_uid}, not {who}", f"chown root {path}")
    if mode & 0o077 and shielded:
        return Finding(check, OK, f"{path}: owner uid {st.st_uid}, mode {mode:04o}, inside a directory only its "
                       "owner can enter")
    if mode & 0o077:
        return Finding(check, FAIL, f"{path} is readable or writable by its group or others (mode {mode:04o})",
                       f"chmod 600 {path}")
    return Finding(check, OK, f"{path}: owner uid {st.st_uid}, mode {mode:04o}")


@dataclass(frozen=True)
class Csync2Facts:
    """What the csync2 checks need, gathered by :func:`csync2_facts`."""

    installed: str | None  # csync2's path, None: not on PATH
    cfg_path: str | None  # the config found (None: none of the candidates exists)
    cfg_text: str | None
    host: str  # csync2's name for this node
    candidates: tuple[str, ...] = ()


def _csync2_groups(text: str) -> list[tuple[list[str], list[str], str | None, str | None, int]]:
    """(hosts, include patterns, key file, backup-directory, backup-generations) per group."""
    from haflowd.sync.conflicts import _TOKEN, _statements

    text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    stmts, _ = _statements(_TOKEN.findall(text))
    out = []
    for words, body in stmts:
        if len(words) < 2 or words[0] != "group" or body is None:
            continue
        hosts: list[str] = []
        includes: list[str] = []
        key: str | None = None
        backup: str | None = None
        generations = 3
        for w, _sub in body:
            if not w:
                continue
            if w[0] == "host":
                hosts += [h.split("@", 1)[0].strip("()") for h in w[1:] if h.strip("()")]
            elif w[0] == "include":
                includes += w[1:]
            elif w[0] == "key" and len(w) > 1:
                key = w[1]
            elif w[0] == "backup-directory" and len(w) > 1:
                backup = w[1]
            elif w[0] == "backup-generations" and len(w) > 1:
                generations = int(w[1]) if w[1].isdigit() else 0
        out.append((hosts, includes, key, backup, generations))
    return out


def _covers(pattern: str, folder: str) -> bool:
    pattern = pattern.rstrip("/") or "/"
    folder = folder.rstrip("/") or "/"
    if pattern == "/" or folder == pattern or folder.startswith(pattern + "/"):
        return True
    return fnmatch.fnmatchcase(folder, pattern) or fnmatch.fnmatchcase(folder, pattern + "/*")


def csync2_findings(facts: Csync2Facts, watch: Sequence[Path]) -> tuple[list[Finding], list[str], list[str]]:
    """The csync2 install and config: (findings, key files of this host's groups, its peers' hosts)."""
    out: list[Finding] = []
    if facts.installed is None:
        out.append(Finding("csync2", FAIL, "csync2 is not installed (not on PATH)", "apt-get install csync2"))
    else:
        out.append(Finding("csync2", OK, f"installed: {facts.installed}"))
    if facts.cfg_path is None or facts.cfg_text is None:
        where = ", ".join(facts.candidates) or "/etc/csync2.cfg"
        out.append(Finding("csync2 config", FAIL, f"no csync2 config found (looked at {where})",
                           "write csync2.cfg (docs/sync.md), or set CSYNC2_SYSTEM_DIR in [sync] command"))
        return out, [], []
    from haflowd.sync.conflicts import parse_csync2_cfg

    layout = parse_csync2_cfg(facts.cfg_text)
    mine = [g for g in _csync2_groups(facts.cfg_text) if facts.host in g[0]]
    where = facts.cfg_path
    if not mine:
        out.append(Finding("csync2 config", FAIL, f"{where}: no group names this node's csync2 host "
                           f"{json.dumps(facts.host)}", f"add {facts.host} to the group's host line, or map this "
                           "node's name in [sync] host_map"))
        return out, [], []
    out.append(Finding("csync2 config", OK, f"{where}: names {facts.host}"))
    covered: list[str] = []
    for _hosts, includes, _key, _b, _g in mine:
        for inc in includes:
            if inc.startswith("%"):
                path = layout.path_on(facts.host, inc)
                if path is not None:
                    covered.append(path)
            else:
                covered.append(inc)
    for folder in watch:
        if any(_covers(c, str(folder)) for c in covered):
            out.append(Finding(f"csync2 covers {folder}", OK, f"{folder} is included"))
        else:
            out.append(Finding(f"csync2 covers {folder}", FAIL, f"no include of {facts.host}'s groups in {where} "
                               f"covers the watched folder {folder}",
                               f"add `include {folder};` (or a prefix for it) to the group"))
    no_backup = [g for g in mine if not g[3] or g[4] < 2]
    if no_backup:
        out.append(Finding("csync2 backups", WARN, f"{where}: a group of {facts.host} has no backup-directory "
                           "(or backup-generations < 2): a conflict would lose a version",
                           "add `backup-directory /var/backups/csync2; backup-generations 3;` (docs/sync.md)"))
    else:
        out.append(Finding("csync2 backups", OK, "overwritten versions are kept (backup-directory)"))
    keys = sorted({k for g in mine if (k := g[2])})
    peers = sorted({h for g in mine for h in g[0] if h != facts.host})
    return out, keys, peers


def port_finding(name: str, addr: HostPort, error: int | None, holders: Sequence[int],
                 daemon_pid: int | None) -> Finding:
    """``[api] listen`` / ``[gossip] listen``: free, or held by our own running daemon."""
    check = f"port {name}"
    if error is None:
        return Finding(check, OK, f"{addr} is free")
    if error != errno.EADDRINUSE:
        return Finding(check, FAIL, f"cannot bind {addr}: {os.strerror(error)}",
                       "listen on an address of this host (ip addr) and a port haflowd may bind")
    if daemon_pid is not None and daemon_pid in holders:
        return Finding(check, OK, f"{addr} is held by our running haflowd (pid {daemon_pid})")
    who = f"pid {', '.join(map(str, holders))}" if holders else "a process this user cannot see"
    return Finding(check, FAIL, f"{addr} is in use by another process ({who})",
                   "stop that process, or choose another port in the config")


def skew_finding(peer: str, skew: float) -> Finding:
    check = f"clock {peer}"
    text = f"wall clock differs from {peer}'s by {skew:+.1f}s"
    if abs(skew) > SKEW_FAIL_S:
        return Finding(check, FAIL, text + f" (beyond the {SKEW_FAIL_S:g}s signing window: gossip is refused)",
                       "run NTP (chrony/systemd-timesyncd) on every node")
    if abs(skew) > SKEW_WARN_S:
        return Finding(check, WARN, text, "run NTP (chrony/systemd-timesyncd) on every node")
    return Finding(check, OK, text)


@dataclass(frozen=True)
class PingResult:
    """A signed gossip ping's outcome: status None = no HTTP answer (``error`` says why)."""

    status: int | None
    error: str | None = None
    refusal: str | None = None  # a refusal's {"error"}: bad_signature, stale, ...
    verdict: str | None = None  # the answer's signature: "ok" or the Verifier's reason
    skew: float | None = None  # peer's clock minus ours, seconds


def gossip_findings(seed: str, r: PingResult) -> list[Finding]:
    check = f"gossip seed {seed}"
    if r.status is None:
        return [Finding(check, FAIL, f"no answer: {r.error}", "start haflowd there, or open the gossip port "
                        "(firewall) and check [gossip] seeds")]
    skew = [skew_finding(seed, r.skew)] if r.skew is not None else []
    if r.status == 401 and r.refusal == "stale":
        return [Finding(check, FAIL, "the seed refused our timestamp as stale: the clocks differ by more than "
                        f"{SKEW_FAIL_S:g}s", "run NTP (chrony/systemd-timesyncd) on every node"), *skew]
    if r.status == 401:
        return [Finding(check, FAIL, "the seed refused our signature: the gossip keys differ",
                        "give every node the same gossip key_file (its first key signs, all verify)"), *skew]
    if r.status != 200:
        return [Finding(check, FAIL, f"answered HTTP {r.status}" + (f" ({r.refusal})" if r.refusal else ""),
                        "check that this address is a haflowd gossip port"), *skew]
    if r.verdict != "ok":
        return [Finding(check, FAIL, f"its answer's signature does not verify with our keys ({r.verdict})",
                        "give every node the same gossip key_file"), *skew]
    return [Finding(check, OK, "answered our signed ping with a signed ack"), *skew]


def postgres_finding(name: str, error: str | None, monitor: bool | None) -> Finding:
    check = f"postgres {name}"
    if error is not None:
        return Finding(check, FAIL, f"cannot connect: {error}", "check the dsn, pg_hba.conf and that PostgreSQL runs")
    if not monitor:
        return Finding(check, FAIL, "connected, but the role is not a member of pg_monitor "
                       "(replication views show nothing)", "GRANT pg_monitor TO <the dsn's user>;")
    return Finding(check, OK, "connected; the role has pg_monitor")


def rabbitmq_finding(name: str, status: int | None, error: str | None, tags: Sequence[str]) -> Finding:
    check = f"rabbitmq {name}"
    if status is None:
        return Finding(check, FAIL, f"management API: {error}", "check management_url and that "
                       "rabbitmq_management is enabled")
    if status == 401:
        return Finding(check, FAIL, "the management API refused the user's credentials (401)",
                       "check username and password (rabbitmqctl authenticate_user)")
    if status != 200:
        return Finding(check, FAIL, f"GET /api/whoami answered HTTP {status}", "check management_url")
    if not any(t in MONITOR_TAGS for t in tags):
        shown = ", ".join(tags) or "none"
        return Finding(check, FAIL, f"the user has neither the monitoring nor the administrator tag (tags: {shown})",
                       "rabbitmqctl set_user_tags <user> monitoring")
    return Finding(check, OK, f"the management API answers; user tags: {', '.join(tags)}")


def whoami_tags(body: Any) -> list[str]:
    """``/api/whoami``'s tags: a list (3.9+) or a comma-separated string (older)."""
    tags = body.get("tags") if isinstance(body, dict) else None
    if isinstance(tags, str):
        return [t.strip() for t in tags.split(",") if t.strip()]
    if isinstance(tags, list):
        return [str(t) for t in tags]
    return []


def csync2_port_finding(host: str, port: int, error: str | None) -> Finding:
    check = f"csync2 peer {host}"
    if error is None:
        return Finding(check, OK, f"{host}:{port} answers")
    return Finding(check, FAIL, error, f"start csync2 -ii on {host} (systemd csync2.socket) and open port {port}")


# --------------------------------------------------------------------------- probes (thin I/O)


def _guard(check: str, fn: Callable[[], list[Finding]]) -> list[Finding]:
    """A probe that fails in an unforeseen way is one line, never a traceback."""
    try:
        return fn()
    except Exception as e:  # the edge: whatever it is becomes a finding
        return [Finding(check, FAIL, f"could not check: {type(e).__name__}: {e}", "")]


def _secret(what: str, path: Path, owners: Iterable[int], root_only: bool = False) -> Finding:
    try:
        with open(path, "rb"):
            pass
        st = os.stat(path)
    except OSError as e:
        return secret_finding(what, path, None, e.strerror or str(e), owners, root_only)
    shielded = bool(stat.S_IMODE(st.st_mode) & 0o077) and config.secret_exposure(path) is None
    return secret_finding(what, path, st, None, owners, root_only, shielded)


def check_components(cfg: Config) -> list[Finding]:
    out: list[Finding] = []
    for c in cfg.components:
        out += _guard(f"component {c.name}", functools.partial(_component, c))
    return out


def _component(c: ComponentConfig) -> list[Finding]:
    env = dict(c.environment)
    out = [command_finding(c.name, config.command_problem(c.command[0], env, c.working_dir, c.user), c.command[0])]
    if c.preset:
        out.append(version_finding(c.name, _airflow_version(env)))
    wd_problem = config.directory_problem(c.working_dir, c.user) if c.working_dir is not None else None
    out.append(working_dir_finding(c.name, c.working_dir, wd_problem))
    return out


def _airflow_version(env: Mapping[str, str]) -> str | Exception | None:
    """As the config's presets step detects it; imported late (the Airflow modules may move)."""
    mod: Any = None
    for name in ("haflowd.airflow.version", "haflowd.airflow"):
        with contextlib.suppress(ImportError):
            m = importlib.import_module(name)
            if hasattr(m, "detect_version") and hasattr(m, "AirflowSettings"):
                mod = m
                break
    if mod is None:
        return RuntimeError("haflowd's Airflow module was not found")
    try:
        return mod.detect_version(mod.AirflowSettings.load(env).env)  # type: ignore[no-any-return]
    except Exception as e:
        return e


def check_data_dir(path: Path) -> list[Finding]:
    target, created = path, False
    if not path.exists():
        target, created = path.parent, True
        while not target.exists() and target != target.parent:
            target = target.parent
    try:
        fd, name = tempfile.mkstemp(prefix=".haflowd-doctor-", dir=target)
        os.close(fd)
        os.unlink(name)
        return [data_dir_finding(path, None, created)]
    except OSError as e:
        return [data_dir_finding(path, e.strerror or str(e))]


def secret_files(raw: Any, base: Path, prefix: str = "") -> Iterator[tuple[str, Path]]:
    """Every ``*_file`` value of the raw config (gossip key_file, dsn_file, password_file ...)."""
    if isinstance(raw, dict):
        for k, v in raw.items():
            where = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, str) and str(k).endswith("_file") and v:
                p = Path(v)
                yield where, p if p.is_absolute() else base / p
            else:
                yield from secret_files(v, base, where)
    elif isinstance(raw, list):
        for i, v in enumerate(raw):
            yield from secret_files(v, base, f"{prefix}[{i}]")


def check_secrets(raw: Any, base: Path) -> list[Finding]:
    owners = {0, os.geteuid()}
    out = []
    for where, p in secret_files(raw, base):
        out.append(_secret(where, p, owners))
    return out


_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)")


def _without_assignments(command: Sequence[str]) -> tuple[str, ...]:
    """``env CSYNC2_SYSTEM_DIR=/etc/csync2 csync2 -x`` without its ``NAME=value`` words (whose
    basename may look like csync2's)."""
    return tuple(a for a in command if not _ASSIGNMENT.fullmatch(a))


def csync2_config_candidates(sync: SyncConfig, environ: Mapping[str, str]) -> list[str]:
    """Where csync2 reads its config: ``CSYNC2_SYSTEM_DIR`` set in [sync] command (``env VAR=...``)
    or haflowd's environment, ``-C NAME``; else /etc/csync2.cfg, /etc/csync2/csync2.cfg."""
    from haflowd.sync.conflicts import csync2_cfg_path
    from haflowd.sync.runner import Csync2Command

    env = dict(environ)
    for arg in sync.command:
        m = _ASSIGNMENT.fullmatch(arg)
        if m:
            env[m.group(1)] = m.group(2)
    opts = Csync2Command(_without_assignments(sync.command)).options()
    first = csync2_cfg_path(opts, env)
    if "CSYNC2_SYSTEM_DIR" in env:
        return [first]
    name = os.path.basename(first)
    return [first, *(os.path.join(os.path.dirname(c), name) for c in CSYNC2_CONFIGS[1:])]


def csync2_facts(cfg: Config, environ: Mapping[str, str]) -> Csync2Facts:
    from haflowd.sync.runner import Csync2Command

    assert cfg.sync is not None
    words = _without_assignments(cfg.sync.command)
    cmd = Csync2Command(words)
    program = next((a for a in words if os.path.basename(a).startswith("csync2")), "csync2")
    installed = shutil.which(program, path=environ.get("PATH", os.defpath) + os.pathsep + SBIN)
    host = cmd.option("-N") or cfg.sync.csync2_host(cfg.node.name)
    candidates = csync2_config_candidates(cfg.sync, environ)
    for c in candidates:
        try:
            return Csync2Facts(installed, c, Path(c).read_text(errors="replace"), host, tuple(candidates))
        except OSError:
            continue
    return Csync2Facts(installed, None, None, host, tuple(candidates))


def resolve(host: str, port: int, timeout: float) -> str:
    """The first address of ``host``, within ``timeout``: the resolver has no timeout of its
    own, so it runs in a daemon thread that a hung DNS server may keep (the doctor exits anyway)."""
    found: list[str] = []
    failed: list[BaseException] = []

    def ask() -> None:
        try:
            found.append(str(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]))
        except (OSError, IndexError) as e:
            failed.append(e)

    t = threading.Thread(target=ask, name="haflowd-doctor-resolve", daemon=True)
    t.start()
    t.join(timeout)
    if found:
        return found[0]
    if failed and isinstance(failed[0], OSError):
        raise failed[0]
    raise TimeoutError(f"cannot resolve {host} within {timeout:g}s")


def tcp_error(host: str, port: int, timeout: float) -> str | None:
    """None when ``host:port`` accepts a TCP connection within ``timeout``, else why not."""
    try:
        with socket.create_connection((resolve(host, port, timeout), port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return f"connection to {host}:{port} refused"
    except TimeoutError as e:
        return str(e) if "resolve" in str(e) else f"no answer from {host}:{port} within {timeout:g}s"
    except socket.gaierror as e:
        return f"cannot resolve {host}: {e.strerror or e}"
    except OSError as e:
        return f"cannot connect to {host}:{port}: {e.strerror or e}"


def check_sync(cfg: Config, environ: Mapping[str, str], timeout: float) -> list[Finding]:
    assert cfg.sync is not None
    facts = csync2_facts(cfg, environ)
    out, keys, peers = csync2_findings(facts, cfg.sync.watch)
    base = Path(facts.cfg_path or "/etc").parent
    for k in keys:
        p = Path(k) if os.path.isabs(k) else base / k
        out.append(_secret("csync2 key", p, (0,), root_only=True))
    hosts = [cfg.sync.csync2_host(p) for p in cfg.sync.peers] if cfg.sync.peers else peers
    for h in hosts:
        out.append(csync2_port_finding(h, cfg.sync.port, tcp_error(h, cfg.sync.port, timeout)))
    return out


def signed_ping(cfg: Config, seed: HostPort, timeout: float) -> PingResult:
    """POST /gossip a signed ping, as the transport sends it; verify the signed answer."""
    from haflowd.clock import SYSTEM_CLOCK
    from haflowd.gossip import signing
    from haflowd.gossip.membership import Message

    assert cfg.gossip is not None
    ring = signing.Keyring([base64.b64decode(k.reveal()) for k in cfg.gossip.keys])
    signer = signing.Signer(ring, cfg.node.name, SYSTEM_CLOCK)
    seq = secrets.randbelow(2**31 - 1) + 1
    body = json.dumps(Message("ping", cfg.node.name, str(cfg.gossip.advertise), seq).to_json(),
                      separators=(",", ":")).encode()
    path = "/gossip"
    headers = signer.sign_request("POST", path, body)
    headers["Content-Type"] = "application/json"
    try:
        conn = http.client.HTTPConnection(resolve(seed.host, seed.port, timeout), seed.port, timeout=timeout)
    except OSError as e:
        return PingResult(None, error=str(e) or type(e).__name__)
    try:
        sent = time.time()
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read(1 << 20)
        now = (sent + time.time()) / 2
        answer = {k: v for k, v in resp.getheaders()}
    except (OSError, http.client.HTTPException) as e:
        return PingResult(None, error=str(e) or type(e).__name__)
    finally:
        conn.close()
    skew = _skew(answer, now)
    if resp.status != 200:
        refusal = None
        with contextlib.suppress(ValueError, AttributeError):
            refusal = str(json.loads(data).get("error"))
        return PingResult(resp.status, refusal=refusal, skew=skew)
    verifier = signing.Verifier(ring, SYSTEM_CLOCK, max_skew=1e9)  # the skew is judged on its own
    v = verifier.verify_response(path, headers[signing.NONCE], answer, data)
    return PingResult(200, verdict="ok" if v.ok else str(v.reason), skew=skew)


def _skew(headers: Mapping[str, str], now: float) -> float | None:
    """The peer's clock minus ours: its signed timestamp, else its HTTP Date (whole seconds)."""
    lower = {k.lower(): v for k, v in headers.items()}
    ts = lower.get("x-haflowd-timestamp")
    if ts is not None:
        with contextlib.suppress(ValueError):
            return float(ts) - now
    date = lower.get("date")
    if date is not None:
        with contextlib.suppress(TypeError, ValueError):
            return email.utils.parsedate_to_datetime(date).timestamp() - now
    return None


def _ping_seed(cfg: Config, seed: HostPort, timeout: float) -> list[Finding]:
    return gossip_findings(str(seed), signed_ping(cfg, seed, timeout))


def check_gossip(cfg: Config, timeout: float) -> list[Finding]:
    assert cfg.gossip is not None
    out: list[Finding] = []
    own = {str(cfg.gossip.advertise), str(cfg.gossip.listen)}
    for seed in cfg.gossip.seeds:
        if str(seed) in own:
            continue  # this node itself
        out += _guard(f"gossip seed {seed}", functools.partial(_ping_seed, cfg, seed, timeout))
    return out


def postgres_probe(dsn: str, timeout: float) -> tuple[str | None, bool | None]:
    import psycopg2

    try:
        conn = psycopg2.connect(dsn, connect_timeout=max(2, int(timeout)), application_name="haflowctl-doctor",
                                options=f"-c statement_timeout={int(timeout * 1000)}")
    except psycopg2.Error as e:
        return (str(e).strip().splitlines() or [type(e).__name__])[0], None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_has_role(current_user, 'pg_monitor', 'member')")
            row = cur.fetchone()
            return None, bool(row and row[0])
    except psycopg2.Error as e:
        return (str(e).strip().splitlines() or [type(e).__name__])[0], None
    finally:
        conn.close()


def check_postgres(cfg: Config, timeout: float) -> list[Finding]:
    assert cfg.postgres is not None
    out: list[Finding] = []
    for n in cfg.postgres.nodes:
        def probe(n: config.PostgresNode = n) -> list[Finding]:
            err, monitor = postgres_probe(n.dsn.reveal(), timeout)
            return [postgres_finding(n.name, _scrub(err, n.dsn.reveal()), monitor)]
        out += _guard(f"postgres {n.name}", probe)
    return out


def _scrub(text: str | None, secret: str) -> str | None:
    """No secret in a finding: a DSN's password never shows (the one scrubber, haflowd.secrets)."""
    if text is None:
        return None
    return masking.Scrubber(masking.derive(secret))(text)


def whoami(url: str, user: str, password: str, timeout: float) -> tuple[int | None, str | None, list[str]]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url.rstrip("/") + "/api/whoami")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, None, whoami_tags(json.loads(r.read(1 << 20)))
    except urllib.error.HTTPError as e:
        return e.code, None, []
    except (urllib.error.URLError, OSError, ValueError) as e:
        return None, str(getattr(e, "reason", e)), []


def check_rabbitmq(cfg: Config, timeout: float) -> list[Finding]:
    assert cfg.rabbitmq is not None
    out: list[Finding] = []
    for n in cfg.rabbitmq.nodes:
        def probe(n: config.RabbitNode = n) -> list[Finding]:
            pw = n.password.reveal() if n.password else ""
            status, err, tags = whoami(n.management_url, n.username, pw, timeout)
            return [rabbitmq_finding(n.name, status, _scrub(err, pw) if pw else err, tags)]
        out += _guard(f"rabbitmq {n.name}", probe)
    return out


def bind_error(addr: HostPort) -> int | None:
    """errno of binding ``addr`` as the daemon would (SO_REUSEADDR, as aiohttp does), or None."""
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr.host, addr.port))
        except OSError as e:
            return e.errno or errno.EADDRINUSE
    return None


def listening_inodes(port: int) -> set[int]:
    """Socket inodes listening on ``port`` (/proc/net/tcp, tcp6)."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(int(parts[9]))
        except (OSError, ValueError, IndexError):
            continue
    return inodes


def inode_pids(inodes: set[int], limit: int = 100_000) -> list[int]:
    """The processes holding these socket inodes (those this user may look into)."""
    if not inodes:
        return []
    wanted = {f"socket:[{i}]" for i in inodes}
    found: list[int] = []
    seen = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                seen += 1
                if seen > limit:
                    return found
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in wanted:
                        found.append(int(entry.name))
                        break
        except OSError:
            continue
    return found


def daemon_pid(api: str, sock: str, timeout: float, node: str) -> int | None:
    """Our running daemon's pid from ``/status`` (read API): None when none answers, or when
    the one that answers is another node's."""
    try:
        code, body = Client(api, sock, timeout).get("/status")
    except Unreachable:
        return None
    if code != 200 or not isinstance(body, dict) or body.get("node") != node:
        return None
    pid = body.get("pid")
    return pid if isinstance(pid, int) else None


def check_ports(cfg: Config, pid: int | None) -> list[Finding]:
    out: list[Finding] = []
    addrs = [("api", cfg.api.listen)] + ([("gossip", cfg.gossip.listen)] if cfg.gossip is not None else [])
    for name, addr in addrs:
        def probe(name: str = name, addr: HostPort = addr) -> list[Finding]:
            err = bind_error(addr)
            holders = inode_pids(listening_inodes(addr.port)) if err == errno.EADDRINUSE else []
            return [port_finding(name, addr, err, holders, pid)]
        out += _guard(f"port {name}", probe)
    return out


# --------------------------------------------------------------------------- the run


def run(path: str | None, api: str, sock: str, timeout: float = TIMEOUT_S,
        environ: Mapping[str, str] | None = None) -> list[Finding]:
    """Every finding for this node, in order: config, components, data_dir, secrets, sync,
    gossip, postgres, rabbitmq, ports. An invalid config stops the rest."""
    environ = os.environ if environ is None else environ
    p = config.resolve_path(path)
    try:
        cfg = config.load(p, check_system=True, check_commands=False)
    except ConfigError as e:
        return config_findings(str(p), e.lines)
    except Exception as e:  # the edge: a config the reader chokes on is still one line
        return config_findings(str(p), [f"{p}: could not be read: {type(e).__name__}: {e}"])
    out = config_findings(str(p), None, len(cfg.components))
    out += check_components(cfg)
    out += _guard("data_dir", lambda: check_data_dir(cfg.node.data_dir))
    raw: Any = {}
    with contextlib.suppress(OSError, ValueError):
        raw = tomllib.loads(p.read_text())
    out += _guard("secrets", lambda: check_secrets(raw, p.parent))
    if cfg.sync is not None and cfg.sync.enabled:
        out += _guard("csync2", lambda: check_sync(cfg, environ, timeout))
    if cfg.gossip is not None:
        out += check_gossip(cfg, timeout)
    if cfg.postgres is not None:
        out += check_postgres(cfg, timeout)
    if cfg.rabbitmq is not None:
        out += check_rabbitmq(cfg, timeout)
    out += check_ports(cfg, _guard_pid(api, sock, timeout, cfg.node.name))
    return out


def _guard_pid(api: str, sock: str, timeout: float, node: str) -> int | None:
    try:
        return daemon_pid(api, sock, timeout, node)
    except Exception:
        return None


def render(findings: Sequence[Finding], as_json: bool) -> str:
    if as_json:
        return json.dumps([asdict(f) for f in findings], indent=2)
    return "\n".join(f.line() for f in findings)
