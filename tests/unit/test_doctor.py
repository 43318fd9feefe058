"""``haflowctl doctor``'s decisions, from fake facts: one test per finding (issue 17)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from haflowd import doctor
from haflowd.config import HostPort, SyncConfig
from haflowd.doctor import FAIL, OK, WARN, Csync2Facts, Finding, PingResult


def st(uid: int = 0, mode: int = 0o100600) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 1, uid, 0, 10, 0, 0, 0))


def statuses(findings: list[Finding]) -> list[str]:
    return [f.status for f in findings]


# ----------------------------------------------------------------- config, exit codes, output


def test_invalid_config_is_one_fail_line_per_error() -> None:
    out = doctor.config_findings("/etc/h.toml", ["/etc/h.toml: node.name: expected a name", "/etc/h.toml: x: y"])
    assert statuses(out) == [FAIL, FAIL]
    assert out[0].what == "/etc/h.toml: node.name: expected a name"
    assert doctor.exit_code(out) == 2


def test_valid_config_is_ok() -> None:
    out = doctor.config_findings("/etc/h.toml", None, 3)
    assert out == [Finding("config", OK, "/etc/h.toml: valid (3 components)")]


@pytest.mark.parametrize(("found", "code"), [((), 0), ((OK,), 0), ((OK, WARN), 1), ((WARN, FAIL, OK), 2)])
def test_exit_code_is_the_worst_finding(found: tuple[str, ...], code: int) -> None:
    assert doctor.exit_code(Finding("c", s, "w") for s in found) == code


def test_json_is_a_list_of_check_status_what_fix() -> None:
    out = json.loads(doctor.render([Finding("data_dir", FAIL, "not writable", "chmod")], as_json=True))
    assert out == [{"check": "data_dir", "status": "fail", "what": "not writable", "fix": "chmod"}]


def test_a_line_carries_status_what_and_fix() -> None:
    line = Finding("data_dir", FAIL, "/x is not writable", "mkdir -p /x").line()
    assert line.startswith("FAIL") and "/x is not writable" in line and "fix: mkdir -p /x" in line
    assert "\n" not in line


# ----------------------------------------------------------------- components


def test_command_not_on_path_fails() -> None:
    f = doctor.command_finding("web", '"airflow" is not on the component\'s PATH (/usr/bin)', "airflow")
    assert f.status == FAIL and "PATH" in f.what and f.fix


def test_command_found_is_ok() -> None:
    assert doctor.command_finding("web", None, "airflow").status == OK


@pytest.mark.parametrize(("version", "status"), [("3.3.2", OK), (None, FAIL), (RuntimeError("no output"), FAIL)])
def test_airflow_version(version: str | Exception | None, status: str) -> None:
    f = doctor.version_finding("sched", version)
    assert f.status == status
    if version == "3.3.2":
        assert "Airflow 3.3.2" in f.what


def test_working_dir_that_cannot_be_entered_fails() -> None:
    f = doctor.working_dir_finding("w", Path("/srv/x"), '"/srv" cannot be entered by user "airflow"')
    assert f.status == FAIL and "cannot be entered" in f.what


def test_working_dir_ok_and_unset() -> None:
    assert doctor.working_dir_finding("w", Path("/srv"), None).status == OK
    assert doctor.working_dir_finding("w", None, None).status == OK


# ----------------------------------------------------------------- data_dir, secrets


def test_data_dir_not_writable_fails() -> None:
    f = doctor.data_dir_finding(Path("/var/lib/haflowd"), "Read-only file system")
    assert f.status == FAIL and "Read-only file system" in f.what


def test_data_dir_writable_or_creatable_is_ok() -> None:
    assert doctor.data_dir_finding(Path("/d"), None).status == OK
    assert "creates it" in doctor.data_dir_finding(Path("/d"), None, created=True).what


def test_secret_readable_by_others_fails() -> None:
    f = doctor.secret_finding("gossip.key_file", Path("/k"), st(0, 0o100644), None, (0,))
    assert f.status == FAIL and "0644" in f.what and f.fix == "chmod 600 /k"


def test_secret_shielded_by_its_directory_is_ok_as_the_config_reader_accepts() -> None:
    assert doctor.secret_finding("k", Path("/k"), st(0, 0o100644), None, (0,), shielded=True).status == OK


def test_secret_readable_by_group_fails() -> None:
    assert doctor.secret_finding("k", Path("/k"), st(0, 0o100640), None, (0,)).status == FAIL


def test_secret_owned_by_someone_else_fails() -> None:
    f = doctor.secret_finding("k", Path("/k"), st(1234, 0o100600), None, (0, 999))
    assert f.status == FAIL and "uid 1234" in f.what


def test_secret_of_the_daemons_user_mode_600_is_ok() -> None:
    assert doctor.secret_finding("k", Path("/k"), st(999, 0o100400), None, (0, 999)).status == OK


def test_secret_missing_fails() -> None:
    f = doctor.secret_finding("k", Path("/k"), None, "No such file or directory", (0,))
    assert f.status == FAIL and "No such file" in f.what


def test_csync2_key_must_be_roots() -> None:
    f = doctor.secret_finding("csync2 key", Path("/k"), st(999, 0o100600), None, (0,), root_only=True)
    assert f.status == FAIL and "not root" in f.what


def test_secret_files_are_every_file_key_of_the_raw_config(tmp_path: Path) -> None:
    raw = {"gossip": {"key_file": "/etc/haflowd/gossip.key"},
           "postgres": {"node": [{"name": "a", "dsn_file": "a.dsn"}, {"name": "b", "dsn": "x"}]},
           "rabbitmq": {"node": [{"password_file": "/r"}], "amqp_url_file": "/amqp"}}
    found = dict(doctor.secret_files(raw, tmp_path))
    assert found == {"gossip.key_file": Path("/etc/haflowd/gossip.key"),
                     "postgres.node[0].dsn_file": tmp_path / "a.dsn",
                     "rabbitmq.node[0].password_file": Path("/r"), "rabbitmq.amqp_url_file": Path("/amqp")}


# ----------------------------------------------------------------- csync2

CFG = """\
nossl * *;
group dags {{
    host nodea nodeb (nodec);
    key /etc/csync2/key;
    include {include};
    exclude *~;
    auto younger;
    {backup}
}}
prefix dags {{
    on nodea: /srv/a/dags;
    on nodeb: /srv/b/dags;
}}
"""
BACKUP = "backup-directory /var/backups/csync2; backup-generations 3;"


def facts(text: str | None = None, host: str = "nodea", installed: str | None = "/usr/sbin/csync2") -> Csync2Facts:
    return Csync2Facts(installed, "/etc/csync2.cfg" if text is not None else None, text, host, ("/etc/csync2.cfg",))


def test_csync2_not_installed_fails() -> None:
    out, _, _ = doctor.csync2_findings(facts(CFG.format(include="%dags%", backup=BACKUP), installed=None), [])
    assert out[0].status == FAIL and "not installed" in out[0].what


def test_csync2_config_missing_fails() -> None:
    out, keys, peers = doctor.csync2_findings(facts(None), [Path("/srv/a/dags")])
    assert out[-1].status == FAIL and "no csync2 config" in out[-1].what and (keys, peers) == ([], [])


def test_csync2_config_not_naming_this_node_fails() -> None:
    out, _, _ = doctor.csync2_findings(facts(CFG.format(include="%dags%", backup=BACKUP), host="nodez"), [])
    assert out[-1].status == FAIL and '"nodez"' in out[-1].what


def test_csync2_config_not_covering_a_watched_folder_fails() -> None:
    out, _, _ = doctor.csync2_findings(facts(CFG.format(include="/srv/a/other", backup=BACKUP)), [Path("/srv/a/dags")])
    bad = [f for f in out if f.status == FAIL]
    assert len(bad) == 1 and "/srv/a/dags" in bad[0].what


def test_csync2_config_without_backup_directory_warns() -> None:
    out, _, _ = doctor.csync2_findings(facts(CFG.format(include="%dags%", backup="")), [Path("/srv/a/dags")])
    assert statuses(out).count(WARN) == 1 and doctor.exit_code(out) == 1
    assert "backup-directory" in next(f for f in out if f.status == WARN).what


def test_csync2_good_config_via_prefix_is_all_ok_and_names_key_and_peers() -> None:
    out, keys, peers = doctor.csync2_findings(facts(CFG.format(include="%dags%", backup=BACKUP)),
                                              [Path("/srv/a/dags")])
    assert set(statuses(out)) == {OK}
    assert keys == ["/etc/csync2/key"] and peers == ["nodeb", "nodec"]


@pytest.mark.parametrize(("pattern", "folder", "covered"), [
    ("/srv/dags", "/srv/dags", True), ("/srv/dags/", "/srv/dags", True), ("/srv", "/srv/dags", True),
    ("/srv/dag", "/srv/dags", False), ("/srv/*", "/srv/dags", True), ("/", "/srv", True),
    ("/srv/dags/sub", "/srv/dags", False),
])
def test_include_covers(pattern: str, folder: str, covered: bool) -> None:
    assert doctor._covers(pattern, folder) is covered


def sync_cfg(command: tuple[str, ...]) -> SyncConfig:
    return SyncConfig(enabled=True, command=command, interval=60, watch=(), debounce=0.5, timeout=120,
                      retry_initial=2, retry_max=300, peers=())


def test_csync2_config_from_csync2_system_dir_in_the_command() -> None:
    cmd = ("env", "CSYNC2_SYSTEM_DIR=/opt/c2", "csync2", "-N", "nodea", "-x")
    assert doctor.csync2_config_candidates(sync_cfg(cmd), {}) == ["/opt/c2/csync2.cfg"]


def test_csync2_config_from_the_environment_and_the_defaults() -> None:
    assert doctor.csync2_config_candidates(sync_cfg(("csync2", "-x")), {"CSYNC2_SYSTEM_DIR": "/e"}) == [
        "/e/csync2.cfg"]
    assert doctor.csync2_config_candidates(sync_cfg(("csync2", "-x")), {}) == [
        "/etc/csync2.cfg", "/etc/csync2/csync2.cfg"]


def test_csync2_peer_port_refused_fails() -> None:
    f = doctor.csync2_port_finding("nodeb", 30865, "connection to nodeb:30865 refused")
    assert f.status == FAIL and "refused" in f.what
    assert doctor.csync2_port_finding("nodeb", 30865, None).status == OK


# ----------------------------------------------------------------- gossip, clocks


def test_seed_refusing_our_signature_says_the_keys_differ() -> None:
    out = doctor.gossip_findings("10.0.0.2:7946", PingResult(401, refusal="bad_signature", skew=0.1))
    assert out[0].status == FAIL and out[0].what == "the seed refused our signature: the gossip keys differ"


def test_seed_refusing_our_timestamp_says_the_clocks_differ() -> None:
    out = doctor.gossip_findings("s", PingResult(401, refusal="stale", skew=-42.0))
    assert out[0].status == FAIL and "stale" in out[0].what
    assert out[1].status == FAIL and "-42.0s" in out[1].what


def test_seed_that_does_not_answer_fails() -> None:
    out = doctor.gossip_findings("s", PingResult(None, error="Connection refused"))
    assert statuses(out) == [FAIL] and "Connection refused" in out[0].what


def test_seed_whose_answer_does_not_verify_fails() -> None:
    assert doctor.gossip_findings("s", PingResult(200, verdict="bad_signature", skew=0.0))[0].status == FAIL


def test_seed_signed_ack_is_ok_with_its_skew() -> None:
    out = doctor.gossip_findings("s", PingResult(200, verdict="ok", skew=0.2))
    assert statuses(out) == [OK, OK] and out[1].check == "clock s"


@pytest.mark.parametrize(("skew", "status"), [(0.0, OK), (-4.9, OK), (5.1, WARN), (-29.0, WARN), (30.5, FAIL),
                                               (-300.0, FAIL)])
def test_skew(skew: float, status: str) -> None:
    assert doctor.skew_finding("p", skew).status == status


def test_skew_from_the_signed_timestamp_else_the_date_header() -> None:
    assert doctor._skew({"X-Haflowd-Timestamp": "1010.5"}, 1000.0) == pytest.approx(10.5)
    assert doctor._skew({"Date": "Thu, 01 Jan 1970 00:16:50 GMT"}, 1000.0) == pytest.approx(10.0)
    assert doctor._skew({}, 1000.0) is None


# ----------------------------------------------------------------- postgres, rabbitmq


def test_postgres_unreachable_fails() -> None:
    f = doctor.postgres_finding("pg1", "connection refused", None)
    assert f.status == FAIL and "cannot connect" in f.what


def test_postgres_role_without_pg_monitor_fails() -> None:
    f = doctor.postgres_finding("pg1", None, False)
    assert f.status == FAIL and "pg_monitor" in f.what and "GRANT pg_monitor" in f.fix


def test_postgres_with_pg_monitor_is_ok() -> None:
    assert doctor.postgres_finding("pg1", None, True).status == OK


def test_dsn_password_never_shows() -> None:
    dsn = "host=x password=hunter2 user=u"
    assert "hunter2" not in (doctor._scrub(f'could not connect: "{dsn}"', dsn) or "")
    assert doctor._scrub("password=s3cret failed", "other") == "password=*** failed"


@pytest.mark.parametrize(("status", "tags", "result"), [
    (200, ["monitoring"], OK), (200, ["administrator"], OK), (200, ["management"], FAIL), (200, [], FAIL),
    (401, [], FAIL), (404, [], FAIL), (None, [], FAIL),
])
def test_rabbitmq_whoami(status: int | None, tags: list[str], result: str) -> None:
    f = doctor.rabbitmq_finding("rabbit@a", status, None if status else "connection refused", tags)
    assert f.status == result
    if status == 401:
        assert "credentials" in f.what
    if status == 200 and result == FAIL:
        assert "monitoring" in f.fix


def test_whoami_tags_list_or_string() -> None:
    assert doctor.whoami_tags({"name": "u", "tags": ["monitoring", "x"]}) == ["monitoring", "x"]
    assert doctor.whoami_tags({"name": "u", "tags": "administrator, policymaker"}) == ["administrator", "policymaker"]
    assert doctor.whoami_tags([]) == []


# ----------------------------------------------------------------- ports


ADDR = HostPort("127.0.0.1", 8787)


def test_port_free_is_ok() -> None:
    assert doctor.port_finding("api", ADDR, None, [], None).status == OK


def test_port_held_by_our_daemon_is_ok() -> None:
    f = doctor.port_finding("api", ADDR, errno.EADDRINUSE, [4242], 4242)
    assert f.status == OK and "our running haflowd (pid 4242)" in f.what


def test_port_held_by_another_process_fails() -> None:
    f = doctor.port_finding("gossip", ADDR, errno.EADDRINUSE, [777], 4242)
    assert f.status == FAIL and "pid 777" in f.what


def test_port_held_by_an_unseen_process_fails() -> None:
    f = doctor.port_finding("api", ADDR, errno.EADDRINUSE, [], None)
    assert f.status == FAIL and "cannot see" in f.what


def test_port_on_an_address_not_of_this_host_fails() -> None:
    f = doctor.port_finding("api", HostPort("192.0.2.1", 1), errno.EADDRNOTAVAIL, [], None)
    assert f.status == FAIL and "cannot bind" in f.what


def test_a_probe_that_breaks_is_a_line_not_a_traceback() -> None:
    def broken() -> list[Finding]:
        raise KeyError("x")
    out = doctor._guard("postgres a", broken)
    assert statuses(out) == [FAIL] and "KeyError" in out[0].what


def test_csync2_system_dir_whose_name_is_csync2_is_not_taken_for_the_program() -> None:
    """``CSYNC2_SYSTEM_DIR=/etc/csync2``'s basename is "csync2": the program is the word after it."""
    cmd = ("env", "CSYNC2_SYSTEM_DIR=/etc/csync2", "csync2", "-C", "dags", "-x")
    assert doctor.csync2_config_candidates(sync_cfg(cmd), {}) == ["/etc/csync2/csync2_dags.cfg"]
