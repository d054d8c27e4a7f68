"""The X parser and spider against recorded X API v2 responses (``../shared/realdata/
x_twitter``: tweepy's and twarc-csv's cassettes, described by its ``index.json``).

Agreement = per response, the number of tweets, of partial errors and the ``next_token``
and ``result_count`` we read equal what ``index.json`` recorded. Skipped when the corpus is
not next to the repository.
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

from harvester.parsers.x import parse_search
from tests.conftest import harvest, write_sources
from tests.realdata import REALDATA

X_DATA = REALDATA / "x_twitter"
pytestmark = pytest.mark.skipif(not (X_DATA / "index.json").is_file(),
                                reason=f"corpus not found at {X_DATA}")

#: Measured: 10/10 search responses and 31/31 other tweet-list responses agree on all five
#: checks; 501/501 tweets of expanded responses get their author. The recorded values are
#: counts of the responses themselves, not a reference parser's opinion: a parser that
#: reads the documented shape cannot disagree, so any miss is our bug and the floor is all.
AGREEMENT_FLOOR = 1.0


def _entries() -> list[dict[str, Any]]:
    if not (X_DATA / "index.json").is_file():
        return []
    entries: list[dict[str, Any]] = json.loads((X_DATA / "index.json").read_text())
    return [e for e in entries if e["file"].endswith(".json")]


def _is_search(entry: dict[str, Any]) -> bool:
    return "/2/tweets/search/" in entry["original_url"]


def _holds_tweets(entry: dict[str, Any]) -> bool:
    """Any response whose ``data`` is a list of tweets (timelines, lookups, lists…): the
    same tweet objects, so the same parser applies."""
    data = json.loads((X_DATA / entry["file"]).read_bytes()).get("data")
    return (isinstance(data, list) and bool(data) and isinstance(data[0], dict)
            and "text" in data[0] and "username" not in data[0])


def _checks(entry: dict[str, Any]) -> dict[str, bool]:
    parsed = parse_search((X_DATA / entry["file"]).read_bytes())
    meta = entry.get("meta") or {}
    return {
        "problem": parsed.problem is None,
        "tweets": len(parsed.tweets) + len(parsed.rejects) == entry.get("n_data", 0)
        and not parsed.rejects,
        "errors": len(parsed.errors) == entry.get("n_errors", 0),
        "next_token": parsed.next_token == meta.get("next_token"),
        "result_count": parsed.result_count == meta.get("result_count"),
    }


def _report(title: str, entries: list[dict[str, Any]]) -> float:
    agreed = 0
    print(f"\n{title}: file, no problem, tweets, errors, next_token, result_count")
    for entry in entries:
        checks = _checks(entry)
        agreed += all(checks.values())
        marks = " ".join("ok" if v else "MISS" for v in checks.values())
        print(f"  {entry['file'][:70]:70} {marks}")
    rate = agreed / len(entries)
    print(f"  agreement: {agreed}/{len(entries)} = {rate:.1%}")
    return rate


def test_search_responses_agree_with_the_index() -> None:
    searches = [e for e in _entries() if _is_search(e)]
    assert len(searches) >= 10, "recorded search responses went missing from the corpus"
    assert sum(e.get("n_errors", 0) for e in searches) >= 2, "partial-error pages went missing"
    assert _report("search responses", searches) >= AGREEMENT_FLOOR


def test_other_tweet_lists_agree_with_the_index() -> None:
    lists = [e for e in _entries() if not _is_search(e) and _holds_tweets(e)]
    assert len(lists) >= 20
    assert _report("other tweet lists", lists) >= AGREEMENT_FLOOR


def test_every_recorded_response_parses_without_raising() -> None:
    for entry in _entries():
        parsed = parse_search((X_DATA / entry["file"]).read_bytes())
        for fields in parsed.tweets:
            assert fields["external_id"] and fields["url"].startswith("https://x.com/")
            assert fields["text"] is None or "&amp;" not in fields["text"]


def test_authors_are_resolved_from_the_expansions() -> None:
    """Every tweet of a response that expanded author_id gets its author's username."""
    resolved = total = 0
    for entry in _entries():
        doc = json.loads((X_DATA / entry["file"]).read_bytes())
        if not _is_search(entry) or "users" not in (doc.get("includes") or {}):
            continue
        parsed = parse_search((X_DATA / entry["file"]).read_bytes())
        total += len(parsed.tweets)
        resolved += sum(1 for t in parsed.tweets
                        if t["author"] and t["url"].endswith(f"/status/{t['external_id']}"))
    print(f"\nauthors resolved: {resolved}/{total}")
    assert total >= 400 and resolved == total


def test_reposts_carry_the_whole_reposted_post() -> None:
    """A repost's own text is "RT @user: " and the post cut at 140 characters; with the
    reposted tweet expanded, the signal has all of it and all its hashtags."""
    whole = total = 0
    for entry in _entries():
        doc = json.loads((X_DATA / entry["file"]).read_bytes())
        included = {t["id"]: t for t in (doc.get("includes") or {}).get("tweets", [])}
        reposts = {t["id"]: included[r["id"]] for t in doc.get("data") or []
                   if isinstance(t, dict) for r in t.get("referenced_tweets") or []
                   if r.get("type") == "retweeted" and r.get("id") in included}
        if not reposts:
            continue
        for tweet in parse_search((X_DATA / entry["file"]).read_bytes()).tweets:
            original = reposts.get(tweet["external_id"])
            if original is None:
                continue
            total += 1
            tags = [h["tag"] for h in (original.get("entities") or {}).get("hashtags", [])]
            whole += bool(tweet["text"]) and not tweet["text"].endswith("…") and \
                tweet["tags"] == tags
    print(f"\nreposts read whole: {whole}/{total}")
    assert total >= 150 and whole == total  # 198 of the corpus's 278 were cut before


# -- a real crawl against the corpus served like the API ----------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def corpus_server() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(REALDATA / "serve.py"), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("serve.py did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_crawl_of_a_recorded_search_with_a_partial_error(
    corpus_server: str, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # serve.py answers /x_twitter/2/tweets/search/recent?query=%23kpop&max_results=100
    # with twarc-csv's kpop page: 100 tweets, one partial error, a next_token.
    sources = write_sources(tmp_path / "s.toml", [{
        "name": "kpop", "kind": "x", "query": "#kpop", "api_base": f"{corpus_server}/x_twitter/2",
    }])
    result = harvest("--sources", str(sources), "crawl", "kpop", home=home,
                     env={"X_BEARER_TOKEN": "corpus-token"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert db.execute("SELECT count(*), count(author), count(published_at) "
                      "FROM signals").fetchone() == (100, 100, 100)
    assert db.execute("SELECT reason, field FROM rejects").fetchall() == [
        ("api_partial_error", "entities.mentions.username")]
    cursor, failures = db.execute(
        "SELECT cursor - 'since', consecutive_failures FROM sources_state").fetchone()
    assert (cursor, failures) == ({"since_id": "1440717170493689866"}, 0)
