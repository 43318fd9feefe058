"""The simulator's compiled parts: both optional, both for the simulator alone.

- ``gossip_sim._simloop``: the simulator's event loop, in C (gossip_sim/_simloop.c).
- ``gossip_sim._core_sim``: the daemon's haflowd/gossip/membership.py (two directories up)
  compiled by mypyc, from a copy that records the source's SHA-256. The simulator runs it
  only while that hash is the source's: an edited membership.py is never shadowed by a
  stale build, it runs interpreted until the next ``pip install -e tools/gossip-sim``.

Without a C compiler (or mypyc, or outside the haflowd checkout) the install goes on
without them, and the simulator runs its Python loop and the interpreted core: the same
runs, slower. The daemon's own package (the repository's root) compiles nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parents[1]  # the haflowd repository this tool lives in


def compiled_core() -> list[Extension]:
    try:
        from mypyc.build import mypycify
    except ImportError:  # no mypy in the build environment: the simulator interprets the core
        return []
    membership = CHECKOUT / "haflowd/gossip/membership.py"
    clock = CHECKOUT / "haflowd/clock.py"
    if not (membership.exists() and clock.exists()):  # built outside the checkout: nothing to compile
        return []
    source = membership.read_bytes()
    root = Path("build/mypyc-src")  # relative: mypyc names its C files after the paths it is given
    package = root / "gossip_sim"
    package.mkdir(parents=True, exist_ok=True)
    (root / "haflowd").mkdir(parents=True, exist_ok=True)
    for init in (root / "haflowd/__init__.py", package / "__init__.py"):
        init.write_text("")
    (root / "haflowd/clock.py").write_bytes(clock.read_bytes())  # for its types only
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
    loop = Extension("gossip_sim._simloop", ["gossip_sim/_simloop.c"], optional=True, extra_compile_args=["-O2"])
    return [loop, *compiled_core()]


setup(ext_modules=simulator_parts())
