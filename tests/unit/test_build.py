"""The daemon's package builds from pure Python with setuptools alone: no compiler, no mypy.

A node's `pip install` (scripts/install) must not download a type checker, nor fail on a
type error, and its wheel is `py3-none-any`. The gossip simulator, which compiles things,
is a tool of its own (tools/gossip-sim) with its own build.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert match is not None, requirement
    return match.group(0).lower()


def test_the_daemon_builds_with_setuptools_alone() -> None:
    build = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["build-system"]
    assert build["build-backend"] == "setuptools.build_meta"
    assert [_requirement_name(r) for r in build["requires"]] == ["setuptools"]


def test_the_daemon_has_no_setup_py_that_could_add_extensions() -> None:
    assert not (ROOT / "setup.py").exists()
