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
- :class:`ConflictLog`: each conflict this node saw, with who won, by which rule, and
  where the other version is kept; bounded, saved with the sync state.
- :func:`decide_tie` and :class:`TieBudget`: the one conflict csync2 cannot settle on its
  own. ``auto younger`` compares mtimes in whole seconds, so two edits made in the same
  second both *lose* (``(local > remote) == younger`` is false on both sides) and stay
  dirty on both nodes for ever. Of the two, the node whose csync2 host name sorts first
  forces its version (``csync2 -f``); the other does nothing, and csync2 overwrites its
  copy (keeping it in the backup directory). No coordination: each node reaches the same
  verdict from the two mtimes and the two names. Forcing is bounded per file, with backoff.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

MAX_LOG = 100  # conflicts remembered (the newest; open ones are kept before resolved ones)
TIE_RULE = "tie: first name"  # the rule that settled (or will settle) a same-second tie
REMOVAL_RULE = "change beats deletion"  # csync2: a deletion never wins a conflict
TIE_MAX_ATTEMPTS = 4  # attempts per file and peer before haflowd leaves it to the operator
TIE_BACKOFF_S = 2.0  # before the next look at a tie (doubling per attempt)
TIE_MAX_PER_RUN = 20  # files looked at per peer and run (each costs one csync2 -T)
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
    rule: str | None = None  # what decides it: csync2's auto method ("younger"), or TIE_RULE

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

    def _rule(self, peer_host: str) -> str | None:
        g = None if self.layout is None else self.layout.group_of(self.host, peer_host)
        return None if g is None else g.auto

    def open_entry(self, peer: str, name: str) -> Conflict | None:
        return next((c for c in self.items if c.peer == peer and c.file == name and not c.resolved), None)

    def path_of(self, name: str) -> str | None:
        """Where csync2's ``name`` is on this node."""
        return self._path(name)

    def tie(self, peer: str, peer_host: str, name: str, winner: str) -> Conflict | None:
        """The open conflict over ``name`` with ``peer`` is a same-second tie that ``winner``
        (this node or the peer) will settle by forcing its version."""
        c = self.open_entry(peer, name)
        if c is None:
            return None
        c.rule = TIE_RULE
        if winner == self.node:
            c.winner, c.loser, c.kept_on = self.node, peer, peer
            c.kept_at = self._kept(peer_host, name, self.host)
        else:
            c.winner, c.loser, c.kept_on = peer, self.node, self.node
            c.kept_at = self._kept(self.host, name, peer_host)
        return c

    def settle(self, peer: str, name: str, wall: float) -> Conflict | None:
        """This node's forced version of ``name`` replaced ``peer``'s: the tie is settled."""
        c = self.open_entry(peer, name)
        if c is None:
            return None
        c.resolved, c.resolved_at = True, wall
        self.resolved_total += 1
        return c

    def observe(self, peer: str, peer_host: str, wall: float, *, won: Iterable[str] = (),
                open_: Iterable[str] = (), reached: bool = False,
                removals: Iterable[str] = ()) -> tuple[list[Conflict], list[Conflict]]:
        """One update to ``peer``: files it won, files still in conflict (``removals``: of
        those, deleted here and changed on the peer), and whether the peer was reached at
        all. Returns (new conflicts, conflicts resolved now)."""
        deleted = set(removals)
        new: list[Conflict] = []
        done: list[Conflict] = []
        for name in won:
            c = Conflict(name, self._path(name), peer, wall, winner=self.node, loser=peer, kept_on=peer,
                         kept_at=self._kept(peer_host, name, self.host), resolved=True, resolved_at=wall,
                         rule=self._rule(peer_host))
            self._add(c)
            new.append(c)
            self.resolved_total += 1
        still = set(open_)
        known = {c.file for c in self.items if c.peer == peer and not c.resolved}
        for name in still - known:
            c = Conflict(name, self._path(name), peer, wall, winner=peer, loser=self.node, kept_on=self.node,
                         kept_at=self._kept(self.host, name, peer_host), resolved=False, rule=self._rule(peer_host))
            if name in deleted:  # the losing "version" is the deletion: nothing to keep
                c.kept_at, c.rule = None, REMOVAL_RULE
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
                             resolved_at=float(d["resolved_at"]) if d.get("resolved_at") is not None else None,
                             rule=_opt_str(d.get("rule")))
            except (KeyError, TypeError, ValueError):
                continue
            self.items.append(c)


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


class TieAction(StrEnum):
    FORCE = "force"  # a tie, and this node's name sorts first: force this version
    WAIT = "wait"  # a tie, and the peer's name sorts first: the peer forces, csync2 overwrites here
    NOT_A_TIE = "not a tie"  # the mtimes differ: csync2's own rule decides (the younger wins)
    UNKNOWN = "unknown"  # an mtime could not be read: look again later


@dataclass(frozen=True)
class TieVerdict:
    action: TieAction
    winner: str | None  # csync2 host name whose version stays (None: csync2's rule, or unknown)


def decide_tie(me: str, peer: str, local_mtime: int | None, peer_mtime: int | None) -> TieVerdict:
    """A file that lost csync2's younger/older test against ``peer`` (csync2 host names).

    Equal whole-second mtimes are a tie that csync2 never settles: both sides lose. Every
    node in the tie decides alike from the same two names: the first in byte order wins."""
    if local_mtime is None or peer_mtime is None:
        return TieVerdict(TieAction.UNKNOWN, None)
    if local_mtime != peer_mtime:
        return TieVerdict(TieAction.NOT_A_TIE, None)
    winner = min(me, peer)
    return TieVerdict(TieAction.FORCE if winner == me else TieAction.WAIT, winner)


@dataclass
class _TieTry:
    attempts: int = 0
    next_at: float = 0.0
    verdict: TieAction | None = None


class TieBudget:
    """How often a tie (per peer and file) is looked at and forced: each attempt that does
    not settle it (an mtime that could not be read, a forced update that lost again) waits
    ``backoff``, doubling; after ``max_attempts`` haflowd stops and leaves it to the
    operator. A decided WAIT or NOT_A_TIE is not looked at again until it settles.
    Monotonic seconds; in memory (a restart starts afresh, bounded again)."""

    def __init__(self, max_attempts: int = TIE_MAX_ATTEMPTS, backoff: float = TIE_BACKOFF_S) -> None:
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.tries: dict[tuple[str, str], _TieTry] = {}

    def due(self, key: tuple[str, str], now: float) -> bool:
        t = self.tries.get(key)
        if t is None:
            return True
        if t.verdict in (TieAction.WAIT, TieAction.NOT_A_TIE):
            return False  # decided: nothing for this node to do until it settles
        return t.attempts < self.max_attempts and now >= t.next_at

    def decided(self, key: tuple[str, str], verdict: TieAction) -> None:
        self.tries.setdefault(key, _TieTry()).verdict = verdict

    def failed(self, key: tuple[str, str], now: float) -> bool:
        """A look (an mtime not read) or a forced update that did not settle it. True: the
        budget is spent, haflowd leaves this one to the operator."""
        t = self.tries.setdefault(key, _TieTry())
        t.verdict = None
        t.attempts += 1
        t.next_at = now + self.backoff * 2 ** (t.attempts - 1)
        return t.attempts >= self.max_attempts

    def exhausted(self, key: tuple[str, str]) -> bool:
        t = self.tries.get(key)
        return t is not None and t.attempts >= self.max_attempts

    def forget(self, keys: Iterable[tuple[str, str]]) -> None:
        for k in keys:
            self.tries.pop(k, None)
