"""The compiled parts: both optional, both for the gossip simulator alone (the daemon never imports them).

- ``haflowd.gossip._simloop``: the simulator's event loop, in C (haflowd/gossip/_simloop.c).
- ``haflowd.gossip._core_sim``: haflowd/gossip/membership.py compiled by mypyc, from a copy
  that records the source's SHA-256. The simulator runs it only while that hash is the
  source's: an edited membership.py is never shadowed by a stale build, it runs interpreted
  until the next ``pip install -e .``.

Without a C compiler (or mypyc) the install goes on without them, and the simulator runs
its Python loop and the interpreted core: the same runs, slower. HAFLOWD_BUILD_SIMULATOR=0
leaves them out on purpose: scripts/install does, for a node's daemon.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent


def compiled_core() -> list[Extension]:
    try:
        from mypyc.build import mypycify
    except ImportError:  # no mypy in the build environment: the simulator interprets the core
        return []
    source = (HERE / "haflowd/gossip/membership.py").read_bytes()
    root = Path("build/mypyc-src")  # relative: mypyc names its C files after the paths it is given
    package = root / "haflowd/gossip"
    package.mkdir(parents=True, exist_ok=True)
    for init in (root / "haflowd/__init__.py", package / "__init__.py"):
        init.write_text("")
    (root / "haflowd/clock.py").write_bytes((HERE / "haflowd/clock.py").read_bytes())  # for its types only
    copy = package / "_core_sim.py"
    digest = hashlib.sha256(source).hexdigest()
    text = source + f'\n\nSOURCE_SHA256 = "{digest}"  # of the membership.py this was copied from\n'.encode()
    if not copy.exists() or copy.read_bytes() != text:
        copy.write_bytes(text)
    extensions: list[Extension] = mypycify([str(copy)], opt_level="3")
    for e in extensions:
        e.optional = True
    return extensions


def simulator_parts() -> list[Extension]:
    if os.environ.get("HAFLOWD_BUILD_SIMULATOR", "1") == "0":
        return []
    loop = Extension("haflowd.gossip._simloop", ["haflowd/gossip/_simloop.c"], optional=True,
                     extra_compile_args=["-O2"])
    return [loop, *compiled_core()]


setup(ext_modules=simulator_parts())
