"""Every secret the daemon holds reaches the log redactor, including those the Airflow
presets take from Airflow's configuration: the metadata database and the broker."""

from __future__ import annotations

from pathlib import Path

from haflowd import config
from haflowd.daemon import secrets_of


def test_airflow_probe_urls_are_masked(tmp_path: Path) -> None:
    p = tmp_path / "h.toml"
    p.write_text(
        '[[component]]\nname = "t"\npreset = "airflow-triggerer"\n'
        'environment = { AIRFLOW__DATABASE__SQL_ALCHEMY_CONN = "postgresql+psycopg2://af:db%2Fpw@pg1/airflow" }\n'
        '[[component]]\nname = "w"\npreset = "airflow-celery-worker"\n'
        'environment = { AIRFLOW__CELERY__BROKER_URL = "amqp://af:mq-pw@rmq1//;amqp://af:mq-pw2@rmq2//" }\n'
    )
    secrets = secrets_of(config.load(p, check_system=False))
    for s in ("db%2Fpw", "db/pw", "mq-pw", "mq-pw2"):
        assert s in secrets


def _pg_config(path: Path, data_dir: Path, password: str) -> None:
    path.write_text(
        f'[node]\nname = "n1"\ndata_dir = "{data_dir}"\n[api]\ncontrol_socket = "{data_dir}/c.sock"\n'
        f'[postgres]\n[[postgres.node]]\nname = "pg1"\ndsn = "host=127.0.0.1 port=1 password={password}"\n'
    )


def test_reload_keeps_masking_every_secret_a_live_part_still_uses(tmp_path: Path) -> None:
    """Issue 15 #13: the PostgreSQL checker keeps its boot-time DSN until haflowd restarts, so
    after any number of reloads that DSN's password is still masked, with the new config's."""
    import asyncio

    from haflowd.daemon import Daemon
    from haflowd.logs import REDACTOR

    p = tmp_path / "h.toml"
    _pg_config(p, tmp_path, "pw-boot-1")

    async def scenario() -> None:
        d = Daemon(config.load(p, check_system=False))
        assert "pw-boot-1" in REDACTOR.secrets
        for password in ("pw-second-2", "pw-third-3"):
            _pg_config(p, tmp_path, password)
            ok, _ = await d.reload()
            assert ok
            assert "pw-boot-1" in REDACTOR.secrets, f"the checker's DSN is unmasked after loading {password}"
            assert password in REDACTOR.secrets

    asyncio.run(scenario())


def test_every_secret_field_is_found_generically() -> None:
    """A Secret anywhere (nested dataclass, tuple, mapping) is found; and the passwords
    inside it in every spelling: key=value (quoted), URL userinfo (percent-decoded), lists."""
    from dataclasses import dataclass, field

    from haflowd import secrets
    from haflowd.config import Secret

    @dataclass(frozen=True)
    class Inner:
        tokens: tuple[Secret, ...]
        extra: dict[str, Secret] = field(default_factory=dict)

    @dataclass(frozen=True)
    class Outer:
        name: str
        inner: Inner
        url: str = "http://user:plain-pw@host/x"

    cfg = Outer("n", Inner((Secret("tok-1"),), {"k": Secret("dbname=x password='q\\'uo te'")}))
    found = secrets.config_secrets(cfg)
    for s in ("tok-1", "plain-pw", "dbname=x password='q\\'uo te'", "q'uo te"):
        assert s in found, s
    derived = secrets.derive("amqp://u:p%40ss1@h1//;amqp://u:other-pw@h2//")
    for s in ("p%40ss1", "p@ss1", "other-pw", "amqp://u:p%40ss1@h1//"):
        assert s in derived, s
    scrub = secrets.Scrubber(found)
    assert "q'uo te" not in scrub("login failed for 'q'uo te'")
    assert scrub("connect postgresql://x:unknown-pw@h/db password=other") == \
        "connect postgresql://x:***@h/db password=***"


def test_every_secret_of_a_full_config_is_masked(tmp_path: Path) -> None:
    """Gossip keys, PostgreSQL DSNs (key=value and URI), the Bucardo DSN, RabbitMQ passwords
    and AMQP URLs: each one, and the password inside each, reaches the redactor."""
    import base64

    key = base64.b64encode(b"k" * 32).decode()
    p = tmp_path / "h.toml"
    p.write_text(f"""
[node]
name = "n1"
[api]
[gossip]
listen = "127.0.0.1:7946"
keys = ["{key}"]
[postgres]
topology = "bucardo"
bucardo_dsn = "dbname=bucardo password='bu car\\\\'do'"
[[postgres.node]]
name = "pg1"
dsn = "host=a password=pg-one-pw"
[[postgres.node]]
name = "pg2"
dsn = "postgresql://u:pg%20two@b/db"
[rabbitmq]
amqp_url = "amqp://u:mq-section-pw@h//"
[[rabbitmq.node]]
name = "rabbit@a"
management_url = "http://user:mgmt-url-pw@a:15672"
password = "mgmt-pw"
amqp_url = "amqps://u:mq-node-pw@a//"
""")
    found = secrets_of(config.load(p, check_system=False))
    for s in (key, "bu car'do", "pg-one-pw", "pg%20two", "pg two", "mq-section-pw", "mgmt-url-pw", "mgmt-pw",
              "mq-node-pw"):
        assert s in found, s


def test_the_celery_ping_and_doctor_mask_with_the_one_scrubber() -> None:
    """Both used scrubbers of their own, each with its idea of where a password hides: the
    ping's missed a password in any URL it was not given, the doctor's one inside a URL."""
    from haflowd.airflow.celery_ping import _scrub as ping_scrub
    from haflowd.doctor import _scrub as doctor_scrub

    text = "broker amqp://u:s3cr%21t@h/ failed; fell back to amqp://guest:other-pw@h2/ (s3cr!t)"
    out = ping_scrub(text, ["amqp://u:s3cr%21t@h/"])
    assert "s3cr" not in out and "other-pw" not in out
    out = doctor_scrub("could not connect to postgresql://haflowd:pg-pw-123@db/airflow", "host=db password=x")
    assert out is not None and "pg-pw-123" not in out
