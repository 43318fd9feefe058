"""What one round of RabbitMQ observations means: pure functions, no I/O.

The checker (``rabbitmq.py``) asks every node's management API and does an AMQP round
trip, and puts what it got into :class:`Observation` and :class:`RoundTrip` objects;
:func:`assess` turns them into statuses and one line for people. Everything here is
decided from the data alone, so it is tested with tables of API answers.

The rules, worst first:

- critical: no management API answers; the AMQP round trip fails (unless a resource
  alarm explains it: publishers are blocked during an alarm, which is then a warning);
  a majority of the nodes is down (not running, or not answering at all).
- warning: a node not running or not answering; a memory or disk alarm; a partition;
  nodes that disagree about who is in the cluster; a node that is quorum critical;
  file descriptors or sockets nearly used up; a configured queue with messages and no
  consumer, or deeper than ``queue_warning_depth``.
- passing: otherwise. A configured queue that does not exist is reported, not a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from haflowd.config.schema import default_of
from haflowd.health import Status, worst

NEARLY_FULL = 0.9  # of file descriptors / sockets in use: a warning from here on
ALARM_KEYS = (("mem_alarm", "memory"), ("disk_free_alarm", "disk"))


@dataclass(frozen=True)
class RoundTrip:
    """One AMQP publish/consume through a queue of our own: how long, or why it failed."""

    ms: float | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.ms is not None


@dataclass(frozen=True)
class Observation:
    """What one node's management API answered in one round (``None``: it did not)."""

    node: str  # the configured name, used in every message
    erlang_name: str  # the RabbitMQ node name, as /api/nodes spells it
    cluster: tuple[Mapping[str, Any], ...] | None = None  # GET /api/nodes
    cluster_error: str | None = None
    alarms: tuple[tuple[str, str], ...] | None = None  # GET /api/health/checks/alarms: (node, resource)
    alarms_error: str | None = None
    quorum_critical: str | None = None  # the reason, when node-is-quorum-critical said 503
    amqp: RoundTrip | None = None  # through this node's own listener, when configured

    @property
    def answered(self) -> bool:
        return self.cluster is not None or self.alarms is not None

    @property
    def error(self) -> str | None:
        """Why nothing answered: the first error, once (they are usually the same)."""
        errors = [e for e in (self.cluster_error, self.alarms_error) if e]
        return errors[0] if errors else None


@dataclass(frozen=True)
class QueueListing:
    """GET /api/queues (all vhosts) from one node, or why it could not be had."""

    queues: tuple[Mapping[str, Any], ...] | None
    error: str | None = None


@dataclass(frozen=True)
class Thresholds:
    queue_warning_depth: int = default_of("rabbitmq.queue_warning_depth")
    nearly_full: float = NEARLY_FULL


@dataclass(frozen=True)
class Problem:
    status: Status
    text: str
    rank: int = 1  # within a status, lower comes first: a node that is down before its details

    def to_json(self) -> dict[str, str]:
        return {"status": self.status.label, "text": self.text}


@dataclass(frozen=True)
class NodeState:
    """One node as the operator sees it in ``/rabbitmq``."""

    name: str
    status: Status
    running: bool | None
    reachable: bool = False  # its management API answered (any of the endpoints)
    partitions: tuple[str, ...] = ()
    alarms: tuple[str, ...] = ()
    fd_used: int | None = None
    fd_total: int | None = None
    sockets_used: int | None = None
    sockets_total: int | None = None
    mem_used: int | None = None
    mem_limit: int | None = None
    cluster_view: tuple[str, ...] | None = None  # the members this node lists, in its own /api/nodes
    quorum_critical: str | None = None
    amqp_roundtrip_ms: float | None = None
    amqp_error: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.label,
            "running": self.running,
            "reachable": self.reachable,
            "partitions": list(self.partitions),
            "alarms": list(self.alarms),
            "fd_used": self.fd_used,
            "fd_total": self.fd_total,
            "sockets_used": self.sockets_used,
            "sockets_total": self.sockets_total,
            "mem_used": self.mem_used,
            "mem_limit": self.mem_limit,
            "cluster_view": None if self.cluster_view is None else list(self.cluster_view),
            "quorum_critical": self.quorum_critical,
            "amqp_roundtrip_ms": None if self.amqp_roundtrip_ms is None else round(self.amqp_roundtrip_ms, 3),
            "amqp_error": self.amqp_error,
            "error": self.error,
        }


@dataclass(frozen=True)
class QueueState:
    name: str
    exists: bool | None  # None: the queues could not be listed
    messages: int | None = None
    consumers: int | None = None
    type: str | None = None
    warning: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "exists": self.exists, "messages": self.messages,
                "consumers": self.consumers, "type": self.type, "warning": self.warning}


@dataclass(frozen=True)
class Assessment:
    status: Status
    output: str
    problems: tuple[Problem, ...] = ()
    nodes: tuple[NodeState, ...] = ()
    queues: tuple[QueueState, ...] = ()
    amqp_roundtrip_ms: float | None = None
    amqp_error: str | None = None
    error: str | None = None  # the critical problems, one line; None when there are none


# --------------------------------------------------------------------------- nodes


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _entries_for(erlang_name: str, observations: Sequence[Observation]) -> tuple[
        Mapping[str, Any] | None, list[Mapping[str, Any]]]:
    """The node's entry in its own /api/nodes, and its entries in the others'."""
    own: Mapping[str, Any] | None = None
    others: list[Mapping[str, Any]] = []
    for o in observations:
        for e in o.cluster or ():
            if e.get("name") != erlang_name:
                continue
            if o.erlang_name == erlang_name:
                own = e
            else:
                others.append(e)
    return own, others


def running_of(own: Mapping[str, Any] | None, others: Sequence[Mapping[str, Any]]) -> bool | None:
    """Its own word first; else the others': not running if any says so; None if nobody knows."""
    if own is not None and isinstance(own.get("running"), bool):
        return bool(own["running"])
    said = [e["running"] for e in others if isinstance(e.get("running"), bool)]
    if not said:
        return None
    return all(said)


def alarms_of(erlang_name: str, entries: Sequence[Mapping[str, Any]],
              observations: Sequence[Observation]) -> tuple[str, ...]:
    """Alarms on a node: from the alarms health check when any node answered it (it is
    current), else from the /api/nodes entries (statistics, up to one interval behind)."""
    found: set[str] = set()
    checks = [o.alarms for o in observations if o.alarms is not None]
    if checks:
        found = {resource for alarms in checks for node, resource in alarms if node == erlang_name}
    else:
        found = {resource for e in entries for key, resource in ALARM_KEYS if e.get(key) is True}
    order = [r for _, r in ALARM_KEYS]
    return tuple(sorted(found, key=lambda r: (order.index(r) if r in order else len(order), r)))


def _first(key: str, own: Mapping[str, Any] | None, others: Sequence[Mapping[str, Any]]) -> Any:
    for e in ([own] if own is not None else []) + list(others):
        if key in e:
            return e[key]
    return None


def usage_problem(name: str, what: str, used: int | None, total: int | None, limit: float) -> str | None:
    """``"rabbit@a: 95% of file descriptors in use (950 of 1000)"`` when at or over ``limit``."""
    if used is None or not total:
        return None
    ratio = used / total
    if ratio < limit:
        return None
    return f"{name}: {ratio:.0%} of {what} in use ({used} of {total})"


def node_state(o: Observation, observations: Sequence[Observation], t: Thresholds) -> tuple[NodeState, list[Problem]]:
    """One node's state and the problems it adds to the cluster's (each at cluster level)."""
    own, others = _entries_for(o.erlang_name, observations)
    entries = ([own] if own is not None else []) + others
    running = running_of(own, others)
    partitions = tuple(str(p) for p in (_first("partitions", own, others) or ()))
    alarms = alarms_of(o.erlang_name, entries, observations)
    fd_used, fd_total = _int(_first("fd_used", own, others)), _int(_first("fd_total", own, others))
    sk_used, sk_total = _int(_first("sockets_used", own, others)), _int(_first("sockets_total", own, others))
    view = None if o.cluster is None else tuple(sorted(str(e.get("name")) for e in o.cluster))
    problems: list[Problem] = []
    node_status = Status.PASSING
    error: str | None = None

    def add(status: Status, text: str, node_level: Status | None = None, rank: int = 1) -> None:
        nonlocal node_status
        problems.append(Problem(status, text, rank))
        node_status = max(node_status, node_level if node_level is not None else status)

    if running is False:
        error = "not running" + (f" (management API: {o.error})" if o.error and not o.answered else "")
        add(Status.WARNING, f"{o.node}: not running", Status.CRITICAL, rank=0)
    elif not o.answered:
        error = f"management API not answering: {o.error}" if o.error else "management API not answering"
        add(Status.WARNING, f"{o.node}: {error}", Status.CRITICAL, rank=0)
    elif o.cluster is None:
        error = f"cluster view unavailable: {o.cluster_error}"
        add(Status.WARNING, f"{o.node}: {error}")
    for a in alarms:
        add(Status.WARNING, f"{a} alarm on {o.node}")
    if partitions:
        add(Status.WARNING, f"{o.node}: partitioned from {', '.join(partitions)}")
    for what, used, total in (("file descriptors", fd_used, fd_total), ("sockets", sk_used, sk_total)):
        text = usage_problem(o.node, what, used, total, t.nearly_full)
        if text:
            add(Status.WARNING, text)
    if o.quorum_critical:
        add(Status.WARNING, f"{o.node}: quorum critical ({o.quorum_critical})")
    amqp_ms = amqp_error = None
    if o.amqp is not None:
        amqp_ms, amqp_error = o.amqp.ms, o.amqp.error
        if not o.amqp.ok and running is not False and o.answered:
            add(Status.WARNING, f"{o.node}: AMQP round trip failed ({o.amqp.error})", Status.CRITICAL)
    state = NodeState(
        name=o.node, status=node_status, running=running, reachable=o.answered, partitions=partitions, alarms=alarms,
        fd_used=fd_used, fd_total=fd_total, sockets_used=sk_used, sockets_total=sk_total,
        mem_used=_int(_first("mem_used", own, others)), mem_limit=_int(_first("mem_limit", own, others)),
        cluster_view=view, quorum_critical=o.quorum_critical, amqp_roundtrip_ms=amqp_ms,
        amqp_error=amqp_error, error=error,
    )
    return state, problems


def membership_problems(observations: Sequence[Observation]) -> list[Problem]:
    """Nodes that list different members disagree about the cluster; a configured node none lists is outside it."""
    views = {o.node: frozenset(str(e.get("name")) for e in o.cluster) for o in observations if o.cluster is not None}
    if not views:
        return []
    if len(set(views.values())) > 1:
        seen = "; ".join(f"{n} sees {', '.join(sorted(v))}" for n, v in views.items())
        return [Problem(Status.WARNING, f"cluster membership differs: {seen}")]
    members = next(iter(views.values()))
    return [Problem(Status.WARNING, f"{o.node}: not a member of the cluster that {', '.join(views)} see")
            for o in observations if o.erlang_name not in members]


# --------------------------------------------------------------------------- queues


def queue_states(names: Sequence[str], vhost: str, listing: QueueListing | None, depth: int) -> list[QueueState]:
    """The configured queues: depth, consumers, and a warning for a backlog nobody consumes."""
    if listing is None or listing.queues is None:
        return [QueueState(n, None) for n in names]
    by_name = {str(q.get("name")): q for q in listing.queues if q.get("vhost", vhost) == vhost}
    out: list[QueueState] = []
    for n in names:
        q = by_name.get(n)
        if q is None:
            out.append(QueueState(n, False))
            continue
        messages, consumers = _int(q.get("messages")), _int(q.get("consumers"))
        out.append(QueueState(n, True, messages, consumers, q.get("type") if isinstance(q.get("type"), str) else None,
                              queue_warning(n, messages, consumers, depth)))
    return out


def queue_warning(name: str, messages: int | None, consumers: int | None, depth: int) -> str | None:
    if messages is None:
        return None
    parts = []
    if messages > depth:
        parts.append(f"more than {depth}")
    if messages > 0 and consumers == 0:
        parts.append("no consumer")
    if not parts:
        return None
    return f"queue {name}: {messages} messages, " + " and ".join(parts)


def has_quorum_queues(listing: QueueListing | None) -> bool:
    return listing is not None and any(q.get("type") == "quorum" for q in listing.queues or ())


# --------------------------------------------------------------------------- the whole


def assess(
    observations: Sequence[Observation],
    roundtrip: RoundTrip | None,
    listing: QueueListing | None = None,
    queues: Sequence[str] = (),
    vhost: str = "/",
    thresholds: Thresholds | None = None,
) -> Assessment:
    """The cluster's status from one round's observations. ``roundtrip`` is None when no
    ``amqp_url`` is configured; ``listing`` None when no node could be asked for queues."""
    t = thresholds or Thresholds()
    critical: list[Problem] = []
    warnings: list[Problem] = []
    states: list[NodeState] = []
    for o in observations:
        state, found = node_state(o, observations, t)
        states.append(state)
        warnings += found
    warnings += membership_problems(observations)
    answering = [o for o in observations if o.answered]
    if observations and not answering:
        detail = "; ".join(f"{o.node}: {o.error or 'no answer'}" for o in observations)
        critical.append(Problem(Status.CRITICAL, f"no RabbitMQ management API answers ({detail})"))
        warnings = [w for w in warnings if w.rank != 0]  # each node's "not answering" is in the line above
    down = [s for s in states if s.running is False or not s.reachable]
    if answering and len(down) * 2 > len(states):
        critical.append(Problem(Status.CRITICAL, f"majority of RabbitMQ nodes down: {len(down)} of {len(states)} "
                                                 f"({', '.join(s.name for s in down)})"))
    any_alarm = any(s.alarms for s in states)
    node_trips = [o.amqp for o in observations if o.amqp is not None]
    main = roundtrip
    if main is None and node_trips:  # no cluster URL: the best of the nodes' own listeners stands for it
        ok = [r for r in node_trips if r.ok]
        main = min(ok, key=lambda r: r.ms or 0.0) if ok else RoundTrip(None, "failed on every node")
    if main is not None and not main.ok:
        if any_alarm:
            warnings.append(Problem(Status.WARNING, f"AMQP round trip failed while a resource alarm blocks "
                                                    f"publishers ({main.error})"))
        else:
            critical.append(Problem(Status.CRITICAL, f"AMQP round trip failed: {main.error}"))
    qs = queue_states(queues, vhost, listing, t.queue_warning_depth)
    warnings += [Problem(Status.WARNING, q.warning) for q in qs if q.warning]
    if answering and listing is not None and listing.queues is None and queues:
        warnings.append(Problem(Status.WARNING, f"queues unknown: {listing.error}"))
    problems = tuple(critical + sorted(_dedup(warnings), key=lambda p: p.rank))
    status = worst(p.status for p in problems)
    if problems:
        output = "; ".join(p.text for p in problems)
    else:
        running = sum(1 for s in states if s.running)
        trip = "AMQP round trip not configured" if main is None else f"AMQP round trip {main.ms:.1f} ms"
        output = f"{running} of {len(states)} nodes running; {trip}"
    return Assessment(
        status=status,
        output=output,
        problems=problems,
        nodes=tuple(states),
        queues=tuple(qs),
        amqp_roundtrip_ms=None if main is None else main.ms,
        amqp_error=None if main is None else main.error,
        error="; ".join(p.text for p in critical) or None,
    )


def _dedup(problems: list[Problem]) -> list[Problem]:
    seen: set[str] = set()
    out = []
    for p in problems:
        if p.text not in seen:
            seen.add(p.text)
            out.append(p)
    return out
