"""Article extraction: agreement with the real-article ground truth, per reader and combined.

    .venv/bin/python bench/articles.py [--misses FIELD]

Reads ``../shared/realdata/articles`` (read-only) and scores, with the matching rules of
``tests/test_article_extraction.py``, what JSON-LD alone, ``<meta>``/``<title>`` alone,
trafilatura alone and :func:`extract_article` (the chosen combination) find for title,
author, date and body, plus the time per page. Figures go to ``docs/extraction.md`` by hand.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harvester.parsers.article import (  # noqa: E402
    Article,
    candidates,
    choose,
    parse_date,
    parse_html,
)
from tests.test_article_extraction import (  # noqa: E402
    ARTICLES,
    Score,
    corpus_rows,
    page_url,
    score_article,
)

FIELDS = ("title", "author", "date", "body")


def _alone(reader: dict[str, str]) -> Article:
    return Article(title=reader.get("title"), author=reader.get("author"),
                   published_at=parse_date(reader.get("published")), text=reader.get("text"))


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--misses", choices=FIELDS, help="list the combined misses of a field")
    options = args.parse_args()
    rows = corpus_rows()
    if not rows:
        sys.exit(f"{ARTICLES} is absent")
    scores = {name: Score() for name in ("json-ld", "meta", "trafilatura", "combined")}
    elapsed = 0.0
    for row in rows:
        body = (ARTICLES / row["file"]).read_bytes()
        started = time.perf_counter()
        tree = parse_html(body)
        found = candidates(tree, page_url(row)) if tree is not None else None
        combined = choose(found) if found else Article()
        elapsed += time.perf_counter() - started
        score_article(scores["combined"], row, combined)
        if found:
            score_article(scores["json-ld"], row, _alone(found.jsonld))
            score_article(scores["meta"], row, _alone(found.meta))
            score_article(scores["trafilatura"], row, _alone(found.trafilatura))
    print(f"{len(rows)} pages, {1000 * elapsed / len(rows):.1f} ms/page (parse + all readers)")
    print(f"{'reader':<12}" + "".join(f"{f:>16}" for f in FIELDS))
    for name, score in scores.items():
        cells = "".join(
            f"{score.matched.get(f, 0):>6}/{score.compared.get(f, 0):<3} {score.rate(f):>5.0%}"
            for f in FIELDS
        )
        print(f"{name:<12}{cells}")
    if options.misses:
        for miss in scores["combined"].misses.get(options.misses, []):
            print("  ", miss)


if __name__ == "__main__":
    main()
