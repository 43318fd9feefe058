"""The config file: ``schema`` (every key, declared once) → ``reader`` (TOML → values,
every error at once) → ``presets`` (the Airflow version, each preset's defaults, the host's
checks) → ``model`` (frozen dataclasses). ``load`` does every step; it is the one entry."""

from __future__ import annotations

import os
from pathlib import Path

from haflowd.config.host import command_problem, directory_problem, secret_exposure, user_ids
from haflowd.config.model import (
    ApiConfig,
    ComponentConfig,
    Config,
    GossipConfig,
    HealthConfig,
    HookConfig,
    HostPort,
    NodeConfig,
    PostgresConfig,
    PostgresNode,
    RabbitConfig,
    RabbitNode,
    Secret,
    SyncConfig,
    start_order,
)
from haflowd.config.presets import build_components, detect_versions, resolve_presets
from haflowd.config.reader import check_start_order, parse
from haflowd.config.schema import (
    DEFAULT_API,
    DEFAULT_CONFIG_PATH,
    DURATIONS,
    SCHEMA,
    SIZES,
    default_of,
    schema_key,
)
from haflowd.config.values import (
    _NAME,
    describe,
    format_duration,
    human_duration,
    human_size,
    parse_duration,
    parse_hostport,
    parse_size,
)
from haflowd.errors import ConfigError


def resolve_path(path: str | os.PathLike[str] | None) -> Path:
    """``--config``, else ``$HAFLOWD_CONFIG``, else the default."""
    if path:
        return Path(path)
    return Path(os.environ.get("HAFLOWD_CONFIG") or DEFAULT_CONFIG_PATH)


def load(path: str | os.PathLike[str] | None = None, check_system: bool = True,
         check_commands: bool = False) -> Config:
    """Read and validate a config file. Raises ConfigError listing every problem.

    ``check_system`` asks the host about users and the installed Airflow (presets);
    ``check_commands`` (``haflowd --check-config``) also asks it for what each component
    needs to start: its command (found on its PATH, executable by its user) and its
    ``working_dir``. The daemon itself starts without them: a component that cannot start
    is reported (fatal, "could not start") while the rest of the node runs."""
    p = resolve_path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError([f"{p}: cannot read: {e.strerror or e}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{p}: expected UTF-8 text; got undecodable bytes"]) from None
    return loads(text, p, check_system=check_system, check_commands=check_commands)


def loads(text: str, path: Path, check_system: bool = True, check_commands: bool = False) -> Config:
    """The steps of ``load`` on text already read."""
    parsed = parse(text, path, check_system)
    errors = parsed.errors
    versions = detect_versions(parsed.components) if check_system else {}
    defaults = resolve_presets(parsed.components, versions, errors)
    comps = build_components(parsed.components, defaults, errors, parsed.base, check_commands)
    check_start_order(comps, errors)
    if errors.lines:
        raise ConfigError(errors.lines)
    return Config(path=path, node=parsed.node, api=parsed.api, components=tuple(comps), gossip=parsed.gossip,
                  sync=parsed.sync, postgres=parsed.postgres, rabbitmq=parsed.rabbitmq, hooks=parsed.hooks)


__all__ = [
    "DEFAULT_API", "DEFAULT_CONFIG_PATH", "DURATIONS", "SCHEMA", "SIZES", "_NAME",
    "ApiConfig", "ComponentConfig", "Config", "ConfigError", "GossipConfig", "HealthConfig", "HookConfig",
    "HostPort", "NodeConfig", "PostgresConfig", "PostgresNode", "RabbitConfig", "RabbitNode", "Secret",
    "SyncConfig", "command_problem", "default_of", "describe", "directory_problem", "format_duration",
    "human_duration", "human_size", "load", "loads", "parse_duration", "parse_hostport", "parse_size",
    "resolve_path", "schema_key", "secret_exposure", "start_order", "user_ids",
]
