"""harvester: a Scrapy-based signal harvester."""

__version__ = "0.1.0"
