"""Conflicts: csync2.cfg's prefixes and backups, and the conflict log (pure)."""

from __future__ import annotations

import pytest

from haflowd.sync.conflicts import (
    MAX_LOG,
    REMOVAL_RULE,
    TIE_RULE,
    ConflictLog,
    TieAction,
    TieBudget,
    csync2_cfg_path,
    decide_tie,
    parse_csync2_cfg,
)

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
                 "resolved_at": 100.0, "rule": "younger"}
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


@pytest.mark.parametrize(
    ("me", "peer", "local", "remote", "action", "winner"),
    [
        ("nodea", "nodeb", 100, 100, TieAction.FORCE, "nodea"),  # a tie: the first name forces
        ("nodeb", "nodea", 100, 100, TieAction.WAIT, "nodea"),  # ... the other waits for it
        ("node10", "node9", 7, 7, TieAction.FORCE, "node10"),  # byte order, the same on every node
        ("nodea", "nodeb", 99, 100, TieAction.NOT_A_TIE, None),  # a real loss: the younger peer wins
        ("nodea", "nodeb", 101, 100, TieAction.NOT_A_TIE, None),  # lost "older": csync2's rule still
        ("nodea", "nodeb", None, 100, TieAction.UNKNOWN, None),  # the file is gone here (a removal)
        ("nodea", "nodeb", 100, None, TieAction.UNKNOWN, None),  # the peer's mtime not read
    ],
)
def test_who_forces_a_tie(me: str, peer: str, local: int | None, remote: int | None, action: TieAction,
                          winner: str | None) -> None:
    v = decide_tie(me, peer, local, remote)
    assert (v.action, v.winner) == (action, winner)
    if action in (TieAction.FORCE, TieAction.WAIT):  # the two sides agree without talking
        other = decide_tie(peer, me, remote, local)
        assert other.winner == v.winner and {v.action, other.action} == {TieAction.FORCE, TieAction.WAIT}


def test_the_tie_budget_backs_off_and_gives_up() -> None:
    b = TieBudget(max_attempts=3, backoff=2.0)
    k = ("n2", "%dags%/x.py")
    assert b.due(k, 0.0)
    assert not b.failed(k, 0.0)
    assert not b.due(k, 1.9) and b.due(k, 2.0)  # 2 s
    assert not b.failed(k, 2.0)
    assert not b.due(k, 5.9) and b.due(k, 6.0)  # then 4 s
    assert b.failed(k, 6.0)  # the third: spent
    assert b.exhausted(k) and not b.due(k, 1e9)  # never again (in this process)
    b.forget([k])
    assert b.due(k, 0.0)


def test_a_decided_tie_is_not_looked_at_again_until_settled() -> None:
    b = TieBudget()
    b.decided(("n2", "/d/a.py"), TieAction.WAIT)
    b.decided(("n2", "/d/b.py"), TieAction.NOT_A_TIE)
    b.decided(("n2", "/d/c.py"), TieAction.FORCE)
    assert not b.due(("n2", "/d/a.py"), 1e9) and not b.due(("n2", "/d/b.py"), 1e9)
    assert b.due(("n2", "/d/c.py"), 0.0)  # forcing is retried (within the budget) until it settles
    assert b.due(("n3", "/d/a.py"), 0.0)  # per peer


def test_a_tie_this_node_forces_names_the_peer_as_keeping_the_other_version() -> None:
    log = ConflictLog("n1", "nodea", parse_csync2_cfg(FIXTURE_CFG))
    [c], _ = log.observe("n2", "nodeb", 100.0, open_=["%dags%/x.py"], reached=True)
    assert (c.winner, c.rule) == ("n2", "younger")  # csync2's word until the tie is seen
    log.tie("n2", "nodeb", "%dags%/x.py", winner="n1")
    assert (c.winner, c.loser, c.kept_on, c.kept_at, c.rule, c.resolved) == \
        ("n1", "n2", "n2", "/var/backups/csync2/srv/b/dags/x.py", TIE_RULE, False)
    assert log.settle("n2", "%dags%/x.py", 101.0) is c
    assert (c.resolved, c.resolved_at, log.resolved_total, log.open_count()) == (True, 101.0, 1, 0)
    assert log.settle("n2", "%dags%/x.py", 102.0) is None  # once


def test_a_tie_the_peer_forces_keeps_this_version_here() -> None:
    log = ConflictLog("n2", "nodeb", parse_csync2_cfg(FIXTURE_CFG))
    log.observe("n1", "nodea", 100.0, open_=["%dags%/x.py"], reached=True)
    c = log.tie("n1", "nodea", "%dags%/x.py", winner="n1")
    assert c is not None
    assert (c.winner, c.loser, c.kept_on, c.kept_at, c.rule) == \
        ("n1", "n2", "n2", "/var/backups/csync2/srv/b/dags/x.py", TIE_RULE)
    _, done = log.observe("n1", "nodea", 101.0, reached=True)  # the forced version arrived
    assert done == [c] and c.resolved
    assert log.tie("n1", "nodea", "%dags%/x.py", winner="n1") is None  # nothing open


def test_the_rule_survives_a_restart() -> None:
    log = ConflictLog("n1", "nodea", parse_csync2_cfg(FIXTURE_CFG))
    log.observe("n2", "nodeb", 5.0, open_=["%dags%/y.py"])
    log.tie("n2", "nodeb", "%dags%/y.py", winner="n1")
    again = ConflictLog("n1", "nodea")
    again.restore(log.to_state())
    assert again.items[0].rule == TIE_RULE and again.items[0].winner == "n1"
    old = log.to_state()[0]
    del old["rule"]  # a state file from before the field
    again.restore([old])
    assert again.items[-1].rule is None


def test_a_deletion_that_lost_to_a_change_keeps_nothing() -> None:
    log = ConflictLog("n1", "nodea", parse_csync2_cfg(FIXTURE_CFG))
    [c], _ = log.observe("n2", "nodeb", 1.0, open_=["%dags%/x.py"], removals=["%dags%/x.py"], reached=True)
    assert (c.winner, c.loser, c.kept_at, c.rule, c.resolved) == ("n2", "n1", None, REMOVAL_RULE, False)
