"""Gossip over signed HTTP: the thin I/O around the membership core.

Every message is one ``POST /gossip`` whose answer may carry the immediate replies
(an ack to a ping, the state answering a push-pull) so a probe costs one round trip.
Requests and answers are signed (signing.py). What an unauthenticated client may cost is
bounded (api/limits.py): the headers, their freshness and the declared length are checked
before a byte of the body is read; the body is read within a deadline, by at most
``MAX_UNVERIFIED`` requests at once (``MAX_UNVERIFIED_PER_REMOTE`` per address); its
signature is verified before it is parsed. Anything refused is counted by reason, logged
as a rate-limited summary, and never reaches the core.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from haflowd import events
from haflowd.api import limits
from haflowd.clock import SYSTEM_CLOCK, Clock
from haflowd.config import GossipConfig
from haflowd.gossip import signing, summary
from haflowd.gossip.membership import (
    ALIVE,
    DEAD,
    LEFT,
    SUSPECT,
    GossipSettings,
    Membership,
    Message,
    Outgoing,
    UnknownType,
)

PATH = "/gossip"
MAX_BODY = 1024 * 1024
STATE_FILE = "gossip.json"
MAX_SLEEP_S = 0.05
MAX_UNVERIFIED = 32
MAX_UNVERIFIED_PER_REMOTE = 8
CLIENT_KEEPALIVE_S = 2.0
"""Below the listeners' ``limits.KEEPALIVE_S``: we drop an idle connection before the peer
does, so a request never goes out on a connection the peer is closing."""
REJECT_REASONS = (*signing.REASONS, "malformed", "too_large", "length_required", "wrong_method", "timeout",
                  "busy", "bad_request")

log = structlog.get_logger()


def settings_from(cfg: GossipConfig) -> GossipSettings:
    return GossipSettings(
        probe_interval=cfg.probe_interval,
        probe_timeout=cfg.probe_timeout,
        indirect_checks=cfg.indirect_checks,
        suspicion_mult=cfg.suspicion_mult,
        reap_after=cfg.reap_after,
        tombstone=cfg.tombstone,
    )


def keyring_from(cfg: GossipConfig) -> signing.Keyring:
    return signing.Keyring([base64.b64decode(k.reveal()) for k in cfg.keys])


class GossipNode:
    """One daemon's membership: the core, its listener, its client, its timers."""

    def __init__(self, cfg: GossipConfig, node: str, data_dir: Path, clock: Clock = SYSTEM_CLOCK,
                 summary: Callable[[], dict[str, Any]] | None = None) -> None:
        self.cfg = cfg
        self.node = node
        self.clock = clock
        self.state_path = data_dir / STATE_FILE
        self.summary = summary
        self.address = str(cfg.advertise)
        ring = keyring_from(cfg)
        self.signer = signing.Signer(ring, node, clock)
        self.verifier = signing.Verifier(ring, clock)
        incarnation = self._load_incarnation() + 1  # a restarted node outranks its dead past
        self.core = Membership(node, self.address, clock, settings_from(cfg), incarnation=incarnation,
                               seeds=[str(s) for s in cfg.seeds])
        self._saved_incarnation = -1
        self._save_incarnation()
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        self.refusals = limits.RefusalLog("gossip_rejected", clock)
        self._unverified = limits.InflightLimit(MAX_UNVERIFIED, MAX_UNVERIFIED_PER_REMOTE)
        self.send_errors = 0
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self.left = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     **limits.runner_options(lambda remote: self._reject("bad_request", remote)))
        await self._runner.setup()
        site = limits.GuardedSite(self._runner, self.cfg.listen.host, self.cfg.listen.port,
                                  on_busy=lambda remote: self._reject("busy", remote))
        await site.start()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit_per_host=8, keepalive_timeout=CLIENT_KEEPALIVE_S),
            timeout=aiohttp.ClientTimeout(total=max(1.0, 8 * self.cfg.probe_timeout), connect=1.0),
        )
        self._dispatch(self.core.start())
        self._task = asyncio.create_task(self._run(), name="gossip")
        log.info("gossip_started", listen=str(self.cfg.listen), advertise=self.address,
                 incarnation=self.core.incarnation, seeds=[str(s) for s in self.cfg.seeds])

    async def leave(self, timeout: float = 2.0) -> None:
        """Tell peers we are leaving and wait (bounded) until they were told."""
        if self.left:
            return
        self.left = True
        sends = self._dispatch(self.core.leave())
        if sends:
            await asyncio.wait(sends, timeout=timeout)
        self._save_incarnation()
        log.info("gossip_left", incarnation=self.core.incarnation, told=len(sends))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for t in list(self._sends):
            t.cancel()
        if self._sends:
            await asyncio.wait(self._sends, timeout=1.0)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def set_keys(self, cfg: GossipConfig) -> None:
        """Key rotation on reload: the first key signs, all verify, nothing else changes."""
        ring = keyring_from(cfg)
        self.signer.set_keyring(ring)
        self.verifier.set_keyring(ring)
        self.cfg = cfg

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        summary_every = 1.0
        next_summary = 0.0
        while True:
            now = self.clock.monotonic()
            if self.summary is not None and now >= next_summary:
                next_summary = now + summary_every
                try:
                    self.core.set_summary(self.summary())
                except Exception:
                    log.exception("gossip_summary_failed")
            self._dispatch(self.core.tick())
            self._after_core()
            self.refusals.flush()
            delay = min(MAX_SLEEP_S, max(0.0, self.core.next_wakeup() - self.clock.monotonic()))
            expected = self.clock.monotonic() + delay
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            lag = self.clock.monotonic() - expected
            if lag > 0:
                self.core.note_lag(lag)

    def _after_core(self) -> None:
        for c in self.core.drain_changes():
            if c.node == self.node and c.new == "conflict":
                log.error("gossip_name_conflict", peer=c.node, detail=c.reason)
                continue
            level = "warning" if c.new in (SUSPECT, DEAD) else "info"
            # local_health: this node's Lifeguard multiplier then; a suspicion runs (1 + it) times as long
            getattr(log, level)("peer_status", peer=c.node, old=c.old, new=c.new, incarnation=c.incarnation,
                                reason=c.reason, local_health=self.core.lhm)
            if f"member-{c.new}" in events.EVENT_TYPES and c.old != c.new:
                events.emit(f"member-{c.new}", c.node, {"old": c.old, "incarnation": c.incarnation,
                                                        "reason": c.reason})
        self._save_incarnation()

    def _dispatch(self, out: list[Outgoing]) -> list[asyncio.Task[None]]:
        tasks = []
        for o in out:
            t = asyncio.create_task(self._send(o))
            self._sends.add(t)
            t.add_done_callback(self._sends.discard)
            tasks.append(t)
        return tasks

    async def _send(self, o: Outgoing) -> None:
        assert self._session is not None
        body = json.dumps(o.message.to_json(), separators=(",", ":")).encode()
        headers = self.signer.sign_request("POST", PATH, body)
        headers["Content-Type"] = "application/json"
        try:
            async with self._session.post(f"http://{o.address}{PATH}", data=body, headers=headers) as resp:
                data = await _read_capped(resp.content)
                if resp.status != 200:
                    self.send_errors += 1
                    if resp.status == 401:
                        log.warning("gossip_refused_by_peer", address=o.address, status=resp.status)
                    return
                verdict = self.verifier.verify_response(PATH, headers[signing.NONCE], resp.headers, data)
                if not verdict.ok:
                    self._reject(verdict.reason or "bad_signature", o.address)
                    return
                replies = _parse_messages(data)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, _TooLarge):
            self.send_errors += 1
            return
        for msg in replies:
            self._dispatch(self.core.handle(msg))
        if replies:
            self._after_core()
            self._wake.set()

    # ------------------------------------------------------------------ the listener

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        remote = request.remote or "?"
        if request.method != "POST":
            return self._refuse("wrong_method", 405, remote)
        verdict = self.verifier.precheck_request(request.headers)  # before a byte of the body
        if not verdict.ok:
            return self._refuse(verdict.reason or "bad_signature", 401, remote)
        if request.content_length is None:  # chunked: its size cannot be known before reading it
            return self._refuse("length_required", 413, remote)
        if request.content_length > MAX_BODY:
            return self._refuse("too_large", 413, remote)
        if not self._unverified.try_enter(remote):
            return self._refuse("busy", 503, remote)
        try:
            try:
                async with asyncio.timeout(limits.BODY_DEADLINE_S):
                    body = await _read_capped(request.content)
            except TimeoutError:
                return self._refuse("timeout", 408, remote)
            except _TooLarge:
                return self._refuse("too_large", 413, remote)
            except (aiohttp.ClientError, OSError, web.RequestPayloadError):  # the last: a body that does not decode
                return self._refuse("malformed", 400, remote)
            verdict = self.verifier.verify_request(request.method, request.path_qs, request.headers, body)
        finally:
            self._unverified.leave(remote)
        if not verdict.ok:  # before the body is parsed
            return self._refuse(verdict.reason or "bad_signature", 401, remote)
        try:
            msg = Message.from_json(json.loads(body))
            if msg.source != verdict.sender:
                raise ValueError("sender header and body disagree")
        except UnknownType as e:  # a newer peer's message type: nothing here to act on, no error
            log.debug("gossip_unknown_type", type=str(e), peer=verdict.sender)
            return self._signed(request, b"[]")
        except (ValueError, RecursionError):
            return self._refuse("malformed", 400, remote)
        out = self.core.handle(msg)
        replies = [o.message for o in out if o.address == msg.source_addr]
        self._dispatch([o for o in out if o.address != msg.source_addr])
        self._after_core()
        self._wake.set()
        return self._signed(request, json.dumps([m.to_json() for m in replies], separators=(",", ":")).encode())

    def _signed(self, request: web.Request, payload: bytes) -> web.Response:
        headers = self.signer.sign_response(PATH, request.headers[signing.NONCE], payload)
        headers["Content-Type"] = "application/json"
        return web.Response(body=payload, headers=headers)

    def _refuse(self, reason: str, status: int, remote: str) -> web.Response:
        """A refusal closes the connection: whatever the client still sends is not read."""
        self._reject(reason, remote)
        resp = web.Response(status=status, text=json.dumps({"error": reason}), content_type="application/json")
        resp.force_close()
        return resp

    def _reject(self, reason: str, peer: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        self.refusals.refused(reason, peer)

    # ------------------------------------------------------------------ state

    def _load_incarnation(self) -> int:
        try:
            value = json.loads(self.state_path.read_text()).get("incarnation", 0)
            return value if isinstance(value, int) and value >= 0 else 0
        except (OSError, ValueError, AttributeError):
            return 0

    def _save_incarnation(self) -> None:
        inc = self.core.incarnation
        if inc == self._saved_incarnation:
            return
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"incarnation": inc}))
            tmp.replace(self.state_path)
            self._saved_incarnation = inc
        except OSError as e:
            log.error("gossip_state_write_failed", path=str(self.state_path), error=str(e))

    # ------------------------------------------------------------------ views

    def peers(self) -> list[dict[str, Any]]:
        now = self.clock.monotonic()
        wall_offset = self.clock.wall() - now
        out = []
        for m in sorted(self.core.members.values(), key=lambda m: m.name):
            me = m.name == self.node
            since = self.core.suspect_since(m.name)
            out.append({
                "name": m.name,
                "address": m.address,
                "status": m.status,
                "incarnation": m.incarnation,
                "last_seen_s": 0.0 if me else (round(now - m.last_seen, 3) if m.last_seen > -math.inf else None),
                "rtt_ms": round(m.rtt * 1000, 2) if m.rtt is not None else None,
                "suspect_since": round(since + wall_offset, 3) if since is not None else None,
                "self": me,
                "maintenance": self._maintenance(m.name),
                "version": self._version(m.name),
            })
        return out

    def _own_summary(self) -> dict[str, Any] | None:
        try:
            return self.summary() if self.summary is not None else None
        except Exception:
            return None

    def _version(self, name: str) -> str | None:
        """The haflowd version the node gossips in its summary (None: not heard yet)."""
        if name == self.node:
            return summary.normalize(self._own_summary()).version
        s = self.core.summaries.get(name)
        return summary.normalize(s.data if s is not None else None).version

    def force_leave(self, name: str) -> dict[str, Any]:
        """``haflowctl force-leave``: a dead or suspect member becomes ``left`` here and, by
        gossip, everywhere. ``ok`` False with ``error`` and ``status`` (404 unknown, 409
        refused: alive here, or this node) otherwise."""
        try:
            result, out = self.core.force_leave(name)
        except LookupError as e:
            return {"ok": False, "status": 404, "error": str(e)}
        except ValueError as e:
            return {"ok": False, "status": 409, "error": str(e)}
        self._dispatch(out)
        self._after_core()
        self._wake.set()
        log.warning("gossip_force_leave", peer=name, result=result)
        return {"ok": True, "status": 200, "result": result, "peer": name}

    def _maintenance(self, name: str) -> bool:
        """Whether the node gossips that it is drained (this node: its own summary)."""
        if name == self.node:
            try:
                return self.summary is not None and self.summary().get("maintenance") is True
            except Exception:
                return False
        s = self.core.summaries.get(name)
        return summary.normalize(s.data if s is not None else None).maintenance

    def cluster(self, own: dict[str, Any]) -> list[dict[str, Any]]:
        """Every node's last known summary; a dead node's is marked stale."""
        nodes = []
        for m in sorted(self.core.members.values(), key=lambda m: m.name):
            if m.status == LEFT:
                continue
            s = self.core.summaries.get(m.name)
            # a peer's summary is whatever its version sends: only its known fields, checked
            data = summary.normalize(own if m.name == self.node else s.data if s is not None else None)
            alive = m.status in (ALIVE, SUSPECT)
            node = {"name": m.name, "member_status": m.status, "status": data.status if alive else "critical",
                    "stale": not alive, "checks": data.checks, "components": data.components,
                    "version": data.version, "maintenance": data.maintenance}
            if data.reported_status is not None:
                node["reported_status"] = data.reported_status
            nodes.append(node)
        return nodes

    def message_counts(self) -> dict[tuple[str, str], int]:
        out = {}
        for key, n in self.core.counters.items():
            direction, type_ = key.split(":", 1)
            out[(direction, type_)] = n
        return out


class _TooLarge(Exception):
    pass


async def _read_capped(stream: aiohttp.StreamReader) -> bytes:
    """The whole body (``read(n)`` returns only what has arrived), but never over MAX_BODY."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_BODY:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_messages(data: bytes) -> list[Message]:
    items = json.loads(data) if data else []
    if not isinstance(items, list):
        raise ValueError("answer is not a list")
    out = []
    for x in items:
        try:
            out.append(Message.from_json(x))
        except UnknownType:  # a newer peer's reply of a type we do not know: the rest still count
            continue
    return out
