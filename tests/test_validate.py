"""The text cleaning of the validate pipeline: what it makes of untidy text, and that its
fast path (text already tidy, the common case) never returns what the rewrite would not."""

from __future__ import annotations

import random

from harvester.items import TidyText
from harvester.parsers.html import html_to_text, plain_text
from harvester.pipelines.validate import (
    MAX_TAGS,
    _is_tidy,
    _rewrite,
    clean_line,
    clean_tags,
    clean_text,
)

# Everything the cleaning treats specially, plus ordinary and non-ASCII letters.
ALPHABET = ["a", "b", "é", "中", " ", " ", "\n", "\n", "\t", "\r", "\x00", "\x1c", "\x7f",
            "\u00a0", "\u00ad", "\u200b", "\u2028", "\u3000", "\ufeff", "\ud800", "\udfff"]


def test_untidy_text_is_cleaned() -> None:
    raw = "  Flood\tbarrier \u00a0 approved \n\n\n\nWork starts\x00 in spring. \r\n"
    assert clean_text(raw, 1000) == "Flood barrier approved\n\nWork starts in spring."
    assert clean_text(" \n\t ", 1000) is None
    assert clean_text("x" * 50, 10) == "x" * 10
    assert clean_line("  one\n two\x07 ", 100) == "one two"


def test_tags_are_cleaned_once_each_in_order() -> None:
    tags = ["  Security ", "ransomware", "", "Security", "multi\nline\x07 tag", " \t ",
            "x" * 150, "ransomware"]
    assert clean_tags(tags) == ["Security", "ransomware", "multi line tag", "x" * 100]
    assert clean_tags([]) == []
    # Past a handful, repeats are found in a set: 100,000 tags took 47 s of CPU through a
    # list (the crawl's reactor with it), and were all stored. At most MAX_TAGS are kept.
    many = [f"t{i % 50_000}" for i in range(100_000)]
    assert clean_tags(many) == [f"t{i}" for i in range(MAX_TAGS)]
    repeats = ["a", "b"] * 50_000 + [f"u{i}" for i in range(20)]
    assert clean_tags(repeats) == ["a", "b", *(f"u{i}" for i in range(20))]


def test_tidy_text_is_returned_as_it_is() -> None:
    text = "First paragraph, “quoted”, café.\n\nSecond paragraph.\nA last line."
    assert _is_tidy(text)
    assert clean_text(text, 1000) == text


def test_the_fast_path_agrees_with_the_rewrite() -> None:
    # Random strings over the characters that matter: a string the check calls tidy must
    # be one the rewrite leaves unchanged, else the result would depend on the path taken.
    rnd = random.Random(5)
    tidy = 0
    for _ in range(30_000):
        value = "".join(rnd.choice(ALPHABET) for _ in range(rnd.randint(0, 10)))
        if _is_tidy(value):
            tidy += 1
            assert _rewrite(value) == value, repr(value)
        cleaned = clean_text(value, 1000)
        assert clean_text(cleaned or "", 1000) == cleaned, repr(value)  # idempotent
        (cleaned or "").encode("utf-8")  # no lone surrogate left: PostgreSQL can take it
    assert tidy > 1000  # the fast path was exercised, not only the rewrite


def test_parser_text_is_what_the_rewrite_would_make_it() -> None:
    # Validate skips its check for a parser's TidyText: that must never change the result.
    rnd = random.Random(7)
    pieces = [*ALPHABET, "<p>", "</p>", "<b>", "<br>", "<script>", "&amp;", "&#1;", "\x01",
              "\x1b", "\x08"]
    seen = 0
    for _ in range(20_000):
        value = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 12)))
        for text in (html_to_text(value), plain_text(value)):
            if text is None:
                continue
            seen += 1
            assert type(text) is TidyText, repr(value)
            text.encode("utf-8")  # no lone surrogate left
            assert _rewrite(text) == text, repr(value)
            assert clean_text(text, 1000) == clean_text(str(text), 1000), repr(value)
            assert type(clean_text(text, 1000)) is str  # what validate stores is plain text
    assert seen > 20_000
