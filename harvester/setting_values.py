"""Values given with ``-s NAME=VALUE``, checked before a crawl starts.

Scrapy read ``-s DOWNLOAD_MAXSIZE=abc`` deep in a component and said only "invalid literal
for int() with base 10: 'abc'", naming no setting, and ``harvest crawl`` printed a summary
of zeros. Harvester's own ``HARVEST_*`` settings are read here as the components read them
(pipelines/numbers.py): a wrong one stopped each source's crawl with the same sentence
("not crawled NAME: the crawl could not run …"), or, read unchecked, was taken (a NaN
``HARVEST_RETRY_AFTER_MAX`` waited out any ``Retry-After``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scrapy.settings import BaseSettings, default_settings

#: What Scrapy's ``getbool`` takes.
_TRUE_OR_FALSE = ("0", "1", "True", "False", "true", "false")


def refused(name: str, value: str) -> str | None:
    """Why the crawl cannot take ``value`` for the setting ``name``; None when it can, or
    when the setting is not one of Scrapy's numbers or switches nor one of ours."""
    if name.startswith("HARVEST_"):
        return _harvest_refused(name, value)
    default = getattr(default_settings, name, None) if name.isupper() else None
    if isinstance(default, bool):
        if value.strip() not in _TRUE_OR_FALSE:
            return f"{name} must be True or False (or 1 or 0), not {value!r}"
    elif name in _WHOLE:
        try:
            int(value)
        except ValueError:
            return f"{name} must be a whole number, not {value!r}"
    elif isinstance(default, int | float):
        # A number, not always a whole one: some whose default is whole are read as
        # fractions (DOWNLOAD_DELAY = 0, read with getfloat).
        try:
            float(value)
        except ValueError:
            return f"{name} must be a number, not {value!r}"
    return None


#: Scrapy's settings it reads with ``getint``: "1.5" passed as a number, and the crawl said
#: only "invalid literal for int() with base 10: '1.5'".
_WHOLE = frozenset({
    "CONCURRENT_ITEMS", "CONCURRENT_REQUESTS", "CONCURRENT_REQUESTS_PER_DOMAIN",
    "CONCURRENT_REQUESTS_PER_IP", "DEPTH_LIMIT", "DEPTH_PRIORITY", "DNSCACHE_SIZE",
    "DOWNLOAD_MAXSIZE", "DOWNLOAD_WARNSIZE", "CLOSESPIDER_ERRORCOUNT", "CLOSESPIDER_ITEMCOUNT",
    "CLOSESPIDER_PAGECOUNT", "CLOSESPIDER_TIMEOUT_NO_ITEM", "HTTPCACHE_EXPIRATION_SECS",
    "MEMUSAGE_LIMIT_MB", "MEMUSAGE_WARNING_MB", "METAREFRESH_MAXDELAY",
    "REACTOR_THREADPOOL_MAXSIZE", "REDIRECT_MAX_TIMES", "REDIRECT_PRIORITY_ADJUST",
    "RETRY_PRIORITY_ADJUST", "RETRY_TIMES", "SCRAPER_SLOT_MAX_ACTIVE_SIZE", "URLLENGTH_LIMIT",
})


def _harvest_refused(name: str, value: str) -> str | None:
    # Every component's own reader, on this value and the defaults: the sentence is the
    # one the component would stop the crawl with, and its bounds are kept in one place.
    settings = BaseSettings({name: value})
    for read in _readers():
        try:
            read(settings)
        except ValueError as exc:
            return str(exc)
    return None


def _readers() -> tuple[Callable[[BaseSettings], Any], ...]:
    """What reads the ``HARVEST_*`` settings of a crawl (README's settings table)."""
    # Imported here: they bring Scrapy's components, Playwright and the database layer,
    # which the CLI's other commands do without.
    from harvester.extensions.gc import gc_threshold
    from harvester.extensions.metrics import sync_seconds
    from harvester.middlewares.conditional import enabled
    from harvester.middlewares.polite import PoliteConfig
    from harvester.pipelines.score import ScoreConfig
    from harvester.pipelines.store import StoreConfig
    from harvester.pipelines.validate import ValidateConfig
    from harvester.spiders.rendered import RenderedConfig

    return (StoreConfig.from_settings, ValidateConfig.from_settings, ScoreConfig.from_settings,
            PoliteConfig.from_settings, RenderedConfig.from_settings, gc_threshold,
            sync_seconds, enabled)
