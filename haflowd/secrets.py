"""Every secret the daemon holds, and the one scrubber that masks them.

``find`` walks any value generically (dataclasses, mappings, sequences), so a future
``Secret`` field in the config is masked without anyone remembering to list it here.
``derive`` adds the spellings a secret takes in text: the passwords inside key=value
DSNs and URL userinfo, raw and percent-decoded, for each URL of a ``;``-separated list.
``Scrubber`` masks all of them, plus any ``scheme://user:password@`` and ``password=...``
it meets, known or not.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote, unquote_plus, urlsplit

MASK = "***"
MIN_LENGTH = 4  # shorter strings are masked only inside DSNs/URLs (by pattern), never everywhere
MAX_DEPTH = 12

_KV = r"""(?P<kv_head>password\s*=\s*)(?P<kv_pw>'(?:[^'\\]|\\.)*'|[^\s'"]+)"""
_URI = r"(?P<uri_head>[a-z][a-z0-9+.-]*://[^:/@\s\"]*):(?P<uri_pw>[^@\s\"]*)@"
KV_PASSWORD = re.compile(_KV, re.IGNORECASE)
URI_USERINFO = re.compile(_URI, re.IGNORECASE)


def find(value: Any) -> list[str]:
    """The revealed value of every ``Secret`` in ``value`` (a config, a section, a list of
    them), and the password of every URL with userinfo found in its plain strings (a health
    URL, a command argument, an environment variable)."""
    from haflowd.config.model import Secret  # lazily: importing this module (logs does) loads no config

    out: list[str] = []
    seen: set[int] = set()

    def walk(v: Any, depth: int) -> None:
        if depth > MAX_DEPTH or v is None or isinstance(v, bool | int | float):
            return
        if isinstance(v, Secret):
            out.append(v.reveal())
            return
        if isinstance(v, str):
            out.extend(url_passwords(v))
            return
        if id(v) in seen:
            return
        seen.add(id(v))
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            for f in dataclasses.fields(v):
                walk(getattr(v, f.name, None), depth + 1)
        elif isinstance(v, Mapping):
            for k, item in v.items():
                walk(k, depth + 1)
                walk(item, depth + 1)
        elif isinstance(v, list | tuple | set | frozenset):
            for item in v:
                walk(item, depth + 1)

    walk(value, 0)
    return out


def url_passwords(text: str) -> list[str]:
    """The password of every ``scheme://user:password@`` in ``text``, raw and decoded."""
    out: list[str] = []
    for m in URI_USERINFO.finditer(text):
        out += _spellings(m["uri_pw"])
    return out


def dsn_passwords(dsn: str) -> list[str]:
    """Every spelling of the passwords a DSN or URL carries: key=value (quoted or not) or URI
    userinfo, raw and percent-decoded; a ``;``-separated list gives each one's."""
    out: list[str] = []
    for m in KV_PASSWORD.finditer(dsn):
        v = m["kv_pw"]
        out.append(v)
        if v.startswith("'") and v.endswith("'") and len(v) >= 2:
            out.append(re.sub(r"\\(.)", r"\1", v[1:-1]))
    out += url_passwords(dsn)
    for url in dsn.split(";"):
        url = url.strip()
        if "://" in url:
            try:
                password = urlsplit(url).password
            except ValueError:  # a malformed port or netloc: the pattern above took what it could
                password = None
            if password:
                out += _spellings(password)
    return [p for p in dict.fromkeys(out) if p]


def _spellings(password: str) -> list[str]:
    return [password, unquote(password), unquote_plus(password)]


def derive(secret: str) -> list[str]:
    """A secret and every part of it that could show in a text on its own."""
    out = [secret]
    parts = [p.strip() for p in secret.split(";")] if ";" in secret else []
    out += [p for p in parts if p]
    out += dsn_passwords(secret)
    return [s for s in dict.fromkeys(out) if s]


def config_secrets(cfg: Any) -> list[str]:
    """Every secret of a config, and every spelling of it, for the log redactor."""
    out: list[str] = []
    for s in find(cfg):
        out += derive(s)
    return list(dict.fromkeys(out))


def _forms(secret: str) -> list[str]:
    """How a secret looks once rendered: as is, JSON-escaped, repr-escaped, percent-encoded."""
    return [secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
            repr(secret)[1:-1], quote(secret, safe="")]


class Scrubber:
    """Masks known secrets (every form) and any URL password or ``password=`` value."""

    def __init__(self, secrets: Iterable[str] = (), min_length: int = MIN_LENGTH) -> None:
        known = {f for s in secrets if len(s) >= min_length for f in _forms(s) if len(f) >= min_length}
        self.secrets = frozenset(known)
        ordered = sorted(known, key=len, reverse=True)  # a DSN before the password inside it
        self._known = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._shortest = min([len(f) for f in known] + [8])  # "a://b:c@" is the shortest pattern match

    def __call__(self, text: str) -> str:
        if len(text) < self._shortest:
            return text
        if self._known is not None:
            text = self._known.sub(MASK, text)
        if "://" in text:
            text = URI_USERINFO.sub(lambda m: f"{m['uri_head']}:{MASK}@", text)
        if "=" in text:
            text = KV_PASSWORD.sub(lambda m: f"{m['kv_head']}{MASK}", text)
        return text
