"""PostgreSQL topology decisions: probes in, a verdict out. Pure: no sockets, no clock.

``checks/postgres.py`` gathers one :class:`NodeProbe` per configured node (and, for
Bucardo, the sync states); :func:`assess` turns them into an :class:`Assessment`
(status, output, split brain, per-node view); :func:`primary_verdict` and friends
answer the load balancer's questions from that assessment alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from haflowd import secrets
from haflowd.health import Status

STREAMING = "streaming"
BUCARDO = "bucardo"


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Replica:
    """A row of the primary's ``pg_stat_replication``."""

    application_name: str
    state: str
    replay_lsn: int | None = None


@dataclass(frozen=True)
class NodeProbe:
    """What one round learnt from one node. ``up`` is False when it did not answer in time."""

    name: str
    up: bool
    error: str | None = None
    checked_at: float | None = None
    in_recovery: bool | None = None
    read_only: bool | None = None  # default_transaction_read_only
    timeline: int | None = None
    system_identifier: int | None = None
    current_lsn: int | None = None  # primary: pg_current_wal_lsn()
    receive_lsn: int | None = None  # standby: pg_last_wal_receive_lsn()
    replay_lsn: int | None = None  # standby: pg_last_wal_replay_lsn()
    last_replay_at: float | None = None  # standby: pg_last_xact_replay_timestamp()
    server_now: float | None = None  # the node's own now(), so lag seconds ignore our clock
    receiver_status: str | None = None  # standby: pg_stat_wal_receiver.status
    replay_paused: bool | None = None
    replicas: tuple[Replica, ...] = ()


@dataclass(frozen=True)
class SyncState:
    """One Bucardo sync: ``bucardo.sync`` joined with its latest ``bucardo.syncrun`` rows."""

    name: str
    status: str  # bucardo.sync.status: active, inactive, paused, ...
    now: float  # the bucardo database's now()
    created_at: float
    last_good_at: float | None = None
    last_empty_at: float | None = None
    last_bad_at: float | None = None
    last_bad_status: str | None = None
    running_since: float | None = None
    overdue: float = 0.0  # bucardo's own thresholds; 0 means not set
    expired: float = 0.0


@dataclass(frozen=True)
class SyncsProbe:
    """Bucardo's sync states, or why they could not be read."""

    syncs: tuple[SyncState, ...] = ()
    error: str | None = None


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class NodeView:
    name: str
    up: bool
    role: str | None  # primary | standby | None (unknown: down)
    lag_bytes: int | None
    lag_seconds: float | None
    timeline: int | None
    system_identifier: int | None
    error: str | None
    checked_at: float | None
    streaming: bool | None = None
    replay_paused: bool | None = None
    writable: bool | None = None
    current_lsn: int | None = None
    receive_lsn: int | None = None
    replay_lsn: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "up": self.up,
            "role": self.role,
            "lag_bytes": self.lag_bytes,
            "lag_seconds": None if self.lag_seconds is None else round(self.lag_seconds, 3),
            "timeline": self.timeline,
            # a 64-bit number: as a string, so JavaScript clients do not round it
            "system_identifier": None if self.system_identifier is None else str(self.system_identifier),
            "error": self.error,
            "checked_at": self.checked_at,
            "streaming": self.streaming,
            "replay_paused": self.replay_paused,
            "writable": self.writable,
            "current_lsn": format_lsn(self.current_lsn),
            "receive_lsn": format_lsn(self.receive_lsn),
            "replay_lsn": format_lsn(self.replay_lsn),
        }


@dataclass(frozen=True)
class SyncView:
    name: str
    status: Status
    state: str
    output: str
    last_good_at: float | None
    last_bad_at: float | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.label, "state": self.state, "output": self.output,
                "last_good_at": self.last_good_at, "last_bad_at": self.last_bad_at}


@dataclass(frozen=True)
class Assessment:
    topology: str
    status: Status
    output: str
    split_brain: bool
    primaries: tuple[str, ...]
    nodes: tuple[NodeView, ...]
    syncs: tuple[SyncView, ...] = ()
    syncs_error: str | None = None
    problems: tuple[str, ...] = field(default=())

    def node(self, name: str | None) -> NodeView | None:
        return next((n for n in self.nodes if n.name == name), None)

    @property
    def primary(self) -> str | None:
        """The one primary (streaming, no split brain), else None."""
        if self.topology == STREAMING and len(self.primaries) == 1 and not self.split_brain:
            return self.primaries[0]
        return None


# --------------------------------------------------------------------------- lag


def lag_bytes(primary_lsn: int | None, replay_lsn: int | None) -> int | None:
    """How far the standby's replay is behind the primary's current WAL position (never negative:
    the two are read a few milliseconds apart)."""
    if primary_lsn is None or replay_lsn is None:
        return None
    return max(0, primary_lsn - replay_lsn)


def lag_seconds(primary_lsn: int | None, standby: NodeProbe) -> float | None:
    """Seconds behind. An idle primary is not lag: when the standby has replayed all it received
    and received all the primary wrote, it is 0 however old its last replayed transaction is."""
    replay, receive = standby.replay_lsn, standby.receive_lsn
    if replay is not None and primary_lsn is not None and replay >= primary_lsn:
        return 0.0
    if replay is not None and receive is not None and primary_lsn is not None \
            and replay == receive and receive >= primary_lsn:
        return 0.0
    if standby.last_replay_at is None or standby.server_now is None:
        return None
    return max(0.0, standby.server_now - standby.last_replay_at)


# --------------------------------------------------------------------------- assessment


def assess(topology: str, probes: Sequence[NodeProbe], max_lag: int,
           syncs: SyncsProbe | None = None) -> Assessment:
    if topology == BUCARDO:
        return assess_bucardo(probes, syncs)
    return assess_streaming(probes, max_lag)


def _role(p: NodeProbe) -> str | None:
    if not p.up or p.in_recovery is None:
        return None
    return "standby" if p.in_recovery else "primary"


def _writable(p: NodeProbe) -> bool | None:
    if not p.up or p.in_recovery is None:
        return None
    return not p.in_recovery and not p.read_only


def _base_view(p: NodeProbe, **more: Any) -> NodeView:
    return NodeView(
        name=p.name, up=p.up, role=_role(p), lag_bytes=None, lag_seconds=None, timeline=p.timeline,
        system_identifier=p.system_identifier, error=p.error, checked_at=p.checked_at,
        replay_paused=p.replay_paused if p.in_recovery else None, writable=_writable(p),
        current_lsn=p.current_lsn, receive_lsn=p.receive_lsn, replay_lsn=p.replay_lsn, **more,
    )


def assess_streaming(probes: Sequence[NodeProbe], max_lag: int) -> Assessment:
    """One primary and streaming standbys.

    Critical: no primary; two nodes out of recovery; a standby of the same system on a later
    timeline than the primary (it was promoted and follows another history). Warning: a
    configured standby down, not streaming, from another system, or over ``max_lag``.
    """
    primaries = [p for p in probes if _role(p) == "primary"]
    primary = primaries[0] if len(primaries) == 1 else None
    views: list[NodeView] = []
    problems: list[str] = []
    critical: list[str] = []
    diverged: list[str] = []
    for p in probes:
        role = _role(p)
        if role != "standby":
            views.append(_base_view(p))
            if not p.up:
                problems.append(f"{p.name} is down ({p.error or 'no answer'})")
            continue
        streaming = p.receiver_status == "streaming" or (primary is not None and any(
            r.application_name == p.name and r.state == "streaming" for r in primary.replicas))
        ref = primary.current_lsn if primary is not None else None
        view = _base_view(p, streaming=streaming)
        if primary is not None:
            view = _replace_lag(view, lag_bytes(ref, p.replay_lsn), lag_seconds(ref, p))
        views.append(view)
        if primary is None:
            continue
        same_system = (p.system_identifier is None or primary.system_identifier is None
                       or p.system_identifier == primary.system_identifier)
        if not same_system:
            problems.append(f"standby {p.name} is of another system (system identifier {p.system_identifier}, "
                            f"primary {primary.name}'s is {primary.system_identifier})")
            continue
        if p.timeline is not None and primary.timeline is not None and p.timeline > primary.timeline:
            diverged.append(f"standby {p.name} is on timeline {p.timeline}, later than primary "
                            f"{primary.name}'s {primary.timeline}: it follows another history")
            continue
        if not streaming:
            where = f" (timeline {p.timeline}, primary's {primary.timeline})" \
                if p.timeline is not None and primary.timeline is not None and p.timeline != primary.timeline else ""
            problems.append(f"standby {p.name} is not streaming{where}"
                            f" (wal receiver: {p.receiver_status or 'none'})")
        elif view.lag_bytes is not None and view.lag_bytes > max_lag:
            problems.append(f"standby {p.name} is {format_bytes(view.lag_bytes)} behind "
                            f"(max {format_bytes(max_lag)})")
    split_brain = len(primaries) > 1 or bool(diverged)
    if len(primaries) > 1:
        tls = ", ".join("?" if p.timeline is None else str(p.timeline) for p in primaries)
        critical.append(f"split brain: {_and([p.name for p in primaries])} are "
                        f"{'both' if len(primaries) == 2 else 'all'} primary (timelines {tls})")
    if diverged:
        critical.append("split brain: " + "; ".join(diverged))
    if not primaries:
        roles = ", ".join(f"{p.name} {_role(p)}" if p.up else f"{p.name} down ({p.error or 'no answer'})"
                          for p in probes)
        critical.append(f"no primary: {roles}" if probes else "no primary: no node configured")
        problems = [x for x in problems if not any(x.startswith(f"{p.name} is down") for p in probes)]
    if critical:
        status, text = Status.CRITICAL, critical + problems
    elif problems:
        status, text = Status.WARNING, problems
    else:
        status, text = Status.PASSING, [_summary(views)]
    return Assessment(
        topology=STREAMING, status=status, output="; ".join(text), split_brain=split_brain,
        primaries=tuple(p.name for p in primaries), nodes=tuple(views), problems=tuple(critical + problems),
    )


def _replace_lag(v: NodeView, nbytes: int | None, seconds: float | None) -> NodeView:
    return replace(v, lag_bytes=nbytes, lag_seconds=seconds)


def _summary(views: Sequence[NodeView]) -> str:
    parts = []
    for v in views:
        if v.role == "primary":
            parts.append(f"{v.name} primary (timeline {v.timeline})")
        else:
            secs = "?" if v.lag_seconds is None else f"{v.lag_seconds:.1f}s"
            lag = "?" if v.lag_bytes is None else format_bytes(v.lag_bytes)
            parts.append(f"{v.name} streaming (lag {lag}, {secs})")
    return ", ".join(parts)


def assess_bucardo(probes: Sequence[NodeProbe], syncs: SyncsProbe | None) -> Assessment:
    """Every node a primary by design: each must be up and writable; Bucardo's syncs must be
    active, not failing, and (when the sync sets ``overdue``/``expired``) not stale."""
    views = [_base_view(p) for p in probes]
    problems: list[str] = []
    for p in probes:
        if not p.up:
            problems.append(f"{p.name} is down ({p.error or 'no answer'})")
        elif p.in_recovery:
            problems.append(f"{p.name} is in recovery (read-only)")
        elif p.read_only:
            problems.append(f"{p.name} is read-only (default_transaction_read_only is on)")
    writable = [p.name for p in probes if _writable(p)]
    status = Status.PASSING
    if problems:
        status = Status.WARNING if writable else Status.CRITICAL
    sync_views: list[SyncView] = []
    syncs_error = None
    if syncs is not None:
        if syncs.error is not None:
            syncs_error = syncs.error
            problems.append(f"cannot read Bucardo's syncs: {syncs.error}")
            status = max(status, Status.WARNING)
        for s in syncs.syncs:
            sv = assess_sync(s)
            sync_views.append(sv)
            if sv.status != Status.PASSING:
                problems.append(sv.output)
                status = max(status, sv.status)
    if problems:
        output = "; ".join(problems)
    else:
        output = f"every node writable: {', '.join(writable)}"
        if sync_views:
            output += f"; syncs ok: {', '.join(s.name for s in sync_views)}"
    return Assessment(
        topology=BUCARDO, status=status, output=output, split_brain=False, primaries=tuple(writable),
        nodes=tuple(views), syncs=tuple(sync_views), syncs_error=syncs_error, problems=tuple(problems),
    )


def assess_sync(s: SyncState) -> SyncView:
    """Inactive → warning; last run failed → critical; no good run for longer than the sync's
    ``overdue`` → warning, ``expired`` → critical (the thresholds ``check_bucardo_sync`` uses)."""
    last_ok = max((t for t in (s.last_good_at, s.last_empty_at) if t is not None), default=None)

    def view(status: Status, output: str) -> SyncView:
        return SyncView(s.name, status, s.status, output, last_ok, s.last_bad_at)

    if s.last_bad_at is not None and (last_ok is None or s.last_bad_at > last_ok):
        why = f": {_short(s.last_bad_status)}" if s.last_bad_status else ""
        return view(Status.CRITICAL, f"sync {s.name} is failing: its last run failed "
                                     f"{_ago(s.now - s.last_bad_at)} ago{why}")
    if s.status != "active":
        return view(Status.WARNING, f"sync {s.name} is {s.status}")
    since = last_ok if last_ok is not None else s.created_at
    age = s.now - since
    what = "last good run" if last_ok is not None else "created, never run"
    if s.expired > 0 and age > s.expired:
        return view(Status.CRITICAL, f"sync {s.name} is stale: {what} {_ago(age)} ago "
                                     f"(expired after {_ago(s.expired)})")
    if s.overdue > 0 and age > s.overdue:
        return view(Status.WARNING, f"sync {s.name} is stale: {what} {_ago(age)} ago "
                                    f"(overdue after {_ago(s.overdue)})")
    running = f", running for {_ago(s.now - s.running_since)}" if s.running_since is not None else ""
    last = f"last good run {_ago(age)} ago" if last_ok is not None else "no run yet"
    return view(Status.PASSING, f"sync {s.name} active, {last}{running}")


# --------------------------------------------------------------------------- endpoint verdicts


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


def primary_verdict(a: Assessment | None, local: str | None, stale: bool = False) -> Verdict:
    """``/postgres/primary``: the local node is the one primary and there is no split brain
    (Bucardo: the local node is up and writable)."""
    pre = _precondition(a, local, stale)
    if isinstance(pre, Verdict):
        return pre
    a, v = pre
    if a.topology == BUCARDO:
        if v.writable:
            return Verdict(True, f"{local} is up and writable")
        return Verdict(False, f"{local} is not writable ({_state(v)})")
    if a.split_brain:
        return Verdict(False, f"split brain: {a.output}")
    if v.role != "primary":
        return Verdict(False, f"{local} is not the primary ({_state(v)})")
    return Verdict(True, f"{local} is the primary")


def replica_verdict(a: Assessment | None, local: str | None, max_lag: int, stale: bool = False) -> Verdict:
    """``/postgres/replica``: the local node is a streaming standby at most ``max_lag`` bytes behind."""
    pre = _precondition(a, local, stale)
    if isinstance(pre, Verdict):
        return pre
    a, v = pre
    if a.topology == BUCARDO:
        return Verdict(False, "bucardo topology: every node is a primary, none is a replica")
    if v.role != "standby":
        return Verdict(False, f"{local} is not a standby ({_state(v)})")
    if not v.streaming:
        return Verdict(False, f"{local} is a standby but not streaming")
    if v.lag_bytes is None:
        return Verdict(False, f"{local}'s lag is unknown (no primary to compare with)")
    if v.lag_bytes > max_lag:
        return Verdict(False, f"{local} is {format_bytes(v.lag_bytes)} behind (more than {format_bytes(max_lag)})")
    return Verdict(True, f"{local} is a streaming standby {format_bytes(v.lag_bytes)} behind "
                         f"(at most {format_bytes(max_lag)})")


def read_only_verdict(a: Assessment | None, local: str | None, max_lag: int, stale: bool = False) -> Verdict:
    """``/postgres/read-only``: a replica within lag, or the primary."""
    primary = primary_verdict(a, local, stale)
    if primary.ok:
        return primary
    replica = replica_verdict(a, local, max_lag, stale)
    if replica.ok:
        return replica
    return Verdict(False, f"{primary.reason}; {replica.reason}" if primary.reason != replica.reason
                   else primary.reason)


def _precondition(a: Assessment | None, local: str | None, stale: bool) -> Verdict | tuple[Assessment, NodeView]:
    """Why there is no verdict on the local node's role yet, or the assessment and that node."""
    if local is None:
        return Verdict(False, "no [postgres] local_node configured on this host")
    if a is None:
        return Verdict(False, "not checked yet")
    if stale:
        return Verdict(False, "stale: the last result is older than three intervals")
    v = a.node(local)
    if v is None:
        return Verdict(False, f"{local} is not a configured node")
    if not v.up:
        return Verdict(False, f"{local} is down ({v.error or 'no answer'})")
    return a, v


def _state(v: NodeView) -> str:
    return v.role or ("down" if not v.up else "unknown")


# --------------------------------------------------------------------------- text


def format_lsn(lsn: int | None) -> str | None:
    """PostgreSQL's spelling of an LSN: ``0/3000060``."""
    if lsn is None:
        return None
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def timeline_of_walfile(name: str) -> int:
    """The first 8 hex digits of ``pg_walfile_name()``."""
    return int(name[:8], 16)


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _short(text: str, limit: int = 200) -> str:
    """One line, at most ``limit`` characters (Bucardo's run status carries whole tracebacks)."""
    text = " ".join(text.replace("\\n", " ").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _and(names: Sequence[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


# --------------------------------------------------------------------------- secrets

_QUOTED = re.compile(r'"([^"]*)"')
MASK = "***"
LIBPQ_KEYWORDS = frozenset("""
    host hostaddr port dbname user password passfile require_auth channel_binding connect_timeout
    client_encoding options application_name fallback_application_name keepalives keepalives_idle
    keepalives_interval keepalives_count tcp_user_timeout replication gssencmode sslmode requiressl
    sslcompression sslcert sslkey sslpassword sslcertmode sslrootcert sslcrl sslcrldir sslsni requirepeer
    ssl_min_protocol_version ssl_max_protocol_version krbsrvname gsslib gssdelegation service
    target_session_attrs load_balance_hosts
""".split())


def dsn_passwords(dsn: str) -> list[str]:
    """Every spelling of the password a DSN carries (key=value or URI, raw and percent-decoded)."""
    return secrets.dsn_passwords(dsn)


def scrub(text: str, dsn: str, parsed: bool = True) -> str:
    """``text`` (a libpq error, say) without the DSN's password in any form.

    libpq quotes pieces of a DSN it cannot parse (``invalid percent-encoded token:
    "s3cr%et"``); for such a DSN (``parsed=False``) every quoted piece of it is masked too,
    except libpq's own option names.
    """
    text = secrets.Scrubber([dsn, *dsn_passwords(dsn)], min_length=1)(text)
    if not parsed:
        def mask(m: re.Match[str]) -> str:
            piece = m.group(1)
            if piece and piece in dsn and piece not in LIBPQ_KEYWORDS:
                return f'"{MASK}"'
            return m.group(0)
        text = _QUOTED.sub(mask, text)
    return text
