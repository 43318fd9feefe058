"""Conflicts: csync2.cfg's prefixes and backups, and the conflict log (pure)."""

from __future__ import annotations

import pytest

from haflowd.sync.conflicts import MAX_LOG, ConflictLog, csync2_cfg_path, parse_csync2_cfg

FIXTURE_CFG = """\
nossl * *;
group dags {
    host nodea nodeb nodec;
    key /tmp/x/csync2.key;
    include %dags%;
    exclude *~;
    auto younger;
    backup-directory /var/backups/csync2;
    backup-generations 3;
}
prefix dags {
    on nodea: /srv/a/dags;
    on nodeb: /srv/b/dags;
    on *: /opt/airflow/dags;
}
"""

DOCS_CFG = """\
# csync2 -k /etc/csync2.key
nossl * *;                        # only on a private network
group airflow_dags
{
    host node1 node2 (node3);     # a slave in parentheses
    key /etc/csync2.key;
    include /opt/airflow/dags;
    exclude *~ *.swp *.pyc;
    auto younger;
    action { pattern /opt/airflow/dags/*; exec "true"; }
}
group other { host node1; key /k; include /etc/x; backup-directory /b; backup-generations 1; }
"""


def test_prefixes_and_backups_of_a_config() -> None:
    layout = parse_csync2_cfg(FIXTURE_CFG)
    assert layout.path_on("nodeb", "%dags%/sub/x.py") == "/srv/b/dags/sub/x.py"
    assert layout.path_on("nodez", "%dags%/x.py") == "/opt/airflow/dags/x.py"  # "on *"
    assert layout.path_on("nodea", "/etc/hosts") == "/etc/hosts"
    assert layout.path_on("nodea", "%nope%/x.py") is None
    assert layout.backup_of("nodea", "%dags%/x.py", "nodeb") == "/var/backups/csync2/srv/a/dags/x.py"
    assert layout.without_backups("nodea") == []
    [g] = layout.groups
    assert (g.name, g.hosts, g.auto, g.backup_generations) == ("dags", ("nodea", "nodeb", "nodec"), "younger", 3)


def test_a_config_without_backups_is_named() -> None:
    layout = parse_csync2_cfg(DOCS_CFG)
    assert [g.name for g in layout.groups] == ["airflow_dags", "other"]
    assert layout.groups[0].hosts == ("node1", "node2", "node3")
    assert layout.without_backups("node1") == ["airflow_dags", "other"]  # none; and 1 generation keeps nothing
    assert layout.without_backups("node3") == ["airflow_dags"]
    assert layout.backup_of("node1", "/opt/airflow/dags/x.py") is None
    assert parse_csync2_cfg("group { broken").groups == ()  # whatever it is, no exception


@pytest.mark.parametrize(
    ("options", "env", "path"),
    [
        ([], {}, "/etc/csync2.cfg"),
        (["-N", "nodea"], {"CSYNC2_SYSTEM_DIR": "/x"}, "/x/csync2.cfg"),
        (["-C", "dags"], {}, "/etc/csync2_dags.cfg"),
        (["-Cdags"], {"CSYNC2_SYSTEM_DIR": "/x"}, "/x/csync2_dags.cfg"),
    ],
)
def test_which_config_csync2_reads(options: list[str], env: dict[str, str], path: str) -> None:
    assert csync2_cfg_path(options, env) == path


def test_a_win_is_recorded_settled_with_the_peers_backup() -> None:
    log = ConflictLog("n1", "nodea", parse_csync2_cfg(FIXTURE_CFG))
    new, done = log.observe("n2", "nodeb", 100.0, won=["%dags%/x.py"], reached=True)
    assert done == [] and len(new) == 1
    c = new[0].to_json()
    assert c == {"file": "%dags%/x.py", "path": "/srv/a/dags/x.py", "peer": "n2", "time": 100.0, "winner": "n1",
                 "loser": "n2", "kept_on": "n2", "kept_at": "/var/backups/csync2/srv/b/dags/x.py", "resolved": True,
                 "resolved_at": 100.0}
    assert log.resolved_total == 1 and log.open_count() == 0


def test_a_loss_is_open_once_and_settled_when_no_longer_reported() -> None:
    log = ConflictLog("n1", "nodea", parse_csync2_cfg(FIXTURE_CFG))
    new, _ = log.observe("n2", "nodeb", 100.0, open_=["%dags%/x.py"], reached=True)
    assert [(c.winner, c.kept_on, c.kept_at, c.resolved) for c in new] == \
        [("n2", "n1", "/var/backups/csync2/srv/a/dags/x.py", False)]
    again, _ = log.observe("n2", "nodeb", 101.0, open_=["%dags%/x.py"], reached=True)
    assert again == [] and log.open_count() == 1  # reported on every run; recorded once
    _, done = log.observe("n2", "nodeb", 102.0, reached=False)  # unreachable: says nothing about it
    assert done == [] and log.open_count() == 1
    _, done = log.observe("n3", "nodec", 103.0, reached=True)  # another peer: not this one's conflict
    assert done == []
    _, done = log.observe("n2", "nodeb", 104.0, reached=True)
    assert [(c.resolved, c.resolved_at) for c in done] == [(True, 104.0)]
    assert log.open_count() == 0 and log.resolved_total == 1


def test_without_a_layout_nothing_says_a_version_is_kept() -> None:
    log = ConflictLog("n1", "nodea")
    [c], _ = log.observe("n2", "nodeb", 1.0, won=["/opt/dags/x.py"])
    assert c.path == "/opt/dags/x.py" and c.kept_at is None


def test_the_log_is_bounded_keeping_open_conflicts() -> None:
    log = ConflictLog("n1", "nodea")
    log.observe("n2", "nodeb", 0.0, open_=["/d/open.py"])
    for i in range(3 * MAX_LOG):
        log.observe("n2", "nodeb", float(i), won=[f"/d/f{i}.py"], open_=["/d/open.py"])
    assert len(log.items) == MAX_LOG and log.open_count() == 1
    assert log.items[-1].file == f"/d/f{3 * MAX_LOG - 1}.py"


def test_the_log_survives_a_restart_and_skips_what_is_malformed() -> None:
    log = ConflictLog("n1", "nodea", parse_csync2_cfg(FIXTURE_CFG))
    log.observe("n2", "nodeb", 5.0, won=["%dags%/x.py"], open_=["%dags%/y.py"])
    again = ConflictLog("n1", "nodea")
    again.restore([*log.to_state(), {"file": "no peer"}, "junk", None])
    assert [c.to_json() for c in again.items] == log.to_state()
    again.restore({"not": "a list"})
    assert len(again.items) == 2
