"""LocalSite: the static file server used by the demo, the tests and the benchmark."""

from __future__ import annotations

import gzip
import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest

from harvester.services.localsite import LocalSite

RSS = b'<?xml version="1.0"?>\n<rss version="2.0"><channel><title>t</title></channel></rss>\n'
ATOM = b'<?xml version="1.0"?>\n<!-- c -->\n<feed xmlns="http://www.w3.org/2005/Atom"/>\n'
JSON_FEED = b'{"version": "https://jsonfeed.org/version/1.1", "title": "j", "items": []}'
BIG = b"<rss><channel>" + b"<item><title>word salad</title></item>" * 200 + b"</channel></rss>"


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "rss.xml").write_bytes(RSS)
    (tmp_path / "feeds" / "atom.xml").write_bytes(ATOM)
    (tmp_path / "feeds" / "feed.json").write_bytes(JSON_FEED)
    (tmp_path / "feeds" / "plain.json").write_bytes(b'{"a": 1}')
    (tmp_path / "feeds" / "big.xml").write_bytes(BIG)
    (tmp_path / "index.html").write_bytes(b"<p>hi</p>")
    return tmp_path


@pytest.fixture()
def site(root: Path) -> Iterator[LocalSite]:
    with LocalSite(root) as running:
        yield running


def fetch(
    site: LocalSite, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body; urllib raises for non-2xx, so unwrap that."""
    request = urllib.request.Request(site.url + path, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def test_url_uses_the_picked_port(site: LocalSite) -> None:
    assert site.url.startswith("http://127.0.0.1:")
    assert site.port > 0


def test_200_with_validators(site: LocalSite) -> None:
    status, headers, body = fetch(site, "/feeds/rss.xml")
    assert status == 200
    assert body == RSS
    assert headers["Content-Type"] == "application/rss+xml"
    assert headers["Content-Length"] == str(len(RSS))
    assert headers["ETag"].startswith('"') and headers["ETag"].endswith('"')
    assert "Last-Modified" in headers


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/feeds/atom.xml", "application/atom+xml"),
        ("/feeds/feed.json", "application/feed+json"),
        ("/feeds/plain.json", "application/json"),
        ("/index.html", "text/html; charset=utf-8"),
    ],
)
def test_content_type_by_suffix_and_sniffing(site: LocalSite, path: str, content_type: str) -> None:
    assert fetch(site, path)[1]["Content-Type"] == content_type


def test_etag_is_stable_and_changes_with_content(site: LocalSite, root: Path) -> None:
    first = fetch(site, "/feeds/rss.xml")[1]["ETag"]
    assert fetch(site, "/feeds/rss.xml")[1]["ETag"] == first
    target = root / "feeds" / "rss.xml"
    target.write_bytes(RSS.replace(b"<title>t<", b"<title>changed<"))
    stat = target.stat()
    # Some filesystems have coarse mtimes; force a different one.
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    _, headers, body = fetch(site, "/feeds/rss.xml")
    assert b"changed" in body
    assert headers["ETag"] != first


def test_304_on_if_none_match(site: LocalSite) -> None:
    etag = fetch(site, "/feeds/rss.xml")[1]["ETag"]
    status, headers, body = fetch(site, "/feeds/rss.xml", {"If-None-Match": etag})
    assert status == 304
    assert body == b""
    assert headers["ETag"] == etag
    assert fetch(site, "/feeds/rss.xml", {"If-None-Match": f'"other", W/{etag}'})[0] == 304
    assert fetch(site, "/feeds/rss.xml", {"If-None-Match": '"other"'})[0] == 200


def test_304_on_if_modified_since(site: LocalSite, root: Path) -> None:
    last_modified = fetch(site, "/feeds/rss.xml")[1]["Last-Modified"]
    assert fetch(site, "/feeds/rss.xml", {"If-Modified-Since": last_modified})[0] == 304
    older = formatdate((root / "feeds" / "rss.xml").stat().st_mtime - 3600, usegmt=True)
    assert fetch(site, "/feeds/rss.xml", {"If-Modified-Since": older})[0] == 200
    assert fetch(site, "/feeds/rss.xml", {"If-Modified-Since": "garbage"})[0] == 200


def test_gzip_for_large_files_when_asked(site: LocalSite) -> None:
    status, headers, body = fetch(site, "/feeds/big.xml", {"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Vary"] == "Accept-Encoding"
    assert int(headers["Content-Length"]) == len(body) < len(BIG)
    assert gzip.decompress(body) == BIG
    # The gzip variant has its own strong ETag, and both validate.
    assert fetch(site, "/feeds/big.xml")[1]["ETag"] != headers["ETag"]
    again = fetch(
        site, "/feeds/big.xml", {"Accept-Encoding": "gzip", "If-None-Match": headers["ETag"]}
    )
    assert again[0] == 304


def test_no_gzip_for_small_files_or_when_refused(site: LocalSite) -> None:
    assert "Content-Encoding" not in fetch(site, "/feeds/rss.xml", {"Accept-Encoding": "gzip"})[1]
    refused = fetch(site, "/feeds/big.xml", {"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in refused[1]
    assert refused[2] == BIG


def test_set_status_times_then_back_to_normal(site: LocalSite) -> None:
    site.set_status("/feeds/rss.xml", 503, {"Retry-After": "7"}, times=2)
    for _ in range(2):
        status, headers, _ = fetch(site, "/feeds/rss.xml")
        assert status == 503
        assert headers["Retry-After"] == "7"
    assert fetch(site, "/feeds/rss.xml")[0] == 200
    assert site.hits("/feeds/rss.xml") == 3


def test_set_status_forever_until_cleared(site: LocalSite) -> None:
    site.set_status("/feeds/rss.xml", 500)
    assert [fetch(site, "/feeds/rss.xml")[0] for _ in range(3)] == [500, 500, 500]
    site.clear_overrides()
    assert fetch(site, "/feeds/rss.xml")[0] == 200


def test_set_status_applies_to_missing_paths_too(site: LocalSite) -> None:
    site.set_status("/gone.xml", 429, {"Retry-After": "1"}, times=1)
    assert fetch(site, "/gone.xml")[0] == 429
    assert fetch(site, "/gone.xml")[0] == 404


def test_hits_count_gets_per_path_ignoring_query(site: LocalSite) -> None:
    fetch(site, "/feeds/rss.xml")
    fetch(site, "/feeds/rss.xml?x=1")
    fetch(site, "/feeds/rss.xml", method="HEAD")
    fetch(site, "/missing")
    assert site.hits("/feeds/rss.xml") == 2
    assert site.hits("/missing") == 1
    assert site.hits("/never") == 0


def test_set_delay(site: LocalSite) -> None:
    site.set_delay("/feeds/rss.xml", 0.3)
    started = time.monotonic()
    assert fetch(site, "/feeds/rss.xml")[0] == 200
    assert time.monotonic() - started >= 0.3
    site.set_delay("/feeds/rss.xml", 0)
    started = time.monotonic()
    fetch(site, "/feeds/rss.xml")
    assert time.monotonic() - started < 0.3


@pytest.mark.parametrize("path", ["/nope.xml", "/feeds", "/feeds/", "/../etc/passwd", "/%2e%2e/x"])
def test_404_for_missing_directories_and_escapes(site: LocalSite, path: str) -> None:
    status, _, body = fetch(site, path)
    assert status == 404
    assert body == b"404 Not Found\n"


def test_robots_txt_from_root_when_present(site: LocalSite, root: Path) -> None:
    assert fetch(site, "/robots.txt")[0] == 404
    (root / "robots.txt").write_text("User-agent: *\nAllow: /\n")
    status, headers, body = fetch(site, "/robots.txt")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body.startswith(b"User-agent")


def test_head_has_headers_but_no_body(site: LocalSite) -> None:
    status, headers, body = fetch(site, "/feeds/rss.xml", method="HEAD")
    assert status == 200
    assert headers["Content-Length"] == str(len(RSS))
    assert body == b""


def test_keep_alive_serves_several_requests_on_one_connection(site: LocalSite) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=5)
    try:
        for _ in range(3):
            connection.request("GET", "/feeds/rss.xml")
            response = connection.getresponse()
            assert response.read() == RSS
            assert not response.will_close
    finally:
        connection.close()


def test_stop_closes_the_port(root: Path) -> None:
    site = LocalSite(root).start()
    url = site.url
    site.stop()
    site.stop()  # idempotent
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/feeds/rss.xml", timeout=2)


def test_refuses_non_loopback_hosts(root: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        LocalSite(root, host="0.0.0.0")


def test_set_status_rejects_nonsense(site: LocalSite) -> None:
    with pytest.raises(ValueError):
        site.set_status("/feeds/rss.xml", 100)
    with pytest.raises(ValueError):
        site.set_status("/feeds/rss.xml", 500, times=0)
