"""PlainCompressedMiddleware: compressed responses reach Scrapy's decompression as plain
``Response`` objects, so nothing guesses the charset of gzip bytes."""

from __future__ import annotations

from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.http import Request, Response, TextResponse


class PlainCompressedMiddleware:
    """Hands a compressed text response (``Content-Encoding`` set) to
    ``HttpCompressionMiddleware`` as a plain :class:`~scrapy.http.Response`.

    Scrapy picks the response class from the headers before decompression, so a feed
    served as ``application/rss+xml`` without a charset arrives as an ``XmlResponse``
    holding gzip bytes. ``HttpCompressionMiddleware`` then builds the decompressed response
    with ``Response.replace``, which reads every attribute of the old one, ``encoding``
    included, although it passes ``encoding=None``: that runs the body's charset inference
    over the compressed bytes (decoding all of them), 1.2-1.4 ms of the 2.1-2.3 ms a 72 KB
    feed took in that middleware (docs/benchmarks.md, session 16). The decompressed response
    still gets its class and its encoding from its own headers and body, as before.

    Sits just outside ``HttpCompressionMiddleware`` (590) in ``DOWNLOADER_MIDDLEWARES``, so
    it sees responses first, and acts only where that middleware will rebuild the response
    (compression enabled, any request but ``HEAD``).
    """

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PlainCompressedMiddleware:
        if not crawler.settings.getbool("COMPRESSION_ENABLED"):
            raise NotConfigured
        return cls()

    def process_response(self, request: Request, response: Response) -> Response:
        if (not isinstance(response, TextResponse) or request.method == "HEAD"
                or b"Content-Encoding" not in response.headers):
            return response
        return Response(**{name: getattr(response, name) for name in Response.attributes})
