"""Pausing CPython's cyclic garbage collector for one bounded unit of bulk work (a reconcile batch).

Why: loading and deciding thousands of targets allocates a few hundred thousand long-lived objects
(facts, verdicts, decisions) and no garbage cycles to speak of. The collector answers that growth
with full collections, each a traversal of the whole heap: 100-300 ms apiece with a 6,000-target
snapshot and the resource document cache in memory, about a quarter of a pass. Refcounting still
frees every acyclic object at once while the collector waits; the few cycles a batch leaves are
collected when it resumes.

The pause is process-wide and reference-counted: overlapping pauses from several threads resume the
collector only when the last one ends, and only if it was running before the first began.

Must not: cover unbounded work (a whole pass of many batches, a request that waits on a client), or
leave the collector off.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_resume = False


@contextmanager
def paused() -> Iterator[None]:
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()
