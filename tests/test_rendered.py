"""Rendered sources: real crawls through Chromium (scrapy-playwright) against a registry page
whose table is built client-side from a JSON API (the RENEC case), into PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg
import pytest
from parsel import Selector

from harvester.services.localsite import LocalSite
from harvester.spiders.rendered import DEFAULT_CHROMIUM, extract_row, parse_date
from tests.apiserver import ApiRequest, ApiServer, Reply
from tests.conftest import ROOT, harvest, harvest_env, write_sources
from tests.feeds import items, rss

needs_chromium = pytest.mark.skipif(
    shutil.which(DEFAULT_CHROMIUM) is None,
    reason="Chromium is not installed (sudo apt-get install -y chromium)",
)

# An empty table and a script that fills it from ``api?page=N`` (N from ``?page=`` in the
# address); "Siguiente" fetches and re-renders the next page in place, without navigating.
REGISTRY_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Registro de estándares</title></head><body>
<h1>Registro Nacional de Estándares de Competencia</h1>
<table id="registry"><thead><tr><th>Código</th><th>Título</th><th>Organismo</th>
<th>Sector</th><th>Fecha</th><th>Nivel</th></tr></thead><tbody></tbody></table>
<nav><button id="next" type="button">Siguiente</button> <a class="next" hidden>más</a></nav>
<img src="logo.png" alt="">
<script>
let page = Number(new URLSearchParams(location.search).get("page") || 1);
async function show(n) {
  const data = await (await fetch("api?page=" + n)).json();
  const body = document.querySelector("#registry tbody");
  body.innerHTML = "";
  for (const r of data.rows) {
    const tr = document.createElement("tr");
    const title = r.href ? `<a href="${r.href}">${r.title}</a>` : r.title;
    const tags = r.sector.map(s => `<span>${s}</span>`).join(" ");
    tr.innerHTML = `<td class="code">${r.code}</td><td class="title">${title}</td>` +
      `<td class="body">${r.body}</td><td class="sector">${tags}</td>` +
      `<td class="date">${r.date}</td><td class="level">${r.level}</td>`;
    body.appendChild(tr);
  }
  page = n;
  document.getElementById("next").disabled = !data.has_next;
  const link = document.querySelector("a.next");
  if (data.has_next) { link.href = "?page=" + (n + 1); link.hidden = false; }
  else if (link) { link.remove(); }
  document.getElementById("registry").dataset.page = String(n);
}
document.getElementById("next").addEventListener("click", () => show(page + 1));
setTimeout(() => show(page), 50);  // like a real app: data arrives after the load event
</script></body></html>
"""
BROKEN_HTML = """<!doctype html><html><body><table id="registry"><tbody></tbody></table>
<script>throw new Error("registry API moved");</script></body></html>"""

PAGES = 3
ROWS = 4
FIELDS = {"url": "td.title a", "id": "td.code::text", "title": "td.title",
          "author": "td.body", "published": "td.date", "tags": "td.sector span",
          "level": "td.level"}


def rows(prefix: str, page: int) -> list[dict[str, Any]]:
    out = []
    for i in range(ROWS):
        n = (page - 1) * ROWS + i + 1
        out.append({"code": f"EC{n:04d}", "title": f"{prefix} estándar {n}",
                    "href": f"/{prefix}/estandar/EC{n:04d}", "body": "CONOCER",
                    "sector": ["Educación", "Servicios"], "date": f"{n:02d}/03/2024",
                    "level": str(1 + n % 5)})
    if page == 2:
        # Neither a link nor a code: nothing identifies it, so it is rejected.
        out[1].update(code="", href=None, title=f"{prefix} sin código")
        # No date: stored without one, counted as missing.
        out[2]["date"] = ""
    if page == 3:
        # A date cell that holds no date ("soon"): stored without one, reported as dropped.
        out[0]["date"] = "pronto"
    return out


def registry(api: ApiServer, prefix: str, html: str = REGISTRY_HTML) -> str:
    """Serve one registry under ``/PREFIX/``; return its address."""
    def page(req: ApiRequest) -> Reply:
        return Reply.text(html, content_type="text/html; charset=utf-8")

    def data(req: ApiRequest) -> Reply:
        n = int(req.arg("page") or 1)
        body = rows(prefix, n) if n <= PAGES else []
        return Reply.json({"page": n, "rows": body, "has_next": n < PAGES})

    api.add(f"/{prefix}/registry", page)
    api.add(f"/{prefix}/api", data)
    return f"{api.url}/{prefix}/registry"


def source(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "rendered", "urls": [url], "wait_for": "#registry[data-page]",
            "item_selector": "#registry tbody tr", **extra}


def api_pages(api: ApiServer, prefix: str) -> list[int]:
    return [int(r.arg("page") or 0) for r in api.hits(f"/{prefix}/api")]


def fields_toml(path: Path, sources: list[dict[str, Any]]) -> Path:
    """write_sources plus an inline ``fields`` table per source (it takes flat values only)."""
    write_sources(path, sources)
    text = path.read_text()
    blocks = text.split("[[sources]]\n")[1:]
    out = []
    for block, entry in zip(blocks, sources, strict=True):
        inline = ", ".join(f"{k} = {json.dumps(v)}" for k, v in FIELDS.items())
        extra = f"fields = {{ {inline} }}\n" if entry["kind"] == "rendered" else ""
        out.append("[[sources]]\n" + block.rstrip("\n") + "\n" + extra + "\n")
    path.write_text("".join(out))
    return path


def stored(db: psycopg.Connection[Any], name: str) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT external_id, url, title, author, published_at::date::text, tags, engagement "
        "FROM signals WHERE source = %s ORDER BY external_id", (name,)).fetchall()


@needs_chromium
def test_url_pagination_by_template_and_by_link(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    sources = fields_toml(tmp_path / "s.toml", [
        source("tmpl", registry(api, "tmpl"), next_page="?page={page}", max_pages=5),
        source("link", registry(api, "link"), next_page="a.next", max_pages=2),
        # Its "next" link goes back and forth between pages 1 and 2.
        source("loop", registry(api, "loop", REGISTRY_HTML.replace(
            'link.href = "?page=" + (n + 1)', 'link.href = "?page=" + (n % 2 + 1)')),
            next_page="a.next", max_pages=10),
    ])
    result = harvest("--sources", str(sources), "crawl", "tmpl", "link", "loop", home=home,
                     timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

    # Template: pages 1-3, then page 4 renders empty and ends the paging (not a failure).
    assert [r.arg("page") for r in api.hits("/tmpl/registry")] == [None, "2", "3", "4"]
    rows_ = stored(db, "tmpl")
    assert len(rows_) == PAGES * ROWS - 1
    first = rows_[0]
    assert first[:5] == ("EC0001", f"{api.url}/tmpl/estandar/EC0001", "tmpl estándar 1",
                         "CONOCER", "2024-03-01")
    assert first[5] == ["Educación", "Servicios"] and first[6] == {"level": 2}
    assert [r[4] for r in rows_ if r[0] == "EC0007"] == [None]  # the row without a date
    assert [r[4] for r in rows_ if r[0] == "EC0009"] == [None]  # "pronto" is not a date
    by_source = dict(db.execute(
        "SELECT sources[1], stats -> 'harvest/by_source' FROM crawl_runs").fetchall())
    assert by_source["tmpl"]["tmpl"]["dropped"] == {"published_at": 1}
    assert "dropped" not in by_source["link"]["link"]  # it stopped before page 3
    assert "(published_at ×1)" in " ".join(result.stdout.split())
    rejects = db.execute("SELECT source, reason, raw->>'title' FROM rejects "
                         "ORDER BY source").fetchall()
    assert rejects == [("link", "missing_url_and_id", "link sin código"),
                       ("loop", "missing_url_and_id", "loop sin código"),
                       ("tmpl", "missing_url_and_id", "tmpl sin código")]
    assert not api.hits("/tmpl/logo.png")  # images are not fetched

    # Each row says which rendered page it was read from.
    pages_read = {r[0] for r in db.execute(
        "SELECT DISTINCT feed_url FROM signals WHERE source = 'tmpl'").fetchall()}
    assert pages_read == {f"{api.url}/tmpl/registry"} | {
        f"{api.url}/tmpl/registry?page={n}" for n in (2, 3)}

    # Link: followed the rendered "next" link, stopped at max_pages = 2.
    assert [r.arg("page") for r in api.hits("/link/registry")] == [None, "2"]
    assert len(stored(db, "link")) == 2 * ROWS - 1
    runs = dict(db.execute("SELECT sources[1], errors FROM crawl_runs").fetchall())
    assert runs == {"tmpl": 0, "link": 0, "loop": 0}
    # Loop: rendered until max_pages (10 renders of two pages) before; now it stops when the
    # next link leads back to a page this run has rendered.
    assert [r.arg("page") for r in api.hits("/loop/registry")] == [None, "2", "1"]
    loop_stats = db.execute("SELECT stats FROM crawl_runs WHERE sources[1] = 'loop'").fetchone()
    assert loop_stats is not None and loop_stats[0]["harvest/source/loop/paging_loop"] == 1
    # Both crawlers ran in one process on one shared Chromium.
    log = Path(result.stdout.split("log: ")[-1].strip()).read_text()
    assert log.count("Launching the shared chromium browser") == 1


@needs_chromium
def test_click_pagination_and_a_page_that_never_renders(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    sources = fields_toml(tmp_path / "s.toml", [
        source("click", registry(api, "click"), next_click="#next", max_pages=5,
               requests_per_minute=120),
        source("broken", registry(api, "broken", BROKEN_HTML)),
        # Rendered fine, but the site was redesigned: nothing matches any more.
        source("redesign", registry(api, "redesign"), item_selector="table.old tr"),
    ])
    result = harvest("--sources", str(sources), "crawl", "click", "broken", "redesign",
                     "-s", "HARVEST_RENDERED_WAIT_SECONDS=8", home=home, timeout=90)

    # One source failing does not stop the other; the failure is one line, no hang.
    assert result.returncode == 1, result.stdout + result.stderr
    message = "the page did not show wait_for '#registry[data-page]' within 8 s"
    assert any(line.startswith("failed broken:") for line in result.stdout.splitlines())
    assert message in result.stdout  # square brackets and all: shown as text, not markup
    assert "no item matched item_selector 'table.old tr'" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not stored(db, "broken")

    # Click: one navigation, then pages 2 and 3 rendered in place; the disabled button ends it.
    assert len(api.hits("/click/registry")) == 1
    assert api_pages(api, "click") == [1, 2, 3]
    assert len(stored(db, "click")) == PAGES * ROWS - 1
    # Clicks are paced by the source's budget too (120/min: one every 0.5 s after the
    # navigation or the previous click).
    actions = [api.hits("/click/registry")[0], *api.hits("/click/api")[1:]]
    gaps = [round(b.at - a.at, 3) for a, b in pairwise(actions)]
    assert all(gap >= 0.45 for gap in gaps), (gaps, [(r.path, r.query) for r in api.requests])
    failures = dict(db.execute("SELECT source, consecutive_failures FROM sources_state"))
    assert failures == {"click": 0, "broken": 1, "redesign": 1}


@needs_chromium
def test_a_crawl_told_to_stop_clicks_no_further(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # SIGTERM (Scrapyd's cancel, Ctrl-C) did not reach click pagination: it slept out each
    # paced wait and clicked on to max_pages (the process exited 88 s later).
    sources = fields_toml(tmp_path / "s.toml", [
        source("slow", registry(api, "slow"), next_click="#next", max_pages=3,
               requests_per_minute=6)])  # a click every 10 s
    crawl = subprocess.Popen(
        [sys.executable, "-m", "harvester.cli", "--sources", str(sources), "crawl", "slow",
         "--no-progress"], cwd=ROOT, env=harvest_env(home), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not api_pages(api, "slow") and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # rendered and read; the first click waits for its turn
        crawl.send_signal(signal.SIGTERM)
        out, err = crawl.communicate(timeout=60)
    finally:
        crawl.kill()
    assert api_pages(api, "slow") == [1], (out, err)
    assert crawl.returncode == 1 and "stopped early slow: finish reason shutdown" in out
    assert len(stored(db, "slow")) == ROWS  # what page 1 held is kept


def test_missing_chromium_is_one_clear_failure(
    api: ApiServer, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    sources = fields_toml(tmp_path / "s.toml", [source("nochrome", registry(api, "nc"))])
    result = harvest("--sources", str(sources), "crawl", "nochrome",
                     "-s", "HARVEST_CHROMIUM_PATH=/nonexistent/chromium", home=home, timeout=60)
    assert result.returncode == 1
    assert ("Chromium is not installed at /nonexistent/chromium; install it with "
            "`sudo apt-get install -y chromium`") in result.stdout
    assert not api.hits("/nc/registry")
    # 0 is "no timeout" to Playwright: a page that never shows wait_for hung the crawl.
    # Refused before the crawl starts, as every wrong -s value is.
    for wait in ("0", "-5", "nan"):
        refused = harvest("--sources", str(sources), "crawl", "nochrome",
                          "-s", f"HARVEST_RENDERED_WAIT_SECONDS={wait}", home=home, timeout=60)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert ("HARVEST_RENDERED_WAIT_SECONDS must be a number above 0, at most 3600"
                in " ".join(refused.stderr.split())), refused.stderr
    assert not api.hits("/nc/registry")


@needs_chromium
def test_other_spiders_never_start_a_browser(
    api: ApiServer, site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    (site.root / "f.xml").write_text(rss(items("f", 2)))
    sources = fields_toml(tmp_path / "s.toml", [
        {"name": "plain", "kind": "feed", "urls": [f"{site.url}/f.xml"]},
        source("shown", registry(api, "shown")),
    ])
    env = {**os.environ, "HARVEST_HOME": str(home), "HARVEST_SOURCES": str(sources)}

    def crawl(spider: str, name: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "scrapy", "crawl", spider, "-a", f"source={name}"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stderr

    assert "scrapy-playwright" not in crawl("feed", "plain")
    log = crawl("rendered", "shown")
    assert "Launching the shared chromium browser" in log and "Closing browser" in log
    assert db.execute("SELECT source, count(*) FROM signals GROUP BY source "
                      "ORDER BY source").fetchall() == [("plain", 2), ("shown", ROWS)]


def test_row_values_dates_and_engagement() -> None:
    row = Selector(text=(
        '<table><tr><td class="t"><a href="/std/EC0217">Impartición de cursos</a></td>'
        '<td class="d">15/03/2024</td><td class="v">1,234</td><td class="c">0217</td>'
        '<td class="s"><span>Educación</span> <span>Servicios</span></td></tr></table>'
    )).css("tr")[0]
    fields = {"url": "td.t a", "title": "td.t", "published": "td.d", "votes": "td.v",
              "code": "td.c", "tags": "td.s span", "author": "td.none"}
    values, missing = extract_row(row, fields, "https://conocer.example/registro?page=2")
    assert values == {"url": "https://conocer.example/std/EC0217",
                      "title": "Impartición de cursos", "published": "15/03/2024",
                      "votes": 1234, "code": "0217", "tags": ["Educación", "Servicios"]}
    assert missing == ["author"]
    # Links as a browser reads them (a <base href>), and none for a row whose link is no
    # item's address: javascript: and href="#" (the id keeps such a row), one that does not
    # parse (it raised, and the page's later rows were lost).
    page = "https://conocer.example/registro"
    for href, why in (("javascript:show(1)", "'javascript:show(1)' is not a usable link"),
                      ("#", "'#' links to the listing page itself"),
                      ("http://[::1", "'http://[::1' is not a usable link")):
        odd = Selector(text=f'<table><tr><td class="t"><a href="{href}">Uno</a></td>'
                            '<td class="c">EC1</td></tr></table>').css("tr")[0]
        got, _ = extract_row(odd, {"url": "td.t a", "id": "td.c"}, page, page)
        assert got == {"dropped": {"url": why}, "id": "EC1"}
    based, _ = extract_row(row, {"url": "td.t a"}, "https://cdn.example/x/", page)
    assert based == {"url": "https://cdn.example/std/EC0217"}
    assert parse_date("15/03/2024") == datetime(2024, 3, 15, tzinfo=UTC)
    assert parse_date("2024-03-15T10:00:00+02:00") == datetime(2024, 3, 15, 8, tzinfo=UTC)
    assert parse_date("31/02/2024") is None and parse_date("pronto") is None
