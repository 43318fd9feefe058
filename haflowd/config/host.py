"""What only the host can say: who may read a secret file, whether a component's command
and working directory are there for its user (``--check-config``)."""

from __future__ import annotations

import json
import os
import pwd
from collections.abc import Mapping
from pathlib import Path

from haflowd.config.values import describe


def secret_exposure(p: Path) -> tuple[str, int] | None:
    """Who besides its owner can read or change a secret file: ``("others", 0o644)``, or None.

    The group counts too: haflowd runs as root, so no group needs a secret, and the
    components' group (``airflow``) runs task code. A file is shielded, whatever its mode,
    inside a directory that only its owner (or root) can enter (mode ``0700``)."""
    try:
        real = p.resolve()
        st = os.stat(real)
    except (OSError, ValueError, RuntimeError):
        return None
    mode = st.st_mode & 0o7777
    who = [w for w, bits in (("its group", 0o060), ("others", 0o006)) if mode & bits]
    if not who:
        return None
    for d in real.parents:
        try:
            ds = os.stat(d)
        except OSError:
            return None
        if ds.st_mode & 0o011 == 0 and ds.st_uid in (0, st.st_uid):
            return None
    return " and ".join(who), mode



_ACL = "system.posix_acl_access"


def _has_acl(path: str) -> bool:
    try:
        os.getxattr(path, _ACL)
    except (OSError, AttributeError):
        return False
    return True


def _may(path: str, st: os.stat_result, who: tuple[int, list[int]] | None, bit: int) -> bool:
    """Whether ``who`` (uid, groups; None: haflowd itself) has permission ``bit`` (4 read,
    1 execute/search) on ``path``, from its mode bits; a file with an ACL is given the
    benefit of the doubt."""
    if who is None:
        return os.access(path, os.X_OK if bit == 1 else os.R_OK)
    uid, gids = who
    if uid == 0:
        return bit != 1 or bool(st.st_mode & 0o111) or os.path.isdir(path)
    if _has_acl(path):
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid in gids:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def _reachable(path: str, who: tuple[int, list[int]] | None) -> str | None:
    """The first directory above ``path`` that ``who`` cannot enter, or None."""
    for d in reversed(Path(path).parents):
        try:
            if not _may(str(d), os.stat(d), who, 1):
                return str(d)
        except OSError:
            return None
    return None


def _as_user(user: str | None) -> tuple[tuple[int, list[int]] | None, str]:
    """(uid, groups) of a component's user, and how to name it in an error."""
    if not user:
        return None, ""
    try:
        uid, gid, groups, _home = user_ids(user)
    except (KeyError, ValueError):
        return None, ""  # reported as "no such user"
    return (uid, [gid, *groups]), f" by user {json.dumps(user)}"


def command_problem(argv0: str, env: Mapping[str, str], cwd: Path | None, user: str | None) -> str | None:
    """Why a component's command cannot be run (as its user), as haflowd's guard runs it
    (execvpe: the component's PATH, else haflowd's), or None."""
    who, by = _as_user(user)
    if "/" in argv0:
        candidates = [str((cwd or Path.cwd()) / argv0)]
    else:
        path = env.get("PATH", os.environ.get("PATH", os.defpath))
        candidates = [os.path.join(d or ".", argv0) for d in path.split(os.pathsep)]
    blocked: list[str] = []
    for c in candidates:
        try:
            st = os.stat(c)
        except (OSError, ValueError):
            continue
        if os.path.isdir(c):
            blocked.append(f"{json.dumps(c)} is a directory")
        elif (d := _reachable(c, who)) is not None:
            blocked.append(f"{json.dumps(d)} cannot be entered{by}")
        elif not _may(c, st, who, 1):
            blocked.append(f"{json.dumps(c)} is not executable{by} (mode {st.st_mode & 0o7777:04o})")
        else:
            return None
    if blocked:
        return blocked[0]
    if "/" in argv0:
        return f"{json.dumps(candidates[0])} does not exist"
    where = "the component's PATH" if "PATH" in env else "haflowd's PATH"
    return f"{json.dumps(argv0)} is not on {where} ({describe(path)})"


def directory_problem(wd: Path, user: str | None) -> str | None:
    """Why a component cannot start in ``working_dir`` (as its user), or None."""
    who, by = _as_user(user)
    try:
        st = os.stat(wd)
    except (OSError, ValueError) as e:
        return f"cannot use {json.dumps(str(wd))}: {getattr(e, 'strerror', None) or e}"
    if not os.path.isdir(wd):
        return f"{json.dumps(str(wd))} is not a directory"
    d = _reachable(str(wd), who)
    if d is not None:
        return f"{json.dumps(d)} cannot be entered{by}"
    if not _may(str(wd), st, who, 1):
        return f"{json.dumps(str(wd))} cannot be entered{by} (mode {st.st_mode & 0o7777:04o})"
    return None



def user_ids(user: str) -> tuple[int, int, list[int], str]:
    """uid, gid, supplementary groups and home of a user name."""
    pw = pwd.getpwnam(user)
    groups = os.getgrouplist(user, pw.pw_gid)
    return pw.pw_uid, pw.pw_gid, groups, pw.pw_dir
