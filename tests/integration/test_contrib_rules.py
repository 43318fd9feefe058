"""contrib/prometheus: every alert rule under ``promtool test rules``, and the config files under
``promtool check`` and ``haproxy -c`` (issue 17); contrib's PostgreSQL HAProxy config also runs for
real in front of the session's PostgreSQL pair.

Each rule has a case: input series as three nodes (n1, n2, n3) would export them, the alerts
expected at a time when the rule must fire (labels and the expanded annotations, exactly) and at
a time when it must not. Series that every node exports about the same cluster (PostgreSQL,
RabbitMQ, peers, sync targets) come from all three nodes in the cases, and the expectation is one
alert: promtool compares the whole list, so a rule that kept ``instance`` would fail with three.

The rules file is read with a small reader of its own documented style (no YAML library in the
venv): one ``- alert:`` block per rule, summary and description on one double-quoted line each.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import ROOT, free_port, wait_until
from tests.integration.test_postgres import start_daemons, through, wait_code

pytestmark = pytest.mark.integration

CONTRIB = ROOT / "contrib"
RULES = CONTRIB / "prometheus" / "haflowd-alerts.yml"
SCRAPE = CONTRIB / "prometheus" / "haflowd-scrape.yml"
NODES = ("n1", "n2", "n3")


@dataclass(frozen=True)
class AlertRule:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str


def read_rules(path: Path = RULES) -> dict[str, AlertRule]:
    """The alert rules of a file written in haflowd-alerts.yml's style, by name."""
    rules: dict[str, AlertRule] = {}
    blocks = re.split(r"^\s*- alert:\s*", path.read_text(), flags=re.M)[1:]
    for block in blocks:
        name = block.split("\n", 1)[0].strip()

        def field_of(key: str, text: str = block, rule: str = name) -> str:
            m = re.search(rf"^\s*{key}:\s*(.+)$", text, re.M)
            assert m is not None, f"{rule} has no {key}"
            return m.group(1).strip()

        def quoted(key: str, rule: str = name) -> str:
            value = field_of(key)
            assert value.startswith('"') and value.endswith('"'), f"{rule}.{key} is not one quoted line"
            return str(json.loads(value))

        rules[name] = AlertRule(name, field_of("expr"), field_of("for"), field_of("severity"),
                                quoted("summary"), quoted("description"))
    return rules


def expand(template: str, labels: dict[str, str], value: float) -> str:
    """The subset of Prometheus' alert templating the rules file allows itself."""
    def go_float(v: float) -> str:
        return str(int(v)) if float(v).is_integer() else repr(v)

    out = re.sub(r"\{\{ printf \"%\.2f\" \$value \}\}", f"{value:.2f}", template)
    out = out.replace("{{ $value }}", go_float(value))
    out = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], out)
    assert "{{" not in out, f"template beyond the supported subset: {template}"
    return out


@dataclass
class Case:
    alert: str
    series: dict[str, str]
    fire_at: str
    fired: list[tuple[dict[str, str], float]]  # labels (besides alertname, severity), $value
    quiet_at: str
    interval: str = "1m"
    extra: dict[str, str] = field(default_factory=dict)


def per_node(metric: str, labels: str, values: dict[str, str]) -> dict[str, str]:
    """One series per exporting node: ``values`` maps instance → promtool values."""
    sep = "," if labels else ""
    return {f'{metric}{{job="haflowd",instance="{n}"{sep}{labels}}}': v for n, v in values.items()}


def everywhere(metric: str, labels: str, values: str) -> dict[str, str]:
    return per_node(metric, labels, dict.fromkeys(NODES, values))


J = {"job": "haflowd"}

CASES = [
    Case("HaflowdDown", {'up{job="haflowd",instance="n1"}': "1x10", 'up{job="haflowd",instance="n2"}': "0x10"},
         "5m", [({**J, "instance": "n2"}, 0)], "0m"),
    Case("HaflowdComponentFatal",
         {**per_node("haflowd_component_state", 'component="scheduler",state="fatal"', {"n1": "0 0 1x8", "n2": "0x10"}),
          **per_node("haflowd_component_state", 'component="scheduler",state="running"', {"n1": "1 1 0x8"})},
         "5m", [({**J, "instance": "n1", "component": "scheduler", "state": "fatal"}, 1)], "1m"),
    Case("HaflowdComponentRestartingOften",
         {**per_node("haflowd_component_restarts_total", 'component="worker"', {"n3": "0+1x20", "n1": "5x20"})},
         "10m", [({**J, "instance": "n3", "component": "worker"}, 15)], "0m"),
    Case("HaflowdComponentUnhealthy",
         {**per_node("haflowd_component_up", 'component="api"', {"n1": "1x20", "n2": "1x20"}),
          **per_node("haflowd_component_healthy", 'component="api"', {"n1": "0x20", "n2": "1x20"})},
         "10m", [({**J, "instance": "n1", "component": "api"}, 1)], "2m"),
    Case("HaflowdGossipRejectionsSpike",
         {**per_node("haflowd_gossip_rejected_total", 'reason="bad_signature"',
                     {"n1": "0+60x20", "n2": "0+60x20", "n3": "0x20"}),
          **everywhere("haflowd_gossip_rejected_total", 'reason="busy"', "0x20")},
         "10m", [({**J, "reason": "bad_signature"}, 2.0)], "0m"),
    Case("HaflowdPeerDead",
         {**per_node("haflowd_peer_status", 'peer="n3",status="dead"', {"n1": "0 1x10", "n2": "0 1x10"}),
          **per_node("haflowd_peer_status", 'peer="n1",status="dead"', {"n2": "0x10"})},
         "5m", [({**J, "peer": "n3"}, 1)], "1m"),
    Case("HaflowdPeerFlapping",
         {**per_node("haflowd_peer_up", 'peer="n2"', {"n1": "1 0 1 0 1 0 1 0 1 0 1x10", "n3": "1 0 1 0 1 0 1x14"}),
          **per_node("haflowd_peer_up", 'peer="n1"', {"n2": "1x20", "n3": "1x20"})},
         "10m", [({**J, "peer": "n2"}, 10)], "1m"),
    Case("HaflowdPostgresSplitBrain", everywhere("haflowd_postgres_split_brain", "", "0 1x10"),
         "5m", [(J, 1)], "1m"),
    Case("HaflowdPostgresNoPrimary",
         {**everywhere("haflowd_postgres_is_primary", 'node="pg1"', "1 1 0x10"),
          **everywhere("haflowd_postgres_is_primary", 'node="pg2"', "0x12")},
         "6m", [(J, 0)], "2m"),
    Case("HaflowdPostgresNodeDown",
         {**everywhere("haflowd_postgres_up", 'node="pg2"', "0x10"),
          **per_node("haflowd_postgres_up", 'node="pg1"', {"n1": "0x10", "n2": "1x10", "n3": "1x10"})},
         "5m", [({**J, "node": "pg2"}, 0)], "1m"),
    Case("HaflowdPostgresReplicationLag",
         {**everywhere("haflowd_postgres_replication_lag_bytes", 'node="pg2"', "200000000x10"),
          **everywhere("haflowd_postgres_replication_lag_seconds", 'node="pg2"', "10x10"),
          **everywhere("haflowd_postgres_replication_lag_bytes", 'node="pg3"', "0x10"),
          **everywhere("haflowd_postgres_replication_lag_seconds", 'node="pg3"', "600x10"),
          **everywhere("haflowd_postgres_replication_lag_bytes", 'node="pg4"', "1000x10"),
          **everywhere("haflowd_postgres_replication_lag_seconds", 'node="pg4"', "1x10")},
         "6m", [({**J, "node": "pg2"}, 200000000), ({**J, "node": "pg3"}, 600)], "1m"),
    Case("HaflowdSyncFailing",
         {**per_node("haflowd_sync_peer_state", 'peer="n3",state="failing"', {"n1": "1x20", "n2": "1x20"}),
          **per_node("haflowd_sync_peer_state", 'peer="n1",state="failing"', {"n2": "0x20", "n3": "0x20"})},
         "15m", [({**J, "peer": "n3"}, 2)], "5m"),
    Case("HaflowdSyncStale",
         {**per_node("haflowd_sync_peer_last_success_timestamp_seconds", 'peer="n3"', {"n1": "0x60", "n2": "0x60"}),
          **per_node("haflowd_sync_peer_last_success_timestamp_seconds", 'peer="n1"', {"n2": "0+60x60"}),
          **everywhere("haflowd_process_start_time_seconds", "", "0x60"),
          # n3 runs with [sync] enabled = false: its peers are "skipped", never synced, and no alert
          **per_node("haflowd_sync_peer_last_success_timestamp_seconds", 'peer="n1"', {"n3": "0x60"}),
          **per_node("haflowd_sync_peer_state", 'peer="n1",state="skipped"', {"n3": "1x60", "n2": "0x60"})},
         "40m", [({**J, "peer": "n3"}, 2)], "20m"),
    Case("HaflowdSyncConflict",
         per_node("haflowd_sync_conflicts_files", "", {"n1": "0 0 3x10", "n2": "0x12", "n3": "0 0 3x10"}),
         "10m", [(J, 2)], "1m"),
    Case("HaflowdRabbitmqPartition",
         {**everywhere("haflowd_rabbitmq_partitions", 'node="rabbit@a"', "1x10"),
          **everywhere("haflowd_rabbitmq_partitions", 'node="rabbit@b"', "1x10"),
          **everywhere("haflowd_rabbitmq_partitions", 'node="rabbit@c"', "0x10")},
         "5m", [(J, 2)], "0m"),
    Case("HaflowdRabbitmqAlarm",
         {**everywhere("haflowd_rabbitmq_alarm", 'node="rabbit@b",alarm="memory"', "0 1x10"),
          **everywhere("haflowd_rabbitmq_alarm", 'node="rabbit@b",alarm="disk"', "0x10")},
         "5m", [({**J, "node": "rabbit@b", "alarm": "memory"}, 1)], "1m"),
    Case("HaflowdRabbitmqNodeDown",
         {**everywhere("haflowd_rabbitmq_node_running", 'node="rabbit@c"', "0x10"),
          **per_node("haflowd_rabbitmq_node_running", 'node="rabbit@a"', {"n1": "0x10", "n2": "1x10", "n3": "1x10"})},
         "5m", [({**J, "node": "rabbit@c"}, 0)], "0m"),
    Case("HaflowdRabbitmqAmqpFailing",
         per_node("haflowd_rabbitmq_amqp_up", "", {"n1": "0x10", "n2": "0x10", "n3": "1x10"}),
         "5m", [(J, 2)], "1m"),
]


def promtool_test(rules: dict[str, AlertRule], cases: list[Case]) -> dict[str, object]:
    """A promtool rules-test document (JSON is YAML) for ``cases`` against RULES."""
    tests = []
    for c in cases:
        rule = rules[c.alert]
        exp = []
        for labels, value in c.fired:
            full = {**labels, "severity": rule.severity}
            exp.append({"exp_labels": full,
                        "exp_annotations": {"summary": expand(rule.summary, full, value),
                                            "description": expand(rule.description, full, value)}})
        tests.append({
            "interval": c.interval,
            "input_series": [{"series": s, "values": v} for s, v in c.series.items()],
            "alert_rule_test": [{"eval_time": c.fire_at, "alertname": c.alert, "exp_alerts": exp},
                                {"eval_time": c.quiet_at, "alertname": c.alert, "exp_alerts": []}],
        })
    return {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests}


def need(program: str) -> None:
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed; scripts/setup installs it")


def test_every_rule_is_complete_and_has_a_case() -> None:
    rules = read_rules()
    assert len(rules) >= 18
    for r in rules.values():
        assert r.severity in ("critical", "warning"), r.name
        assert r.summary and "Runbook: " in r.description, r.name
    assert sorted(c.alert for c in CASES) == sorted(rules)


def test_promtool_accepts_the_rules_and_the_scrape_config() -> None:
    need("promtool")
    r = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["promtool", "check", "config", str(SCRAPE)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_rule_fires_on_its_case_once_and_stays_quiet_before(tmp_path: Path) -> None:
    need("promtool")
    doc = tmp_path / "tests.yml"
    doc.write_text(json.dumps(promtool_test(read_rules(), CASES), indent=1))
    r = subprocess.run(["promtool", "test", "rules", str(doc)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_rule_keeping_instance_would_fire_three_times(tmp_path: Path) -> None:
    """The cases do catch "three alerts for one problem": a copy of the split-brain rule that keeps
    ``instance`` fails the same case."""
    need("promtool")
    bad = tmp_path / "bad.yml"
    bad.write_text(RULES.read_text().replace("max by (job) (haflowd_postgres_split_brain) == 1",
                                             "haflowd_postgres_split_brain == 1"))
    case = next(c for c in CASES if c.alert == "HaflowdPostgresSplitBrain")
    doc = promtool_test(read_rules(bad), [case])
    doc["rule_files"] = [str(bad)]
    (tmp_path / "tests.yml").write_text(json.dumps(doc))
    r = subprocess.run(["promtool", "test", "rules", str(tmp_path / "tests.yml")], capture_output=True,
                       text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and out.count('instance="n') >= 3, out


@pytest.mark.parametrize("name", ["haproxy-postgres.cfg", "haproxy-airflow-api.cfg"])
def test_haproxy_accepts_the_contrib_config(name: str) -> None:
    need("haproxy")
    r = subprocess.run(["haproxy", "-c", "-f", str(CONTRIB / "haproxy" / name)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def haproxy_expect(name: str, backend: str) -> re.Pattern[str]:
    """The ``http-check expect rstring`` regex of one backend of a contrib HAProxy config."""
    text = (CONTRIB / "haproxy" / name).read_text()
    body = text.split(f"backend {backend}\n", 1)[1]
    m = re.search(r'http-check expect rstring "(.*)"$', body, re.M)
    assert m is not None, backend
    return re.compile(m.group(1).replace('\\"', '"'))


def test_the_api_server_health_regex_reads_the_metadatabase_status() -> None:
    pattern = haproxy_expect("haproxy-airflow-api.cfg", "airflow_api_servers")
    healthy = {"metadatabase": {"status": "healthy"}, "scheduler": {"status": "unhealthy"}}
    assert pattern.search(json.dumps(healthy))
    assert not pattern.search(json.dumps({"metadatabase": {"status": "unhealthy"},
                                          "scheduler": {"status": "healthy"}}))


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool checks a rules file with one recording rule per panel query (Grafana's variables
    replaced by what they expand to)."""
    need("promtool")
    dashboard = json.loads((CONTRIB / "grafana" / "haflowd-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 40
    rules = [{"record": f"dashboard:query{i}", "expr": e.replace("$instance", ".*").replace("$__rate_interval", "1m")}
             for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and f"{len(exprs)} rules found" in r.stdout, r.stdout + r.stderr
    bad = tmp_path / "bad.yml"  # and it would say so
    bad.write_text(json.dumps({"groups": [{"name": "d", "rules": [{"record": "x:y", "expr": "rate(up[5m]"}]}]}))
    assert subprocess.run(["promtool", "check", "rules", str(bad)], capture_output=True, timeout=30).returncode != 0


def test_haproxy_postgres_config_leads_writes_to_the_primary_and_reads_to_the_standby(daemon, pg_pair, tmp_path):
    """contrib's PostgreSQL config as written (addresses, ports and check timing swapped for
    loopback) in front of the session's pair and a daemon on each "host"; pg3 is a node that is
    down (closed ports)."""
    need("haproxy")
    def lands(port: int) -> tuple[bool, int] | None:
        try:  # on-marked-down shutdown-sessions cuts a session to a server its first check marks down
            return through(port)
        except psycopg2.Error:
            return None

    pg_pair.wait_streaming()
    d1, d2 = start_daemons(daemon, pg_pair, interval="300ms", timeout="1s")
    wait_code(d1, "/postgres/primary", 200)
    wait_code(d2, "/postgres/replica", 200)
    rw, ro = free_port(), free_port()
    servers = {"1": (pg_pair.primary.port, d1.port), "2": (pg_pair.standby.port, d2.port),
               "3": (free_port(), free_port())}
    text = (CONTRIB / "haproxy" / "haproxy-postgres.cfg").read_text()
    for old, new in [("bind *:5432", f"bind 127.0.0.1:{rw}"), ("bind *:5433", f"bind 127.0.0.1:{ro}"),
                     ("inter 2s fall 2 rise 2", "inter 200 fall 1 rise 1")]:
        assert old in text, old
        text = text.replace(old, new)
    text, n = re.subn(r"server pg(\d) 10\.0\.0\.1\d:5432 check port 8787",
                      lambda m: f"server pg{m.group(1)} 127.0.0.1:{servers[m.group(1)][0]} check port "
                                f"{servers[m.group(1)][1]}", text)
    assert n == 6
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    with open(tmp_path / "haproxy.log", "wb") as log:
        proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        # servers start UP until their first check: wait for five answers in a row from the right node
        primary, standby = (False, pg_pair.primary.port), (True, pg_pair.standby.port)
        wait_until(lambda: all(lands(rw) == primary for _ in range(5)), 15, "writes to lead to pg1 only")
        wait_until(lambda: all(lands(ro) == standby for _ in range(5)), 15, "reads to lead to pg2 only")
    finally:
        proc.kill()
        proc.wait(10)
