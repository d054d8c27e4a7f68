"""The sources file: what loads, and the one sentence a wrong file produces."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from harvester.sources import SourcesError, load_sources, parse_interval

ROOT = Path(__file__).resolve().parents[1]


def load_text(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "sources.toml"
    path.write_text(text)
    return load_sources(path)


def test_shipped_sources_file_is_valid() -> None:
    parsed = load_sources(ROOT / "sources.toml")
    assert len(parsed.enabled("feed")) >= 3
    assert parsed.topics, "the shipped file should show how topics are written"


def test_good_file(tmp_path: Path) -> None:
    parsed = load_text(tmp_path, """
[[sources]]
name = "a"
kind = "feed"
weight = 1.5
interval = "90m"
urls = ["https://example.org/feed"]

[topics.sec]
keywords = ["CVE"]
weight = 2
""")
    source = parsed.get("a")
    assert source.interval_td == timedelta(minutes=90)
    assert source.enabled and source.weight == 1.5
    assert parsed.topics["sec"].keywords == ["CVE"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('name = "a"\nkind = "rss"\nurls = ["https://x.org/f"]',
         "source 'a', field 'kind': unknown kind 'rss'"),
        ('name = "a"\nkind = "feed"', "source 'a', field 'urls': is required for a feed source"),
        ('kind = "feed"\nurls = ["https://x.org/f"]', "source #1, field 'name': is required"),
        ('name = "a"\nkind = "feed"\ninterval = "soon"\nurls = ["https://x.org/f"]',
         "source 'a', field 'interval': 'soon' is not an interval"),
        ('name = "a"\nkind = "feed"\nurls = ["ftp://x.org/f"]',
         "source 'a', field 'urls': 'ftp://x.org/f' is not an http(s) URL"),
        ('name = "a"\nkind = "feed"\ncolour = "red"\nurls = ["https://x.org/f"]',
         "source 'a', field 'colour'"),
        # These passed `sources check`; at the crawl one of them stopped the whole spider.
        ('name = "a"\nkind = "feed"\nurls = ["http://127.0.0.1:99999/f"]',
         "source 'a', field 'urls': 'http://127.0.0.1:99999/f' is not a usable URL (Port out "
         "of range 0-65535)"),
        ('name = "a"\nkind = "feed"\nurls = ["http://[::1/f"]',
         "source 'a', field 'urls': 'http://[::1/f' is not a usable URL (Invalid IPv6 URL)"),
        # Never crawled, and its password went into errors, logs and the API's /sources.
        ('name = "a"\nkind = "feed"\nurls = ["http://user:S3cret@x.org/f"]',
         "source 'a', field 'urls': carries a user name or password (user:password@host)"),
        ('name = "a"\nkind = "feed"\nurls = ["http://u:S3cret\uff20x.org/f"]',
         "source 'a', field 'urls': carries a user name or password"),
        # Passed, then failed every crawl: a space in the host, port 0.
        ('name = "a"\nkind = "feed"\nurls = ["http://127.0.0.1 :8080/f"]',
         "source 'a', field 'urls': 'http://127.0.0.1 :8080/f' is not an http(s) URL (its "
         "host is empty or has a space or a control character)"),
        ('name = "a"\nkind = "feed"\nurls = ["http://127.0.0.1:0/f"]',
         "source 'a', field 'urls': 'http://127.0.0.1:0/f' is not a usable URL (port 0)"),
        # A Scrapyd job id starts with the name: 250 characters died on "File name too long".
        (f'name = "{"n" * 101}"\nkind = "feed"\nurls = ["https://x.org/f"]',
         "field 'name': is 101 characters long; keep it to 100"),
        ('name = "a b"\nkind = "feed"\nurls = ["https://x.org/f"]',
         "source 'a b', field 'name': must start with a letter or digit and hold only "
         "letters, digits, '_', '.' and '-'"),
        ('name = "a"\nkind = "pages"\nurls = ["https://x.org/"]\nitem_selector = "div["\n'
         'fields = {url = "a", title = "h2"}',
         "source 'a', field 'item_selector': 'div[' cannot be used: it is not valid CSS"),
        ('name = "a"\nkind = "pages"\nurls = ["https://x.org/"]\nitem_selector = "div"\n'
         'fields = {url = "a", title = "//h2["}',
         "source 'a', field 'fields': title: '//h2[' cannot be used: it is not valid XPath"),
        # TOML has types: a quoted number or a "yes" is a slip, not a value to guess at.
        ('name = "a"\nkind = "feed"\nweight = "2"\nurls = ["https://x.org/f"]',
         "source 'a', field 'weight': Input should be a valid number, not the string '2'"),
        # It said "Input should be less than or equal to 10".
        ('name = "a"\nkind = "feed"\nweight = nan\nurls = ["https://x.org/f"]',
         "source 'a', field 'weight': Input should be a finite number"),
        ('name = "a"\nkind = "feed"\nenabled = "no"\nurls = ["https://x.org/f"]',
         "source 'a', field 'enabled': Input should be a valid boolean, not the string 'no'"),
        ('name = "a"\nkind = "feed"\nurls = "https://x.org/f"',
         "source 'a', field 'urls': Input should be a valid list, not the string "
         "'https://x.org/f'"),
        # Passed, and a Reddit search asked for nothing at every run.
        ('name = "a"\nkind = "reddit"\nlisting = "search"\nquery = "   "',
         "source 'a', field 'query': is blank; write what to search for"),
    ],
)
def test_bad_entry_names_file_source_and_field(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(SourcesError) as info:
        load_text(tmp_path, "[[sources]]\n" + body + "\n")
    message = str(info.value)
    assert message.startswith(str(tmp_path / "sources.toml"))
    assert expected in message
    assert "\n" not in message


def test_urls_urllib_takes_are_not_refused(tmp_path: Path) -> None:
    # An upper-case scheme is a scheme; an "@" after the host is no user name.
    urls = ["HTTPS://x.org/f", "http://x.org?contact=me@x.org", "http://x.org#@top",
            "http://[::1]:8080/f"]
    parsed = load_text(tmp_path, '[[sources]]\nname = "a"\nkind = "feed"\nurls = [' +
                       ", ".join(f'"{u}"' for u in urls) + "]\n")
    assert parsed.sources[0].urls == urls


def test_topic_names_are_words_of_at_most_100_characters(tmp_path: Path) -> None:
    for name, said in (("", "the topic name '' is blank"), (" ", "the topic name ' ' is blank"),
                       ("t" * 101, "is 101 characters long; keep it to 100")):
        with pytest.raises(SourcesError, match=re.escape(said)):
            load_text(tmp_path, TOPIC_SOURCE + f'[topics."{name}"]\nkeywords = ["a"]\n')


def test_a_byte_order_mark_is_no_error(tmp_path: Path) -> None:
    # "not valid TOML (Invalid statement (at line 1, column 1))", naming no mark.
    path = tmp_path / "sources.toml"
    path.write_bytes(b"\xef\xbb\xbf" + TOPIC_SOURCE.encode())
    assert [s.name for s in load_sources(path).sources] == ["a"]


def test_duplicate_names(tmp_path: Path) -> None:
    entry = '[[sources]]\nname = "a"\nkind = "feed"\nurls = ["https://x.org/f"]\n'
    with pytest.raises(SourcesError, match="source 'a', field 'name': duplicate name"):
        load_text(tmp_path, entry + entry)


def test_missing_and_unparseable_files(tmp_path: Path) -> None:
    with pytest.raises(SourcesError, match="no such sources file"):
        load_sources(tmp_path / "nope.toml")
    with pytest.raises(SourcesError, match="not valid TOML"):
        load_text(tmp_path, "[[sources]\n")
    with pytest.raises(SourcesError, match="is a directory, not a sources file"):
        load_sources(tmp_path)  # was an IsADirectoryError traceback in every command


def test_unknown_source_lists_known_ones(tmp_path: Path) -> None:
    parsed = load_text(tmp_path, '[[sources]]\nname = "a"\nkind = "feed"\nurls = ["https://x.org/f"]\n')
    with pytest.raises(SourcesError, match="unknown source 'b': the sources file defines a"):
        parsed.get("b")


@pytest.mark.parametrize("bad", ["0m", "5", "m", "5w", "", "99999999999d",
                                 "3000000d"])  # passed, then overflowed the scheduler's dates
def test_interval_rejects_nonsense(bad: str) -> None:
    with pytest.raises(ValueError):  # 99999999999d raised OverflowError: a traceback
        parse_interval(bad)


TOPIC_SOURCE = '[[sources]]\nname = "a"\nkind = "feed"\nurls = ["https://x.org/f"]\n\n'


def test_topics_with_weighted_terms_negatives_and_sources(tmp_path: Path) -> None:
    parsed = load_text(tmp_path, TOPIC_SOURCE + """[topics.sec]
keywords = ["CVE", {term = "zero-day", weight = 3}]
negative = ["insurance"]
sources = ["a"]
""")
    topic = parsed.topics["sec"]
    assert topic.terms() == [("CVE", 1.0), ("zero-day", 3.0)]
    assert topic.negative == ["insurance"] and topic.sources == ["a"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('keywords = ["a", 5]', "topic 'sec', field 'keywords': 5 is neither a string nor"),
        ('keywords = [{term = "a", wieght = 2}]', "field 'keywords': {'term': 'a', 'wieght': 2}"),
        ('keywords = [{term = "a", weight = 0}]', "'weight' input should be greater than 0"),
        # A negative topic weight took relevance (1 - exp(-points / k)) far below zero.
        ('keywords = ["a"]\nweight = -1', "topic 'sec', field 'weight': Input should be "
                                          "greater than 0"),
        ('keywords = [{term = "a", weight = "3"}]', "'weight' input should be a valid number"),
        # Blank terms matched every item (keyword) or cancelled every topic (negative).
        ('keywords = [" "]', "topic 'sec', field 'keywords': a term cannot be blank"),
        ('keywords = [{term = " ", weight = 3}]', "'term' a term cannot be blank"),
        ('keywords = ["a"]\nnegative = ["b", " "]',
         "topic 'sec', field 'negative': a term cannot be blank"),
        ('keywords = ["a"]\nsources = ["b"]',
         "topic 'sec', field 'sources': unknown source 'b' (the file defines a)"),
        # The first entry won in silence: the appended weight 5 was never used.
        ('keywords = ["ransomware", {term = "ransomware", weight = 5}]',
         "field 'keywords': 'ransomware' is listed twice; list it once, with its weight"),
        ('keywords = ["AI", "ai"]', "'ai' is listed twice (as 'AI')"),
        # NaN was "less than or equal to 100".
        ('keywords = ["a"]\nweight = nan', "field 'weight': Input should be a finite number"),
    ],
)
def test_bad_topic_is_one_sentence(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(SourcesError) as info:
        load_text(tmp_path, TOPIC_SOURCE + "[topics.sec]\n" + body + "\n")
    assert expected in str(info.value) and "\n" not in str(info.value)
