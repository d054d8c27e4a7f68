"""Keep Python's cyclic garbage collector off the objects a long-lived process makes at
start-up (the crawl's, through ``extensions/gc.py``, and the store worker's)."""

from __future__ import annotations

import gc

#: Allocations between young-generation collections (``HARVEST_GC_THRESHOLD``); CPython's
#: default is 700.
DEFAULT_THRESHOLD = 100_000


def freeze(threshold: int) -> int:
    """Collect once, move every object alive to the permanent generation (full collections
    no longer walk them) and collect the youngest generation every ``threshold``
    allocations; returns how many objects were frozen. Cheap for a process whose objects
    are freed by reference counting, as the crawl's items and the worker's batches are:
    frequent collections would only walk the items and rows in flight."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(threshold, gen1, gen2)
    return gc.get_freeze_count()
