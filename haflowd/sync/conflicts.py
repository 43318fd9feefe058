"""Conflicts: the same file changed on two nodes (both sides of a partition). Pure.

csync2 settles them with the group's ``auto`` method (``auto younger``: the newer
mtime wins). The winner's update prints ``Auto-resolving conflict: Won ...`` and
replaces the peer's file; the loser's prints ``Do not auto-resolve conflict: Lost ...``
and leaves its file dirty until the winner's update arrives. Either way one version is
overwritten on the losing node, and csync2 keeps it only when the group has a
``backup-directory`` (and ``backup-generations`` >= 2): then the overwritten file is at
``<backup-directory><the file's full path on that node>``.

- :class:`Csync2Layout`: what haflowd needs from ``csync2.cfg`` (prefixes, backups),
  read by a small tolerant parser: where a file is on a host, where its backup goes.
- :class:`ConflictLog`: each conflict this node saw, with who won and where the other
  version is kept; bounded, saved with the sync state.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_LOG = 100  # conflicts remembered (the newest; open ones are kept before resolved ones)
_TOKEN = re.compile(r"[{};]|[^\s{};]+")


@dataclass(frozen=True)
class Csync2Group:
    name: str
    hosts: tuple[str, ...]
    backup_directory: str | None
    backup_generations: int  # csync2's default is 3; a backup is made only when > 1
    auto: str | None

    @property
    def keeps_backups(self) -> bool:
        return bool(self.backup_directory) and self.backup_generations > 1


@dataclass(frozen=True)
class Csync2Layout:
    """csync2.cfg as far as conflicts are concerned."""

    groups: tuple[Csync2Group, ...] = ()
    prefixes: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)  # name -> (pattern, path)

    def path_on(self, host: str, name: str) -> str | None:
        """csync2's file name (``%dags%/x.py`` or ``/opt/dags/x.py``) as a path on ``host``."""
        if not name.startswith("%"):
            return name
        end = name.find("%", 1)
        if end < 0:
            return None
        for pattern, path in self.prefixes.get(name[1:end], ()):
            if fnmatch.fnmatchcase(host, pattern):
                return path + name[end + 1:]
        return None

    def group_of(self, host: str, peer: str | None = None) -> Csync2Group | None:
        for g in self.groups:
            if host in g.hosts and (peer is None or peer in g.hosts):
                return g
        return None

    def backup_of(self, host: str, name: str, peer: str | None = None) -> str | None:
        """Where csync2 on ``host`` keeps the version of ``name`` it overwrites (None: nowhere)."""
        g = self.group_of(host, peer)
        path = self.path_on(host, name)
        if g is None or not g.keeps_backups or path is None or g.backup_directory is None:
            return None
        return g.backup_directory.rstrip("/") + path

    def without_backups(self, host: str) -> list[str]:
        """The groups of ``host`` in which an overwritten file is not kept."""
        return [g.name for g in self.groups if host in g.hosts and not g.keeps_backups]


def _statements(tokens: list[str], i: int = 0) -> tuple[list[tuple[list[str], list[Any] | None]], int]:
    """``words ;`` and ``words { ... }`` until a ``}`` or the end: (statements, next index)."""
    out: list[tuple[list[str], list[Any] | None]] = []
    words: list[str] = []
    while i < len(tokens):
        t = tokens[i]
        i += 1
        if t == ";":
            if words:
                out.append((words, None))
            words = []
        elif t == "{":
            body, i = _statements(tokens, i)
            out.append((words, body))
            words = []
        elif t == "}":
            break
        else:
            words.append(t)
    if words:
        out.append((words, None))
    return out, i


def parse_csync2_cfg(text: str) -> Csync2Layout:
    """The groups and prefixes of a csync2.cfg; what is not understood is skipped."""
    text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    stmts, _ = _statements(_TOKEN.findall(text))
    groups: list[Csync2Group] = []
    prefixes: dict[str, tuple[tuple[str, str], ...]] = {}
    for words, body in stmts:
        if len(words) < 2 or body is None:
            continue
        if words[0] == "group":
            hosts: list[str] = []
            backup_dir: str | None = None
            generations = 3
            auto: str | None = None
            for w, _sub in body:
                if not w:
                    continue
                if w[0] == "host":
                    hosts += [h.split("@", 1)[0].strip("()") for h in w[1:] if h.strip("()")]
                elif w[0] == "backup-directory" and len(w) > 1:
                    backup_dir = w[1]
                elif w[0] == "backup-generations" and len(w) > 1:
                    try:
                        generations = int(w[1])
                    except ValueError:
                        generations = 0
                elif w[0] == "auto" and len(w) > 1:
                    auto = w[1]
            groups.append(Csync2Group(words[1], tuple(hosts), backup_dir, generations, auto))
        elif words[0] == "prefix":
            entries: list[tuple[str, str]] = []
            for w, _sub in body:
                # "on PATTERN: PATH" (the colon may stick to either word)
                flat = " ".join(w).replace(":", " : ").split()
                if len(flat) >= 4 and flat[0] == "on" and flat[2] == ":":
                    entries.append((flat[1], flat[3]))
            prefixes[words[1]] = tuple(entries)
    return Csync2Layout(tuple(groups), prefixes)


def csync2_cfg_path(options: Sequence[str], env: Mapping[str, str]) -> str:
    """The config csync2 reads: ``$CSYNC2_SYSTEM_DIR`` (else /etc) ``/csync2.cfg``, or
    ``csync2_NAME.cfg`` with ``-C NAME``. ``options`` are csync2's, as in the command."""
    name = ""
    for i, opt in enumerate(options):
        if opt.startswith("-C"):
            name = opt[2:] or (options[i + 1] if i + 1 < len(options) else "")
    system = env.get("CSYNC2_SYSTEM_DIR") or "/etc"
    return os.path.join(system, f"csync2_{name}.cfg" if name else "csync2.cfg")


@dataclass
class Conflict:
    """One file changed on this node and a peer: who won, and where the other version is."""

    file: str  # csync2's name for it
    path: str | None  # where it is on this node
    peer: str  # haflowd node names from here on
    time: float  # wall clock: when this node saw it (and, for an open one, first saw it)
    winner: str  # whose version stays in place (for an open conflict: the one csync2 will keep)
    loser: str
    kept_on: str  # the node on which the losing version is kept ...
    kept_at: str | None  # ... at this path; None: csync2 keeps no backup (the version is gone)
    resolved: bool  # False: both versions are still in place; csync2 reports it on each run
    resolved_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ConflictLog:
    """The conflicts this node's updates reported, newest last, at most ``MAX_LOG``.

    A win (``resolved`` in a :class:`PeerResult`) is recorded resolved at once: the
    peer's version was just overwritten (and kept in the peer's backup directory). A
    loss, or a file dirty on both sides, is recorded open, once, and resolved when an
    update to that peer no longer reports it (the winner's version has arrived, and
    this node's backup directory holds the one it replaced)."""

    def __init__(self, node: str, host: str, layout: Csync2Layout | None = None) -> None:
        self.node = node
        self.host = host  # this node's csync2 host name
        self.layout = layout
        self.items: list[Conflict] = []
        self.resolved_total = 0  # since start: the counter behind the metric

    def _kept(self, host: str, name: str, peer_host: str | None) -> str | None:
        return None if self.layout is None else self.layout.backup_of(host, name, peer_host)

    def _path(self, name: str) -> str | None:
        if self.layout is not None:
            return self.layout.path_on(self.host, name)
        return name if name.startswith("/") else None

    def observe(self, peer: str, peer_host: str, wall: float, *, won: Iterable[str] = (),
                open_: Iterable[str] = (), reached: bool = False) -> tuple[list[Conflict], list[Conflict]]:
        """One update to ``peer``: files it won, files still in conflict, and whether the
        peer was reached at all. Returns (new conflicts, conflicts resolved now)."""
        new: list[Conflict] = []
        done: list[Conflict] = []
        for name in won:
            c = Conflict(name, self._path(name), peer, wall, winner=self.node, loser=peer, kept_on=peer,
                         kept_at=self._kept(peer_host, name, self.host), resolved=True, resolved_at=wall)
            self._add(c)
            new.append(c)
            self.resolved_total += 1
        still = set(open_)
        known = {c.file for c in self.items if c.peer == peer and not c.resolved}
        for name in still - known:
            c = Conflict(name, self._path(name), peer, wall, winner=peer, loser=self.node, kept_on=self.node,
                         kept_at=self._kept(self.host, name, peer_host), resolved=False)
            self._add(c)
            new.append(c)
        if reached:
            for c in self.items:
                if c.peer == peer and not c.resolved and c.file not in still:
                    c.resolved, c.resolved_at = True, wall
                    done.append(c)
                    self.resolved_total += 1
        return new, done

    def _add(self, c: Conflict) -> None:
        self.items.append(c)
        while len(self.items) > MAX_LOG:
            old = next((x for x in self.items if x.resolved), self.items[0])
            self.items.remove(old)

    def open_count(self) -> int:
        return sum(1 for c in self.items if not c.resolved)

    def to_state(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.items]

    def restore(self, data: Any) -> None:
        """Take back :meth:`to_state`'s output; malformed entries are skipped."""
        if not isinstance(data, list):
            return
        for d in data[-MAX_LOG:]:
            if not isinstance(d, dict):
                continue
            try:
                c = Conflict(file=str(d["file"]), path=_opt_str(d.get("path")), peer=str(d["peer"]),
                             time=float(d["time"]), winner=str(d["winner"]), loser=str(d["loser"]),
                             kept_on=str(d["kept_on"]), kept_at=_opt_str(d.get("kept_at")),
                             resolved=bool(d["resolved"]),
                             resolved_at=float(d["resolved_at"]) if d.get("resolved_at") is not None else None)
            except (KeyError, TypeError, ValueError):
                continue
            self.items.append(c)


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)
