"""Small feed documents for crawl tests, written by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime


def rfc822(hours_ago: float) -> str:
    return format_datetime(datetime.now(UTC) - timedelta(hours=hours_ago))


def rss(items: list[dict[str, str]], title: str = "Test feed",
        link: str = "https://news.example.org/") -> str:
    """RSS 2.0 with ``items`` of title/link/guid/description/pubDate/category (any subset)."""
    parts = []
    for item in items:
        fields = "".join(
            f"<{tag}>{item[key]}</{tag}>"
            for key, tag in (("title", "title"), ("link", "link"), ("guid", "guid"),
                             ("description", "description"), ("date", "pubDate"),
                             ("category", "category"))
            if key in item
        )
        parts.append(f"<item>{fields}</item>")
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"<title>{title}</title><link>{link}</link><description>t</description>"
        + "".join(parts) + "</channel></rss>\n"
    )


def items(prefix: str, count: int, base: str = "https://news.example.org") -> list[dict[str, str]]:
    return [
        {
            "title": f"{prefix} story {i}",
            "link": f"{base}/{prefix}/{i}",
            "description": f"&lt;p&gt;Body of {prefix} story {i}.&lt;/p&gt;",
            "date": rfc822(i),
        }
        for i in range(count)
    ]
