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
