"""What haflowd needs to know of the installed Airflow: its configuration and its version.

* ``AirflowSettings``: Airflow's own configuration as Airflow reads it, for the keys the
  presets need (ports, hosts, the metadata database): ``AIRFLOW__SECTION__KEY`` in the
  component's environment, then in the daemon's, then ``airflow.cfg`` in ``AIRFLOW_HOME``
  (or ``AIRFLOW_CONFIG``), then Airflow's default.
* ``detect_version``: the installed Airflow's version, from the package metadata next to
  the ``airflow`` on the component's ``PATH`` (no Airflow import, no subprocess), with
  ``airflow version`` as the fallback.
* ``option_value``: an option's value in an ``airflow`` command line.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

VERSION_TIMEOUT_S = 60.0
_DIST_RE = re.compile(r"^apache_airflow(?:_core)?-(\d+(?:\.\d+)*[^-]*)\.dist-info$")


class AirflowError(Exception):
    """A fact about the installed Airflow could not be established."""


@dataclass(frozen=True)
class AirflowSettings:
    env: Mapping[str, str]  # the component's environment over the daemon's
    cfg: configparser.RawConfigParser | None
    cfg_path: Path | None

    @classmethod
    def load(cls, component_env: Mapping[str, str], base_env: Mapping[str, str] | None = None) -> AirflowSettings:
        env = {**(os.environ if base_env is None else base_env), **component_env}
        home = Path(env.get("AIRFLOW_HOME") or Path(env.get("HOME", "/root")) / "airflow")
        path = Path(env["AIRFLOW_CONFIG"]) if env.get("AIRFLOW_CONFIG") else home / "airflow.cfg"
        parser = configparser.RawConfigParser(strict=False)
        try:
            with path.open(encoding="utf-8") as f:
                parser.read_file(f)
        except (OSError, configparser.Error, UnicodeDecodeError):
            return cls(env=env, cfg=None, cfg_path=None)
        return cls(env=env, cfg=parser, cfg_path=path)

    @property
    def home(self) -> Path:
        return Path(self.env.get("AIRFLOW_HOME") or Path(self.env.get("HOME", "/root")) / "airflow")

    def get(self, section: str, key: str, default: str) -> str:
        name = f"AIRFLOW__{section.upper()}__{key.upper()}"
        if name in self.env:
            return self.env[name]
        if self.cfg is not None and self.cfg.has_option(section, key):
            value = self.cfg.get(section, key)
            return value.replace("{AIRFLOW_HOME}", str(self.home))
        return default

    def port(self, section: str, key: str, default: int) -> int:
        raw = self.get(section, key, str(default))
        try:
            port = int(raw)
        except ValueError:
            raise AirflowError(f"[{section}] {key} in Airflow's configuration is not a port: {raw!r}") from None
        if not 0 < port < 65536:
            raise AirflowError(f"[{section}] {key} in Airflow's configuration is not a port: {raw!r}")
        return port

    def probe_host(self, section: str, key: str) -> str:
        """Where a local probe should connect for a server bound to ``[section] key``."""
        host = self.get(section, key, "0.0.0.0").strip()
        if host in ("", "0.0.0.0", "::", "[::]"):
            return "127.0.0.1"
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    def database_url(self) -> str:
        url = self.get("database", "sql_alchemy_conn", "")
        if not url:
            url = self.get("core", "sql_alchemy_conn", "")  # Airflow < 2.3
        return url or f"sqlite:///{self.home / 'airflow.db'}"


def option_value(command: tuple[str, ...], *names: str) -> str | None:
    """The value of ``--port 9000`` or ``--port=9000`` (any of ``names``) in a command line."""
    for i, arg in enumerate(command):
        for name in names:
            if arg == name and i + 1 < len(command):
                return command[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


# ---------------------------------------------------------------------------- version


def detect_version(env: Mapping[str, str], run_fallback: bool = True) -> str | None:
    """The version of the Airflow that ``airflow`` on ``env['PATH']`` runs, or None if
    there is no ``airflow`` there. Raises AirflowError if one is there but says nothing."""
    exe = shutil.which("airflow", path=env.get("PATH", os.defpath))
    if exe is None:
        return None
    version = _version_from_metadata(Path(exe))
    if version is not None or not run_fallback:
        return version
    key = (str(Path(exe).resolve()), _mtime(exe))
    if key not in _ASKED:  # one `airflow version` (seconds of CPU) per executable, not per component
        _ASKED[key] = _ask_version(exe, env)
    result = _ASKED[key]
    if isinstance(result, AirflowError):
        raise result
    return result


_ASKED: dict[tuple[str, float], str | AirflowError] = {}


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _ask_version(exe: str, env: Mapping[str, str]) -> str | AirflowError:
    try:
        out = subprocess.run([exe, "version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S,
                             env={**env, "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR"}, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return AirflowError(f"{exe} version: {type(e).__name__}")
    for line in reversed(out.stdout.strip().splitlines()):
        if re.fullmatch(r"\d+\.\d+\S*", line.strip()):
            return line.strip()
    return AirflowError(f"{exe} version printed no version (exit {out.returncode})")


def _version_from_metadata(exe: Path) -> str | None:
    """Look for the package's dist-info in the environment the ``airflow`` script belongs to."""
    prefixes = [exe.resolve().parent.parent, exe.parent.parent]
    with contextlib.suppress(OSError, UnicodeDecodeError):
        first = exe.read_bytes()[:512].split(b"\n", 1)[0].decode()
        if first.startswith("#!"):
            interp = Path(first[2:].strip().split()[0])
            prefixes.append(interp.parent.parent)
    found: dict[str, str] = {}
    for prefix in dict.fromkeys(prefixes):
        sites = sorted(prefix.glob("lib/python3*/site-packages")) + sorted(prefix.glob("lib/python3/dist-packages"))
        for site in sites:
            with contextlib.suppress(OSError):
                for entry in site.iterdir():
                    m = _DIST_RE.match(entry.name)
                    if m:
                        found.setdefault("core" if "_core-" in entry.name else "airflow", m.group(1))
        if found:
            break
    return found.get("core") or found.get("airflow")


def major(version: str | None) -> int | None:
    if not version:
        return None
    m = re.match(r"(\d+)", version)
    return int(m.group(1)) if m else None
