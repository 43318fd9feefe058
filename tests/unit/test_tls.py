"""OpenSSL on demand: which settings need Python's ssl (a table of configs), and what a
process without it can still do (a fresh interpreter each, since blocking is for life)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

from haflowd import config, tls

ROOT = Path(__file__).resolve().parents[2]

COMP = '[[component]]\nname = "{name}"\ncommand = ["sleep", "1"]\n'
HTTP = COMP + '[component.health]\nhttp = "{url}"\n'
RABBIT = '[rabbitmq]\n{amqp}[[rabbitmq.node]]\nname = "rabbit@a"\nmanagement_url = "{url}"\n'
CELERY = ('[[component]]\nname = "worker"\npreset = "airflow-celery-worker"\n'
          'environment = {{ AIRFLOW__CELERY__BROKER_URL = "{broker}" }}\n')


def _cfg(tmp_path: Path, body: str) -> config.Config:
    p = tmp_path / "haflowd.toml"
    p.write_text(body)
    return config.load(p, check_system=False)


@pytest.mark.parametrize(("body", "reason", "aio_pika"), [
    ("", None, False),
    (COMP.format(name="a"), None, False),
    (HTTP.format(name="a", url="http://127.0.0.1:8080/health"), None, False),
    (COMP.format(name="a") + '[component.health]\ncommand = ["true"]\n', None, False),
    ('[[component]]\nname = "t"\npreset = "airflow-triggerer"\n'
     'environment = { AIRFLOW__DATABASE__SQL_ALCHEMY_CONN = "postgresql://af:pw@pg1/airflow?sslmode=require" }\n',
     None, False),  # psycopg2 brings its own libssl
    (CELERY.format(broker="redis://r:6379/0"), None, False),  # not AMQP: the celery CLI in a child
    ('[postgres]\n[[postgres.node]]\nname = "pg1"\ndsn = "host=pg1 sslmode=require"\n', None, False),
    ('[gossip]\nlisten = "127.0.0.1:7946"\nkeys = ["' + "a" * 44 + '"]\n', None, False),
    (HTTP.format(name="a", url="http://x/") + HTTP.format(name="b", url="https://x/"),
     "component[1].health.http is an https:// URL", False),
    (COMP.format(name="a") + CELERY.format(broker="amqp://u:pw@rmq1:5672//"), None, True),
    (CELERY.format(broker="pyamqp://u:pw@a//;amqp://u:pw@b//"), None, True),
    (COMP.format(name="a") + CELERY.format(broker="amqp://u:pw@a//;amqps://u:pw@b//"),
     "component[1] (worker) pings Celery at an amqps:// broker_url", True),
    (RABBIT.format(amqp="", url="http://127.0.0.1:15672"), None, True),
    (RABBIT.format(amqp='amqp_url = "amqp://u:pw@a:5672/"\n', url="http://a:15672"), None, True),
    (RABBIT.format(amqp='amqp_url = "amqps://u:pw@a:5671/"\n', url="http://a:15672"),
     "rabbitmq.amqp_url is an amqps:// URL", True),
    (RABBIT.format(amqp="", url="https://a:15671"), "rabbitmq.node[0].management_url is an https:// URL", True),
    (RABBIT.format(amqp="", url="http://a:15672") + 'amqp_url = "amqps://u:pw@a:5671/"\n',
     "rabbitmq.node[0].amqp_url is an amqps:// URL", True),
    # the section's problem is named before the components'
    (HTTP.format(name="a", url="https://x/") + RABBIT.format(amqp="", url="https://a:15671"),
     "rabbitmq.node[0].management_url is an https:// URL", True),
])
def test_needs_tls(tmp_path: Path, body: str, reason: str | None, aio_pika: bool) -> None:
    cfg = _cfg(tmp_path, body)
    assert tls.needs_tls(cfg) == reason
    assert tls.uses_aio_pika(cfg) is aio_pika
    assert "pw" not in (reason or "")


def test_an_http_probe_replaces_the_celery_ping(tmp_path: Path) -> None:
    """A [component.health] http under the celery preset is what runs (http wins in
    Child.probe): neither aio-pika nor the broker's scheme matters then."""
    cfg = _cfg(tmp_path, CELERY.format(broker="amqps://u:pw@rmq1//") + '[component.health]\nhttp = "http://x/"\n')
    assert tls.needs_tls(cfg) is None
    assert not tls.uses_aio_pika(cfg)


@pytest.mark.parametrize(("body", "aio_pika_loaded", "refusal"), [
    (COMP.format(name="a"), False, None),
    (HTTP.format(name="a", url="https://x/"), True,
     "component[0].health.http is an https:// URL, and this haflowd started without OpenSSL: "
     "restart haflowd to load TLS"),
    (CELERY.format(broker="amqp://u:pw@rmq1//"), True, None),
    (CELERY.format(broker="amqp://u:pw@rmq1//"), False,
     "component[0] (worker) pings Celery with aio-pika, which this haflowd did not load at start "
     "(it imports ssl): restart haflowd to load it"),
    (CELERY.format(broker="amqps://u:pw@rmq1//"), True,
     "component[0] (worker) pings Celery at an amqps:// broker_url, and this haflowd started without "
     "OpenSSL: restart haflowd to load TLS"),
])
def test_reload_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, aio_pika_loaded: bool,
                        refusal: str | None) -> None:
    if not aio_pika_loaded:
        monkeypatch.delitem(sys.modules, "aio_pika", raising=False)
    else:
        monkeypatch.setitem(sys.modules, "aio_pika", sys.modules.get("aio_pika") or ModuleType("aio_pika"))
    assert tls.reload_refusal(_cfg(tmp_path, body).components) == refusal
