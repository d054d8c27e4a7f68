"""Scrapy signals of our own (plain sentinel objects, as Scrapy's are)."""

# Sent by ConditionalGetMiddleware for a 200 response that carries cache validators:
# handlers get ``source``, ``url``, ``etag``, ``last_modified``.
validators_seen = object()
