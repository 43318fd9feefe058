"""The one compiled part, optional: the gossip simulator's event loop (see haflowd/gossip/_simloop.c).

Without a C compiler the install goes on without it, and the simulator runs its Python loop.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("haflowd.gossip._simloop", ["haflowd/gossip/_simloop.c"], optional=True,
                             extra_compile_args=["-O2"])])
