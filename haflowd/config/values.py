"""Values as written in TOML: durations, sizes, addresses, and how a wrong one is shown."""

from __future__ import annotations

import json
import math
import re
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from haflowd.config.model import HostPort

_MS, _S, _MIN, _H, _D = 0.001, 1.0, 60.0, 3600.0, 86400.0

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB|K|M|G)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "K": 2**10, "M": 2**20, "G": 2**30,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}\Z")
_SIGNALS = ("TERM", "INT", "QUIT", "HUP", "KILL", "USR1", "USR2", "WINCH")

def human_duration(seconds: float) -> str:
    """A bound as an operator writes it: the largest unit that divides it (``1d``, ``100ms``)."""
    for unit, size in (("d", _D), ("h", _H), ("m", _MIN), ("s", _S)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return format_duration(seconds)


def human_size(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}"


def _as_written(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_duration(text: str) -> float:
    """``"1m30s"`` → 90.0. Raises ValueError on anything else."""
    s = text.strip()
    if not s:
        raise ValueError(text)
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            raise ValueError(text)
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(text)
    return total


def parse_size(value: int | str) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(value)
        return value
    m = _SIZE.match(value)
    if not m:
        raise ValueError(value)
    import fractions  # only here: the daemon need not carry it (about 0.4 MiB)

    return int(fractions.Fraction(m.group(1)) * _SIZE_UNITS[m.group(2)])


def format_duration(seconds: float) -> str:
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def parse_hostport(text: str, default_port: int | None = None) -> HostPort:
    s = text.strip()
    m = re.match(r"^\[([0-9A-Fa-f:.]+)\](?::([0-9]+))?\Z", s)
    if m:
        host, port_s = m.group(1), m.group(2)
    elif s.count(":") == 1:
        host, port_s = s.split(":")
    elif ":" not in s:
        host, port_s = s, None
    else:
        raise ValueError(text)
    if not host or not re.match(r"^[A-Za-z0-9_.:-]+\Z", host):
        raise ValueError(text)
    if port_s is None:
        if default_port is None:
            raise ValueError(text)
        port = default_port
    else:
        if not (port_s.isascii() and port_s.isdigit()):
            raise ValueError(text)
        port = int(port_s)
    if not 0 < port < 65536:
        raise ValueError(text)
    return HostPort(host, port)


def describe(value: Any, secret: bool = False) -> str:
    """How a wrong value is shown in an error: its TOML-ish spelling, never a secret."""
    if value is _MISSING:
        return "nothing"
    if isinstance(value, dict):
        return "a table"
    if secret:
        if value == "":
            return "an empty string"
        kind = _type_name(value)
        return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = json.dumps(value, default=str, ensure_ascii=False)
    text = re.sub(r"(\w[\w+.-]*://[^/\s:@\"]*):[^@/\s\"]*@", r"\1:***@", text)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


class _Missing:
    pass


_MISSING: Any = _Missing()


def _resolve(path: str, base: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base / p


def _as_str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError
    return v


def _as_nonempty(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise TypeError
    return v


def _as_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError
    return v


def _as_int(v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise TypeError
    return v


def _as_duration(v: Any, positive: bool) -> float:
    if not isinstance(v, str):
        raise TypeError
    d = parse_duration(v)
    if (positive and d <= 0) or not math.isfinite(d):
        raise ValueError
    return d


def _as_size(v: Any) -> int:
    if not isinstance(v, int | str):
        raise TypeError
    return parse_size(v)


def _as_choice(v: Any, choices: Sequence[str]) -> str:
    if not isinstance(v, str) or v not in choices:
        raise ValueError
    return v


def _as_strings(v: Any, nonempty: bool) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise TypeError
    if nonempty and (not v or not v[0]):
        raise ValueError
    return tuple(v)


def _as_hostport(v: Any, default_port: int | None) -> HostPort:
    if not isinstance(v, str):
        raise TypeError
    return parse_hostport(v, default_port)


def _as_signal(v: Any) -> int:
    if not isinstance(v, str):
        raise TypeError
    name = v.upper().removeprefix("SIG")
    if name not in _SIGNALS:
        raise ValueError
    return int(getattr(signal, "SIG" + name))


def _as_url(v: Any) -> str:
    if not isinstance(v, str) or not re.match(r"^https?://[^\s/]+(/\S*)?\Z", v):
        raise ValueError
    return v


def _as_env(v: Any) -> dict[str, str]:
    if not isinstance(v, dict):
        raise TypeError
    out: dict[str, str] = {}
    for k, val in v.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*\Z", k):
            raise ValueError
        if isinstance(val, bool) or not isinstance(val, str | int | float):
            raise TypeError
        out[k] = str(val)
    return out


def _as_name(v: Any) -> str:
    if not isinstance(v, str) or not _NAME.match(v):
        raise ValueError
    return v



def _as_names(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise TypeError
    return tuple(_as_name(x) for x in v)


def _as_host_map(v: Any) -> dict[str, str]:
    """node name -> csync2 host name: csync2 takes a host name or an address, no spaces."""
    if not isinstance(v, dict):
        raise TypeError
    out: dict[str, str] = {}
    for k, val in v.items():
        if not isinstance(val, str) or not re.match(r"^[A-Za-z0-9_.:@%-]{1,253}\Z", val):
            raise ValueError
        out[_as_name(k)] = val
    return out

