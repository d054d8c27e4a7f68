"""Run crawls in this process (``harvest crawl``): one crawler per source, side by side."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scrapy.crawler import AsyncCrawlerProcess, Crawler
from scrapy.settings import Settings
from scrapy.utils.project import get_project_settings

from harvester.messages import first_line
from harvester.pipelines import store
from harvester.sources import SPIDERS, Source
from harvester.stats import per_source, succeeded

logger = logging.getLogger(__name__)

#: The settings module of ``scrapy.cfg``, used wherever ``harvest`` is run from.
SETTINGS_MODULE = "harvester.settings"



@dataclass(slots=True)
class SourceOutcome:
    """What one source's crawl did, from its crawler's stats."""

    source: str
    counters: dict[str, Any] = field(default_factory=dict)
    finish_reason: str | None = None
    skipped: str | None = None
    config_error: str | None = None

    @property
    def failed(self) -> bool:
        if self.config_error or self.lost or self.finish_reason == "shutdown":
            # Interrupted (Ctrl-C, SIGTERM): what was not fetched is unknown; a cron job
            # must not read that as a good run (CLOSESPIDER_* limits are chosen, not failures).
            return True
        if self.skipped:
            # Disabled after failing: not reached, and a cron job or CI must see it (every
            # source of a `make run` offline five times over ended here with exit 0).
            return bool(self.counters.get("disabled"))
        # As the source's state counts it (toward HARVEST_DISABLE_AFTER): errors and
        # nothing usable (a listing whose selector matches nothing), a bug of ours, or
        # nothing fetched at all, even with no error (a request dropped on the way said
        # "exit 0" five times, then the source was disabled). It said "partly failed",
        # exit 0, while the state counted a failed run.
        return not succeeded(self.counters)

    @property
    def _reached(self) -> int:
        return self.counters.get("fetched", 0) + self.counters.get("not_modified", 0)

    @property
    def lost(self) -> int:
        """Items that neither the database nor the spool took (see StorePipeline)."""
        return int(self.counters.get("lost", 0))

    @property
    def error(self) -> str | None:
        said = self.config_error or self.skipped or self.counters.get("last_error")
        if said is None and self._reached == 0 and self.finish_reason == "finished":
            return ("nothing was fetched and no request failed (one dropped before it was "
                    "sent?); the crawl's log says more")
        return said


def raised(task: Any) -> BaseException | None:
    """What a crawl's task ended in, when it raised (a component refusing a setting given
    with ``-s``, say); None while it runs, when it ran, or when it is no asyncio task.
    Retrieved, asyncio no longer reports it as unhandled ("Task exception was never
    retrieved" and a traceback)."""
    if not isinstance(task, asyncio.Future) or not task.done() or task.cancelled():
        return None
    return task.exception()


@dataclass(slots=True)
class _Running:
    source: str
    crawler: Crawler
    task: asyncio.Task[None]

    def start_error(self) -> str | None:
        """Why the crawl failed to start or ended in an exception (a setting given with
        ``-s`` that a component refuses, say), in one line; None when it ran."""
        exc = raised(self.task)
        if exc is None:
            return None
        logger.error("The crawl of %s could not run", self.source, exc_info=exc)
        return (f"the crawl could not run ({type(exc).__name__}: {first_line(exc)}); check "
                "the -s settings and HARVEST_* variables (the log has the traceback)")


class _EchoShutdown(logging.Handler):
    """Scrapy's "Received SIGTERM, shutting down gracefully" on stderr: the crawl's log
    goes to a file, and a terminal showed nothing for the half minute the requests in
    flight took to finish after Ctrl-C."""

    received = False  # a shutdown was asked for

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Received ") and "shutting down" in message:
            self.received = True
            # After a hangup the terminal is gone: the write failed (EIO) inside Scrapy's
            # log call, which then never reached the log file either.
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"{message}\n")
                sys.stderr.flush()


@contextmanager
def _shutdown_notice() -> Iterator[_EchoShutdown]:
    crawler_log = logging.getLogger("scrapy.crawler")
    handler = _EchoShutdown(logging.INFO)
    crawler_log.addHandler(handler)
    try:
        yield handler
    finally:
        crawler_log.removeHandler(handler)


def stop_on_hangup() -> None:
    """A hangup (the terminal closed, the SSH session dropped) stops a crawl as SIGTERM
    does: the items scraped are stored or spooled and the run recorded. Its default action
    killed the process outright, with no summary, no run record, and the items waiting
    for their batch lost. Left alone when SIGHUP is ignored (``nohup``)."""
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is not None and signal.getsignal(hangup) is signal.SIG_DFL:
        signal.signal(hangup, _hung_up)


def _hung_up(signum: int, frame: Any) -> None:
    # Scrapy's own SIGTERM handler, installed when the crawl started: a graceful stop the
    # first time, a forced one after (as a second Ctrl-C).
    handler = signal.getsignal(signal.SIGTERM)
    if callable(handler):
        handler(signum, frame)
    else:
        os.kill(os.getpid(), signal.SIGTERM)


def _stats_so_far(crawler: Crawler) -> dict[str, Any]:
    try:
        return crawler.stats.get_stats()
    except RuntimeError:  # Scrapy sets crawler.stats only once the crawl has started
        return {}


def crawl_settings(overrides: dict[str, Any], log_file: Path | None) -> Settings:
    """harvester's Scrapy settings with ``overrides`` on top.

    Scrapy finds a project's settings through the ``scrapy.cfg`` above the current
    directory; ``harvest`` run from anywhere else would load Scrapy's defaults, with no
    spiders. ``SCRAPY_SETTINGS_MODULE`` names ours unless the environment names another.
    """
    os.environ.setdefault("SCRAPY_SETTINGS_MODULE", SETTINGS_MODULE)
    settings = get_project_settings()
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        settings.set("LOG_FILE", str(log_file), priority="cmdline")
        settings.set("LOG_FILE_APPEND", False, priority="cmdline")
    for key, value in overrides.items():
        settings.set(key, value, priority="cmdline")
    return settings


def run_crawls(
    sources: Sequence[Source],
    settings: Settings,
    on_start: Callable[[Callable[[], dict[str, dict[str, Any]]]], None] | None = None,
) -> list[SourceOutcome]:
    """Crawl the sources concurrently and block until all are done.

    ``on_start`` receives a function returning live per-source counters (for a progress view).
    """
    # A log file on a full disk printed "--- Logging error ---" and a traceback for every
    # record (145 lines) over the summary, which says what was stored, spooled or lost.
    logging.raiseExceptions = False
    process = AsyncCrawlerProcess(settings)
    running: list[_Running] = []
    outcomes: dict[str, SourceOutcome] = {}
    available = set(process.spider_loader.list())
    for source in sources:
        spider = SPIDERS.get(source.kind)
        if spider not in available:
            outcomes[source.name] = SourceOutcome(source.name, config_error=(
                f"no spider {spider!r} for kind {source.kind!r} is loaded; check that "
                f"SCRAPY_SETTINGS_MODULE names {SETTINGS_MODULE} or a module importing it"))
            continue
        crawler = process.create_crawler(spider)
        running.append(_Running(source.name, crawler, process.crawl(crawler,
                                                                   source=source.name)))

    def live() -> dict[str, dict[str, Any]]:
        return {r.source: per_source(_stats_so_far(r.crawler), [r.source])[r.source]
                for r in running}

    if on_start is not None:
        on_start(live)
    interrupted = False
    if running:
        stop_on_hangup()
        with _shutdown_notice() as notice:
            process.start()
        interrupted = notice.received
        # A forced stop left crawls unclosed: their rows go to the spool now, so that the
        # summary below counts them as spooled.
        store.spool_unfinished()
    for r in running:
        stats = _stats_so_far(r.crawler)
        counters = per_source(stats, [r.source])[r.source]
        # A second Ctrl-C stops the reactor before a crawl closes: no finish reason, and
        # it read as a good run (exit 0, zero counts, no "stopped early").
        reason = stats.get("finish_reason") or ("shutdown" if interrupted else None)
        outcomes[r.source] = SourceOutcome(
            r.source,
            counters=counters,
            finish_reason=reason,
            skipped=counters["skipped"],
            config_error=stats.get("harvest/config_error") or r.start_error(),
        )
    return [outcomes[s.name] for s in sources]
