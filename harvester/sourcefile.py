"""Where the sources file is: the ``HARVEST_SOURCES_FILE`` Scrapy setting (set by
``harvest --sources``), else ``HARVEST_SOURCES`` from the environment."""

from __future__ import annotations

from pathlib import Path

from scrapy.settings import BaseSettings

from harvester.config import get_config


def sources_path(settings: BaseSettings) -> Path:
    value = settings.get("HARVEST_SOURCES_FILE")
    return Path(value) if value else get_config().sources
