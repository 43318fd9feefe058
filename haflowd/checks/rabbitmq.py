"""The RabbitMQ checker: asks every node's management API and does an AMQP round trip.

Every ``interval`` one round runs, each request bounded by ``timeout``:

1. at once: per node ``/api/overview`` (its node name), ``/api/nodes`` (the cluster as
   it sees it) and ``/api/health/checks/alarms``; and the AMQP round trips (the cluster
   URL and each node's own listener, when configured) in the background;
2. ``/api/queues`` from the first node whose cluster view answered (Celery's queues,
   and whether any quorum queue exists);
3. only when one does, ``/api/health/checks/node-is-quorum-critical`` on every node.

:mod:`haflowd.checks.rabbitmq_rules` decides what the answers mean; this module only
moves bytes. A hung broker (a SIGSTOPped node answers TCP and then nothing) costs a
round at most about three timeouts; the whole round is also bounded as a last resort.

Passwords (the management ``password`` and the one inside each ``amqp_url``) are
scrubbed from every string this module produces: errors, outputs and log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Coroutine, Iterable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import aio_pika
import aiohttp
import structlog
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from prometheus_client.core import GaugeMetricFamily, Metric

from haflowd import secrets
from haflowd.checks import Checker
from haflowd.checks import rabbitmq_rules as rules
from haflowd.clock import Clock
from haflowd.config import RabbitConfig, RabbitNode, Secret, format_duration
from haflowd.errors import HaflowdError
from haflowd.health import CheckRegistry, Status

NODE_COLUMNS = ("name,running,partitions,mem_alarm,disk_free_alarm,fd_used,fd_total,sockets_used,sockets_total,"
                "mem_used,mem_limit")
QUEUE_COLUMNS = "name,vhost,type,messages,consumers"
T = TypeVar("T")


class ManagementError(HaflowdError):
    """A management API answer we cannot use (an HTTP error, not JSON)."""


class Scrubber(secrets.Scrubber):
    """Masks the section's secrets (every spelling) and any ``user:password@`` in a URL."""

    def __init__(self, known: Iterable[str]) -> None:
        super().__init__(known, min_length=3)

    @classmethod
    def for_config(cls, cfg: RabbitConfig) -> Scrubber:
        return cls(secrets.config_secrets(cfg))


def describe_error(e: BaseException, timeout: float) -> str:
    """One short line for an operator; secrets are scrubbed by the caller."""
    if isinstance(e, TimeoutError):
        return f"timeout after {format_duration(timeout)}"
    if isinstance(e, aiohttp.ClientConnectorError):
        return f"cannot connect: {e.os_error.strerror or e.os_error}"
    if isinstance(e, aio_pika.exceptions.ProbableAuthenticationError | aio_pika.exceptions.AuthenticationError):
        return "AMQP login refused (check the user and password in amqp_url)"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    if isinstance(e, aio_pika.exceptions.AMQPConnectionError) and e.args:
        first = e.args[0]
        if isinstance(first, OSError) and first.strerror:
            return first.strerror
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# --------------------------------------------------------------------------- bounds

_ABANDONED: set[asyncio.Task[Any]] = set()


def _abandon(task: asyncio.Task[Any]) -> None:
    """Cancel a task and do not wait for it: its cleanup may itself hang on a hung peer."""
    task.cancel()
    _ABANDONED.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        _ABANDONED.discard(t)
        if not t.cancelled():
            t.exception()  # retrieved: no "never retrieved" noise

    task.add_done_callback(done)


async def bounded(coro: Coroutine[Any, Any, T], timeout: float) -> T:
    """``await coro`` for at most ``timeout`` seconds, then TimeoutError at once.

    Unlike ``asyncio.wait_for``, this does not wait for the cancelled coroutine to finish:
    aio-pika closes a channel on cancellation, and on a blocked or hung connection that
    close never ends. The loop must not wait on it.
    """
    task = asyncio.ensure_future(coro)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        _abandon(task)
        raise
    if task in done:
        return task.result()
    _abandon(task)
    raise TimeoutError


# --------------------------------------------------------------------------- AMQP


class AmqpProbe:
    """A publish/consume round trip through a private, exclusive, auto-deleted queue.

    One connection is reused from round to round. On any failure (a timeout included)
    it is dropped, closed in the background within ``timeout``, and the next round
    connects again: a broken or hung connection never holds up the loop. A plain
    connection rather than aio-pika's robust one: its background reconnects would hide
    exactly the failures this probe is for.
    """

    def __init__(self, url: Secret, timeout: float, scrub: Scrubber) -> None:
        self.url = url
        self.timeout = timeout
        self.scrub = scrub
        self.conn: AbstractConnection | None = None

    async def roundtrip(self) -> rules.RoundTrip:
        try:
            if self.conn is None or self.conn.is_closed:
                self.conn = None
                self.conn = await bounded(
                    aio_pika.connect(self.url.reveal(), timeout=self.timeout,
                                     client_properties={"connection_name": "haflowd probe"}),
                    self.timeout)
            return rules.RoundTrip(await bounded(self._trip(self.conn), self.timeout))
        except asyncio.CancelledError:
            self.discard()
            raise
        except Exception as e:
            self.discard()
            return rules.RoundTrip(None, self.scrub(describe_error(e, self.timeout)))

    async def _trip(self, conn: AbstractConnection) -> float:
        """Milliseconds from publish to delivery. On failure the channel is left to the
        connection, which is discarded whole."""
        channel = await conn.channel()
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        token = uuid.uuid4().bytes
        got: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        async def on_message(message: AbstractIncomingMessage) -> None:
            if message.body == token and not got.done():
                got.set_result(time.perf_counter())

        tag = await queue.consume(on_message, no_ack=True, exclusive=True)
        sent = time.perf_counter()
        await channel.default_exchange.publish(
            aio_pika.Message(token, delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT, expiration=self.timeout),
            routing_key=queue.name)
        received = await got
        await queue.cancel(tag)  # the last consumer gone: auto-delete removes the queue
        await channel.close()
        return (received - sent) * 1000.0

    def discard(self) -> None:
        """Drop the connection; close it in the background, abandoned after ``timeout``.

        aiormq closes the socket itself when its close is cancelled, so nothing leaks."""
        conn, self.conn = self.conn, None
        if conn is not None:
            _abandon_after(conn.close(), self.timeout)

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await bounded(conn.close(), self.timeout)


def _abandon_after(coro: Coroutine[Any, Any, Any], timeout: float) -> None:
    async def run() -> None:
        with contextlib.suppress(Exception):
            await bounded(coro, timeout)

    task = asyncio.get_running_loop().create_task(run())
    _ABANDONED.add(task)
    task.add_done_callback(_ABANDONED.discard)


# --------------------------------------------------------------------------- the checker


class RabbitChecker(Checker):
    name = "rabbitmq"

    def __init__(self, cfg: RabbitConfig, registry: CheckRegistry, clock: Clock) -> None:
        super().__init__(registry, clock)
        self.cfg = cfg
        self.scrub = Scrubber.for_config(cfg)
        self.thresholds = rules.Thresholds(queue_warning_depth=cfg.queue_warning_depth)
        self.log = structlog.get_logger().bind(check=self.name)
        self.last: rules.Assessment | None = None
        self.erlang_names = {n.name: n.name for n in cfg.nodes}  # learned from /api/overview
        self.main_probe = AmqpProbe(cfg.amqp_url, cfg.timeout, self.scrub) if cfg.amqp_url else None
        self.node_probes = {n.name: AmqpProbe(n.amqp_url, cfg.timeout, self.scrub)
                            for n in cfg.nodes if n.amqp_url is not None}
        self._session: aiohttp.ClientSession | None = None
        self._logged: tuple[Status, tuple[str, ...]] | None = None
        # our results say what went wrong; the libraries' own lines are noise (and carry URLs)
        for name in ("aiormq", "aio_pika"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        interval = self.cfg.interval
        self.registry.set(self.name, Status.WARNING, "not checked yet", interval=self.result_interval())
        while True:
            started = self.clock.monotonic()
            try:
                assessment = await bounded(self.check_once(), self.round_limit())
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug or a hang past every bound: a result all the same
                error = self.scrub(describe_error(e, self.round_limit()))
                assessment = rules.Assessment(Status.CRITICAL, f"check failed: {error}", error=error)
                self.log.error("rabbitmq_check_failed", error=assessment.output)
            self.publish(assessment)
            await asyncio.sleep(max(0.0, started + interval - self.clock.monotonic()))

    def round_limit(self) -> float:
        """Three stages of one timeout each, and some slack."""
        return self.cfg.timeout * 3 + 1.0

    def result_interval(self) -> float:
        """How often a result comes at worst: every interval, or every round when rounds are longer.

        Results go stale after three of these: a checker stuck past every bound, not a slow
        broker (whose rounds end at their timeouts with a result that says so)."""
        return max(self.cfg.interval, self.round_limit())

    def publish(self, a: rules.Assessment) -> None:
        a = _scrubbed(a, self.scrub)
        self.last = a
        self.registry.set(self.name, a.status, a.output, interval=self.result_interval())
        key = (a.status, tuple(p.text for p in a.problems))
        if key != self._logged:
            log = self.log.info if a.status == Status.PASSING else self.log.warning
            log("rabbitmq_status", status=a.status.label, output=a.output)
            self._logged = key

    async def close(self) -> None:
        for probe in [self.main_probe, *self.node_probes.values()]:
            if probe is not None:
                await probe.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ one round

    async def check_once(self) -> rules.Assessment:
        if self._session is None:
            # no keep-alive: an idle connection held open makes the broker's own shutdown
            # (rabbitmqctl stop_app) wait for it, and a round is a handful of requests anyway
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.cfg.timeout),
                                                  connector=aiohttp.TCPConnector(force_close=True))
        trips = asyncio.gather(
            self.main_probe.roundtrip() if self.main_probe else _none(),
            *(p.roundtrip() for p in self.node_probes.values()))
        try:
            answers = await asyncio.gather(*(self._ask_node(n) for n in self.cfg.nodes))
            listing = await self._list_queues([(n, a) for n, a in zip(self.cfg.nodes, answers, strict=True)
                                               if a.cluster is not None])
            quorum: dict[str, str | None] = {}
            if rules.has_quorum_queues(listing):
                asked = [n for n, a in zip(self.cfg.nodes, answers, strict=True) if a.answered]
                reasons = await asyncio.gather(*(self._quorum_critical(n) for n in asked))
                quorum = {n.name: r for n, r in zip(asked, reasons, strict=True)}
            main, *per_node = await trips
        except BaseException:
            trips.cancel()
            raise
        node_trips = dict(zip(self.node_probes, per_node, strict=True))
        observations = [replace(a, quorum_critical=quorum.get(a.node), amqp=node_trips.get(a.node)) for a in answers]
        return rules.assess(observations, main, listing, self.cfg.queues, self.cfg.vhost, self.thresholds)

    async def _get(self, node: RabbitNode, path: str, ok: tuple[int, ...] = (200,)) -> tuple[int, Any]:
        assert self._session is not None
        auth = aiohttp.BasicAuth(node.username, node.password.reveal() if node.password else "")
        async with self._session.get(node.management_url + path, auth=auth, allow_redirects=False) as r:
            if r.status not in ok:
                hint = " (check username and password)" if r.status == 401 else ""
                raise ManagementError(f"HTTP {r.status} {r.reason or ''}".rstrip() + hint)
            try:
                return r.status, await r.json(content_type=None)
            except ValueError:
                raise ManagementError(f"GET {path}: not JSON") from None

    def _error(self, e: BaseException) -> str:
        return self.scrub(describe_error(e, self.cfg.timeout))

    async def _ask_node(self, node: RabbitNode) -> rules.Observation:
        results: list[tuple[int, Any] | BaseException] = list(await asyncio.gather(
            self._get(node, "/api/overview?columns=node"),
            self._get(node, f"/api/nodes?columns={NODE_COLUMNS}"),
            self._get(node, "/api/health/checks/alarms", ok=(200, 503)),
            return_exceptions=True,
        ))
        for e in results:
            if isinstance(e, asyncio.CancelledError):
                raise e
        overview, cluster, alarms = results
        if isinstance(overview, tuple) and isinstance(overview[1], dict) and isinstance(overview[1].get("node"), str):
            self.erlang_names[node.name] = overview[1]["node"]
        cluster_data = cluster_error = None
        if isinstance(cluster, BaseException):
            cluster_error = self._error(cluster)
        elif isinstance(cluster[1], list):
            cluster_data = tuple(e for e in cluster[1] if isinstance(e, dict))
        else:
            cluster_error = "GET /api/nodes: not a list"
        alarm_data = alarms_error = None
        if isinstance(alarms, BaseException):
            alarms_error = self._error(alarms)
        else:
            body = alarms[1] if isinstance(alarms[1], dict) else {}
            alarm_data = tuple((str(a.get("node")), str(a.get("resource"))) for a in body.get("alarms") or ()
                               if isinstance(a, dict))
        return rules.Observation(node=node.name, erlang_name=self.erlang_names[node.name], cluster=cluster_data,
                                 cluster_error=cluster_error, alarms=alarm_data, alarms_error=alarms_error)

    async def _list_queues(self, candidates: list[tuple[RabbitNode, rules.Observation]]) -> rules.QueueListing | None:
        """From the first node whose cluster view answered; None when none did (nobody to ask)."""
        if not candidates:
            return None
        node = candidates[0][0]
        try:
            _, body = await self._get(node, f"/api/queues?columns={QUEUE_COLUMNS}")
        except asyncio.CancelledError:
            raise
        except Exception as e:
            return rules.QueueListing(None, f"{node.name}: {self._error(e)}")
        if not isinstance(body, list):
            return rules.QueueListing(None, f"{node.name}: GET /api/queues: not a list")
        return rules.QueueListing(tuple(q for q in body if isinstance(q, dict)))

    async def _quorum_critical(self, node: RabbitNode) -> str | None:
        """The reason this node is quorum critical, or None (an error is no verdict: other checks see it)."""
        try:
            status, body = await self._get(node, "/api/health/checks/node-is-quorum-critical", ok=(200, 503))
        except asyncio.CancelledError:
            raise
        except Exception:
            return None
        if status != 503:
            return None
        reason = body.get("reason") if isinstance(body, dict) else None
        return str(reason or "stopping this node would lose a quorum queue's majority")

    # ------------------------------------------------------------------ views

    def _effective(self) -> tuple[str, float | None, bool, str]:
        """Status label, checked_at, stale, output: from the registry, staleness applied."""
        for r in self.registry.results():
            if r.name == self.name:
                return r.status.label, r.checked_at, r.output.startswith("stale:"), r.output
        return Status.CRITICAL.label, None, False, "not checked yet"

    def snapshot(self) -> dict[str, Any]:
        """``GET /rabbitmq`` (always 200: the body says how the cluster is; load balancers use /health)."""
        status, checked_at, stale, output = self._effective()
        a = self.last
        if a is None:
            nodes = [rules.NodeState(n.name, Status.WARNING, None, error="not checked yet").to_json()
                     for n in self.cfg.nodes]
            return {"status": status, "checked_at": checked_at, "stale": stale, "output": output, "nodes": nodes,
                    "amqp_roundtrip_ms": None, "amqp_error": None, "queues": [], "problems": [],
                    "error": "not checked yet"}
        return {
            "status": status,
            "checked_at": checked_at,
            "stale": stale,
            "output": output,
            "nodes": [n.to_json() for n in a.nodes],
            "amqp_roundtrip_ms": None if a.amqp_roundtrip_ms is None else round(a.amqp_roundtrip_ms, 3),
            "amqp_error": a.amqp_error,
            "queues": [q.to_json() for q in a.queues],
            "problems": [p.to_json() for p in a.problems],
            "error": output if stale else a.error,
        }

    def collect(self) -> Iterator[Metric]:
        a = self.last
        nodes = a.nodes if a else ()
        running = GaugeMetricFamily("haflowd_rabbitmq_node_running", "1 when the RabbitMQ node runs",
                                    labels=["node"])
        partitions = GaugeMetricFamily("haflowd_rabbitmq_partitions",
                                       "nodes this RabbitMQ node is partitioned from", labels=["node"])
        alarm = GaugeMetricFamily("haflowd_rabbitmq_alarm", "1 while a resource alarm is in effect on the node",
                                  labels=["node", "alarm"])
        reachable = GaugeMetricFamily("haflowd_rabbitmq_node_reachable",
                                      "1 when the node's management API answered the last check", labels=["node"])
        fd_used = GaugeMetricFamily("haflowd_rabbitmq_fd_used", "file descriptors in use", labels=["node"])
        fd_total = GaugeMetricFamily("haflowd_rabbitmq_fd_limit", "file descriptors available (fd_total)",
                                     labels=["node"])
        sk_used = GaugeMetricFamily("haflowd_rabbitmq_sockets_used", "sockets in use", labels=["node"])
        sk_total = GaugeMetricFamily("haflowd_rabbitmq_sockets_limit", "sockets available (sockets_total)",
                                     labels=["node"])
        for n in nodes:
            running.add_metric([n.name], 1 if n.running else 0)
            partitions.add_metric([n.name], len(n.partitions))
            for resource in ("memory", "disk"):
                alarm.add_metric([n.name, resource], 1 if resource in n.alarms else 0)
            reachable.add_metric([n.name], 1 if n.reachable else 0)
            for family, value in ((fd_used, n.fd_used), (fd_total, n.fd_total), (sk_used, n.sockets_used),
                                  (sk_total, n.sockets_total)):
                if value is not None:
                    family.add_metric([n.name], value)
        yield from (running, partitions, alarm, reachable, fd_used, fd_total, sk_used, sk_total)
        trip = GaugeMetricFamily("haflowd_rabbitmq_amqp_roundtrip_seconds",
                                 "the last AMQP publish/consume round trip (absent when it failed)")
        if a is not None and a.amqp_roundtrip_ms is not None:
            trip.add_metric([], a.amqp_roundtrip_ms / 1000.0)
        yield trip
        amqp_up = GaugeMetricFamily("haflowd_rabbitmq_amqp_up", "1 when the last AMQP round trip succeeded")
        if a is not None and (a.amqp_roundtrip_ms is not None or a.amqp_error is not None):
            amqp_up.add_metric([], 1 if a.amqp_error is None else 0)
        yield amqp_up
        messages = GaugeMetricFamily("haflowd_rabbitmq_queue_messages", "messages in a configured queue",
                                     labels=["queue"])
        consumers = GaugeMetricFamily("haflowd_rabbitmq_queue_consumers", "consumers of a configured queue",
                                      labels=["queue"])
        for q in a.queues if a else ():
            if q.messages is not None:
                messages.add_metric([q.name], q.messages)
            if q.consumers is not None:
                consumers.add_metric([q.name], q.consumers)
        yield messages
        yield consumers


async def _none() -> None:
    return None


def _scrubbed(a: rules.Assessment, scrub: Scrubber) -> rules.Assessment:
    """The assessment with every free-text field passed through ``scrub`` (a last line of defence)."""
    return replace(
        a,
        output=scrub(a.output),
        error=None if a.error is None else scrub(a.error),
        amqp_error=None if a.amqp_error is None else scrub(a.amqp_error),
        problems=tuple(replace(p, text=scrub(p.text)) for p in a.problems),
        nodes=tuple(replace(n, error=None if n.error is None else scrub(n.error),
                            amqp_error=None if n.amqp_error is None else scrub(n.amqp_error)) for n in a.nodes),
    )
