"""Clustering quality on a labelled set built from ``../shared/realdata/articles``.

Each page with at least 150 words of body (extracted by our article extractor) becomes a
group of five documents: the original (title + body) and four syndicated variants —
retitled (another page's headline), truncated (first 60/70/80 % of the words), boilerplate
added (a paragraph of site chrome), one middle paragraph edited (a quarter of its words
replaced, a sentence added). Documents of different groups are the unrelated pairs. Every
document is stored and clustered through the real database in shuffled batches, then the
clusters are scored pairwise: precision = same-cluster pairs that are the same story,
recall = same-story pairs that share a cluster. Figures and floors: docs/clusters.md.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime
from functools import cache
from itertools import combinations
from typing import Any

import psycopg
import pytest

from harvester.parsers.article import extract_article
from harvester.services.clusters import assign_clusters_sync
from harvester.services.simhash import simhash_many
from tests.realdata import REALDATA

ARTICLES = REALDATA / "articles"
GROUND_TRUTH = ARTICLES / "ground_truth.jsonl"
MIN_WORDS = 150
KINDS = ("original", "retitled", "truncated", "boilerplate", "edited")
CHROME = (
    "Subscribe to our newsletter for the latest stories delivered to your inbox every "
    "morning. Share this article on Facebook, Twitter and LinkedIn. Related coverage: more "
    "from this section. Advertisement. Cookie settings: we use cookies to improve your "
    "experience on our site. Terms of use | Privacy policy | Contact us | Careers. "
    "Copyright 2024 Example Media Group, all rights reserved.",
    "Sign up for breaking news alerts. Follow us on social media. Most read this week: five "
    "stories you may have missed. Comments are closed for this article. Read our community "
    "guidelines before posting. This content was syndicated from our partner network and may "
    "have been edited for length and clarity.",
)
EDIT_WORDS = ("revised", "reportedly", "officials", "according", "later", "statement",
              "noted", "added", "however")

pytestmark = pytest.mark.skipif(not GROUND_TRUTH.is_file(),
                                reason="../shared/realdata/articles is not here")

Doc = tuple[int, str, str]  # (group, kind, text)


@cache
def pages() -> list[tuple[str, str]]:
    """(title, body paragraphs joined by newlines) of every page with a long enough body."""
    found = []
    for line in GROUND_TRUTH.read_text("utf-8").splitlines():
        row = json.loads(line)
        page = extract_article((ARTICLES / row["file"]).read_bytes(),
                               f"https://example.org/{row['file']}")
        title = row.get("title") or page.title or ""
        paragraphs = [p for p in (page.text or "").split("\n") if p.strip()]
        if paragraphs and paragraphs[0].strip() == title.strip():
            paragraphs = paragraphs[1:]  # the extractor may repeat the headline
        if sum(len(p.split()) for p in paragraphs) >= MIN_WORDS:
            found.append((title, "\n".join(paragraphs)))
    return found


def variants(group: int, title: str, body: str, other_title: str) -> dict[str, str]:
    rng = random.Random(group)
    paragraphs = body.split("\n")
    words = body.split()
    keep = (0.6, 0.7, 0.8)[group % 3]
    middle = sorted(range(len(paragraphs)), key=lambda j: (abs(j - len(paragraphs) // 2), j))
    at = next((j for j in middle if len(paragraphs[j].split()) >= 15), middle[0])
    edited = paragraphs[at].split()
    for k in rng.sample(range(len(edited)), len(edited) // 4):
        edited[k] = rng.choice(EDIT_WORDS)
    paragraphs[at] = " ".join(edited) + " This paragraph was updated after publication."
    return {
        "original": f"{title}\n{body}",
        "retitled": f"{other_title}\n{body}",
        "truncated": f"{title}\n" + " ".join(words[: int(len(words) * keep)]),
        "boilerplate": f"{title}\n{body}\n{CHROME[group % 2]}",
        "edited": f"{title}\n" + "\n".join(paragraphs),
    }


def labelled_set() -> list[Doc]:
    found = pages()
    return [(group, kind, text)
            for group, (title, body) in enumerate(found)
            for kind, text in variants(group, title, body,
                                       found[(group + 1) % len(found)][0]).items()]


def cluster(db: psycopg.Connection[Any], docs: list[Doc], distance: int,
            batch: int = 40) -> list[int]:
    """Store and cluster ``docs`` in shuffled batches; their cluster ids, in ``docs`` order."""
    order = list(range(len(docs)))
    random.Random(7).shuffle(order)
    hashes = simhash_many([text for _, _, text in docs]).tolist()
    now = datetime.now(UTC)
    ids: dict[int, int] = {}
    for start in range(0, len(order), batch):
        rows = []
        for n in order[start:start + batch]:
            cur = db.execute("INSERT INTO signals (key, source, kind, fetched_at, text) "
                             "VALUES (%s, 'q', 'feed', %s, %s) RETURNING id",
                             (f"q{distance}:{n}", now, docs[n][2]))
            ids[n] = cur.fetchone()[0]
            rows.append((ids[n], hashes[n]))
        assign_clusters_sync(db, rows, distance)
    found = dict(db.execute("SELECT id, cluster_id FROM signals WHERE key LIKE %s",
                            (f"q{distance}:%",)).fetchall())
    return [found[ids[n]] for n in range(len(docs))]


def scores(docs: list[Doc], clusters: list[int]) -> dict[str, Any]:
    tp = fp = fn = 0
    joined: Counter[str] = Counter()
    for a, b in combinations(range(len(docs)), 2):
        same_story, same_cluster = docs[a][0] == docs[b][0], clusters[a] == clusters[b]
        tp += same_story and same_cluster
        fp += same_cluster and not same_story
        fn += same_story and not same_cluster
        if same_story and docs[a][1] == "original":
            joined[docs[b][1]] += same_cluster
    groups = len(docs) // len(KINDS)
    return {"precision": tp / max(1, tp + fp), "recall": tp / max(1, tp + fn),
            "false_pairs": fp, "groups": groups,
            "recall_vs_original": {k: joined[k] / groups for k in KINDS[1:]}}


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    found = labelled_set()
    if len(found) < 50 * len(KINDS):
        pytest.skip("too few article pages in ../shared/realdata/articles")
    return found


def test_clusters_at_the_default_distance_are_precise(
        db: psycopg.Connection[Any], docs: list[Doc],
        capsys: pytest.CaptureFixture[str]) -> None:
    result = scores(docs, cluster(db, docs, 3))
    with capsys.disabled():
        print(f"\nclusters k=3: {json.dumps(result, indent=None)}")
    # A false merge credits a story with corroboration it does not have: precision first.
    assert result["precision"] >= 0.99
    # Near-exact copies must cluster: a new headline or a reworded paragraph moves a
    # 500-word page by 1-2 bits (measured medians).
    assert result["recall_vs_original"]["retitled"] >= 0.75
    assert result["recall_vs_original"]["edited"] >= 0.55
    assert result["recall_vs_original"]["boilerplate"] >= 0.5
    # Truncation to 60-80 % moves the median page by ~6 bits: k=3 catches few by design.
    assert result["recall"] >= 0.4


def test_a_wider_distance_trades_precision_for_recall(
        db: psycopg.Connection[Any], docs: list[Doc],
        capsys: pytest.CaptureFixture[str]) -> None:
    result = scores(docs, cluster(db, docs, 6))
    with capsys.disabled():
        print(f"\nclusters k=6: {json.dumps(result, indent=None)}")
    assert result["recall"] >= 0.65
    assert result["recall_vs_original"]["truncated"] >= 0.4
    assert result["precision"] >= 0.95
