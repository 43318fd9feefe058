"""Airflow presets: the command, probe, environment and stop settings each gives on Airflow 3
and Airflow 2; where ports come from; what the config says when a preset cannot apply."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from haflowd import config
from haflowd.airflow import presets
from haflowd.airflow.version import AirflowError
from haflowd.config import ComponentConfig, ConfigError, HealthConfig
from tests.fixtures.fake_airflow import fake_venv

HOST = "node1.example"
CELERY_APP = "airflow.providers.celery.executors.celery_executor.app"


@pytest.fixture(autouse=True)
def _clean_daemon_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AIRFLOW_* of the machine running the tests, and no ~/airflow/airflow.cfg."""
    import os

    for k in list(os.environ):
        if k.startswith("AIRFLOW"):
            monkeypatch.delenv(k)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))


def _resolve(name: str, version: str | None, command: tuple[str, ...] | None = None,
             env: dict[str, str] | None = None) -> presets.Defaults:
    return presets.resolve(name, "c", command, env or {}, version=version, hostname=HOST)


def _load(tmp_path: Path, body: str, check_system: bool = False) -> tuple[ComponentConfig, ...]:
    p = tmp_path / "haflowd.toml"
    p.write_text(body)
    return config.load(p, check_system=check_system).components


def _errors(tmp_path: Path, body: str, check_system: bool = False) -> list[str]:
    p = tmp_path / "haflowd.toml"
    p.write_text(body)
    with pytest.raises(ConfigError) as info:
        config.load(p, check_system=check_system)
    return [line.replace(f"{p}: ", "$FILE: ") for line in info.value.lines]


# =========================================================================== each preset, Airflow 3 and 2


def _probe(h: HealthConfig | None) -> tuple[object, ...]:
    assert h is not None
    return (h.http, h.command, h.airflow_job, dict(h.expect), h.interval, h.timeout, h.failures, h.start_period)


HTTP_10S = (10.0, 5.0, 3, 120.0)  # interval, timeout, failures, start_period
# the api-server's and webserver's endpoints query the database: a loaded machine gets longer
HTTP_DB = (15.0, 10.0, 5, 120.0)
JOB = (15.0, 10.0, 3, 120.0)


@pytest.mark.parametrize("version", ["3.3.2", "2.10.5", None])
def test_scheduler(version: str | None) -> None:
    d = _resolve("airflow-scheduler", version)
    assert d.command == ("airflow", "scheduler")
    assert _probe(d.health) == ("http://127.0.0.1:8974/health", None, None, {}, *HTTP_10S)
    assert d.environment == {"AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True"}
    assert (d.stop_signal, d.stop_timeout, d.restart, d.oneshot) == (signal.SIGTERM, 60.0, "always", False)


@pytest.mark.parametrize("version", ["3.3.2", "3.0.0", None])
def test_api_server(version: str | None) -> None:
    d = _resolve("airflow-api-server", version)
    assert d.command == ("airflow", "api-server")
    assert _probe(d.health) == ("http://127.0.0.1:8080/api/v2/monitor/health", None, None,
                                {"metadatabase.status": "healthy"}, *HTTP_DB)
    assert d.environment == {}
    assert (d.stop_signal, d.stop_timeout, d.restart, d.oneshot) == (signal.SIGTERM, 30.0, "always", False)


@pytest.mark.parametrize("version", ["2.10.5", "2.7.0", None])
def test_webserver(version: str | None) -> None:
    d = _resolve("airflow-webserver", version)
    assert d.command == ("airflow", "webserver")
    assert _probe(d.health) == ("http://127.0.0.1:8080/health", None, None,
                                {"metadatabase.status": "healthy"}, *HTTP_DB)
    assert d.environment == {}
    assert (d.stop_signal, d.stop_timeout) == (signal.SIGTERM, 30.0)


def test_api_server_refused_on_airflow_2() -> None:
    with pytest.raises(AirflowError) as info:
        _resolve("airflow-api-server", "2.10.5")
    assert str(info.value) == 'Airflow 2.10.5 has no api-server; use preset "airflow-webserver"'


def test_webserver_refused_on_airflow_3() -> None:
    with pytest.raises(AirflowError) as info:
        _resolve("airflow-webserver", "3.3.2")
    assert str(info.value) == ('Airflow 3.3.2 replaced the webserver with the api-server; '
                               'use preset "airflow-api-server"')


@pytest.mark.parametrize(("version", "env"), [
    ("3.3.2", {}),
    (None, {}),
    ("2.10.5", {"AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True"}),
])
def test_dag_processor(version: str | None, env: dict[str, str], tmp_path: Path) -> None:
    d = _resolve("airflow-dag-processor", version, env={"AIRFLOW_HOME": str(tmp_path)})
    assert d.command == ("airflow", "dag-processor")
    assert _probe(d.health) == (None, None, "DagProcessorJob", {}, *JOB)
    assert d.health is not None and d.health.max_age == 60.0
    assert d.health.database is not None
    assert d.health.database.reveal() == f"sqlite:///{tmp_path / 'airflow.db'}"
    assert d.environment == env
    assert (d.stop_signal, d.stop_timeout, d.restart) == (signal.SIGTERM, 30.0, "always")


@pytest.mark.parametrize("version", ["3.3.2", "2.10.5"])
def test_triggerer(version: str) -> None:
    url = "postgresql://airflow:pw@db.example/airflow"
    d = _resolve("airflow-triggerer", version, env={"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url})
    assert d.command == ("airflow", "triggerer")
    assert _probe(d.health) == (None, None, "TriggererJob", {}, *JOB)
    assert d.health is not None and d.health.database is not None
    assert d.health.database.reveal() == url
    assert "pw" not in repr(d.health)
    assert d.health.max_age == 60.0
    assert d.environment == {}
    assert (d.stop_signal, d.stop_timeout) == (signal.SIGTERM, 30.0)


@pytest.mark.parametrize(("raw", "max_age"), [("30", 30.0), ("90.5", 90.5), ("3", 10.0), ("soon", 60.0)])
def test_triggerer_max_age_follows_airflows_threshold(raw: str, max_age: float) -> None:
    d = _resolve("airflow-triggerer", "3.3.2", env={"AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": raw})
    assert d.health is not None and d.health.max_age == max_age


@pytest.mark.parametrize("version", ["3.3.2", "2.10.5"])
def test_celery_worker(version: str) -> None:
    d = _resolve("airflow-celery-worker", version)
    assert d.command == ("airflow", "celery", "worker")
    assert _probe(d.health) == (
        None, ("celery", "--app", CELERY_APP, "inspect", "ping", "--destination", f"celery@{HOST}", "--timeout", "10"),
        None, {}, 60.0, 45.0, 3, 180.0)
    assert d.environment == {}
    # SIGTERM is Celery's warm shutdown: running tasks get ten minutes
    assert (d.stop_signal, d.stop_timeout, d.restart) == (signal.SIGTERM, 600.0, "always")


@pytest.mark.parametrize("broker", ["amqp://u:pw@rmq1:5672//", "pyamqp://u:pw@a//;amqp://u:pw@b//"])
def test_celery_worker_on_rabbitmq_is_pinged_from_the_daemon(broker: str) -> None:
    """With an AMQP broker the same remote-control ping is sent by haflowd itself (no 4 s
    Python start per probe); the broker URL is a secret."""
    d = presets.resolve("airflow-celery-worker", "w", None, {"AIRFLOW__CELERY__BROKER_URL": broker},
                        version="3.3.2", hostname="node1")
    h = d.health
    assert h is not None and (h.http, h.command, h.airflow_job) == (None, None, None)
    assert h.celery_ping == "celery@node1"
    assert h.broker is not None and h.broker.reveal() == broker and "pw" not in repr(h)
    assert (h.interval, h.timeout, h.failures, h.start_period, h.start_interval) == (30.0, 10.0, 3, 180.0, 3.0)


def test_celery_worker_probe_defaults_to_this_hosts_name() -> None:
    d = presets.resolve("airflow-celery-worker", "w", None, {}, version="3.3.2")
    assert d.health is not None and d.health.command is not None
    assert d.health.command[6] == f"celery@{socket.gethostname()}"


@pytest.mark.parametrize(
    ("flags", "destination"),
    [
        (("--celery-hostname", "w1@node1"), "w1@node1"),
        (("-H", "w2@node1"), "w2@node1"),
        (("--celery-hostname=w3@node1",), "w3@node1"),
        # as Celery reads it: no '@' is a host name for "celery@", and %h %n %d expand
        (("-H", "node7"), "celery@node7"),
        (("-H", "w1@%h"), f"w1@{HOST}"),
        (("-H", "%n@%d"), "node1@example"),
    ],
)
def test_celery_worker_probe_follows_celery_hostname(flags: tuple[str, ...], destination: str) -> None:
    d = _resolve("airflow-celery-worker", "3.3.2", command=("airflow", "celery", "worker", *flags))
    assert d.health is not None and d.health.command is not None
    assert d.health.command[6] == destination


@pytest.mark.parametrize("version", ["3.3.2", "2.10.5"])
def test_flower(version: str) -> None:
    d = _resolve("airflow-flower", version)
    assert d.command == ("airflow", "celery", "flower")
    assert _probe(d.health) == ("http://127.0.0.1:5555/healthcheck", None, None, {}, 10.0, 5.0, 3, 60.0)
    assert (d.stop_signal, d.stop_timeout) == (signal.SIGTERM, 30.0)


@pytest.mark.parametrize("version", ["3.3.2", "2.10.5"])
def test_db_migrate_is_a_oneshot(version: str) -> None:
    d = _resolve("airflow-db-migrate", version)
    assert d.command == ("airflow", "db", "migrate")
    assert d.health is None
    assert (d.oneshot, d.restart, d.backoff_initial, d.stop_timeout) == (True, "on-failure", 5.0, 300.0)


def test_every_preset_is_covered() -> None:
    assert set(presets.PRESETS) == {
        "airflow-scheduler", "airflow-api-server", "airflow-webserver", "airflow-dag-processor",
        "airflow-triggerer", "airflow-celery-worker", "airflow-flower", "airflow-db-migrate",
    }


# =========================================================================== ports and hosts


@pytest.mark.parametrize(
    ("name", "section", "key", "url"),
    [
        ("airflow-api-server", "API__PORT", "port", "http://127.0.0.1:{}/api/v2/monitor/health"),
        ("airflow-flower", "CELERY__FLOWER_PORT", "flower_port", "http://127.0.0.1:{}/healthcheck"),
    ],
)
def test_port_precedence(name: str, section: str, key: str, url: str, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    cfg_section = section.split("__")[0].lower()
    (tmp_path / "airflow.cfg").write_text(f"[{cfg_section}]\n{key} = 4001\n")
    home = {"AIRFLOW_HOME": str(tmp_path)}
    command = ("airflow", *presets.resolve(name, "c", None, {}, version="3.3.2").command[1:])

    def probe(cmd: tuple[str, ...] | None, env: dict[str, str]) -> str | None:
        h = presets.resolve(name, "c", cmd, env, version="3.3.2").health
        assert h is not None
        return h.http

    # default, then airflow.cfg, then the daemon's environment, then the component's, then --port
    assert probe(None, {}) == url.format(8080 if "api" in name else 5555)
    assert probe(None, home) == url.format(4001)
    monkeypatch.setenv(f"AIRFLOW__{section}", "4002")
    assert probe(None, home) == url.format(4002)
    assert probe(None, {**home, f"AIRFLOW__{section}": "4003"}) == url.format(4003)
    assert probe((*command, "--port", "4004"), {**home, f"AIRFLOW__{section}": "4003"}) == url.format(4004)
    assert probe((*command, "--port=4005"), home) == url.format(4005)
    assert probe((*command, "-p", "4006"), home) == url.format(4006)


def test_webserver_port_from_airflow_cfg_and_command(tmp_path: Path) -> None:
    (tmp_path / "airflow.cfg").write_text("[webserver]\nweb_server_port = 8181\nweb_server_host = 10.1.2.3\n")
    env = {"AIRFLOW_HOME": str(tmp_path)}
    h = _resolve("airflow-webserver", "2.10.5", env=env).health
    assert h is not None and h.http == "http://10.1.2.3:8181/health"
    h = _resolve("airflow-webserver", "2.10.5", command=("airflow", "webserver", "-p", "8282"), env=env).health
    assert h is not None and h.http == "http://10.1.2.3:8282/health"


def test_scheduler_port_and_host_from_the_environment() -> None:
    env = {"AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": "9974",
           "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "::1"}
    h = _resolve("airflow-scheduler", "3.3.2", env=env).health
    assert h is not None and h.http == "http://[::1]:9974/health"


def test_airflow_config_variable_and_airflow_home_substitution(tmp_path: Path) -> None:
    home = tmp_path / "airflow-home"
    cfg = tmp_path / "etc" / "airflow.cfg"
    cfg.parent.mkdir()
    cfg.write_text("[database]\nsql_alchemy_conn = sqlite:///{AIRFLOW_HOME}/meta.db\n[api]\nport = 8443\n")
    env = {"AIRFLOW_HOME": str(home), "AIRFLOW_CONFIG": str(cfg)}
    h = _resolve("airflow-triggerer", "3.3.2", env=env).health
    assert h is not None and h.database is not None
    assert h.database.reveal() == f"sqlite:///{home}/meta.db"
    h = _resolve("airflow-api-server", "3.3.2", env=env).health
    assert h is not None and h.http == "http://127.0.0.1:8443/api/v2/monitor/health"


def test_database_defaults_to_home_airflow(tmp_path: Path) -> None:
    h = _resolve("airflow-dag-processor", "3.3.2").health
    assert h is not None and h.database is not None
    assert h.database.reveal() == f"sqlite:///{tmp_path / 'home' / 'airflow' / 'airflow.db'}"


@pytest.mark.parametrize(
    ("where", "line"),
    [
        ('environment = { AIRFLOW__API__PORT = "eighty" }\n',
         "airflow-api-server: [api] port in Airflow's configuration is not a port: 'eighty'"),
        ('environment = { AIRFLOW__API__PORT = "70000" }\n',
         "airflow-api-server: [api] port in Airflow's configuration is not a port: '70000'"),
        ('command = ["airflow", "api-server", "--port", "http"]\n',
         "airflow-api-server: --port 'http' in the command is not a port"),
        ('command = ["airflow", "api-server", "--port=0"]\n',
         "airflow-api-server: --port '0' in the command is not a port"),
        ('command = ["airflow", "api-server", "-p", "65536"]\n',
         "airflow-api-server: --port '65536' in the command is not a port"),
        ("cfg", "airflow-api-server: [api] port in Airflow's configuration is not a port: '80\\n81'"),
    ],
)
def test_bad_port_is_one_config_line(tmp_path: Path, where: str, line: str) -> None:
    if where == "cfg":
        (tmp_path / "airflow.cfg").write_text("[api]\nport = 80\n  81\n")  # a continuation line
        where = f'environment = {{ AIRFLOW_HOME = "{tmp_path}" }}\n'
    body = '[[component]]\nname = "api"\npreset = "airflow-api-server"\n' + where
    assert _errors(tmp_path, body) == [f"$FILE: component[0].preset: {line}"]


def test_bad_port_of_the_second_component_names_it(tmp_path: Path) -> None:
    body = ('[[component]]\nname = "s"\npreset = "airflow-scheduler"\n'
            '[[component]]\nname = "f"\npreset = "airflow-flower"\n'
            'environment = { AIRFLOW__CELERY__FLOWER_PORT = "x" }\n')
    assert _errors(tmp_path, body) == [
        "$FILE: component[1].preset: airflow-flower: [celery] flower_port in Airflow's configuration "
        "is not a port: 'x'"]


# =========================================================================== version detection through the config


def _venv_env(tmp_path: Path, dist: str) -> str:
    bin_dir = fake_venv(tmp_path / "venv", dist)
    return f'environment = {{ PATH = "{bin_dir}:/usr/bin:/bin", AIRFLOW_HOME = "{tmp_path}" }}\n'


def test_airflow_2_detected_from_dist_info(tmp_path: Path) -> None:
    env = _venv_env(tmp_path, "apache_airflow-2.10.5")
    web, dags = _load(tmp_path, f'[[component]]\nname = "web"\npreset = "airflow-webserver"\n{env}'
                                f'[[component]]\nname = "dags"\npreset = "airflow-dag-processor"\n{env}',
                      check_system=True)
    assert web.command == ("airflow", "webserver")
    assert web.health is not None and web.health.http == "http://127.0.0.1:8080/health"
    assert dict(web.health.expect) == {"metadatabase.status": "healthy"}
    assert dags.environment["AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR"] == "True"
    assert dags.health is not None and dags.health.airflow_job == "DagProcessorJob"


def test_airflow_3_detected_from_dist_info(tmp_path: Path) -> None:
    env = _venv_env(tmp_path, "apache_airflow_core-3.3.2")
    api, dags = _load(tmp_path, f'[[component]]\nname = "api"\npreset = "airflow-api-server"\n{env}'
                                f'[[component]]\nname = "dags"\npreset = "airflow-dag-processor"\n{env}',
                      check_system=True)
    assert api.health is not None and api.health.http == "http://127.0.0.1:8080/api/v2/monitor/health"
    assert "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR" not in dags.environment


def test_airflow_version_fallback_through_the_config(tmp_path: Path) -> None:
    bin_dir = fake_venv(tmp_path / "venv", prints="2.9.3")
    env = f'environment = {{ PATH = "{bin_dir}:/usr/bin:/bin" }}\n'
    assert _errors(tmp_path, f'[[component]]\nname = "api"\npreset = "airflow-api-server"\n{env}',
                   check_system=True) == [
        '$FILE: component[0].preset: airflow-api-server: Airflow 2.9.3 has no api-server; '
        'use preset "airflow-webserver"']


def test_api_server_on_airflow_2_and_webserver_on_airflow_3_are_config_errors(tmp_path: Path) -> None:
    two = _venv_env(tmp_path / "2", "apache_airflow-2.10.5")
    three = _venv_env(tmp_path / "3", "apache_airflow_core-3.3.2")
    body = (f'[[component]]\nname = "api"\npreset = "airflow-api-server"\n{two}'
            f'[[component]]\nname = "web"\npreset = "airflow-webserver"\n{three}')
    assert _errors(tmp_path, body, check_system=True) == [
        '$FILE: component[0].preset: airflow-api-server: Airflow 2.10.5 has no api-server; '
        'use preset "airflow-webserver"',
        '$FILE: component[1].preset: airflow-webserver: Airflow 3.3.2 replaced the webserver with the '
        'api-server; use preset "airflow-api-server"',
    ]
    # --check-config on another machine (check_system=False) does not look for Airflow
    assert len(_load(tmp_path, body)) == 2


def test_an_airflow_that_says_no_version_is_a_config_error(tmp_path: Path) -> None:
    bin_dir = fake_venv(tmp_path / "venv")
    body = f'[[component]]\nname = "s"\npreset = "airflow-scheduler"\nenvironment = {{ PATH = "{bin_dir}" }}\n'
    assert _errors(tmp_path, body, check_system=True) == [
        f"$FILE: component[0].preset: airflow-scheduler: {bin_dir / 'airflow'} version printed no version (exit 1)"]


def test_no_airflow_on_path_leaves_the_version_open(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    body = (f'[[component]]\nname = "api"\npreset = "airflow-api-server"\n'
            f'environment = {{ PATH = "{tmp_path / "empty"}" }}\n')
    [api] = _load(tmp_path, body, check_system=True)
    assert api.command == ("airflow", "api-server")


# =========================================================================== explicit keys win


def test_explicit_command_environment_and_stop_settings_win(tmp_path: Path) -> None:
    [w] = _load(tmp_path, '[[component]]\nname = "w"\npreset = "airflow-celery-worker"\n'
                          'command = ["/opt/af/bin/airflow", "celery", "worker", "-H", "w9@node1", "-q", "q1"]\n'
                          'environment = { AIRFLOW__CORE__EXECUTOR = "CeleryExecutor" }\n'
                          'stop_timeout = "2m"\nstop_signal = "INT"\nrestart = "on-failure"\n')
    assert w.command == ("/opt/af/bin/airflow", "celery", "worker", "-H", "w9@node1", "-q", "q1")
    assert w.environment == {"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"}
    assert (w.stop_timeout, w.stop_signal, w.restart) == (120.0, int(signal.SIGINT), "on-failure")
    assert w.health is not None and w.health.command is not None and w.health.command[6] == "w9@node1"


def test_preset_environment_merges_under_the_components(tmp_path: Path) -> None:
    [s] = _load(tmp_path, '[[component]]\nname = "s"\npreset = "airflow-scheduler"\n'
                          'environment = { AIRFLOW_HOME = "/srv/af" }\n')
    assert s.environment == {"AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True", "AIRFLOW_HOME": "/srv/af"}
    assert (s.stop_timeout, s.restart, s.oneshot) == (60.0, "always", False)


def test_partial_health_table_keeps_the_preset_probe(tmp_path: Path) -> None:
    api, trig = _load(tmp_path,
                      '[[component]]\nname = "api"\npreset = "airflow-api-server"\n'
                      '[component.health]\ninterval = "30s"\nfailures = 5\n'
                      '[[component]]\nname = "trig"\npreset = "airflow-triggerer"\n'
                      'environment = { AIRFLOW__DATABASE__SQL_ALCHEMY_CONN = "sqlite:////srv/af/airflow.db" }\n'
                      '[component.health]\nmax_age = "90s"\nhostname = "node1.example"\n')
    assert _probe(api.health) == ("http://127.0.0.1:8080/api/v2/monitor/health", None, None,
                                  {"metadatabase.status": "healthy"}, 30.0, 10.0, 5, 120.0)
    assert _probe(trig.health) == (None, None, "TriggererJob", {}, *JOB)
    assert trig.health is not None and trig.health.database is not None
    assert (trig.health.max_age, trig.health.hostname) == (90.0, "node1.example")
    assert trig.health.database.reveal() == "sqlite:////srv/af/airflow.db"


def test_health_table_expect_overrides_the_presets(tmp_path: Path) -> None:
    [api] = _load(tmp_path, '[[component]]\nname = "api"\npreset = "airflow-api-server"\n'
                            '[component.health]\nexpect = { "scheduler.status" = "healthy" }\n')
    assert api.health is not None and dict(api.health.expect) == {"scheduler.status": "healthy"}
    assert api.health.http == "http://127.0.0.1:8080/api/v2/monitor/health"


def test_health_table_with_its_own_probe_replaces_the_presets(tmp_path: Path) -> None:
    s, t = _load(tmp_path,
                 '[[component]]\nname = "s"\npreset = "airflow-scheduler"\n'
                 '[component.health]\nairflow_job = "SchedulerJob"\nmax_age = "45s"\n'
                 '[[component]]\nname = "t"\npreset = "airflow-triggerer"\n'
                 '[component.health]\ncommand = ["airflow", "jobs", "check", "--local"]\n')
    assert s.health is not None
    assert (s.health.http, s.health.airflow_job, s.health.max_age) == (None, "SchedulerJob", 45.0)
    assert s.health.database is not None and s.health.database.reveal().startswith("sqlite:///")
    assert (s.health.interval, s.health.start_period) == (10.0, 120.0)  # the preset's where not given
    assert t.health is not None
    assert (t.health.command, t.health.airflow_job, t.health.database) == (
        ("airflow", "jobs", "check", "--local"), None, None)


def test_db_migrate_through_the_config(tmp_path: Path) -> None:
    m, s = _load(tmp_path, '[[component]]\nname = "migrate"\npreset = "airflow-db-migrate"\n'
                           '[[component]]\nname = "s"\npreset = "airflow-scheduler"\nstart_after = ["migrate"]\n')
    assert (m.oneshot, m.restart, m.health, m.backoff_initial, m.stop_timeout) == (True, "on-failure", None, 5.0,
                                                                                   300.0)
    assert s.start_after == ("migrate",)
    [n] = _load(tmp_path, '[[component]]\nname = "migrate"\npreset = "airflow-db-migrate"\nrestart = "never"\n')
    assert (n.oneshot, n.restart) == (True, "never")
