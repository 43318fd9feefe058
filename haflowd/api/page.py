"""``GET /``: the status page, one server-rendered HTML document.

It shows what this node sees, read through the same :class:`~haflowd.api.state.StateView`
methods as the JSON routes (``cluster_health``, ``peers``, ``components``, the checks'
``snapshot``), so it never computes health on its own and never waits on I/O. Nothing is
fetched from elsewhere (inline CSS, no script, no font, no image): it works on an
air-gapped node, and the Content-Security-Policy below forbids anything else. It reloads
itself every ``REFRESH_S`` seconds with ``<meta http-equiv="refresh">``.

Every value is escaped: a peer's name and summary, a component's note and a check's output
may hold anything. A status is a coloured badge that also says the word, so the page reads
the same without colour. Colours come from a fixed table of known words; an unknown word
(from a newer peer, or a hostile one) is grey.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

from haflowd import __version__
from haflowd.api.state import StateView

REFRESH_S = 5
MAX_CONFLICT_FILES = 5  # per peer; the rest is counted

GOOD = ("passing", "alive", "running", "ok", "healthy", "up", "yes")
WARN = ("warning", "suspect", "starting", "backoff", "stopping", "pending", "skipped", "stale", "running sync")
BAD = ("critical", "dead", "fatal", "failing", "down", "unhealthy", "split brain")
KIND = {**dict.fromkeys(GOOD, "good"), **dict.fromkeys(WARN, "warn"), **dict.fromkeys(BAD, "bad")}

CSS = """
:root{--good:#1a7f37;--warn:#9a6700;--bad:#cf222e;--muted:#6e7781;--line:#d0d7de;--head:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;padding:16px 24px;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:#1f2328;background:#fff}
header{display:flex;align-items:baseline;gap:12px;flex-wrap:wrap;border-bottom:2px solid var(--line);
padding-bottom:8px}
h1{font-size:20px;margin:0}
h2{font-size:15px;margin:18px 0 6px}
.meta,.note,.empty{color:var(--muted)}
.meta{font-size:12px}
p.meta,p.empty{margin:0 0 6px}
table{border-collapse:collapse;width:100%;margin-bottom:4px}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid var(--line);vertical-align:top;white-space:nowrap}
th{background:var(--head);font-weight:600;font-size:12px;color:#424a53}
th.num{text-align:right}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td b{white-space:normal;overflow-wrap:anywhere}
td .chip{display:inline-block;margin:1px 14px 1px 0}
tr.sub td{border-top:2px solid var(--line)}
.b{display:inline-block;min-width:58px;padding:0 6px;border-radius:10px;font-size:12px;font-weight:600;
text-align:center;color:#fff;background:var(--muted)}
.b.good{background:var(--good)}.b.warn{background:var(--warn)}.b.bad{background:var(--bad)}
.big{font-size:14px;padding:1px 10px}
.note{font-size:12px;white-space:normal;overflow-wrap:anywhere}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
footer{margin-top:18px;font-size:12px;color:var(--muted)}
footer a{color:var(--muted)}
"""

_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
HEADERS = {
    # only the inline style may apply; no script, no fetch, no frame, no form
    "Content-Security-Policy": (f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; base-uri 'none'; "
                                "form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
DASH = "—"


# --------------------------------------------------------------------------- small pieces


def esc(value: Any) -> str:
    """Any value as escaped text; None is a dash."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    return html.escape(str(value), quote=True)


def badge(word: Any, big: bool = False, kind: str | None = None) -> str:
    """The word in a coloured pill: the colour from KIND (grey for a word it does not know)."""
    text = "unknown" if word is None else str(word)
    kind = kind or KIND.get(text.lower(), "muted")
    return f'<span class="b {kind}{" big" if big else ""}">{esc(text)}</span>'


def healthy_badge(healthy: Any) -> str:
    if healthy is True:
        return badge("healthy")
    if healthy is False:
        return badge("unhealthy")
    return '<span class="note">not probed</span>'


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def duration(seconds: Any) -> str:
    if not _number(seconds):
        return DASH
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 120:
        return f"{m} min"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m} min"
    d, h = divmod(h, 24)
    return f"{d} d {h} h"


def utc(ts: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
    except (OverflowError, OSError, ValueError):  # a time no calendar holds: the page still renders
        return "?"


def ago(ts: Any, now: float, never: str = "never") -> str:
    """A wall timestamp (UNIX seconds) as "12 s ago", its UTC time on hover."""
    if not _number(ts):
        return never
    return f'<span title="{utc(ts)}">{duration(now - ts)} ago</span>'


def until(ts: Any, now: float) -> str:
    if not _number(ts):
        return DASH
    return f'<span title="{utc(ts)}">in {duration(ts - now)}</span>' if ts > now else "now"


def num(value: Any, unit: str = "") -> str:
    if not _number(value):
        return DASH
    return f"{value:g}{unit}" if isinstance(value, float) else f"{value}{unit}"


def table(headers: Sequence[str], rows: Iterable[str], empty: str) -> str:
    """A table; a header written ``">name"`` heads a column of numbers (aligned right)."""
    body = "".join(rows)
    if not body:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f'<th class="num">{h[1:]}</th>' if h.startswith(">") else f"<th>{h}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def row(*cells: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<tr{attr}>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in cells) + "</tr>"


def section(ident: str, title: str, summary: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{esc(title)} {summary}</h2>{body}</section>'


# --------------------------------------------------------------------------- sections


def nodes_section(cluster: dict[str, Any], peers: list[dict[str, Any]]) -> str:
    """Every member (``/peers``) with its health and version (``/health/cluster``)."""
    health = {n.get("name"): n for n in cluster.get("nodes", [])}
    rows = []
    seen = set()
    for p in peers:
        name = p.get("name")
        seen.add(name)
        h = health.get(name, {})
        status = h.get("status") if h else None
        reported = h.get("reported_status")
        last = "this node" if p.get("self") else (
            f"{duration(p['last_seen_s'])} ago" if p.get("last_seen_s") is not None else "never")
        rows.append(row(
            f"<b>{esc(name)}</b>" + (' <span class="note">(this node)</span>' if p.get("self") else ""),
            badge(p.get("status")),
            (badge(status) if h else '<span class="note">no summary</span>')
            + (' <span class="note">(last known)</span>' if h.get("stale") else "")
            + (f' <span class="note">sent {esc(reported)}</span>' if reported else ""),
            esc(h.get("version")), f'<td class="num">{num(p.get("incarnation"))}</td>', last,
            f'<td class="num">{num(p.get("rtt_ms"), " ms")}</td>', f"<code>{esc(p.get('address'))}</code>"))
    for name, h in health.items():  # a node in the health view but not a member (not expected)
        if name not in seen:
            rows.append(row(f"<b>{esc(name)}</b>", badge(h.get("member_status")), badge(h.get("status")),
                            esc(h.get("version")), DASH, DASH, DASH, DASH))
    counts: dict[str, int] = {}
    for p in peers:
        counts[str(p.get("status"))] = counts.get(str(p.get("status")), 0) + 1
    summary = '<span class="meta">' + esc(", ".join(f"{n} {s}" for s, n in sorted(counts.items()))) + "</span>"
    return section("nodes", "Nodes", summary, table(
        ("node", "member", "health", "version", ">incarnation", "last seen", ">rtt", "address"), rows,
        "no members"))


def components_section(node: str, own: list[dict[str, Any]]) -> str:
    """This node's components, as the supervisor sees them (``/components``)."""
    rows = [row(f"<b>{esc(node)}</b>", esc(c.get("name")), badge(c.get("state")), healthy_badge(c.get("healthy")),
                duration(c.get("uptime_s")), f'<td class="num">{num(c.get("restarts"))}</td>',
                f'<span class="note">{esc(c.get("note") or "")}</span>')
            for c in own]
    return section("components", "Components", "", table(
        ("node", "component", "state", "health", "uptime", ">restarts", "note"), rows, "no components"))


def peer_components_section(node: str, cluster: dict[str, Any]) -> str:
    """Each peer's components as its gossiped summary says (name, state, healthy), one row a peer."""
    rows = []
    for n in cluster.get("nodes", []):
        if n.get("name") == node:
            continue
        stale = ' <span class="note">(last known)</span>' if n.get("stale") else ""
        chips = "".join(
            f'<span class="chip">{esc(c.get("name"))} {badge(c.get("state"))}'
            + (f" {badge('unhealthy')}" if c.get("healthy") is False else "") + "</span>"
            for c in n.get("components", []))
        rows.append(row(f"<b>{esc(n.get('name'))}</b>{stale}", chips or '<span class="note">none</span>'))
    if not rows:
        return ""
    return section("peer-components", "Peers' components", '<span class="meta">from their gossiped summaries</span>',
                   table(("node", "components"), rows, ""))


def checks_section(node: str, own: dict[str, Any], cluster: dict[str, Any], now: float) -> str:
    """This node's checks (as ``/health``), then each peer's (as ``/health/cluster``)."""
    rows = [row(f"<b>{esc(node)}</b>", esc(c.get("name")), badge(c.get("status")),
                ago(c.get("checked_at"), now), f'<span class="note">{esc(c.get("output"))}</span>')
            for c in own.get("checks", [])]
    for n in cluster.get("nodes", []):
        if n.get("name") == node:
            continue
        when = "last known" if n.get("stale") else "gossiped"
        for i, c in enumerate(n.get("checks", [])):
            rows.append(row(f"<b>{esc(n.get('name'))}</b>", esc(c.get("name")), badge(c.get("status")),
                            f'<span class="note">{when}</span>', f'<span class="note">{esc(c.get("output"))}</span>',
                            cls="sub" if i == 0 else ""))
    return section("checks", "Checks", badge(own.get("status")), table(
        ("node", "check", "status", "checked", "output"), rows, "no checks"))


def sync_section(snap: dict[str, Any], now: float) -> str:
    if not snap.get("enabled", True):
        return section("sync", "DAG sync", badge("disabled"), '<p class="empty">sync is disabled in the config</p>')
    rows = []
    for name, p in sorted(snap.get("peers", {}).items()):
        conflicts = list(p.get("conflicts") or [])
        shown = ", ".join(str(f) for f in conflicts[:MAX_CONFLICT_FILES])
        more = f" and {len(conflicts) - MAX_CONFLICT_FILES} more" if len(conflicts) > MAX_CONFLICT_FILES else ""
        conflict_cell = "none" if not conflicts else (
            f'{badge(str(len(conflicts)), kind="bad")} <span class="note">{esc(shown + more)}</span>')
        rows.append(row(f"<b>{esc(name)}</b>", badge(p.get("state")), ago(p.get("last_success"), now),
                        f'<td class="num">{num(p.get("attempts"))}</td>', until(p.get("next_retry"), now),
                        f'<td class="num">{num(p.get("pending_files"))}</td>', conflict_cell,
                        f'<span class="note">{esc(p.get("last_error") or "")}</span>'))
    run = "running sync" if snap.get("running") else None
    head = (f'<p class="meta">last run {ago(snap.get("last_run"), now)} ({esc(snap.get("last_result"))}), '
            f'last success {ago(snap.get("last_success"), now)}, next {until(snap.get("next_run"), now)}</p>')
    return section("sync", "DAG sync", badge(run) if run else "", head + table(
        ("peer", "state", "last success", ">attempts", "next retry", ">pending files", "conflicts", "last error"),
        rows, "no peers to sync with"))


def postgres_section(snap: dict[str, Any], now: float) -> str:
    rows = [row(f"<b>{esc(n.get('name'))}</b>", badge("up" if n.get("up") else "down"), esc(n.get("role")),
                f'<td class="num">{num(n.get("lag_bytes"), " B")}</td>',
                f'<td class="num">{num(n.get("lag_seconds"), " s")}</td>',
                f'<td class="num">{num(n.get("timeline"))}</td>',
                f'<span class="note">{esc(n.get("error") or "")}</span>')
            for n in snap.get("nodes", [])]
    flags = (" " + badge("split brain")) if snap.get("split_brain") else ""
    flags += (" " + badge("stale")) if snap.get("stale") else ""
    head = (f'<p class="meta">primary {esc(snap.get("primary") or "none")}, '
            f'checked {ago(snap.get("checked_at"), now)}: {esc(snap.get("output"))}</p>')
    return section("postgres", "PostgreSQL", badge(snap.get("status")) + flags, head + table(
        ("node", "up", "role", ">lag", ">lag time", ">timeline", "error"), rows, "no nodes"))


def rabbitmq_section(snap: dict[str, Any], now: float) -> str:
    rows = []
    for n in snap.get("nodes", []):
        running = n.get("running")
        rows.append(row(f"<b>{esc(n.get('name'))}</b>", badge(n.get("status")),
                        badge("yes" if running else "down") if running is not None else DASH,
                        " ".join(badge(p, kind="bad") for p in n["partitions"]) if n.get("partitions") else "none",
                        " ".join(badge(a, kind="bad") for a in n["alarms"]) if n.get("alarms") else "none",
                        f'<td class="num">{num(n.get("amqp_roundtrip_ms"), " ms")}</td>',
                        f'<span class="note">{esc(n.get("error") or n.get("amqp_error") or "")}</span>'))
    flags = (" " + badge("stale")) if snap.get("stale") else ""
    amqp = snap.get("amqp_roundtrip_ms")
    trip = f"{num(amqp, ' ms')}" if amqp is not None else f"failed: {esc(snap.get('amqp_error'))}"
    head = (f'<p class="meta">AMQP round trip {trip}, checked {ago(snap.get("checked_at"), now)}: '
            f'{esc(snap.get("output"))}</p>')
    return section("rabbitmq", "RabbitMQ", badge(snap.get("status")) + flags, head + table(
        ("node", "status", "running", "partitions", "alarms", ">AMQP round trip", "error"), rows, "no nodes"))


# --------------------------------------------------------------------------- the page


def render(state: StateView) -> str:
    """The whole page, from the state the JSON routes read (no I/O)."""
    now = state.clock.wall()
    node = state.node
    cluster = state.cluster_health()  # as GET /health/cluster
    own_health = state.registry.to_json(node)  # as GET /health
    parts = [
        nodes_section(cluster, state.peers()),  # as GET /peers
        components_section(node, [c.to_json() for c in state.components()]),  # as GET /components
        peer_components_section(node, cluster),
        checks_section(node, own_health, cluster, now),
    ]
    links = ["/health/cluster", "/peers", "/components", "/status"]
    if state.sync is not None:
        parts.append(sync_section(state.sync.snapshot(), now))  # as GET /sync
        links.append("/sync")
    if state.postgres is not None:
        parts.append(postgres_section(state.postgres.snapshot(), now))  # as GET /postgres
        links.append("/postgres")
    if state.rabbitmq is not None:
        parts.append(rabbitmq_section(state.rabbitmq.snapshot(), now))  # as GET /rabbitmq
        links.append("/rabbitmq")
    status = cluster.get("status")
    footer = " · ".join(f'<a href="{p}">{p}</a>' for p in [*links, "/metrics", "/openapi.json"])
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>haflowd {esc(node)}: {esc(status)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>haflowd · {esc(node)}</h1>"
        f'<span>cluster {badge(status, big=True)}</span>'
        f'<span class="meta">haflowd {esc(__version__)} · {utc(now)} · refreshes every {REFRESH_S} s</span></header>'
        + "".join(parts)
        + f"<footer>The same state as JSON: {footer}</footer></body></html>\n"
    )
