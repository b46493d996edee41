"""Python's cyclic garbage collector held off while a process builds what it keeps for its whole life.

Importing the app's libraries and loading its models makes hundreds of thousands of long-lived objects and next to
no garbage; every full collection walks all of them again (0.9 s of a demo run here, in 8 full collections).
:func:`collection_paused` disables the collector for the block and then freezes what is in memory
(``gc.freeze``), moving it out of every later collection's way. Frozen objects are still freed when no longer
referenced; only a reference cycle among them is never collected. Imports nothing but the standard library, so
the app's entry point can use it before it imports anything else.
"""
from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """The collector off for the block, then what is in memory frozen; the collector's earlier state restored."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
