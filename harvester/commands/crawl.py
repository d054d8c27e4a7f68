"""``scrapy crawl`` with an exit status that says whether the crawl did its job.

Scrapy's command exits 0 whenever the spider started, so a CI smoke crawl or a cron job
could not tell a crawl that stored everything from one whose source was misspelt or
unreachable. This one (what Scrapyd runs too) exits like ``harvest crawl``:

- 0: every source the spider crawled was reached (fetched, or not modified);
- 1: a source failed (nothing usable came back), items were lost, or the spider could
  not be started at all (Scrapy's own case);
- 2: the crawl could not run: a ``HARVEST_*`` variable is malformed (one sentence on
  stderr instead of a traceback per extension), a component refused a setting given with
  ``-s`` (one sentence, not asyncio's "Task exception was never retrieved" and a
  traceback), or the spider stopped at once on a configuration error (unknown source,
  broken sources file; ``crawl_runs`` keeps it as ``config_error``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from scrapy.commands.crawl import Command as ScrapyCrawlCommand
from scrapy.crawler import Crawler
from scrapy.exceptions import UsageError

from harvester import setting_values
from harvester.config import ConfigError, get_config
from harvester.messages import first_line
from harvester.runner import SourceOutcome, raised, stop_on_hangup
from harvester.spiders.base import SourceSpider
from harvester.stats import per_source

EXIT_FAILED = 1
EXIT_USAGE = 2

logger = logging.getLogger(__name__)


class Command(ScrapyCrawlCommand):
    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("name one spider: scrapy crawl SPIDER [-a source=NAME]")
        try:
            get_config()
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            self.exitcode = EXIT_USAGE
            return
        for name, _, value in (given.partition("=") for given in opts.set or []):
            if why := setting_values.refused(name, value):
                print(f"error: {why}", file=sys.stderr)
                self.exitcode = EXIT_USAGE
                return
        assert self.crawler_process
        crawler = self._create_crawler(args[0])
        started = self.crawler_process.crawl(crawler, **opts.spargs)
        stop_on_hangup()
        self.crawler_process.start()
        refused = start_error(started)
        if isinstance(refused, ValueError):
            print(f"error: {first_line(refused)}", file=sys.stderr)
            self.exitcode = EXIT_USAGE
            return
        if refused is not None:
            print(f"error: the crawl could not start ({type(refused).__name__}: "
                  f"{first_line(refused)}); the log has the traceback", file=sys.stderr)
            self.exitcode = EXIT_FAILED
            return
        if self.crawler_process.bootstrap_failed:
            self.exitcode = EXIT_FAILED
            return
        self.exitcode = exit_status(crawler)


def start_error(started: Any) -> BaseException | None:
    """What stopped the crawl from starting (``runner.raised``): a component refusing a
    setting given with ``-s`` (a ``ValueError`` that names it, shown as it is), or a fault
    (its traceback logged)."""
    exc = raised(started)
    if exc is not None and not isinstance(exc, ValueError):
        logger.error("The crawl could not start", exc_info=exc)
    return exc


def exit_status(crawler: Crawler) -> int:
    """The exit status of a finished crawl, from its stats (see the module docstring)."""
    stats = crawler.stats.get_stats() if crawler.stats else {}
    if stats.get("finish_reason") == "config_error":
        return EXIT_USAGE
    spider = crawler.spider
    if not isinstance(spider, SourceSpider):
        return 0
    rows = per_source(stats, spider.source_names)
    outcomes = [SourceOutcome(name, counters=row, skipped=row["skipped"])
                for name, row in rows.items()]
    return EXIT_FAILED if any(o.failed for o in outcomes) else 0
