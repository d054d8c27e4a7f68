"""Scoring: the formula (phrases, weights, negative terms, source filters, engagement
percentiles, corroboration, 0–100 bounds) and real runs: crawls into PostgreSQL, then
``harvest rescore`` after a topics change, ``harvest explain`` and corroboration in SQL."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import product
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from harvester.config import get_config
from harvester.services import engagement, rescore
from harvester.services.corroboration import apply_corroboration_sync
from harvester.services.engagement import Engagement, References, engagement_value
from harvester.services.localsite import LocalSite
from harvester.services.scoring import Scorer, corroboration_factor, engagement_factor
from harvester.sources import Keyword, Topic, load_sources
from tests.apiserver import ApiServer, Reply
from tests.conftest import harvest, write_sources
from tests.feeds import items, rss

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TOPICS = {
    "security": Topic(keywords=["ransomware", Keyword(term="zero-day", weight=3)], weight=2.0,
                      negative=["insurance"]),
    "ai": Topic(keywords=["machine learning", "AI"]),
    "rust": Topic(keywords=["rust"], sources=["lobsters"]),
}


def score(title: str, text: str = "", *, source: str = "hn", age: float | None = 0.0,
          weight: float = 1.0, percentile: float | None = None,
          cluster: list[str] | None = None,
          topics: dict[str, Topic] | None = None) -> tuple[float, dict[str, Any]]:
    published = None if age is None else NOW - timedelta(hours=age)
    measured = Engagement("hackernews", 10.0, percentile, 50)
    return Scorer(topics or TOPICS).score(
        title=title, text=text, published_at=published, source=source, source_weight=weight,
        now=NOW, engagement=measured, cluster_sources=cluster)


# -- the formula -------------------------------------------------------------------------


def test_keyword_weights_multiply_points_and_title_counts_double() -> None:
    _, plain = score("Ransomware hits a hospital")
    _, weighted = score("Hospital hit through a zero-day")
    _, in_text = score("Hospital news", "attackers used a zero-day")
    assert plain["topics"]["security"]["points"] == 2 * 1 * 2  # topic 2 × term 1 × title 2
    assert weighted["topics"]["security"]["points"] == 2 * 3 * 2
    assert in_text["topics"]["security"]["points"] == 2 * 3
    assert weighted["topics"]["security"]["term_weights"] == {"zero-day": 3.0}
    assert weighted["topics"]["security"]["title"] == ["zero-day"]
    assert in_text["topics"]["security"]["title"] == []


def test_phrases_match_as_a_whole_and_acronyms_as_written() -> None:
    assert score("New machine learning compiler")[1]["topics"]["ai"]["keywords"] == [
        "machine learning"]
    assert score("Machine shop is learning fast")[1]["topics"] == {}
    assert score("The AI model")[0] > 0
    assert score("They said it was fair")[0] == 0  # "said" holds "ai", not the word "AI"
    # Chinese and Japanese write no spaces: a term is found inside a run of characters.
    quake = {"quake": Topic(keywords=["地震", "人工智能"]), "th": Topic(keywords=["ข่าว"])}
    assert score("東京で地震、被害を調査", topics=quake)[1]["topics"]["quake"]["keywords"] == [
        "地震"]
    assert score("中国发布新的人工智能法规", topics=quake)[0] > 0
    assert score("อ่านข่าววันนี้", topics=quake)[0] > 0
    assert score("Quakers meet", topics={"q": Topic(keywords=["quake"])})[0] == 0  # still
    # A hard-wrapped paragraph: the line break is a space to a phrase.
    wrapped = score("Compiler news", "Uses machine\nlearning for tuning.")[1]
    assert wrapped["topics"]["ai"]["keywords"] == ["machine learning"]


def test_a_negative_term_cancels_its_topic_only() -> None:
    value, breakdown = score("Ransomware insurance premiums rise")
    assert value == 0
    assert breakdown["topics"] == {}
    assert breakdown["negative"] == {"security": ["insurance"]}
    value, breakdown = score("Ransomware insurance and machine learning")
    assert value > 0 and set(breakdown["topics"]) == {"ai"}


def test_a_topic_limited_to_sources_applies_only_there() -> None:
    assert score("Rust 2.0 released", source="hn")[0] == 0
    value, breakdown = score("Rust 2.0 released", source="lobsters")
    assert value > 0 and breakdown["topics"]["rust"]["keywords"] == ["rust"]


def test_engagement_percentile_scales_around_neutral() -> None:
    low, _ = score("Ransomware", percentile=0.0)
    neutral, info = score("Ransomware", percentile=None)
    high, high_info = score("Ransomware", percentile=1.0)
    assert low < neutral < high
    assert info["engagement"]["factor"] == 1.0
    assert high_info["engagement"] == {"metric": "HN points", "value": 10.0, "percentile": 1.0,
                                       "reference": 50, "factor": 1.25}
    assert engagement_factor(0.5) == 1.0 and engagement_factor(0.0) == 0.75


def test_percentile_is_per_source_with_ties_counted_half() -> None:
    refs = References({"big-sub": [float(v) for v in range(0, 1000, 10)],  # 0 … 990
                       "hn": [float(v) for v in range(1, 21)],  # 1 … 20
                       "new-sub": [5.0, 6.0]})
    big = refs.measure("big-sub", "reddit", {"score": 1000, "num_comments": 3})
    small = refs.measure("hn", "hackernews", {"score": 20, "comments": 1})
    assert big.percentile == 1.0 and big.reference == 100
    assert small.percentile == pytest.approx(19.5 / 20)  # 20 is the top, tied with itself
    assert refs.measure("big-sub", "reddit", {"score": 500}).percentile == pytest.approx(0.505)
    # 1,000 upvotes in a big subreddit and 20 points on HN: both near the top of their own.
    assert abs(engagement_factor(big.percentile) - engagement_factor(small.percentile)) < 0.02
    assert refs.measure("new-sub", "reddit", {"score": 9}).percentile is None  # too little
    assert refs.measure("nowhere", "reddit", {"score": 9}).percentile is None  # first run
    assert refs.measure("big-sub", "feed", {}) == engagement.NEUTRAL


def test_one_engagement_number_per_kind() -> None:
    assert engagement_value("reddit", {"score": 812, "num_comments": 40}) == 812
    assert engagement_value("hackernews", {"score": 50, "comments": 9}) == 50
    assert engagement_value("x", {"like_count": 10, "retweet_count": 4, "quote_count": 1,
                                  "reply_count": 99, "impression_count": 5000}) == 15
    assert engagement_value("feed", {"score": 3}) is None
    assert engagement_value("reddit", {"num_comments": 4}) is None
    assert engagement_value("reddit", {"score": True}) is None


def test_corroboration_adds_per_distinct_source_up_to_a_cap() -> None:
    assert [corroboration_factor(n) for n in range(1, 8)] == [
        1.0, 1.15, 1.3, 1.45, 1.6, 1.6, 1.6]
    alone, info = score("Ransomware", age=30)
    seen_thrice, info3 = score("Ransomware", age=30, cluster=["hn", "krebs", "hn", "reddit"])
    assert seen_thrice == pytest.approx(alone * 1.3, abs=0.01)
    assert info["corroboration"] == {"sources": ["hn"], "factor": 1.0}
    assert info3["corroboration"] == {"sources": ["hn", "krebs", "reddit"], "factor": 1.3}
    assert info3["base"] == info["base"]  # base is what SQL multiplies again


def test_scores_stay_between_0_and_100() -> None:
    heavy = {"t": Topic(keywords=[Keyword(term="x", weight=100)], weight=50.0)}
    for weight, percentile, age, cluster in product(
        (0.0, 1.0, 10.0), (None, 0.0, 1.0), (None, 0.0, 1e6), (None, ["a", "b", "c", "d", "e"])
    ):
        for topics in (heavy, TOPICS):
            value, breakdown = score("x ransomware zero-day AI", "x", weight=weight,
                                     percentile=percentile, age=age, cluster=cluster,
                                     topics=topics)
            assert 0.0 <= value <= 100.0
            assert breakdown["score"] == value
    assert score("x", weight=10.0, topics=heavy)[0] == 100.0
    assert score("x", weight=0.0, topics=heavy)[0] == 0.0


def test_breakdown_is_self_describing() -> None:
    value, breakdown = score("Ransomware gang exploits zero-day", "machine learning", age=6,
                             weight=1.3, percentile=0.9)
    assert breakdown["version"] == 2 and breakdown["score"] == value
    assert breakdown["topics"]["security"]["keywords"] == ["ransomware", "zero-day"]
    assert breakdown["age_hours"] == 6.0 and 0 < breakdown["freshness"] < 1
    assert breakdown["source"] == "hn" and breakdown["source_weight"] == 1.3
    product_ = (100 * breakdown["relevance"] * breakdown["engagement"]["factor"]
                * breakdown["freshness"] * 1.3)
    assert breakdown["base"] == pytest.approx(product_, rel=1e-3)


# -- the database: corroboration, engagement history -----------------------------------


def insert(db: psycopg.Connection[Any], source: str, title: str, *, kind: str = "feed",
           cluster: int | None = None, engagement_: dict[str, Any] | None = None,
           age: float = 2.0, breakdown: dict[str, Any] | None = None,
           scorer: Scorer | None = None) -> int:
    """A stored signal scored as the pipeline would (or with ``breakdown`` as given)."""
    now = datetime.now(UTC)
    published = now - timedelta(hours=age)
    if breakdown is None:
        _, breakdown = (scorer or Scorer(TOPICS)).score(
            title=title, text="", published_at=published, source=source, source_weight=1.0,
            now=now)
    row = db.execute(
        "INSERT INTO signals (key, source, kind, url, title, published_at, fetched_at, "
        "last_seen, engagement, cluster_id, score, score_breakdown) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (f"k:{source}:{title}", source, kind, f"https://{source}.example/{abs(hash(title))}",
         title, published, now, now, Jsonb(engagement_ or {}), cluster,
         breakdown.get("score", 0), Jsonb(breakdown)),
    ).fetchone()
    assert row is not None
    return int(row[0])


def scores(db: psycopg.Connection[Any]) -> dict[int, tuple[float, dict[str, Any]]]:
    return {r[0]: (r[1], r[2])
            for r in db.execute("SELECT id, score, score_breakdown FROM signals")}


def test_apply_corroboration_rescores_every_member_from_its_base(
    db: psycopg.Connection[Any]
) -> None:
    first = insert(db, "hn", "Ransomware hits hospital")
    db.execute("UPDATE signals SET cluster_id = id WHERE id = %s", (first,))
    krebs = insert(db, "krebs", "Hospital ransomware attack", cluster=first)
    reddit = insert(db, "reddit-netsec", "ransomware at the hospital", cluster=first)
    again = insert(db, "hn", "Hospital ransomware, more", cluster=first)
    alone = insert(db, "hn", "Zero-day in a router")
    legacy = insert(db, "krebs", "Old ransomware story", cluster=first,
                    breakdown={"topics": {}, "score": 40.0})  # scored before `base` existed
    before = scores(db)

    changed = apply_corroboration_sync(db, [first, alone])

    after = scores(db)
    assert changed == 4  # hn, krebs, reddit and the second hn signal; not alone, not legacy
    for member in (first, krebs, reddit, again):
        base = before[member][1]["base"]
        assert after[member][0] == pytest.approx(min(100.0, base * 1.3), abs=0.01)
        assert after[member][1]["corroboration"] == {
            "sources": ["hn", "krebs", "reddit-netsec"], "factor": 1.3}
        assert after[member][1]["score"] == pytest.approx(after[member][0], abs=0.01)
        assert after[member][1]["topics"] == before[member][1]["topics"]
    assert after[alone] == before[alone]
    assert after[legacy] == before[legacy]
    assert apply_corroboration_sync(db, [first, alone]) == 0  # idempotent
    assert apply_corroboration_sync(db, []) == 0


def test_engagement_history_is_read_per_source_from_postgresql(
    db: psycopg.Connection[Any]
) -> None:
    for i in range(30):
        insert(db, "hn", f"story {i}", kind="hackernews", engagement_={"score": i * 10})
        insert(db, "r-python", f"post {i}", kind="reddit", engagement_={"score": i})
    insert(db, "krebs", "a feed item", engagement_={})
    # Counts stored before 18 digits and more were refused: cast to float8 (or summed past
    # its range) they failed the whole query, and the source's engagement stayed neutral.
    insert(db, "x-sec", "huge", kind="x", engagement_={"like_count": 10**400})
    insert(db, "x-sec", "inf", kind="x", engagement_={"like_count": 10**308,
                                                      "retweet_count": 10**308})
    for i in range(19):
        insert(db, "x-sec", f"tweet {i}", kind="x", engagement_={"like_count": i})
    assert engagement.engagement_value("x", {"like_count": 10**400}) is None
    refs = engagement.load_references_sync(db, ["hn", "r-python", "krebs", "x-sec"],
                                           window=21)
    assert len(refs) == 21 + 21 + 19  # the 21 most recent of each with a count that counts
    assert refs.measure("hn", "hackernews", {"score": 1000}).percentile == 1.0
    assert refs.measure("r-python", "reddit", {"score": 0}).percentile == 0.0


@pytest.fixture
def unreachable_database() -> Iterator[None]:
    saved = os.environ["HARVEST_DATABASE_URL"]
    os.environ["HARVEST_DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/none"
    get_config.cache_clear()
    yield
    os.environ["HARVEST_DATABASE_URL"] = saved
    get_config.cache_clear()


def test_database_down_means_neutral_engagement_not_a_crash(
    unreachable_database: None, caplog: pytest.LogCaptureFixture
) -> None:
    refs = asyncio.run(engagement.fetch_references(["hn"]))
    assert len(refs) == 0
    assert refs.measure("hn", "hackernews", {"score": 500}).percentile is None
    assert "engagement is neutral this run" in caplog.text


# -- real runs: crawl, rescore, explain --------------------------------------------------


def harvest_score(*args: str, home: Path, sources: Path | None = None
                  ) -> subprocess.CompletedProcess[str]:
    """``harvest [--sources FILE] ARGS`` as an operator runs it."""
    return harvest(*(["--sources", str(sources)] if sources else []), *args, home=home)


def write_topics(path: Path, feed_url: str, topics: str) -> Path:
    path.write_text(f'[[sources]]\nname = "news"\nkind = "feed"\nurls = ["{feed_url}"]\n\n'
                    + topics, encoding="utf-8")
    return path


BEFORE = '[topics.security]\nkeywords = ["ransomware", "zero-day"]\nweight = 2.0\n'
AFTER = """
[topics.security]
keywords = ["ransomware", {term = "zero-day", weight = 3}]
negative = ["insurance"]
weight = 2.0

[topics.quantum]
keywords = ["quantum computing"]
weight = 1.5
"""


def by_title(db: psycopg.Connection[Any]) -> dict[str, tuple[int, float, dict[str, Any]]]:
    return {r[0]: (r[1], r[2], r[3]) for r in db.execute(
        "SELECT title, id, score, score_breakdown FROM signals")}


@pytest.fixture
def crawled(site: LocalSite, db: psycopg.Connection[Any], home: Path,
            tmp_path: Path) -> Callable[[str], Path]:
    """A feed of four stories crawled with the BEFORE topics; returns a topics writer."""
    entries = items("n", 4)
    entries[0]["title"] = "Ransomware gang exploits zero-day"
    entries[1]["title"] = "Quantum computing milestone reached"
    entries[2]["title"] = "Ransomware insurance premiums rise"
    (site.root / "n.xml").write_text(rss(entries))
    sources = write_topics(tmp_path / "s.toml", f"{site.url}/n.xml", BEFORE)
    result = harvest("--sources", str(sources), "crawl", "news", home=home)
    assert result.returncode == 0, result.stderr + result.stdout
    return lambda topics: write_topics(sources, f"{site.url}/n.xml", topics)


def test_rescore_after_a_topics_change_updates_postgresql(
    crawled: Callable[[str], Path], db: psycopg.Connection[Any], home: Path
) -> None:
    first = by_title(db)
    assert first["Quantum computing milestone reached"][1] == 0
    sources = crawled(BEFORE)
    same = harvest_score("rescore", sources=sources, home=home)
    assert same.returncode == 0, same.stderr
    assert "rescored 4 signals: 0 changed score" in same.stdout  # crawl and rescore agree

    sources = crawled(AFTER)
    result = harvest_score("rescore", sources=sources, home=home)

    assert result.returncode == 0, result.stderr
    assert "rescored 4 signals: 3 changed score, 1 unchanged" in result.stdout
    now = by_title(db)
    zero_day = "Ransomware gang exploits zero-day"
    assert now[zero_day][1] > first[zero_day][1]
    assert now[zero_day][2]["topics"]["security"]["term_weights"] == {"zero-day": 3.0}
    assert now["Quantum computing milestone reached"][1] > 0
    assert now["Quantum computing milestone reached"][2]["topics"]["quantum"]["keywords"] == [
        "quantum computing"]
    insured = now["Ransomware insurance premiums rise"]
    assert insured[1] == 0 and insured[2]["negative"] == {"security": ["insurance"]}
    again = harvest_score("rescore", "--since", "7d", "--source", "news", sources=sources,
                          home=home)
    assert "rescored 4 signals: 0 changed score, 4 unchanged (0 rows written)" in again.stdout
    older = harvest_score("rescore", "--since", "2000-01-01", sources=sources, home=home)
    assert "rescored 4 signals" in older.stdout
    future = harvest_score("rescore", "--since", "2999-01-01", sources=sources, home=home)
    assert "rescored 0 signals" in future.stdout


def test_rescore_with_nothing_changed_changes_nothing_after_304s_and_odd_half_lives(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # A rescore aged each signal from last_seen, which a 304 moves without scoring, and
    # with the settings' half-life, not the one the crawl scored with: with nothing
    # changed it moved scores (39.35 -> 11.8 after a re-crawl, 11.23 -> 39.32 after a
    # crawl with its own half-life).
    entries = items("n", 2)
    entries[0]["title"] = "Ransomware gang exploits zero-day"
    (site.root / "n.xml").write_text(rss(entries))
    sources = write_topics(tmp_path / "s.toml", f"{site.url}/n.xml", BEFORE)
    quick = ("-s", "HARVEST_SCORE_HALF_LIFE_HOURS=0.01")  # 36 s: a second is visible
    assert harvest_score("crawl", "news", *quick, sources=sources, home=home).returncode == 0
    scored = by_title(db)
    same = harvest_score("rescore", sources=sources, home=home)
    assert "rescored 2 signals: 0 changed score" in same.stdout, same.stdout + same.stderr
    again = harvest_score("crawl", "news", *quick, sources=sources, home=home)
    assert again.returncode == 0 and db.execute(
        "SELECT not_modified FROM crawl_runs ORDER BY started_at DESC LIMIT 1"
    ).fetchone() == (1,)
    same = harvest_score("rescore", sources=sources, home=home)
    assert "rescored 2 signals: 0 changed score" in same.stdout, same.stdout
    assert by_title(db) == scored
    chosen = harvest_score("rescore", "--half-life", "48", sources=sources, home=home)
    assert "rescored 2 signals: 1 changed score" in chosen.stdout, chosen.stdout  # 1 is 0
    assert {b["half_life_hours"] for (b,) in db.execute(
        "SELECT score_breakdown FROM signals")} == {48.0}
    for bad in ("nan", "inf", "0", "1e308"):
        refused = harvest_score("rescore", "--half-life", bad, sources=sources, home=home)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert "--half-life" in refused.stderr


def test_rescore_of_an_unknown_source_is_one_sentence(
    crawled: Callable[[str], Path], db: psycopg.Connection[Any], home: Path
) -> None:
    sources = crawled(BEFORE)
    result = harvest_score("rescore", "--source", "nope", sources=sources, home=home)
    assert result.returncode == 2
    assert "unknown source 'nope'" in result.stderr and "Traceback" not in result.stderr
    # A source the file does not define but whose rows are stored (signals posted through
    # the API are "curated") is known, as for `harvest top --source`.
    weighted = sources.with_name("weighted.toml")
    weighted.write_text(sources.read_text().replace('name = "news"',
                                                    'name = "news"\nweight = 2.0'))
    assert "2 changed score" in harvest_score("rescore", sources=weighted, home=home).stdout
    gone = sources.with_name("without-news.toml")
    gone.write_text(sources.read_text().replace('name = "news"', 'name = "renamed"'))
    kept = harvest_score("rescore", "--source", "news", sources=gone, home=home)
    assert kept.returncode == 0, kept.stderr
    # Out of the file, its signals keep the weight they were scored with (not 1).
    assert "rescored 4 signals: 0 changed score" in kept.stdout
    # Without --source they are left as scored: the file's topics are not theirs (the
    # demo's signals lost every score to the shipped file's topics, and back on each demo).
    everything = harvest_score("rescore", sources=gone, home=home)
    assert "rescored 0 signals" in everything.stdout
    assert "left 4 signals of sources the sources file does not define as they were " \
           "scored" in " ".join(everything.stdout.split())
    assert {b["source_weight"] for (b,) in db.execute(
        "SELECT score_breakdown FROM signals")} == {2.0}


def test_explain_prints_the_breakdown_in_words(
    crawled: Callable[[str], Path], db: psycopg.Connection[Any], home: Path
) -> None:
    signal_id, value, _ = by_title(db)["Ransomware gang exploits zero-day"]
    url = db.execute("SELECT url FROM signals WHERE id = %s", (signal_id,)).fetchone()[0]

    result = harvest_score("explain", str(signal_id), home=home)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"Scored {round(value)}/100" in out
    assert "security +8 pts (ransomware ×2 in title, zero-day ×2 in title, topic weight 2)" \
        in out
    assert "engagement: none counted for this kind of source (neutral ×1)" in out
    assert re.search(r"freshness (0\.\d\d|1\.00) \([\d.]+ h old, half-life 24 h\)", out)
    assert "source weight 1 (news)" in out
    assert "seen on 1 source: news (no corroboration bonus)" in out
    by_url = harvest_score("explain", url, home=home)
    assert by_url.stdout == out
    as_json = json.loads(harvest_score("explain", str(signal_id), "--json", home=home).stdout)
    assert as_json["id"] == signal_id and as_json["breakdown"]["version"] == 2
    assert as_json["explanation"][0] == f"Scored {round(value)}/100"
    missing = harvest_score("explain", "999999", home=home)
    assert missing.returncode == 2 and "no signal with id or URL '999999'" in missing.stderr
    # No traceback for what is neither an id nor a URL anything could have stored.
    for ref in ("http://[::1", "http://127.0.0.1:abc/x", "²", "9" * 30):
        odd = harvest_score("explain", ref, home=home)
        assert odd.returncode == 2 and f"no signal with id or URL {ref!r}" in odd.stderr, (
            odd.stderr)


def test_explain_names_the_corroborating_sources(db: psycopg.Connection[Any],
                                                 home: Path) -> None:
    first = insert(db, "hn", "Ransomware hits hospital")
    db.execute("UPDATE signals SET cluster_id = id WHERE id = %s", (first,))
    insert(db, "krebs", "Hospital ransomware attack", cluster=first)
    insert(db, "reddit-netsec", "ransomware at the hospital", cluster=first)
    apply_corroboration_sync(db, [first])

    out = harvest_score("explain", str(first), home=home).stdout

    assert "seen on 3 sources: hn, krebs, reddit-netsec (+30 %)" in out
    assert "× 1.30 corroboration = " in out


def test_hacker_news_crawl_ranks_engagement_against_the_source_history(
    db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    for i in range(40):
        insert(db, "hn-top", f"older story {i}", kind="hackernews", engagement_={"score": i})
    posted = int(datetime.now(UTC).timestamp()) - 3600
    stories = {1: 500, 2: 0}
    api = ApiServer()
    api.add("/v0/topstories.json", lambda req: Reply.json(list(stories)))
    for story, points in stories.items():
        api.add(f"/v0/item/{story}.json", lambda req, s=story, p=points: Reply.json({
            "id": s, "type": "story", "title": f"Ransomware story {s}", "by": "a",
            "score": p, "descendants": 0, "time": posted}))
    with api:
        sources = write_sources(tmp_path / "s.toml", [{
            "name": "hn-top", "kind": "hackernews", "feed": "top", "limit": 5,
            "api_base": f"{api.url}/v0"}], {"security": {"keywords": ["ransomware"]}})
        result = harvest("--sources", str(sources), "crawl", "hn-top", "-s",
                         "AUTOTHROTTLE_ENABLED=False", home=home, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    parts = {r[0]: r[1] for r in db.execute(
        "SELECT external_id, score_breakdown -> 'engagement' FROM signals "
        "WHERE external_id IN ('1', '2')")}
    assert parts["1"]["percentile"] == 1.0 and parts["1"]["factor"] == 1.25
    assert parts["2"]["percentile"] == pytest.approx(0.5 / 40)
    assert parts["1"]["reference"] == 40 and parts["1"]["metric"] == "HN points"


def test_a_rescore_leaves_rows_a_crawl_scored_again_while_it_ran(
    db: psycopg.Connection[Any], pg_url: str, tmp_path: Path
) -> None:
    # The rescore read every row at its start and wrote its scores over rows a crawl had
    # re-seen since: the crawl's new title ("ransomware") kept the old title's score, 0.
    # Stored with weight 1; the file's 2 makes the rescore rewrite every row it reads.
    path = write_sources(tmp_path / "s.toml", [
        {"name": "wire", "kind": "feed", "urls": ["https://wire.example/f"], "weight": 2.0}],
        {"security": {"keywords": ["ransomware"], "weight": 2.0}})
    sources = load_sources(path)
    first = insert(db, "wire", "quiet day one", scorer=Scorer(sources.topics))
    second = insert(db, "wire", "quiet day two", scorer=Scorer(sources.topics))
    scorer = Scorer(sources.topics)
    crawl_score, crawl_breakdown = scorer.score(
        title="ransomware hits a port", text="", published_at=datetime.now(UTC),
        source="wire", source_weight=1.0, now=datetime.now(UTC))
    assert crawl_score > 0
    crawled = {"done": False}

    def a_crawl_re_sees_the_second(report: rescore.RescoreReport) -> None:
        if not crawled["done"]:  # after the first batch: what the store writes on re-seen
            db.execute("UPDATE signals SET title = 'ransomware hits a port', score = %s, "
                       "score_breakdown = %s WHERE id = %s",
                       (crawl_score, Jsonb(crawl_breakdown), second))
            crawled["done"] = True

    report = rescore.rescore(pg_url, sources, half_life_hours=None, batch_size=1,
                             progress=a_crawl_re_sees_the_second)
    assert (report.examined, report.rewritten, report.moved) == (2, 1, 1)
    stored = scores(db)
    assert stored[second][0] == pytest.approx(crawl_score)  # the crawl's, not the rescore's
    assert stored[first][1]["source_weight"] == 2.0
