"""Presets for Airflow components: a command, a real health probe, stop settings.

Anything set explicitly in ``[[component]]`` wins over the preset.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from haflowd.config import HealthConfig


def _health(
    *,
    http: str | None = None,
    command: tuple[str, ...] | None = None,
    interval: float = 10.0,
    timeout: float = 5.0,
    failures: int = 3,
    start_period: float = 60.0,
) -> HealthConfig:
    from haflowd.config import HealthConfig

    return HealthConfig(http=http, command=command, interval=interval, timeout=timeout,
                        failures=failures, start_period=start_period)


@dataclass(frozen=True)
class Preset:
    command: tuple[str, ...]
    health: Callable[[Mapping[str, str]], HealthConfig | None]
    environment: Mapping[str, str] = field(default_factory=dict)
    stop_signal: int = int(signal.SIGTERM)
    stop_timeout: float = 30.0


def _scheduler_health(env: Mapping[str, str]) -> HealthConfig:
    port = env.get("AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT", "8974")
    return _health(http=f"http://127.0.0.1:{port}/health")


def _api_health(env: Mapping[str, str]) -> HealthConfig:
    port = env.get("AIRFLOW__API__PORT", "8080")
    return _health(http=f"http://127.0.0.1:{port}/api/v2/monitor/health")


def _webserver_health(env: Mapping[str, str]) -> HealthConfig:
    port = env.get("AIRFLOW__WEBSERVER__WEB_SERVER_PORT", "8080")
    return _health(http=f"http://127.0.0.1:{port}/health")


def _job_check(job_type: str) -> Callable[[Mapping[str, str]], HealthConfig]:
    def health(env: Mapping[str, str]) -> HealthConfig:
        return _health(command=("airflow", "jobs", "check", "--job-type", job_type, "--local"),
                       interval=30.0, timeout=25.0)
    return health


def _flower_health(env: Mapping[str, str]) -> HealthConfig:
    port = env.get("AIRFLOW__CELERY__FLOWER_PORT", "5555")
    return _health(http=f"http://127.0.0.1:{port}/healthcheck")


PRESETS: dict[str, Preset] = {
    "airflow-scheduler": Preset(
        command=("airflow", "scheduler"),
        health=_scheduler_health,
        environment={"AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True"},
    ),
    "airflow-api-server": Preset(command=("airflow", "api-server"), health=_api_health),
    "airflow-webserver": Preset(command=("airflow", "webserver"), health=_webserver_health),
    "airflow-dag-processor": Preset(command=("airflow", "dag-processor"),
                                    health=_job_check("DagProcessorJob")),
    "airflow-triggerer": Preset(command=("airflow", "triggerer"), health=_job_check("TriggererJob")),
    "airflow-celery-worker": Preset(
        command=("airflow", "celery", "worker"),
        health=lambda env: None,
        stop_timeout=600.0,
    ),
    "airflow-flower": Preset(command=("airflow", "celery", "flower"), health=_flower_health),
}
