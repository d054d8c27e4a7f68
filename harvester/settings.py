"""Scrapy settings for harvester (declarative; environment is read in harvester.config)."""

from harvester import __version__

BOT_NAME = "harvester"
SPIDER_MODULES = ["harvester.spiders"]
NEWSPIDER_MODULE = "harvester.spiders"
# Our `scrapy crawl`: Scrapy's, with an exit status that says whether the sources were
# reached (see harvester/commands/crawl.py).
COMMANDS_MODULE = "harvester.commands"

# Politeness: identify ourselves, obey robots.txt, adapt to the server's latency.
USER_AGENT = f"harvester/{__version__} (signal harvester; Scrapy; respects robots.txt)"
ROBOTSTXT_OBEY = True
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 4
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 1.0
AUTOTHROTTLE_MAX_DELAY = 60.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 2.0
DOWNLOAD_TIMEOUT = 30
# A response larger than this once decompressed is dropped and fails its source (Scrapy's
# 1 GB default let a 300 KB gzip bomb take a crawl, every source in it, to 2 GB of memory);
# the parsers' own cap for gzip served without Content-Encoding is the same 50 MB, which
# is also the sitemap protocol's limit.
DOWNLOAD_MAXSIZE = 50 * 1024 * 1024
DOWNLOAD_WARNSIZE = 10 * 1024 * 1024
# getaddrinfo in a thread: IPv6 hosts and literals ("http://[::1]:8080/"), which Scrapy's
# default resolver (gethostbyname) fails as "DNS lookup failed"; it takes no DNS_TIMEOUT.
TWISTED_DNS_RESOLVER = "scrapy.resolver.CachingHostnameResolver"
RETRY_TIMES = 2
COOKIES_ENABLED = False

# Nothing that runs code sent over the network.
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False

DOWNLOADER_MIDDLEWARES = {
    # A robots.txt answering 5xx means complete disallow (RFC 9309), not "no rules".
    "scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware": None,
    "harvester.middlewares.robots.PoliteRobotsTxtMiddleware": 100,
    "harvester.middlewares.conditional.ConditionalGetMiddleware": 560,
    # After RetryMiddleware (550) for requests, before it for responses: a 429/503 that says
    # how long to wait is waited out here; Scrapy's retry handles the rest.
    "harvester.middlewares.polite.PoliteMiddleware": 570,
    # Before HttpCompressionMiddleware (590) for responses: see harvester/middlewares/compressed.py.
    "harvester.middlewares.compressed.PlainCompressedMiddleware": 595,
    # Inside RedirectMiddleware (600): sees a listed URL's 301/308 before it is followed.
    "harvester.middlewares.moved.MovedSourceMiddleware": 610,
}
# Scrapy's HTTP(S) handler, after a last look at the request's source gate: a request
# queued before its source was paused (429/503 Retry-After) is held, not sent.
DOWNLOAD_HANDLERS = {
    "http": "harvester.middlewares.polite.PoliteDownloadHandler",
    "https": "harvester.middlewares.polite.PoliteDownloadHandler",
}
# Nearest the spider: a callback's exception becomes a stored rejection and a failure of
# its source (harvester/middlewares/callback_errors.py).
SPIDER_MIDDLEWARES = {
    "harvester.middlewares.callback_errors.CallbackErrorMiddleware": 950,
    # A request dropped for its length is an error of its source, not a silent INFO line.
    "scrapy.spidermiddlewares.urllength.UrlLengthMiddleware": None,
    "harvester.middlewares.urllength.SourceUrlLengthMiddleware": 800,
}
# Scrapy's 2083 is an old browser's limit; API searches (X, Reddit, Algolia) with a long
# query in a non-Latin script pass it. Common servers take 8 KB request lines.
URLLENGTH_LIMIT = 8192
EXTENSIONS = {
    # Per-crawler log counts (harvest crawl runs one crawler per source side by side).
    "scrapy.extensions.logcount.LogCount": None,
    "harvester.extensions.logcount.OwnLogCount": 0,
    "harvester.extensions.gc.GcFreezeExtension": 100,
    "harvester.extensions.metrics.MetricsExtension": 200,
}
ITEM_PIPELINES = {
    "harvester.pipelines.validate.ValidatePipeline": 100,
    "harvester.pipelines.dedupe.DedupePipeline": 200,
    "harvester.pipelines.score.ScorePipeline": 300,
    "harvester.pipelines.store.StorePipeline": 900,
}
LOG_FORMATTER = "harvester.logformatter.HarvestLogFormatter"
LOG_LEVEL = "INFO"

# Harvest components (documented in README.md, "Settings").
HARVEST_STORE_BATCH_SIZE = 500
HARVEST_STORE_FLUSH_SECONDS = 5.0
HARVEST_SCORE_HALF_LIFE_HOURS = 24.0
HARVEST_VALIDATE_MAX_TEXT = 20000
HARVEST_CLUSTER_DISTANCE = 3  # simhash bits within which two signals are one story (0–11)
HARVEST_REDDIT_USERNAME = ""  # Reddit account named in the reddit User-Agent ("by /u/NAME")
HARVEST_CHROMIUM_PATH = "/usr/bin/chromium"  # rendered sources: Debian's Chromium
HARVEST_RENDERED_WAIT_SECONDS = 20.0  # longest wait for a rendered page's wait_for selector
HARVEST_RETRY_AFTER_MAX = 300.0
HARVEST_RATE_LIMIT_RETRIES = 5
