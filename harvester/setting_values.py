"""Values given with ``-s NAME=VALUE`` for Scrapy's own numeric and switch settings,
checked before a crawl starts: Scrapy read ``-s DOWNLOAD_MAXSIZE=abc`` deep in a component
and said only "invalid literal for int() with base 10: 'abc'", naming no setting, and
``harvest crawl`` printed a summary of zeros. The ``HARVEST_*`` settings are checked by
the components that read them (pipelines/numbers.py)."""

from __future__ import annotations

from scrapy.settings import default_settings

#: What Scrapy's ``getbool`` takes.
_TRUE_OR_FALSE = ("0", "1", "True", "False", "true", "false")


def refused(name: str, value: str) -> str | None:
    """Why Scrapy cannot take ``value`` for its setting ``name``; None when it can, or
    when the setting is not one of its numbers or switches."""
    default = getattr(default_settings, name, None) if name.isupper() else None
    if isinstance(default, bool):
        if value.strip() not in _TRUE_OR_FALSE:
            return f"{name} must be True or False (or 1 or 0), not {value!r}"
    elif isinstance(default, int | float):
        # A number, not always a whole one: some whose default is whole are read as
        # fractions (DOWNLOAD_DELAY = 0, read with getfloat).
        try:
            float(value)
        except ValueError:
            return f"{name} must be a number, not {value!r}"
    return None
