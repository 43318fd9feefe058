"""After the reader: the Airflow version, the presets, the host's checks, then the components.

Three steps, each on its own: ``detect_versions`` asks the host which Airflow each preset
component would run (the only step that may start a subprocess: ``airflow version``, when
the installed metadata does not say); ``resolve_presets`` turns each preset into its
defaults; ``build_components`` fills what a component's table does not say (the preset's,
else the schema's), checks the rules that join keys, and, for ``--check-config``, asks
the host whether each command and working directory is there.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from haflowd.airflow import presets
from haflowd.airflow import version as airflow_version
from haflowd.airflow.version import AirflowError
from haflowd.config.host import command_problem, directory_problem
from haflowd.config.model import ComponentConfig, HealthConfig, Secret
from haflowd.config.reader import (
    _PROBE_KINDS,
    BACKOFF,
    COMPONENT,
    COUNTS,
    EXPECT,
    HEALTH,
    HEALTH_STAGES,
    HOST,
    JOB,
    PRESET,
    PROBE_KIND,
    RESTART,
    TIMING,
    ComponentDraft,
    Draft,
    Errors,
)
from haflowd.config.schema import default_of, duration_default, int_default
from haflowd.config.values import _resolve, format_duration

Version = str | None | AirflowError
T = TypeVar("T")


def detect_versions(drafts: Sequence[ComponentDraft]) -> dict[int, Version]:
    """The installed Airflow's version for each component with a preset, by index: None when
    there is no ``airflow`` on its PATH, an AirflowError when one is there but says nothing."""
    found: dict[int, Version] = {}
    for d in drafts:
        if d.values["preset"]:
            settings = airflow_version.AirflowSettings.load(d.values["environment"] or {})
            try:
                found[d.index] = airflow_version.detect_version(settings.env)
            except AirflowError as e:
                found[d.index] = e
    return found


def resolve_presets(drafts: Sequence[ComponentDraft], versions: Mapping[int, Version],
                    errors: Errors) -> dict[int, presets.Defaults]:
    """Each preset's defaults, by component index; a preset that cannot be resolved (or an
    Airflow that will not tell its version) is an error at the component's ``preset``."""
    out: dict[int, presets.Defaults] = {}
    for d in drafts:
        v, name = d.values, d.values["preset"]
        if not name:
            continue
        errors.at(COMPONENT, d.index, PRESET)
        version = versions.get(d.index)
        try:
            if isinstance(version, AirflowError):
                raise version
            out[d.index] = presets.resolve(name, v["name"] or "", v["command"], v["environment"] or {},
                                           version=version, detect=False)
        except AirflowError as e:
            errors.add(d.table.key("preset"), f"{name}: {e}")
    return out


def build_components(drafts: Sequence[ComponentDraft], defaults: Mapping[int, presets.Defaults], errors: Errors,
                     base: Path, check_commands: bool = False) -> list[ComponentConfig]:
    built = (_component(d, defaults.get(d.index), errors, base, check_commands) for d in drafts)
    return [c for c in built if c is not None]


def _component(d: ComponentDraft, pre: presets.Defaults | None, errors: Errors, base: Path,
               check_commands: bool) -> ComponentConfig | None:
    t, v, i = d.table, d.values, d.index
    fill = _fallbacks(pre)
    command = d.pick("command", fill["command"])
    env = v["environment"] or {}
    wd = _resolve(v["working_dir"], base) if v["working_dir"] else None
    if check_commands:
        errors.at(COMPONENT, i, HOST)
        _check_host(d, command, {**fill["environment"], **env}, wd)
    errors.at(COMPONENT, i, RESTART)
    oneshot = d.pick("oneshot", fill["oneshot"])
    restart = d.pick("restart", fill["restart"] or ("on-failure" if oneshot else default_of("component.restart")))
    if oneshot and restart == "always":
        errors.add(t.key("restart"), 'expected "on-failure" or "never" for a oneshot component; got "always"')
    errors.at(COMPONENT, i, BACKOFF)
    _at_least(d, "backoff_max", d.pick("backoff_max", fill["backoff_max"]), "backoff_initial",
              d.pick("backoff_initial", fill["backoff_initial"]))
    errors.at(COMPONENT, i, HEALTH)
    health = _component_health(d, env, pre, bool(oneshot), errors)
    if v["name"] is None or command is None:
        return None
    # Below, a key given but wrong (already reported: this config is refused) takes its fallback.
    keys = ("backoff_initial", "backoff_max", "stable_after", "crash_loop_window", "stop_timeout")
    return ComponentConfig(
        name=v["name"], command=command, preset=v["preset"], environment={**fill["environment"], **env},
        user=v["user"], working_dir=wd, restart=restart or default_of("component.restart"), health=health,
        oneshot=bool(oneshot), start_after=_given_or(d, "start_after", ()),
        stop_signal=int(_given_or(d, "stop_signal", fill["stop_signal"])),
        crash_loop_failures=int(_given_or(d, "crash_loop_failures", fill["crash_loop_failures"])),
        log_rate_limit=int(_given_or(d, "log_rate_limit", fill["log_rate_limit"])),
        on_drain=str(_given_or(d, "on_drain", default_of("component.on_drain"))),
        **{k: float(_given_or(d, k, fill[k])) for k in keys},
    )


def _fallbacks(pre: presets.Defaults | None) -> dict[str, Any]:
    """What a key the table does not give takes: the preset's, else the schema's (``restart``
    None: it depends on ``oneshot``)."""
    fill: dict[str, Any] = {k: default_of(f"component.{k}") for k in (
        "backoff_initial", "backoff_max", "stable_after", "crash_loop_window", "stop_timeout",
        "crash_loop_failures", "log_rate_limit", "oneshot")}
    fill.update(command=None, environment={}, restart=None,
                stop_signal=int(getattr(signal, "SIG" + default_of("component.stop_signal"))))
    if pre is not None:
        fill.update(command=pre.command, environment=dict(pre.environment), oneshot=pre.oneshot, restart=pre.restart,
                    backoff_initial=pre.backoff_initial, stop_signal=pre.stop_signal, stop_timeout=pre.stop_timeout)
    return fill


def _given_or(d: Draft, name: str, default: T) -> T:
    """The key's value when given and right, else ``default``."""
    value = d.values[name] if d.table.has(name) else None
    return cast(T, value) if value is not None else default


def _at_least(d: Draft, name: str, value: float | None, other: str, floor: float | None) -> None:
    if floor and value and value < floor:
        d.table.errors.add(d.table.key(name), f"expected at least {other} ({format_duration(floor)}); "
                           f"got {d.table.given(name, value)}")


def _at_most(d: Draft, name: str, value: float | None, other: str, ceiling: float | None) -> None:
    if ceiling and value and value > ceiling:
        d.table.errors.add(d.table.key(name), f"expected at most {other} ({format_duration(ceiling)}); "
                           f"got {d.table.given(name, value)}")


def _check_host(d: ComponentDraft, command: tuple[str, ...] | None, env: Mapping[str, str],
                wd: Path | None) -> None:
    """``--check-config``: what the host must provide for the component to start."""
    t, user = d.table, d.values["user"]
    if wd is not None and (problem := directory_problem(wd, user)):
        t.errors.add(t.key("working_dir"), problem)
    if command and "\0" not in command[0]:
        problem = command_problem(command[0], env, wd, user)
        if problem:
            origin = "" if t.has("command") else f" (the command of preset {d.values['preset']})"
            t.errors.add(t.key("command"), problem + origin)


def _component_health(d: ComponentDraft, env: Mapping[str, str], pre: presets.Defaults | None, oneshot: bool,
                      errors: Errors) -> HealthConfig | None:
    if d.health is not None and oneshot:  # one error for the table, not also the probe it lacks
        errors.drop(COMPONENT, d.index, HEALTH_STAGES)
        errors.add(d.table.key("health"), "expected no health check for a oneshot component (it runs to exit)")
        return None
    if d.health is not None:
        return _health(d.health, d.index, env, pre.health if pre else None, errors)
    return pre.health if pre is not None else None


def _health(h: Draft, index: int, env: Mapping[str, str], base: HealthConfig | None,
            errors: Errors) -> HealthConfig:
    """``[component.health]`` with a preset's probe (``base``): keys not given keep the
    preset's, and a table that names no probe keeps the preset's probe."""
    probe = _probe(h, index, env, base, errors)
    return _timing(h, index, base or _OWN_HEALTH, probe, errors)


_OWN_HEALTH = HealthConfig(http=None, command=None, interval=duration_default("component.health.interval"),
                           timeout=duration_default("component.health.timeout"),
                           failures=int_default("component.health.failures"),
                           start_period=duration_default("component.health.start_period"))


def _probe(h: Draft, index: int, env: Mapping[str, str], base: HealthConfig | None,
           errors: Errors) -> HealthConfig:
    """What is probed and how the answer is judged: the table's, or the preset's when the
    table names no probe."""
    t, v = h.table, h.values
    kinds = [k for k in _PROBE_KINDS if t.has(k)]
    errors.at(COMPONENT, index, PROBE_KIND)
    if not kinds and base is None:
        errors.add(t.path, f"expected exactly one of {', '.join(_PROBE_KINDS)}; got none")
    inherit = base if not kinds else None
    probe = inherit or dataclasses.replace(_OWN_HEALTH, http=v["http"], command=v["command"],
                                           airflow_job=v["airflow_job"])
    errors.at(COMPONENT, index, EXPECT)
    if t.has("expect") and not probe.http:
        errors.add(t.key("expect"), "expected only with http (it checks the JSON answer)")
    errors.at(COMPONENT, index, JOB)
    for key in ("max_age", "hostname"):
        if t.has(key) and not probe.airflow_job:
            errors.add(t.key(key), "expected only with airflow_job")
    database = probe.database if inherit else None
    if database is None and probe.airflow_job:
        database = Secret(airflow_version.AirflowSettings.load(env).database_url())
    return dataclasses.replace(
        probe, database=database, hostname=h.pick("hostname", probe.hostname),
        expect=v["expect"] if v["expect"] is not None else dict(probe.expect),
        max_age=h.pick("max_age", probe.max_age) or duration_default("component.health.max_age"))


def _timing(h: Draft, index: int, d: HealthConfig, probe: HealthConfig, errors: Errors) -> HealthConfig:
    """How often and how patiently: the table's, else ``d`` (the preset's or the schema's)."""
    errors.at(COMPONENT, index, TIMING)
    interval, timeout = h.pick("interval", d.interval), h.pick("timeout", d.timeout)
    _at_most(h, "timeout", timeout, "interval", interval)
    errors.at(COMPONENT, index, COUNTS)
    start_interval = h.pick("start_interval", d.start_interval)
    _at_most(h, "start_interval", start_interval, "interval", interval)
    start_period = h.pick("start_period", d.start_period)
    return dataclasses.replace(
        probe, interval=interval or d.interval, timeout=timeout or d.timeout,
        failures=h.pick("failures", d.failures) or d.failures,
        start_period=start_period if start_period is not None else d.start_period,
        start_interval=start_interval if start_interval and (not interval or start_interval <= interval) else None)
