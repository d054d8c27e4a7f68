"""Compressed responses: handed to Scrapy's decompression as plain responses, they come out
as the same responses as before, with the class and charset of their decompressed body."""

from __future__ import annotations

import gzip

import pytest
from scrapy.downloadermiddlewares.httpcompression import HttpCompressionMiddleware
from scrapy.http import Request, Response, TextResponse, XmlResponse
from scrapy.utils.test import get_crawler

from harvester.middlewares.compressed import PlainCompressedMiddleware
from tests.feeds import rss

CYRILLIC = rss([{"title": "Новости дня", "link": "https://news.example.org/ru/1",
                 "description": "Привет, мир"}]).replace('encoding="utf-8"',
                                                        'encoding="windows-1251"').encode("cp1251")


def received(body: bytes, headers: dict[str, str], method: str = "GET") -> XmlResponse:
    request = Request("http://127.0.0.1/feed.xml", method=method)
    return XmlResponse(request.url, status=200, headers=headers, body=body, request=request,
                       flags=["cached"], ip_address=None, protocol="HTTP/1.1")


def through(response: Response, *, plain: bool) -> Response:
    crawler = get_crawler(settings_dict={"COMPRESSION_ENABLED": True})
    assert response.request is not None
    if plain:
        response = PlainCompressedMiddleware.from_crawler(crawler).process_response(
            response.request, response)
    out = HttpCompressionMiddleware.from_crawler(crawler).process_response(
        response.request, response)
    assert isinstance(out, Response)
    return out


@pytest.mark.parametrize("content_type", ["application/rss+xml", "application/octet-stream",
                                          "application/rss+xml; charset=windows-1251"])
def test_a_gzip_feed_comes_out_as_scrapy_alone_makes_it(content_type: str) -> None:
    headers = {"Content-Encoding": "gzip", "Content-Type": content_type}
    sent = received(gzip.compress(CYRILLIC), headers)
    ours = through(sent, plain=True)
    scrapys = through(received(gzip.compress(CYRILLIC), headers), plain=False)

    assert type(ours) is type(scrapys)
    assert ours.body == scrapys.body == CYRILLIC
    assert ours.request is sent.request
    for name in ("url", "status", "flags", "protocol"):
        assert getattr(ours, name) == getattr(scrapys, name), name
    assert ours.headers.to_unicode_dict() == scrapys.headers.to_unicode_dict()
    if isinstance(scrapys, TextResponse):
        assert isinstance(ours, TextResponse)
        assert ours.encoding == scrapys.encoding == "cp1251"
        assert "Новости дня" in ours.text


def test_what_scrapy_does_not_decompress_is_left_alone() -> None:
    crawler = get_crawler(settings_dict={"COMPRESSION_ENABLED": True})
    middleware = PlainCompressedMiddleware.from_crawler(crawler)
    plain = received(CYRILLIC, {"Content-Type": "application/rss+xml"})
    head = received(b"", {"Content-Encoding": "gzip"}, method="HEAD")
    assert plain.request is not None and head.request is not None
    assert middleware.process_response(plain.request, plain) is plain
    assert middleware.process_response(head.request, head) is head
