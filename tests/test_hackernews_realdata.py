"""Conformance of the hackernews spider with recorded Firebase answers.

``../shared/realdata/hackernews`` holds ``v0/topstories.json`` (500 ids) and the recorded
items, served by the corpus's own ``serve.py``; 12 of the top ids have no recorded item
(the server answers 404, as Firebase does for an id it lost). ``index.json`` lists what the
recording projects saw for each item (type, title, by, score, descendants, time, url).
We crawl the whole list into PostgreSQL and compare the stored rows with ``index.json``.
Skipped when the corpus is absent (a fresh clone).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harvester.parsers.hackernews import ParsedItem, parse_item
from tests.conftest import harvest, write_sources
from tests.realdata import REALDATA

HN = REALDATA / "hackernews"
FIELDS = ("title", "by", "score", "descendants", "time", "url")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def corpus_url() -> Iterator[str]:
    """The corpus served by its own ``serve.py`` on a free loopback port."""
    if not (HN / "index.json").is_file():
        pytest.skip("../shared/realdata/hackernews is not here (a fresh clone)")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, str(REALDATA / "serve.py"), "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("realdata serve.py did not start")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/hackernews/v0"
    finally:
        server.terminate()
        server.wait(timeout=10)


def expected_items() -> dict[str, dict[str, Any]]:
    """index.json's entry per item id, for the recording served at ``v0/item/ID.json``
    (other entries are earlier snapshots of the same item, with older scores)."""
    entries = json.loads((HN / "index.json").read_text(encoding="utf-8"))
    out: dict[str, dict[str, Any]] = {}
    for entry in entries:
        file = entry.get("file", "")
        stem = file.removeprefix("v0/item/").removesuffix(".json")
        if file.startswith("v0/item/") and stem.isdigit():
            out[stem] = entry
    return out


def stored(db: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    rows = db.execute("SELECT external_id, title, author, engagement, "
                      "extract(epoch FROM published_at)::bigint, link_url FROM signals")
    return {r[0]: {"title": r[1], "by": r[2], "score": r[3].get("score"),
                   "descendants": r[3].get("comments"), "time": r[4], "url": r[5]}
            for r in rows}


def test_top_stories_agree_with_the_recorded_items(
    corpus_url: str, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    top = json.loads((HN / "v0" / "topstories.json").read_text(encoding="utf-8"))
    recorded = {str(i) for i in top if (HN / "v0" / "item" / f"{i}.json").is_file()}
    sources = write_sources(tmp_path / "s.toml", [{
        "name": "hn-real", "kind": "hackernews", "feed": "top", "limit": len(top),
        "api_base": corpus_url,
    }])
    result = harvest("--sources", str(sources), "crawl", "hn-real",
                     "-s", "AUTOTHROTTLE_ENABLED=False", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=16",
                     home=home, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

    ours = stored(db)
    expected = {k: v for k, v in expected_items().items() if k in recorded}
    missing = db.execute("SELECT (stats->'harvest/by_source'->'hn-real'->>'missing')::int, "
                         "errors FROM crawl_runs").fetchone()
    agree = {f: sum(ours.get(k, {}).get(f) == e.get(f) for k, e in expected.items())
             for f in FIELDS}
    whole = sum(all(ours.get(k, {}).get(f) == e.get(f) for f in FIELDS)
                for k, e in expected.items())
    report = ", ".join(f"{f} {n}/{len(expected)}" for f, n in agree.items())
    print(f"\nhackernews realdata: {len(ours)} stored of {len(top)} listed "
          f"({len(top) - len(recorded)} not recorded); agreement {report}; "
          f"all fields {whole}/{len(expected)}")

    # Every recorded item is stored, every unrecorded id is counted missing, none failed.
    assert set(ours) == recorded and len(recorded) == 488
    assert missing == (len(top) - len(recorded), 0)
    # The stored fields are the API's own values (titles only have whitespace tidied, and
    # none of these has any to tidy), so anything short of full agreement is our bug.
    assert whole == len(expected)


def test_api_spec_examples() -> None:
    """The API documentation's example of each item type, read straight from the corpus."""
    if not (HN / "v0" / "item").is_dir():
        pytest.skip("../shared/realdata/hackernews is not here (a fresh clone)")

    def parse(item_id: int) -> ParsedItem:
        return parse_item(json.loads((HN / "v0" / "item" / f"{item_id}.json").read_bytes()))

    story = parse(8863).fields
    assert story is not None
    assert (story["title"], story["author"], story["link_url"], story["engagement"]) == (
        "My YC app: Dropbox - Throw away your USB drive", "dhouston",
        "http://www.getdropbox.com/u/2/screencast.html", {"score": 111, "comments": 71})
    ask = parse(121003).fields
    assert ask is not None and ask["link_url"] is None
    assert ask["text"].startswith("or HN: the Next Iteration\nI get the impression")
    job = parse(192327).fields
    assert job is not None and job["tags"] == ["job"] and job["link_url"] is None  # url ""
    assert "\n* Implement projects from the idea phase to production\n" in job["text"]
    assert "<" not in job["text"] and "http://www.justin.tv/problems/bml" in job["text"]
    poll = parse(126809).fields
    assert poll is not None and poll["tags"] == ["poll"] and poll["text"] is None
    for part in (2921983, 160705):  # a comment and a poll option are not posts
        reject = parse(part).reject
        assert reject is not None and reject.reason == "not_a_post"
