"""Timing stages put between the item pipelines of a crawl (benchmark use only).

``Stage0`` … ``Stage4`` go before, between and after the pipelines under test; each
notes the moment an item reaches it, so the time from one stage to the next is what the
pipeline between them cost that item *inside the crawl*, two to three times what it costs
in a loop of its own (colder caches, most likely: the crawl's parsing and event loop run
between two items).
At close the per-step medians, means and 90th percentiles (µs an item), and the time the
crawl spent in Python's garbage collector, are written to ``$BENCH_STEPS_FILE`` as JSON.
Per-item medians move with the machine's speed as items/s do, but the steps of one crawl
are measured in the same minutes, so their proportions hold. A stage costs ≈ 2-4 µs
itself (one pipeline call), which is in every step: ``bench/steps.py`` measures it with
the stages alone.
"""

from __future__ import annotations

import gc
import json
import os
import time
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler

_reached: dict[int, float] = {}  # id(item) -> when it reached the last stage
_steps: dict[int, list[float]] = {}  # step number -> seconds an item spent in it
_clock = time.perf_counter
_gc: dict[int, list[float]] = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}  # collections, seconds
_gc_started = 0.0


def _collecting(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = _clock()
    else:
        _gc[info["generation"]][0] += 1
        _gc[info["generation"]][1] += _clock() - _gc_started


class _Stage:
    number = 0
    last = False

    def __init__(self, crawler: Crawler) -> None:
        if self.number == 0:
            crawler.signals.connect(_write, signal=signals.spider_closed)
            gc.callbacks.append(_collecting)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> _Stage:
        return cls(crawler)

    def process_item(self, item: Any) -> Any:
        now = _clock()
        key = id(item)
        if self.number and key in _reached:
            _steps.setdefault(self.number, []).append(now - _reached[key])
        if self.last:
            _reached.pop(key, None)
        else:
            _reached[key] = _clock()
        return item


# Separate classes, not made in a loop: Scrapy keys pipelines by qualified name.
class Stage0(_Stage):
    number = 0


class Stage1(_Stage):
    number = 1


class Stage2(_Stage):
    number = 2


class Stage3(_Stage):
    number = 3


class Stage4(_Stage):
    number = 4
    last = True


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"items": len(ordered),
            "median_us": round(ordered[len(ordered) // 2] * 1e6, 2),
            "mean_us": round(sum(ordered) / len(ordered) * 1e6, 2),
            "p90_us": round(ordered[int(len(ordered) * 0.9)] * 1e6, 2)}


def _write() -> None:
    path = os.environ.get("BENCH_STEPS_FILE")
    if path:
        figures: dict[str, object] = {str(n): _summary(v) for n, v in sorted(_steps.items())
                                      if v}
        figures["gc"] = {f"gen{g}": {"collections": n, "seconds": round(t, 3)}
                         for g, (n, t) in _gc.items()}
        with open(path, "w") as out:
            json.dump(figures, out)
