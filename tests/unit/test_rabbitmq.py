"""RabbitMQ: API answers -> statuses (pure rules, tables of cases), config, scrubbing, views.

No broker here: the rules take what the management API and the AMQP probe returned; the
checker's views (snapshot, metrics, staleness) are driven with a fake clock.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from haflowd import config
from haflowd.checks import rabbitmq_rules as rules
from haflowd.checks.rabbitmq import RabbitChecker, Scrubber, bounded, describe_error
from haflowd.checks.rabbitmq_rules import Observation, QueueListing, RoundTrip, assess
from haflowd.errors import ConfigError
from haflowd.health import CheckRegistry, Status
from haflowd.testing import FakeClock

P, W, C = Status.PASSING, Status.WARNING, Status.CRITICAL
A, B, D = "rabbit@a", "rabbit@b", "rabbit@c"
ALL = (A, B, D)
OK = RoundTrip(2.5)


def entry(name: str, running: bool = True, **more: Any) -> dict[str, Any]:
    """One element of GET /api/nodes; a node that is down has no statistics keys."""
    if not running:
        return {"name": name, "running": False, **more}
    return {"name": name, "running": True, "partitions": [], "mem_alarm": False, "disk_free_alarm": False,
            "fd_used": 40, "fd_total": 1000, "sockets_used": 2, "sockets_total": 800, **more}


def seen(me: str, *entries: dict[str, Any], alarms: tuple[tuple[str, str], ...] = (), **more: Any) -> Observation:
    """What node ``me`` answered: its cluster view and its alarms health check."""
    return Observation(node=me, erlang_name=me, cluster=tuple(entries), alarms=alarms, **more)


def healthy_view(me: str) -> Observation:
    return seen(me, *(entry(n) for n in ALL))


def silent(me: str, error: str = "timeout after 3s") -> Observation:
    return Observation(node=me, erlang_name=me, cluster_error=error, alarms_error=error)


def three(*views: Observation) -> list[Observation]:
    """Fill in healthy views for the nodes not given."""
    given = {v.node: v for v in views}
    return [given.get(n) or healthy_view(n) for n in ALL]


# =========================================================================== the cluster's status

CASES: list[tuple[str, list[Observation], RoundTrip | None, Status, list[str]]] = [
    ("all running, round trip ok", three(), OK, P, ["3 of 3 nodes running; AMQP round trip 2.5 ms"]),
    ("no amqp_url configured", three(), None, P, ["AMQP round trip not configured"]),
    ("a node not running (the others say so; its API refuses)",
     [seen(A, entry(A), entry(B, running=False), entry(D)), silent(B, "cannot connect: Connection refused"),
      seen(D, entry(A), entry(B, running=False), entry(D))], OK, W, ["rabbit@b: not running"]),
    ("a hung node: its API times out, the others still think it runs",
     three(silent(D)), OK, W, ["rabbit@c: management API not answering: timeout after 3s"]),
    ("a memory alarm seen in the health check before the node statistics",
     three(seen(A, *(entry(n) for n in ALL), alarms=((A, "memory"),))), OK, W, ["memory alarm on rabbit@a"]),
    ("a disk alarm in the node statistics, when no alarms health check answers",
     [Observation(n, n, cluster=(entry(A, disk_free_alarm=True), entry(B), entry(D)), alarms_error="HTTP 404")
      for n in ALL], OK, W, ["disk alarm on rabbit@a"]),
    ("statistics that still show a cleared alarm: the health check is current",
     three(seen(A, entry(A, mem_alarm=True), entry(B), entry(D))), OK, P, ["3 of 3 nodes running"]),
    ("an alarm blocks publishers: a failed round trip is then a warning",
     three(seen(B, *(entry(n) for n in ALL), alarms=((B, "memory"),))), RoundTrip(None, "timeout after 3s"), W,
     ["memory alarm on rabbit@b", "AMQP round trip failed while a resource alarm blocks publishers"]),
    ("a partition",
     [seen(A, entry(A, partitions=[D]), entry(B), entry(D)), healthy_view(B),
      seen(D, entry(A), entry(B), entry(D, partitions=[A]))], OK, W,
     ["rabbit@a: partitioned from rabbit@c", "rabbit@c: partitioned from rabbit@a"]),
    ("membership disagreement",
     [healthy_view(A), healthy_view(B), seen(D, entry(D))], OK, W,
     ["cluster membership differs", "rabbit@c sees rabbit@c"]),
    ("a configured node that is in nobody's cluster",
     [seen(A, entry(A), entry(B)), seen(B, entry(A), entry(B)), silent(D)], OK, W,
     ["rabbit@c: not a member of the cluster that rabbit@a, rabbit@b see"]),
    ("file descriptors nearly used up",
     three(seen(A, entry(A, fd_used=950), entry(B), entry(D))), OK, W,
     ["rabbit@a: 95% of file descriptors in use (950 of 1000)"]),
    ("sockets nearly used up",
     three(seen(A, entry(A, sockets_used=799), entry(B), entry(D))), OK, W,
     ["rabbit@a: 100% of sockets in use (799 of 800)"]),
    ("quorum critical", three(seen(A, *(entry(n) for n in ALL), quorum_critical="queue q would lose quorum")), OK,
     W, ["rabbit@a: quorum critical (queue q would lose quorum)"]),
    ("a node's own listener fails its round trip",
     three(seen(B, *(entry(n) for n in ALL), amqp=RoundTrip(None, "connection refused"))), OK, W,
     ["rabbit@b: AMQP round trip failed (connection refused)"]),
    ("the round trip fails", three(), RoundTrip(None, "timeout after 3s"), C,
     ["AMQP round trip failed: timeout after 3s"]),
    ("no management API answers", [silent(A), silent(B), silent(D)], OK, C,
     ["no RabbitMQ management API answers (rabbit@a: timeout after 3s; rabbit@b: timeout after 3s; "
      "rabbit@c: timeout after 3s)"]),
    ("majority down",
     [seen(A, entry(A), entry(B, running=False), entry(D, running=False)), silent(B), silent(D)], OK, C,
     ["majority of RabbitMQ nodes down: 2 of 3 (rabbit@b, rabbit@c)", "rabbit@b: not running"]),
    ("one of three down is no majority",
     [seen(A, entry(A), entry(B), entry(D, running=False)), healthy_view(B), silent(D)], OK, W,
     ["rabbit@c: not running"]),
    ("a single configured node that is down is the majority",
     [Observation(A, A, cluster=({"name": A, "running": False},), alarms=())], OK, C, ["majority"]),
    ("cluster views hang on a frozen peer but alarms answer",
     [Observation(A, A, cluster_error="timeout after 1s", alarms=()),
      Observation(B, B, cluster_error="timeout after 1s", alarms=()), silent(D, "timeout after 1s")],
     RoundTrip(None, "timeout after 1s"), C,
     ["AMQP round trip failed: timeout after 1s", "rabbit@c: management API not answering",
      "rabbit@a: cluster view unavailable: timeout after 1s"]),
]


@pytest.mark.parametrize(("observations", "trip", "status", "texts"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_assess(observations: list[Observation], trip: RoundTrip | None, status: Status, texts: list[str]) -> None:
    a = assess(observations, trip)
    assert a.status is status, a.output
    for t in texts:
        assert t in a.output, a.output
    assert a.error is None if status is not C else a.error


def test_a_node_that_is_down_is_named_before_details() -> None:
    a = assess([seen(A, entry(A, fd_used=999), entry(B, running=False), entry(D)), silent(B), healthy_view(D)], OK)
    assert a.output.index("rabbit@b: not running") < a.output.index("file descriptors")


def test_no_answer_at_all_says_it_once() -> None:
    a = assess([silent(A), silent(B), silent(D)], OK)
    assert a.output.count("timeout after 3s") == 3
    assert "not answering" not in a.output


@pytest.mark.parametrize(
    ("own", "others", "expected"),
    [
        ({"running": True}, [{"running": False}], True),  # a node that answers for itself runs
        (None, [{"running": True}, {"running": True}], True),
        (None, [{"running": True}, {"running": False}], False),
        (None, [{"name": "x"}], None),
        (None, [], None),
    ],
)
def test_running_of(own: dict[str, Any] | None, others: list[dict[str, Any]], expected: bool | None) -> None:
    assert rules.running_of(own, others) is expected


def test_node_state_fields() -> None:
    obs = [seen(A, entry(A, partitions=[B]), entry(B), entry(D), alarms=((A, "memory"),)), silent(B), silent(D)]
    states = {s.name: s for s in assess(obs, OK).nodes}
    a, b = states[A], states[B]
    assert (a.status, a.running, a.reachable, a.partitions, a.alarms) == (W, True, True, (B,), ("memory",))
    assert (a.fd_used, a.fd_total, a.sockets_used, a.sockets_total) == (40, 1000, 2, 800)
    assert a.cluster_view == ALL and a.error is None
    assert (b.status, b.running, b.reachable, b.cluster_view) == (C, True, False, None)
    assert b.error == "management API not answering: timeout after 3s"
    assert b.fd_total == 1000  # from the others' view of it
    assert set(a.to_json()) >= {"name", "running", "partitions", "alarms", "fd_used", "fd_total", "sockets_used",
                                "sockets_total", "cluster_view", "error"}


def test_stopped_node_state() -> None:
    obs = [seen(A, entry(A), entry(B, running=False), entry(D)), silent(B, "cannot connect: Connection refused"),
           healthy_view(D)]
    b = {s.name: s for s in assess(obs, OK).nodes}[B]
    assert (b.status, b.running, b.reachable) == (C, False, False)
    assert b.error == "not running (management API: cannot connect: Connection refused)"


def test_without_a_cluster_url_the_nodes_listeners_stand_for_it() -> None:
    obs = three(seen(A, *(entry(n) for n in ALL), amqp=RoundTrip(None, "refused")),
                seen(B, *(entry(n) for n in ALL), amqp=RoundTrip(4.0)))
    a = assess(obs, None)
    assert (a.status, a.amqp_roundtrip_ms) == (W, 4.0)
    failing = three(*(seen(n, *(entry(m) for m in ALL), amqp=RoundTrip(None, "refused")) for n in ALL))
    assert assess(failing, None).status is C


# =========================================================================== queues


@pytest.mark.parametrize(
    ("messages", "consumers", "depth", "expected"),
    [
        (0, 0, 1000, None),
        (5, 1, 1000, None),
        (None, 0, 1000, None),  # statistics not in yet
        (5, 0, 1000, "queue celery: 5 messages, no consumer"),
        (1001, 3, 1000, "queue celery: 1001 messages, more than 1000"),
        (1000, 3, 1000, None),
        (2000, 0, 1000, "queue celery: 2000 messages, more than 1000 and no consumer"),
    ],
)
def test_queue_warning(messages: int | None, consumers: int | None, depth: int, expected: str | None) -> None:
    assert rules.queue_warning("celery", messages, consumers, depth) == expected


def test_queues_missing_is_reported_not_warned() -> None:
    listing = QueueListing(({"name": "celery", "vhost": "/", "type": "classic", "messages": 0, "consumers": 2},
                            {"name": "default", "vhost": "other", "messages": 9, "consumers": 0}))
    a = assess(three(), OK, listing, ("default", "celery"), "/")
    assert a.status is P, a.output
    q = {s.name: s.to_json() for s in a.queues}
    assert q["default"] == {"name": "default", "exists": False, "messages": None, "consumers": None, "type": None,
                            "warning": None}
    assert q["celery"]["exists"] is True and q["celery"]["consumers"] == 2


def test_a_backlog_without_consumer_warns() -> None:
    listing = QueueListing(({"name": "celery", "vhost": "/", "messages": 5, "consumers": 0},))
    a = assess(three(), OK, listing, ("celery",))
    assert (a.status, a.output) == (W, "queue celery: 5 messages, no consumer")


def test_queues_that_cannot_be_listed() -> None:
    a = assess(three(), OK, QueueListing(None, "rabbit@a: timeout after 3s"), ("celery",))
    assert (a.status, a.output) == (W, "queues unknown: rabbit@a: timeout after 3s")
    assert [q.exists for q in a.queues] == [None]
    assert assess(three(), OK, None, ("celery",)).queues[0].exists is None


def test_quorum_queues_are_noticed() -> None:
    assert rules.has_quorum_queues(QueueListing(({"name": "q", "type": "quorum"},)))
    assert not rules.has_quorum_queues(QueueListing(({"name": "q", "type": "classic"},)))
    assert not rules.has_quorum_queues(QueueListing(None, "x"))
    assert not rules.has_quorum_queues(None)


@pytest.mark.parametrize(
    ("used", "total", "expected"),
    [(None, 100, None), (10, None, None), (10, 0, None), (89, 100, None),
     (90, 100, "n: 90% of fds in use (90 of 100)")],
)
def test_usage_problem(used: int | None, total: int | None, expected: str | None) -> None:
    assert rules.usage_problem("n", "fds", used, total, 0.9) == expected


# =========================================================================== config

NODE = '[[rabbitmq.node]]\nname = "rabbit@a"\nmanagement_url = "http://127.0.0.1:15672"\n'


def load(tmp_path: Path, body: str) -> config.Config:
    p = tmp_path / "haflowd.toml"
    p.write_text(f'[node]\nname = "n"\ndata_dir = "{tmp_path}"\n[api]\ncontrol_socket = "{tmp_path}/c.sock"\n'
                 + body)
    return config.load(p, check_system=False)


def test_config_defaults(tmp_path: Path) -> None:
    rb = load(tmp_path, "[rabbitmq]\n" + NODE).rabbitmq
    assert rb is not None
    assert (rb.queues, rb.queue_warning_depth, rb.vhost) == (("default", "celery"), 1000, "/")
    assert rb.nodes[0].amqp_url is None


def test_config_queues_and_per_node_amqp_url(tmp_path: Path) -> None:
    (tmp_path / "b.url").write_text("amqp://u:file-secret@127.0.0.1:5673/%2F\n")
    rb = load(tmp_path, '[rabbitmq]\nqueues = ["celery", "reports"]\nqueue_warning_depth = 50\nvhost = "airflow"\n'
              + NODE + 'amqp_url = "amqp://u:inline-secret@127.0.0.1:5672/%2F"\n'
              + NODE.replace("rabbit@a", "rabbit@b") + 'amqp_url_file = "b.url"\n').rabbitmq
    assert rb is not None
    assert (rb.queues, rb.queue_warning_depth, rb.vhost) == (("celery", "reports"), 50, "airflow")
    urls = [n.amqp_url.reveal() if n.amqp_url else None for n in rb.nodes]
    assert urls == ["amqp://u:inline-secret@127.0.0.1:5672/%2F", "amqp://u:file-secret@127.0.0.1:5673/%2F"]
    assert "secret" not in repr(rb)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[rabbitmq]\nqueue_warning_depth = 0\n" + NODE,
         "rabbitmq.queue_warning_depth: expected an integer of at least 1; got 0"),
        ('[rabbitmq]\nqueues = "celery"\n' + NODE, 'rabbitmq.queues: expected a list of strings; got "celery"'),
        ('[rabbitmq]\nqueues = [""]\n' + NODE, "rabbitmq.queues[0]: expected a queue name; got an empty string"),
        ('[rabbitmq]\nvhost = ""\n' + NODE, 'rabbitmq.vhost: expected a non-empty string; got ""'),
        ("[rabbitmq]\n" + NODE + 'amqp_url = "http://u:Zecret-42@h/"\n',
         "rabbitmq.node[0].amqp_url: expected an amqp:// or amqps:// URL; got another string"),
        ("[rabbitmq]\n" + NODE + 'amqp_url = "amqp://h/"\namqp_url_file = "x"\n',
         "rabbitmq.node[0].amqp_url: expected one of amqp_url, amqp_url_file; got both"),
    ],
)
def test_config_errors(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, body)
    assert any(line.endswith(expected) for line in e.value.lines), e.value.lines
    assert "Zecret-42" not in str(e.value)


# =========================================================================== secrets


def test_scrubber_masks_passwords_and_url_userinfo() -> None:
    rb = config.RabbitConfig(
        interval=1.0, timeout=1.0, amqp_url=config.Secret("amqp://u:p%40ss-word@h:5672/%2F"),
        nodes=(config.RabbitNode("a", "http://h", "u", config.Secret("mgmt-pass"),
                                 config.Secret("amqp://u:node-pass@h:5673/")),))
    scrub = Scrubber.for_config(rb)
    text = scrub("amqp://u:p%40ss-word@h:5672/%2F p@ss-word mgmt-pass node-pass amqp://x:other@h/ fine")
    for secret in ("p%40ss-word", "p@ss-word", "mgmt-pass", "node-pass", "other"):
        assert secret not in text
    assert text.endswith("fine")
    assert "amqp://x:***@h/" in text


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TimeoutError(), "timeout after 3s"),
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (OSError(113, "No route to host"), "No route to host"),
        (RuntimeError("boom"), "RuntimeError: boom"),
        (ValueError(), "ValueError"),
    ],
)
def test_describe_error(error: BaseException, expected: str) -> None:
    assert describe_error(error, 3.0) == expected


# =========================================================================== views: snapshot, staleness, metrics


def checker() -> tuple[RabbitChecker, FakeClock]:
    clock = FakeClock()
    cfg = config.RabbitConfig(interval=10.0, timeout=3.0, amqp_url=config.Secret("amqp://u:Pw-123456@h/"),
                              nodes=tuple(config.RabbitNode(n, "http://h", "u", config.Secret("Pw-123456"))
                                          for n in ALL))
    return RabbitChecker(cfg, CheckRegistry(clock), clock), clock


def test_snapshot_before_the_first_round() -> None:
    c, _ = checker()
    snap = c.snapshot()
    assert snap["status"] == "critical" and snap["error"] == "not checked yet"
    assert [n["name"] for n in snap["nodes"]] == list(ALL)


def test_snapshot_goes_stale_after_three_intervals() -> None:
    c, clock = checker()
    listing = QueueListing(({"name": "celery", "vhost": "/", "messages": 3, "consumers": 1},))
    c.publish(assess(three(), OK, listing, ("celery",)))
    snap = c.snapshot()
    assert (snap["status"], snap["stale"], snap["error"], snap["amqp_roundtrip_ms"]) == ("passing", False, None, 2.5)
    assert snap["checked_at"] == clock.wall()
    clock.advance(30.0)
    assert c.snapshot()["status"] == "passing"
    clock.advance(0.5)
    snap = c.snapshot()
    assert (snap["status"], snap["stale"]) == ("critical", True)
    assert snap["error"].startswith("stale: last checked 30s ago")
    assert c.registry.status() is C


def test_published_results_are_scrubbed() -> None:
    c, _ = checker()
    c.publish(assess(three(), RoundTrip(None, "cannot log in to amqp://u:Pw-123456@h/")))
    snap = c.snapshot()
    assert "Pw-123456" not in str(snap)
    assert snap["status"] == "critical" and snap["error"] == "AMQP round trip failed: cannot log in to ***"


def samples(c: RabbitChecker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in c.collect() for s in m.samples}


def test_metrics() -> None:
    c, _ = checker()
    obs = [seen(A, entry(A), entry(B, running=False), entry(D), alarms=((A, "memory"),)), silent(B), healthy_view(D)]
    listing = QueueListing(({"name": "celery", "vhost": "/", "messages": 5, "consumers": 0},))
    c.publish(assess(obs, OK, listing, ("default", "celery")))
    s = samples(c)
    assert s[("haflowd_rabbitmq_node_running", (("node", A),))] == 1
    assert s[("haflowd_rabbitmq_node_running", (("node", B),))] == 0
    assert s[("haflowd_rabbitmq_partitions", (("node", A),))] == 0
    assert s[("haflowd_rabbitmq_alarm", (("alarm", "memory"), ("node", A)))] == 1
    assert s[("haflowd_rabbitmq_alarm", (("alarm", "disk"), ("node", A)))] == 0
    assert s[("haflowd_rabbitmq_amqp_roundtrip_seconds", ())] == pytest.approx(0.0025)
    assert s[("haflowd_rabbitmq_queue_messages", (("queue", "celery"),))] == 5
    assert s[("haflowd_rabbitmq_queue_consumers", (("queue", "celery"),))] == 0
    assert ("haflowd_rabbitmq_queue_messages", (("queue", "default"),)) not in s  # it does not exist


def test_metrics_before_the_first_round_are_empty_families() -> None:
    c, _ = checker()
    families = list(c.collect())
    assert "haflowd_rabbitmq_node_running" in {m.name for m in families}
    assert all(not m.samples for m in families)


# =========================================================================== the loop's bound


async def test_bounded_does_not_wait_for_a_cancellation_that_hangs() -> None:
    """aio-pika closes a channel when cancelled; on a blocked connection that never ends."""
    released = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await released.wait()  # cleanup that hangs until we say so

    t = time.monotonic()
    with pytest.raises(TimeoutError):
        await bounded(stubborn(), 0.05)
    assert time.monotonic() - t < 0.5
    released.set()


async def test_bounded_returns_the_result_in_time() -> None:
    async def quick() -> int:
        return 7

    assert await bounded(quick(), 1.0) == 7
