"""haflowd.airflow.version and .jobs: Airflow's version from an installation, its job heartbeats from a real
SQLite file, PostgreSQL URLs; and the job probe never shows the database password."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from haflowd.airflow import jobs
from haflowd.airflow import version as airflow_version
from haflowd.airflow.jobs import JobBeat
from haflowd.airflow.version import AirflowError, AirflowSettings
from haflowd.config import ComponentConfig, HealthConfig, Secret
from haflowd.health import CheckRegistry
from haflowd.supervisor.child import Child
from tests.conftest import free_port
from tests.fixtures.fake_airflow import SITE, Job, airflow_time, fake_venv, write_jobs

NOW = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)
HOST = "node1.example"


def _path(*dirs: Path) -> dict[str, str]:
    return {"PATH": ":".join([*(str(d) for d in dirs), "/usr/bin", "/bin"])}


# =========================================================================== detect_version


def test_version_from_airflow_core_dist_info_is_preferred(tmp_path: Path) -> None:
    # Airflow 3 installs both; the meta-package may lag behind the core
    bin_dir = fake_venv(tmp_path / "venv", "apache_airflow-3.3.0", "apache_airflow_core-3.3.2",
                        "apache_airflow_providers_celery-3.26.0", "apache_airflow_task_sdk-1.3.2")
    assert airflow_version.detect_version(_path(bin_dir)) == "3.3.2"


def test_version_from_apache_airflow_dist_info(tmp_path: Path) -> None:
    bin_dir = fake_venv(tmp_path / "venv", "apache_airflow-2.10.5", "apache_airflow_providers_postgres-5.0.0")
    assert airflow_version.detect_version(_path(bin_dir)) == "2.10.5"


def test_providers_alone_are_no_airflow_version(tmp_path: Path) -> None:
    bin_dir = fake_venv(tmp_path / "venv", "apache_airflow_providers_celery-3.26.0")
    assert airflow_version.detect_version(_path(bin_dir), run_fallback=False) is None


def test_version_via_the_shebang_interpreter(tmp_path: Path) -> None:
    """A script installed outside the venv (pipx, a symlink farm) names the venv's python."""
    venv = tmp_path / "venv"
    (venv / SITE / "apache_airflow_core-3.1.0.dist-info").mkdir(parents=True)
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    exe = scripts / "airflow"
    exe.write_text(f"#!{venv}/bin/python3.11 -I\nraise SystemExit(1)\n")
    exe.chmod(0o755)
    assert airflow_version.detect_version(_path(scripts), run_fallback=False) == "3.1.0"


def test_version_through_a_symlinked_script(tmp_path: Path) -> None:
    bin_dir = fake_venv(tmp_path / "venv", "apache_airflow_core-3.0.6")
    links = tmp_path / "links"
    links.mkdir()
    (links / "airflow").symlink_to(bin_dir / "airflow")
    assert airflow_version.detect_version(_path(links)) == "3.0.6"


def test_no_airflow_on_path_is_none(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert airflow_version.detect_version({"PATH": str(tmp_path / "empty")}) is None


def test_first_airflow_on_path_wins(tmp_path: Path) -> None:
    two = fake_venv(tmp_path / "two", "apache_airflow-2.10.5")
    three = fake_venv(tmp_path / "three", "apache_airflow_core-3.3.2")
    assert airflow_version.detect_version(_path(two, three)) == "2.10.5"
    assert airflow_version.detect_version(_path(three, two)) == "3.3.2"


def test_fallback_runs_airflow_version(tmp_path: Path) -> None:
    bin_dir = fake_venv(tmp_path / "venv", prints="2.9.3")  # no dist-info: an odd install
    assert airflow_version.detect_version(_path(bin_dir)) == "2.9.3"
    assert airflow_version.detect_version(_path(bin_dir), run_fallback=False) is None


def test_fallback_takes_the_last_version_line_after_warnings(tmp_path: Path) -> None:
    bin_dir = fake_venv(tmp_path / "venv")
    (bin_dir / "airflow").write_text("#!/bin/sh\necho 'WARNING: 1.2 is deprecated'\necho 3.0.1\necho\n")
    assert airflow_version.detect_version(_path(bin_dir)) == "3.0.1"


def test_fallback_runs_once_per_executable(tmp_path: Path) -> None:
    """`airflow version` costs seconds of CPU: seven presets on one node ask it once."""
    bin_dir = fake_venv(tmp_path / "venv")
    calls = tmp_path / "calls"
    (bin_dir / "airflow").write_text(f"#!/bin/sh\necho x >> '{calls}'\necho 2.10.4\n")
    for _ in range(7):
        assert airflow_version.detect_version(_path(bin_dir)) == "2.10.4"
    assert calls.read_text().count("x") == 1


def test_fallback_that_prints_nothing_is_an_error(tmp_path: Path) -> None:
    bin_dir = fake_venv(tmp_path / "venv")  # prints nothing, exits 1
    with pytest.raises(AirflowError) as info:
        airflow_version.detect_version(_path(bin_dir))
    assert str(info.value) == f"{bin_dir / 'airflow'} version printed no version (exit 1)"


def test_fallback_that_cannot_run_is_an_error(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "airflow").write_text("#!/nonexistent/interpreter\n")
    (bin_dir / "airflow").chmod(0o755)
    with pytest.raises(AirflowError, match=r"airflow version: FileNotFoundError$"):
        airflow_version.detect_version(_path(bin_dir))


@pytest.mark.parametrize(
    ("version", "major"),
    [("3.3.2", 3), ("2.10.5", 2), ("3.0.0rc1", 3), ("10.1", 10), (None, None), ("", None), ("dev", None)],
)
def test_major(version: str | None, major: int | None) -> None:
    assert airflow_version.major(version) == major


# =========================================================================== option_value


@pytest.mark.parametrize(
    ("command", "value"),
    [
        (("airflow", "api-server", "--port", "9000"), "9000"),
        (("airflow", "api-server", "--port=9001"), "9001"),
        (("airflow", "api-server", "-p", "9002"), "9002"),
        (("airflow", "api-server"), None),
        (("airflow", "api-server", "--port"), None),  # nothing after it
        (("airflow", "api-server", "--portable", "1"), None),
    ],
)
def test_option_value(command: tuple[str, ...], value: str | None) -> None:
    assert airflow_version.option_value(command, "--port", "-p") == value


# =========================================================================== settings


def test_settings_env_component_over_daemon_over_cfg(tmp_path: Path) -> None:
    (tmp_path / "airflow.cfg").write_text(
        "[core]\ndags_folder = {AIRFLOW_HOME}/dags\n[api]\nport = 1111\nhost = ::1\n"
        "[database]\nsql_alchemy_conn = sqlite:///{AIRFLOW_HOME}/x.db\n"
    )
    base = {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__API__PORT": "2222"}
    s = AirflowSettings.load({}, base)
    assert s.cfg_path == tmp_path / "airflow.cfg"
    assert s.port("api", "port", 8080) == 2222
    assert AirflowSettings.load({"AIRFLOW__API__PORT": "3333"}, base).port("api", "port", 8080) == 3333
    assert AirflowSettings.load({}, {"AIRFLOW_HOME": str(tmp_path)}).port("api", "port", 8080) == 1111
    assert s.get("core", "dags_folder", "") == f"{tmp_path}/dags"
    assert s.probe_host("api", "host") == "[::1]"
    assert s.database_url() == f"sqlite:///{tmp_path}/x.db"


def test_settings_without_a_cfg(tmp_path: Path) -> None:
    s = AirflowSettings.load({"AIRFLOW_HOME": str(tmp_path / "nowhere")}, {})
    assert (s.cfg, s.cfg_path) == (None, None)
    assert s.port("api", "port", 8080) == 8080
    assert s.probe_host("api", "host") == "127.0.0.1"
    assert s.database_url() == f"sqlite:///{tmp_path / 'nowhere' / 'airflow.db'}"


def test_settings_home_defaults_to_home_airflow(tmp_path: Path) -> None:
    (tmp_path / "airflow").mkdir()
    (tmp_path / "airflow" / "airflow.cfg").write_text("[celery]\nflower_port = 5566\n")
    s = AirflowSettings.load({}, {"HOME": str(tmp_path)})
    assert s.port("celery", "flower_port", 5555) == 5566


def test_airflow_config_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "elsewhere.cfg"
    cfg.write_text("[webserver]\nweb_server_port = 8181\n")
    s = AirflowSettings.load({"AIRFLOW_CONFIG": str(cfg), "AIRFLOW_HOME": str(tmp_path / "home")}, {})
    assert s.cfg_path == cfg
    assert s.port("webserver", "web_server_port", 8080) == 8181


def test_core_sql_alchemy_conn_of_old_airflow(tmp_path: Path) -> None:
    s = AirflowSettings.load({"AIRFLOW__CORE__SQL_ALCHEMY_CONN": "postgresql://a@b/c"}, {})
    assert s.database_url() == "postgresql://a@b/c"


@pytest.mark.parametrize("raw", ["abc", "0", "65536", "-1", "80.5", ""])
def test_bad_ports(raw: str) -> None:
    s = AirflowSettings.load({"AIRFLOW__API__PORT": raw}, {})
    with pytest.raises(AirflowError) as info:
        s.port("api", "port", 8080)
    assert str(info.value) == f"[api] port in Airflow's configuration is not a port: {raw!r}"


@pytest.mark.parametrize(
    ("host", "probe"),
    [("0.0.0.0", "127.0.0.1"), ("", "127.0.0.1"), ("::", "127.0.0.1"), ("[::]", "127.0.0.1"),
     ("10.0.0.5", "10.0.0.5"), ("::1", "[::1]"), ("[fe80::1]", "[fe80::1]"), (" node1 ", "node1")],
)
def test_probe_host(host: str, probe: str) -> None:
    assert AirflowSettings.load({"AIRFLOW__API__HOST": host}, {}).probe_host("api", "host") == probe


# =========================================================================== job_heartbeat


def _db(tmp_path: Path, *jobs: Job) -> str:
    db = tmp_path / "airflow.db"
    write_jobs(db, jobs)
    return f"sqlite:///{db}"


def test_airflow_time_is_naive_utc_with_microseconds() -> None:
    cest = dt.timezone(dt.timedelta(hours=2))
    assert airflow_time(dt.datetime(2026, 11, 26, 14, 0, 0, 5, tzinfo=cest)) == "2026-11-26 12:00:00.000005"


def test_newest_running_job_of_the_type_on_this_host_wins(tmp_path: Path) -> None:
    url = _db(
        tmp_path,
        Job("TriggererJob", HOST, NOW - dt.timedelta(seconds=300), id=1),  # an older, dead one left "running"
        Job("TriggererJob", HOST, NOW - dt.timedelta(seconds=7.5), id=2),  # ours
        Job("TriggererJob", "node2.example", NOW - dt.timedelta(seconds=1), id=3),  # another host
        Job("SchedulerJob", HOST, NOW - dt.timedelta(seconds=1), id=4),  # another type
        Job("TriggererJob", HOST, NOW - dt.timedelta(seconds=2), state="failed", id=5),
        Job("TriggererJob", HOST, NOW - dt.timedelta(seconds=3), state="success", id=6),
    )
    beat = jobs.job_heartbeat(url, "TriggererJob", HOST, 5.0, now=NOW)
    assert beat == JobBeat(found=True, age_s=7.5, job_id=2)


def test_stale_heartbeat_gives_its_age(tmp_path: Path) -> None:
    url = _db(tmp_path, Job("DagProcessorJob", HOST, NOW - dt.timedelta(minutes=10), id=9))
    assert jobs.job_heartbeat(url, "DagProcessorJob", HOST, 5.0, now=NOW) == JobBeat(True, 600.0, 9)


def test_a_heartbeat_in_the_future_is_age_zero(tmp_path: Path) -> None:
    url = _db(tmp_path, Job("SchedulerJob", HOST, NOW + dt.timedelta(seconds=3), id=1))
    assert jobs.job_heartbeat(url, "SchedulerJob", HOST, 5.0, now=NOW).age_s == 0.0


def test_no_matching_job(tmp_path: Path) -> None:
    url = _db(tmp_path, Job("TriggererJob", "node2.example", NOW, id=1), Job("TriggererJob", HOST, NOW,
                                                                               state="failed", id=2))
    assert jobs.job_heartbeat(url, "TriggererJob", HOST, 5.0, now=NOW) == JobBeat(found=False)


def test_job_that_never_heartbeat(tmp_path: Path) -> None:
    url = _db(tmp_path, Job("TriggererJob", HOST, None, id=4))
    assert jobs.job_heartbeat(url, "TriggererJob", HOST, 5.0, now=NOW) == JobBeat(found=True, job_id=4)


def test_without_now_the_clock_is_utc(tmp_path: Path) -> None:
    url = _db(tmp_path, Job("TriggererJob", HOST, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30), id=1))
    age = jobs.job_heartbeat(url, "TriggererJob", HOST, 5.0).age_s
    assert age is not None and 29.0 <= age < 60.0


def test_the_database_is_opened_read_only(tmp_path: Path) -> None:
    url = _db(tmp_path, Job("TriggererJob", HOST, NOW, id=1))
    before = (tmp_path / "airflow.db").read_bytes()
    jobs.job_heartbeat(url, "TriggererJob", HOST, 5.0, now=NOW)
    assert (tmp_path / "airflow.db").read_bytes() == before
    assert not (tmp_path / "airflow.db-journal").exists()


def test_missing_sqlite_file_is_an_error_and_not_created(tmp_path: Path) -> None:
    db = tmp_path / "missing.db"
    with pytest.raises(AirflowError, match=r"^the SQLite metadata database does not exist$"):
        jobs.job_heartbeat(f"sqlite:///{db}", "TriggererJob", HOST, 5.0, now=NOW)
    assert not db.exists()


def test_sqlite_url_without_a_path_is_an_error() -> None:
    with pytest.raises(AirflowError, match=r"^the SQLite metadata database has no file path$"):
        jobs.job_heartbeat("sqlite://", "TriggererJob", HOST, 5.0, now=NOW)


def test_unsupported_database_is_an_error() -> None:
    with pytest.raises(AirflowError) as info:
        jobs.job_heartbeat("mysql+mysqldb://airflow:pw@db/airflow", "TriggererJob", HOST, 5.0, now=NOW)
    assert str(info.value) == "metadata database 'mysql' is not supported by this probe (sqlite, postgresql)"
    assert "pw" not in str(info.value)


# =========================================================================== postgres_kwargs


def test_postgres_kwargs() -> None:
    kw = jobs.postgres_kwargs(
        "postgresql+psycopg2://air%40flow:p%40ss%2Fw0rd@db.example:6432/air%20flow?sslmode=verify-full"
        "&sslrootcert=/etc/ca.pem&application_name=x&options=-c%20foo",
        3.7,
    )
    assert kw == {
        "dbname": "air flow",
        "connect_timeout": 3,
        "application_name": "haflowd-airflow-probe",
        "host": "db.example",
        "port": 6432,
        "user": "air@flow",
        "password": "p@ss/w0rd",
        "sslmode": "verify-full",
        "sslrootcert": "/etc/ca.pem",
        "options": "-c statement_timeout=3700",
    }


def test_postgres_kwargs_minimal_and_host_in_query() -> None:
    kw = jobs.postgres_kwargs("postgresql:///?host=/run/postgresql&port=5433", 0.5)
    assert kw == {"dbname": "airflow", "connect_timeout": 1, "application_name": "haflowd-airflow-probe",
                  "host": "/run/postgresql", "port": "5433", "options": "-c statement_timeout=500"}


# =========================================================================== the probe hides the password


def _child(health: HealthConfig) -> Child:
    cfg = ComponentConfig(name="triggerer", command=("true",), health=health)

    async def never(_cfg: ComponentConfig) -> None:
        return None

    return Child(cfg, marker="test", registry=CheckRegistry(), http=lambda: None,  # type: ignore[arg-type,return-value]
                 deps_ready=never, on_change=lambda _c: None, on_spawn=lambda _c: None)


def _probe(url: str, timeout: float = 5.0, hostname: str | None = HOST, max_age: float = 60.0) -> tuple[bool, str]:
    h = HealthConfig(http=None, command=None, interval=10.0, timeout=timeout, failures=3, start_period=0.0,
                     airflow_job="TriggererJob", database=Secret(url), hostname=hostname, max_age=max_age)

    async def run() -> tuple[bool, str]:
        return await _child(h).probe(h)

    return asyncio.run(run())


PASSWORD = "Zq7-s3cr3t-pw"


@pytest.mark.parametrize(
    "url",
    [
        # nothing listens there: psycopg2's OperationalError
        f"postgresql://airflow:{PASSWORD}@127.0.0.1:{{port}}/airflow",
        f"postgresql+psycopg2://airflow:{PASSWORD}@127.0.0.1:{{port}}/airflow?sslmode=require",
        # a host that does not resolve
        f"postgresql://airflow:{PASSWORD}@no-such-host.invalid:5432/airflow",
        # an unencoded '/' in the password makes the rest of the URL a path
        f"postgresql://airflow:{PASSWORD}/x@127.0.0.1:{{port}}/airflow",
        # an unencoded ':' in the password part: the port cannot be parsed
        f"postgresql://airflow@127.0.0.1:{PASSWORD}/airflow",
        f"mysql://airflow:{PASSWORD}@127.0.0.1/airflow",
        f"sqlite:////nonexistent/{PASSWORD}/airflow.db",
    ],
)
def test_probe_errors_never_show_the_password(url: str) -> None:
    ok, output = _probe(url.replace("{port}", str(free_port())))
    assert not ok
    assert output
    assert PASSWORD not in output, output
    assert "\n" not in output


def test_probe_of_a_sqlite_database(tmp_path: Path) -> None:
    url = _db(tmp_path, Job("TriggererJob", HOST, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2), id=3))
    ok, output = _probe(url)
    assert ok, output
    assert output.startswith("TriggererJob 3 heartbeat ")

    write_jobs(tmp_path / "airflow.db", [Job("TriggererJob", HOST, NOW - dt.timedelta(days=1), id=3)], replace=True)
    ok, output = _probe(url, max_age=30.0)
    assert not ok
    assert "TriggererJob 3 on node1.example: last heartbeat " in output and output.endswith("ago (max 30s)")

    ok, output = _probe(url, hostname="node9.example")
    assert (ok, output) == (False, "no running TriggererJob on host node9.example")

    write_jobs(tmp_path / "airflow.db", [Job("TriggererJob", HOST, None, id=8)], replace=True)
    assert _probe(url) == (False, "TriggererJob 8 on node1.example has never heartbeat")


def test_probe_of_a_file_without_a_job_table_names_the_error(tmp_path: Path) -> None:
    (tmp_path / "empty.db").write_bytes(b"")
    ok, output = _probe(f"sqlite:///{tmp_path / 'empty.db'}")
    assert (ok, output) == (False, "metadata database: OperationalError: no such table: job")


def test_probe_defaults_to_airflows_hostname(tmp_path: Path) -> None:
    url = _db(tmp_path, Job("TriggererJob", jobs.airflow_hostname(), dt.datetime.now(dt.UTC), id=1))
    ok, output = _probe(url, hostname=None)
    assert ok, output


def test_postgres_kwargs_unparsable_port_does_not_quote_the_url() -> None:
    with pytest.raises(AirflowError) as info:
        jobs.postgres_kwargs(f"postgresql://airflow:{PASSWORD}/x@db/airflow", 3.0)
    assert str(info.value) == ("the metadata database URL cannot be parsed (is a character in the password "
                               "not %-encoded?)")


@pytest.mark.parametrize(
    ("beat", "expected"),
    [
        (JobBeat(found=False), (False, "no running TriggererJob on host h1")),
        (JobBeat(found=True, job_id=4), (False, "TriggererJob 4 on h1 has never heartbeat")),
        (JobBeat(True, 61.0, 5), (False, "TriggererJob 5 on h1: last heartbeat 61s ago (max 60s)")),
        (JobBeat(True, 60.0, 5), (True, "TriggererJob 5 heartbeat 60.0s ago")),
        (JobBeat(True, 0.25, 6), (True, "TriggererJob 6 heartbeat 0.2s ago")),
    ],
)
def test_verdict_of_a_heartbeat(beat: JobBeat, expected: tuple[bool, str]) -> None:
    assert jobs.verdict("TriggererJob", "h1", beat, 60.0) == expected
