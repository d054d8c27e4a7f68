"""The same story from two sources becomes one cluster through a real crawl, and the
operator sees it once, with both sources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from harvester.services.localsite import LocalSite
from tests.conftest import harvest, write_sources
from tests.feeds import rfc822, rss

STORY = (
    "A ransomware group encrypted the imaging archive of a regional hospital network on "
    "Tuesday night, forcing radiology departments in four cities back to paper requests. "
    "The attackers entered through an unpatched file-transfer appliance, according to an "
    "incident report shared with regulators, and demanded payment within seventy-two hours. "
    "Clinicians said emergency scans continued on standalone machines while engineers "
    "restored backups that had been kept offline since the previous audit."
)
OTHER = (
    "Copper prices reached a record on the London Metal Exchange as grid operators and "
    "data-centre builders competed for cable, with traders pointing to thin warehouse "
    "stocks and a strike at a large Chilean mine that removed supply for a second week."
)


def test_one_story_from_two_sources_is_one_cluster(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    (site.root / "a.xml").write_text(rss([
        {"title": "Ransomware hits hospital imaging", "link": "https://a.example/1",
         "description": STORY, "date": rfc822(2)},
        {"title": "Copper at a record", "link": "https://a.example/2",
         "description": OTHER, "date": rfc822(3)},
    ]))
    (site.root / "b.xml").write_text(rss([
        {"title": "Hospital network hit by ransomware", "link": "https://b.example/x",
         "description": STORY + " Updated with a statement.", "date": rfc822(1)},
    ]))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "wire-a", "kind": "feed", "urls": [f"{site.url}/a.xml"]},
        {"name": "wire-b", "kind": "feed", "urls": [f"{site.url}/b.xml"]},
    ], {"security": {"keywords": ["ransomware"], "weight": 2.0}})

    crawl = harvest("--sources", str(sources), "crawl", "wire-a", "wire-b", home=home)
    assert crawl.returncode == 0, crawl.stdout + crawl.stderr

    rows = db.execute("SELECT source, url, cluster_id, simhash IS NOT NULL FROM signals "
                      "ORDER BY url").fetchall()
    assert len(rows) == 3 and all(has_hash for *_, has_hash in rows)
    clusters = {url: cluster for _, url, cluster, _ in rows}
    assert clusters["https://a.example/1"] == clusters["https://b.example/x"]
    assert clusters["https://a.example/2"] != clusters["https://a.example/1"]

    top = harvest("--sources", str(sources), "top", "--json", home=home)
    stories = json.loads(top.stdout)
    assert len(stories) == 2  # one line per story, not per copy
    ransomware = next(s for s in stories if "ransomware" in s["title"].lower())
    assert sorted(ransomware["cluster_sources"]) == ["wire-a", "wire-b"]
    assert ransomware["cluster_size"] == 2
    breakdowns = [b for (b,) in db.execute(
        "SELECT score_breakdown FROM signals WHERE url IN "
        "('https://a.example/1', 'https://b.example/x')").fetchall()]
    for breakdown in breakdowns:  # corroborated: carried by two sources, +15 %
        assert breakdown["corroboration"]["factor"] == 1.15
    single = db.execute("SELECT score_breakdown FROM signals WHERE url = "
                        "'https://a.example/2'").fetchone()[0]
    assert single.get("corroboration", {}).get("factor", 1) == 1

    # A later copy joins the multi-source cluster and gets its factor at once; the cluster's
    # sources are kept in cluster_sources, so no batch rereads the whole cluster.
    (site.root / "a.xml").write_text(rss([
        {"title": "Hospital imaging ransomware: day two", "link": "https://a.example/3",
         "description": STORY, "date": rfc822(0.5)},
    ]))
    again = harvest("--sources", str(sources), "crawl", "wire-a", home=home)
    assert again.returncode == 0, again.stdout + again.stderr
    late, cluster = db.execute("SELECT score_breakdown, cluster_id FROM signals "
                               "WHERE url = 'https://a.example/3'").fetchone()
    assert cluster == clusters["https://a.example/1"]
    assert late["corroboration"] == {"sources": ["wire-a", "wire-b"], "factor": 1.15}
    assert db.execute("SELECT sources FROM cluster_sources WHERE cluster_id = %s",
                      (cluster,)).fetchone() == (["wire-a", "wire-b"],)


def test_a_source_past_the_bonus_cap_is_named_by_every_member(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # Five sources reach the corroboration cap: a sixth changes no score, but every
    # member's breakdown (what `harvest explain` says) must name it, not only its own row.
    names = [f"w{i}" for i in range(6)]
    for i, name in enumerate(names):
        (site.root / f"{name}.xml").write_text(rss([
            {"title": "Ransomware hits hospital imaging", "link": f"https://{name}.example/1",
             "description": STORY, "date": rfc822(1 + i)}]))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": name, "kind": "feed", "urls": [f"{site.url}/{name}.xml"]} for name in names
    ], {"security": {"keywords": ["ransomware"], "weight": 2.0}})
    first = harvest("--sources", str(sources), "crawl", *names[:5], home=home)
    assert first.returncode == 0, first.stdout + first.stderr
    last = harvest("--sources", str(sources), "crawl", names[5], home=home)
    assert last.returncode == 0, last.stdout + last.stderr

    rows = db.execute("SELECT cluster_id, score_breakdown -> 'corroboration' FROM signals"
                      ).fetchall()
    assert len(rows) == 6 and len({cluster for cluster, _ in rows}) == 1
    assert [c["sources"] for _, c in rows] == [names] * 6
    assert {c["factor"] for _, c in rows} == {1.6}
