"""The HTTP API over a real `harvest serve` and PostgreSQL: auth, rate limits, pagination
edges, bad parameters, hostile input, curator input through the pipeline, briefs, crawls."""

from __future__ import annotations

import base64
import http.client
import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from harvester.api import reads
from harvester.services import embedded
from harvester.services.brief import IsoWeek
from harvester.services.localsite import LocalSite
from tests.conftest import free_port, write_sources
from tests.feeds import items, rss
from tests.scrapydnode import CREDENTIALS, Node
from tests.test_serve import serving

KEYS = ("read-key-one", "read-key-two")
TOKEN = "curator-token"
ORIGIN = "https://dash.example.org"
R = {"X-API-Key": KEYS[0]}
W = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("api-sources") / "sources.toml"
    return write_sources(path, [
        {"name": "alpha", "kind": "feed", "weight": 2.0, "urls": ["http://127.0.0.1:9/a"]},
        {"name": "beta", "kind": "feed", "enabled": False, "urls": ["http://127.0.0.1:9/b"]},
    ], {"security": {"keywords": ["ransomware", "CVE"], "weight": 2.0}})


@pytest.fixture(scope="module")
def api(sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {"HARVEST_API_KEYS": ",".join(KEYS), "HARVEST_API_TOKENS": TOKEN,
           "HARVEST_API_RATE": "off", "HARVEST_API_CORS_ORIGINS": ORIGIN,
           "HARVEST_SCRAPYD_URLS": f"http://127.0.0.1:{free_port()}"}
    with serving(tmp_path_factory.mktemp("api-home"), env, sources) as base:
        yield base


def get(base: str, path: str, headers: dict[str, str] | None = None,
        **params: Any) -> requests.Response:
    return requests.get(base + path, params=params, headers=R if headers is None else headers,
                        timeout=30)


def add(db: psycopg.Connection[Any], n: int, *, source: str = "alpha", title: str = "Item",
        start: datetime | None = None, **extra: Any) -> list[int]:
    """n signals, one hour apart (newest last), scores 10, 20, …; returns their ids."""
    start = start or datetime(2026, 11, 20, tzinfo=UTC)
    ids = []
    for i in range(n):
        row = {"key": f"t:{source}:{title}:{i}:{time.monotonic_ns()}", "source": source,
               "kind": "feed", "url": f"https://example.org/{source}/{i}",
               "title": f"{title} {i}", "fetched_at": start,
               "published_at": start + timedelta(hours=i), "score": 10.0 * (i + 1),
               "cluster_id": None, "score_breakdown": "{}", **extra}
        cols = ", ".join(row)
        vals = ", ".join(f"%({c})s" for c in row)
        found = db.execute(f"INSERT INTO signals ({cols}) VALUES ({vals}) RETURNING id",
                           row).fetchone()
        assert found is not None
        ids.append(found[0])
    return ids


def walk(base: str, **params: Any) -> list[list[int]]:
    """Every page's ids, following next_cursor."""
    pages: list[list[int]] = []
    cursor = None
    while True:
        body = get(base, "/signals", **params, **({"cursor": cursor} if cursor else {})).json()
        pages.append([s["id"] for s in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None or len(pages) > 20:
            return pages


#: The fields of the responses that hold a time.
TIME_FIELDS = frozenset({"published_at", "first_seen", "last_seen", "updated_at", "fetched_at",
                         "last_success", "last_attempt", "last_signal_at", "next_due",
                         "started_at", "finished_at", "created_at", "generated_at"})


def utc_times(body: Any) -> list[str]:
    """Every time in a response body, at any depth, after checking each is written as the
    docs say, ISO 8601 ending "+00:00" (they said "Z", unlike /health and `--json`)."""
    if isinstance(body, list):
        return [t for value in body for t in utc_times(value)]
    if not isinstance(body, dict):
        return []
    found = [t for name, value in body.items()
             for t in ([value] if name in TIME_FIELDS and value else utc_times(value))]
    for text in found:
        assert text.endswith("+00:00") and datetime.fromisoformat(text).tzinfo, text
    return found


def loc_of(response: requests.Response) -> list[list[Any]]:
    assert response.status_code == 422, response.text
    return [e["loc"] for e in response.json()["detail"]]


# -- auth ------------------------------------------------------------------------------


def test_reads_need_a_key_and_refusals_say_nothing(api: str, db: psycopg.Connection[Any]
                                                   ) -> None:
    add(db, 1)
    missing = get(api, "/signals", headers={})
    assert missing.status_code == 401 and missing.json() == {"detail": "API key required"}
    wrong = get(api, "/signals", headers={"X-API-Key": KEYS[0][:-1]})
    assert wrong.status_code == 403 and wrong.json() == {"detail": "invalid credentials"}
    for response in (missing, wrong):
        assert not any(k in response.text for k in (*KEYS, TOKEN))
    # Two keys at once: the old one keeps working while clients move to the new one.
    for key in KEYS:
        assert len(get(api, "/signals", headers={"X-API-Key": key}).json()["items"]) == 1
    assert get(api, "/signals", headers=W).status_code == 200  # a write token reads too
    assert get(api, "/signals", headers={"X-API-Key": TOKEN}).status_code == 200  # sent as a key
    # Health and metrics stay open for load balancers and Prometheus.
    health = requests.get(f"{api}/health", timeout=30)
    assert health.status_code == 200
    # The fixture's one Scrapyd node is down: degraded, and the check says what to run.
    node = health.json()["checks"]["scrapyd"]
    assert not node["ok"] and "1 of 1 nodes down" in node["detail"]
    assert "`harvest scrapyd start`" in node["detail"]
    assert "harvest_database_up 1.0" in requests.get(f"{api}/metrics", timeout=30).text
    assert requests.get(f"{api}/docs", timeout=30).status_code == 200
    assert requests.get(f"{api}/redoc", timeout=30).status_code == 404  # not documented
    # No redirect to a Location built from the Host header, before any key was asked.
    slash = requests.get(f"{api}/signals/", headers={"Host": "evil.example"},
                         allow_redirects=False, timeout=30)
    assert slash.status_code != 307 and "evil.example" not in slash.headers.get("location", "")
    paths = requests.get(f"{api}/openapi.json", timeout=30).json()["paths"]
    assert {"/signals", "/signals/top", "/signals/{signal_id}", "/sources", "/runs",
            "/rejects", "/briefs/current", "/briefs/{week}", "/crawl"} <= set(paths)
    # GET and HEAD /health shared one operationId (and serve warned of it): clients
    # generated from the schema lose one of the two.
    op_ids = Counter(op["operationId"] for ops in paths.values() for op in ops.values())
    assert [op_id for op_id, n in op_ids.items() if n > 1] == []
    assert {"health_health_get", "health_health_head"} <= set(op_ids)


def test_writes_need_the_bearer_token(api: str, db: psycopg.Connection[Any]) -> None:
    body = {"url": "https://example.org/x", "title": "x"}
    for headers, code in (({}, 401), (R, 401), ({"Authorization": "Bearer nope"}, 403),
                          ({"Authorization": f"Basic {TOKEN}"}, 401)):
        response = requests.post(f"{api}/signals", json=body, headers=headers, timeout=30)
        assert response.status_code == code, (headers, response.text)
        assert TOKEN not in response.text
        response = requests.post(f"{api}/crawl", json={"source": "alpha"}, headers=headers,
                                 timeout=30)
        assert response.status_code == code
        # A body that is not JSON is parsed before any dependency runs: still refused.
        for path in ("/signals", "/crawl"):
            response = requests.post(f"{api}{path}", data="{not json", headers={
                **headers, "Content-Type": "application/json"}, timeout=30)
            assert response.status_code == code, (path, headers, response.text)
            assert "JSON" not in response.text
    # With the token, the same body is what is wrong.
    response = requests.post(f"{api}/signals", data="{not json", timeout=30, headers={
        **W, "Content-Type": "application/json"})
    assert response.status_code == 422 and "json_invalid" in response.text
    # A method the path does not take names every one it does: PUT /signals said
    # "Allow: GET" (the first route that matched), hiding the POST a client looks for.
    for method, path, allow in (("PUT", "/signals", "GET, POST"), ("DELETE", "/crawl", "POST"),
                                ("POST", "/signals/top", "GET"), ("PUT", "/health", "GET, HEAD")):
        response = requests.request(method, f"{api}{path}", headers=W, timeout=30)
        assert (response.status_code, response.headers["Allow"]) == (405, allow), path
        assert response.json()["detail"] == f"{method} is not allowed here; use {allow}"
    assert db.execute("SELECT count(*) FROM signals").fetchone() == (0,)


def test_cors_only_for_configured_origins(api: str) -> None:
    allowed = get(api, "/signals", headers={**R, "Origin": ORIGIN})
    assert allowed.headers.get("access-control-allow-origin") == ORIGIN
    other = get(api, "/signals", headers={**R, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    preflight = requests.options(f"{api}/signals", timeout=30, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "X-API-Key"})
    assert preflight.status_code == 200
    assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()


# -- rate limit ------------------------------------------------------------------------


def test_rate_limit_per_client_with_retry_after(db: psycopg.Connection[Any], home: Path,
                                                sources: Path) -> None:
    env = {"HARVEST_API_KEYS": ",".join(KEYS), "HARVEST_API_RATE": "1/min burst 3"}
    with serving(home, env, sources) as base:
        codes = [get(base, "/signals").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = get(base, "/signals")
        assert limited.status_code == 429
        retry_after = int(limited.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        assert "retry after" in limited.json()["detail"]
        # A repeated X-API-Key is one client: auth reads the first, and so does the limit
        # (it read the last, so a valid key followed by junk drew on the address's bucket).
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.putrequest("GET", "/signals")
        conn.putheader("X-API-Key", KEYS[0])
        conn.putheader("X-API-Key", "junk")
        conn.endheaders()
        assert conn.getresponse().status == 429
        conn.close()
        # Another key is another client; wrong keys share their address's bucket.
        assert get(base, "/signals", headers={"X-API-Key": KEYS[1]}).status_code == 200
        assert get(base, "/signals", headers={}).status_code == 401  # the address's bucket
        assert get(base, "/signals", headers={"X-API-Key": "guess"}).status_code == 403
        assert get(base, "/signals", headers={"X-API-Key": "guess2"}).status_code == 403
        assert get(base, "/signals", headers={"X-API-Key": "guess3"}).status_code == 429
        # Health and metrics are never limited; no CORS headers without configured origins.
        assert all(requests.get(f"{base}/health", timeout=30).status_code == 200
                   for _ in range(5))
        assert "access-control-allow-origin" not in get(
            base, "/signals", headers={"X-API-Key": KEYS[1], "Origin": ORIGIN}).headers


# -- pagination ------------------------------------------------------------------------


def test_pages_cover_every_row_once_in_order(api: str, db: psycopg.Connection[Any]) -> None:
    ids = add(db, 7)
    newest_first = ids[::-1]
    assert walk(api, limit=3) == [newest_first[:3], newest_first[3:6], newest_first[6:]]
    assert walk(api, limit=3, sort="score") == [newest_first[:3], newest_first[3:6],
                                                newest_first[6:]]
    # An exact multiple of the limit: the last full page says there is no next one.
    assert walk(api, limit=7) == [newest_first]
    # Scores a real cannot hold exactly (67.7 is 67.69999694… as a real): the cursor's
    # double was compared as a double, and the boundary row came back on the next page.
    db.execute("UPDATE signals SET score = 60 + id % 3 + 0.7")
    pages = walk(api, limit=2, sort="score")
    flat = [i for p in pages for i in p]
    assert sorted(flat) == sorted(ids) and len(flat) == len(ids), pages
    # Equal keys are ordered by id, so a page boundary inside a tie loses nothing.
    db.execute("UPDATE signals SET score = 5, published_at = %s",
               (datetime(2026, 11, 1, tzinfo=UTC),))
    for sort in ("recent", "score"):
        pages = walk(api, limit=2, sort=sort)
        assert [i for p in pages for i in p] == sorted(ids, reverse=True)
        assert [len(p) for p in pages] == [2, 2, 2, 1]
    # Rows added while paging do not shift the pages already handed out.
    first = get(api, "/signals", limit=4).json()
    add(db, 3, title="Later", start=datetime(2026, 12, 1, tzinfo=UTC))
    rest = walk_from(api, first["next_cursor"], limit=4)
    assert [s["id"] for s in first["items"]] + rest == sorted(ids, reverse=True)


def walk_from(base: str, cursor: str, **params: Any) -> list[int]:
    got: list[int] = []
    while cursor:
        body = get(base, "/signals", cursor=cursor, **params).json()
        got += [s["id"] for s in body["items"]]
        cursor = body["next_cursor"]
    return got


def test_empty_page_and_tampered_cursors(api: str, db: psycopg.Connection[Any]) -> None:
    assert get(api, "/signals").json() == {"items": [], "next_cursor": None, "limit": 50}
    add(db, 3)
    cursor = get(api, "/signals", limit=1).json()["next_cursor"]
    assert cursor
    garbage = base64.urlsafe_b64encode(b'{"a": 1}').decode()
    wrong_type = base64.urlsafe_b64encode(json.dumps(["recent", 3.5, 1]).encode()).decode()
    for bad in ("not-a-cursor!", cursor[:-3], garbage, wrong_type, cursor + "AAAA", "x" * 400):
        assert loc_of(get(api, "/signals", cursor=bad)) == [["query", "cursor"]], bad
    # Scores beyond PostgreSQL's real overflowed its cast: a 500.
    for score in (1e39, -1e308, 1e-50):
        bad = base64.urlsafe_b64encode(json.dumps(["score", score, 5]).encode()).decode()
        assert loc_of(get(api, "/signals", cursor=bad, sort="score")) == [
            ["query", "cursor"]], score
    # A cursor of one sort is refused by the other.
    response = get(api, "/signals", cursor=cursor, sort="score")
    assert loc_of(response) == [["query", "cursor"]]
    assert "sort=recent" in response.json()["detail"][0]["msg"]


# -- parameters, hostile input -----------------------------------------------------------


@pytest.mark.parametrize(("path", "params", "where"), [
    ("/signals", {"limit": 501}, ["query", "limit"]),
    ("/signals", {"limit": 0}, ["query", "limit"]),
    ("/signals", {"min_score": "high"}, ["query", "min_score"]),
    ("/signals", {"min_score": 101}, ["query", "min_score"]),
    ("/signals", {"min_score": "nan"}, ["query", "min_score"]),
    ("/signals", {"since": "last tuesday"}, ["query", "since"]),
    ("/signals", {"cluster": -1}, ["query", "cluster"]),
    ("/signals", {"sort": "random"}, ["query", "sort"]),
    ("/signals", {"q": "x" * 201}, ["query", "q"]),
    ("/signals/top", {"limit": 100000}, ["query", "limit"]),
    ("/signals/abc", {}, ["path", "signal_id"]),
    ("/signals/99999999999999999999", {}, ["path", "signal_id"]),
    ("/runs", {"limit": -5}, ["query", "limit"]),
    ("/briefs/2026-W99", {}, ["path", "week"]),
    ("/briefs/0000-W01", {}, ["path", "week"]),  # was a 500
    ("/briefs/current", {"format": "pdf"}, ["query", "format"]),
])
def test_bad_parameters_are_422_naming_the_parameter(api: str, path: str,
                                                     params: dict[str, Any],
                                                     where: list[str]) -> None:
    assert where in loc_of(get(api, path, **params))


def test_sql_looking_input_is_only_data(api: str, db: psycopg.Connection[Any]) -> None:
    add(db, 3, title="Ransomware")
    hostile = ["' OR 1=1 --", "x'; DROP TABLE signals;--", "\\'; SELECT pg_sleep(5);--",
               "%(q)s", "{}", "' UNION SELECT key FROM signals --", "nothing' OR '1'='1"]
    for value in hostile:
        for params in ({"q": value}, {"source": value}, {"topic": value}):
            response = get(api, "/signals", **params)
            assert response.status_code == 200, (params, response.text)
            assert response.json()["items"] == [], params
        both = get(api, "/signals", source=[value, "alpha"]).json()["items"]
        assert len(both) == 3
        assert get(api, "/runs", source=value).json() == {"items": []}
        assert get(api, "/signals/top", source=value).json() == {"items": []}
    # NUL cannot reach PostgreSQL text: a 422 naming the parameter, not a 500.
    for name in ("q", "source", "topic", "since", "cursor"):
        assert loc_of(get(api, "/signals", **{name: "a\x00b"})) == [["query", name]]
    assert loc_of(get(api, "/briefs/2026-W01%00")) == [["path", "week"]]
    assert db.execute("SELECT count(*) FROM signals").fetchone() == (3,)
    assert len(get(api, "/signals", q="ransomware").json()["items"]) == 3


# -- search, filters, top, one signal -------------------------------------------------------


def test_search_and_filters(api: str, db: psycopg.Connection[Any]) -> None:
    hot = add(db, 2, title="Ransomware hits hospital", score_breakdown=json.dumps(
        {"topics": {"security": {"keywords": ["ransomware"], "points": 4}}}))
    beta = add(db, 2, source="beta", title="Gardening tips for autumn")

    def ids(**params: Any) -> set[int]:
        return {s["id"] for s in get(api, "/signals", **params).json()["items"]}
    assert ids(q="ransomware") == set(hot)
    assert ids(q="RANSOMWARE hospital") == set(hot)  # every word, any case
    assert ids(q='"hits hospital"') == set(hot)
    assert ids(q="ransomware -hospital") == set()
    assert ids(q="ransomware or gardening") == ids()
    assert ids(topic="security") == set(hot)
    assert ids(source="beta") == set(beta)
    assert ids(source=["alpha", "beta"]) == set(hot + beta)
    assert ids(min_score=15) == {hot[1], beta[1]}
    assert ids(since="2026-11-20T00:30:00Z") == {hot[1], beta[1]}
    assert ids(since="2026-11-20") == set(hot + beta)
    assert ids(since="1h") == set()


def test_the_search_uses_the_index(pg_url: str) -> None:
    """The query's expression is the one migration 0007 indexed (a copy that drifted would
    silently scan every row)."""
    flt = reads.SignalFilter(q="ransomware attack")
    clauses, params = reads._where(flt)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute("EXPLAIN SELECT id FROM signals WHERE " + " AND ".join(clauses),
                            params).fetchall()
        order = conn.execute(f"EXPLAIN SELECT id FROM signals ORDER BY {reads.SEEN_AT} DESC, "
                             "id DESC LIMIT 5").fetchall()
    assert "signals_fts" in str(plan)
    assert "signals_seen_at" in str(order)


def test_top_and_one_signal_with_its_cluster(api: str, db: psycopg.Connection[Any]) -> None:
    lead, twin = add(db, 2, title="Zero-day in router", score_breakdown=json.dumps(
        {"topics": {"security": {"keywords": ["zero-day"], "points": 2}}, "score": 20}))
    other = add(db, 1, source="beta", title="Same zero-day")[0]
    db.execute("UPDATE signals SET cluster_id = %s WHERE id IN (%s, %s)", (lead, twin, other))
    alone = add(db, 1, title="Unrelated", score=1.0)[0]

    top = get(api, "/signals/top").json()["items"]
    assert [s["id"] for s in top] == [twin, alone]  # one per story, best first
    assert top[0]["published_at"] == "2026-11-20T01:00:00+00:00"
    assert len(utc_times(top)) == 6  # published, first and last seen of each
    assert top[0]["cluster_id"] == lead and top[0]["cluster_size"] == 3
    assert top[0]["cluster_sources"] == ["alpha", "beta"]
    listed = get(api, "/signals", cluster=lead).json()["items"]
    assert [s["id"] for s in listed] == [twin, other, lead]
    assert listed[1]["published_at"] == "2026-11-20T00:00:00+00:00"
    assert len(utc_times(listed)) == 9

    one = get(api, f"/signals/{lead}").json()
    assert one["score_breakdown"]["topics"]["security"]["keywords"] == ["zero-day"]
    assert one["fetched_at"] == "2026-11-20T00:00:00+00:00"
    assert len(utc_times(one)) == 4 + 2 * 3  # its own with fetched_at, its siblings'
    assert {s["id"] for s in one["siblings"]} == {twin, other}
    assert one["cluster_size"] == 3 and one["cluster_sources"] == ["alpha", "beta"]
    assert get(api, f"/signals/{alone}").json()["siblings"] == []
    missing = get(api, "/signals/987654321")
    assert missing.status_code == 404 and missing.json() == {"detail": "no signal 987654321"}


# -- curator input -------------------------------------------------------------------------


def post(base: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{base}/signals", json=body, headers=W, timeout=30)


def test_nan_or_infinity_in_a_body_is_a_422_not_a_500(api: str) -> None:
    # The 422 echoed the value back, and NaN has no JSON: the answer itself failed (500).
    for body, where in ((b'{"title": NaN}', None), (b'{"source": -Infinity}', "source"),
                        (b'{"url": "https://e.org/x", "title": "x", "published_at": 1e400}',
                         "published_at")):
        response = requests.post(f"{api}/signals", data=body, timeout=30,
                                 headers={**W, "Content-Type": "application/json"})
        assert response.status_code == 422, (body, response.text)
        if where:
            assert ["body", where] in loc_of(response), response.text


def test_post_signal_goes_through_the_pipeline(api: str, db: psycopg.Connection[Any]) -> None:
    body = {"source": "alpha", "url": "https://news.example.com/story?id=7&utm_source=x",
            "title": "  New   ransomware\tstrain  ", "text": "Details about CVE-2026-1.",
            "published_at": datetime.now(UTC).isoformat(), "tags": ["a", "a", "b"]}
    created = post(api, body)
    assert created.status_code == 201, created.text
    first = created.json()
    assert first["created"] is True and first["score"] > 0
    row = db.execute("SELECT title, canonical_url, tags, kind, score_breakdown, seen_count "
                     "FROM signals WHERE id = %s", (first["id"],)).fetchone()
    assert row is not None
    title, canonical, tags, kind, breakdown, seen = row
    assert title == "New ransomware strain"  # cleaned like a crawled title
    assert canonical == "https://news.example.com/story?id=7"  # tracking parameter gone
    assert tags == ["a", "b"] and kind == "curated" and seen == 1
    assert breakdown["topics"]["security"]["keywords"] == ["cve", "ransomware"]
    assert breakdown["source_weight"] == 2.0  # alpha's weight from the sources file
    # The same story again (another tracking parameter, http): the existing id, unchanged.
    again = post(api, {**body, "url": "http://news.example.com/story?utm_medium=y&id=7"})
    assert again.status_code == 200
    assert again.json() == {**first, "created": False}
    assert db.execute("SELECT count(*), max(seen_count) FROM signals").fetchone() == (1, 1)
    assert get(api, f"/signals/{first['id']}").json()["title"] == "New ransomware strain"


def test_a_post_while_the_sources_file_is_broken_is_refused_not_scored_zero(
        api: str, sources: Path, db: psycopg.Connection[Any]) -> None:
    # Scored against no topics, it was stored with a score of 0 and a 201.
    good = sources.read_text()
    sources.write_text(good + "\n[[sources]]\nname = 'x'\n")  # no kind: unreadable
    try:
        refused = post(api, {"url": "https://example.org/ransomware", "title": "Ransomware"})
    finally:
        sources.write_text(good)
    assert refused.status_code == 503
    assert refused.json()["detail"].startswith("signals cannot be scored: ")
    assert db.execute("SELECT count(*) FROM signals").fetchone() == (0,)
    assert post(api, {"url": "https://example.org/ransomware",
                      "title": "Ransomware"}).status_code == 201


def test_the_same_post_at_once_is_one_signal_seen_once(
        api: str, db: psycopg.Connection[Any]) -> None:
    # 15 at once gave one 201 and fourteen 200s, but seen_count 15: each found the key
    # missing before any had stored it.
    body = {"url": "https://race.example/r3", "title": "Raced"}
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(r.status_code for r in pool.map(lambda _: post(api, body), range(15)))
    assert statuses == [200] * 14 + [201]
    assert db.execute("SELECT count(*), max(seen_count) FROM signals").fetchone() == (1, 1)


@pytest.mark.parametrize(("body", "field", "reason"), [
    ({"url": "ftp://example.org/file", "title": "x"}, "url", "not_http_url"),
    ({"url": "https:///nohost", "title": "x"}, "url", "url_without_host"),
    ({"url": "https://example.org/a", "title": " \t ", "text": "\x00"}, "title",
     "empty_title_and_text"),
    ({"title": "no link, no id"}, "url", "missing_url_and_id"),
])
def test_post_signal_rejected_with_the_pipeline_reason(
        api: str, db: psycopg.Connection[Any], body: dict[str, Any], field: str,
        reason: str) -> None:
    response = post(api, body)
    assert response.status_code == 422
    assert response.json()["detail"] == [{"loc": ["body", field], "msg": reason,
                                          "type": "invalid_signal"}]
    assert db.execute("SELECT count(*) FROM signals").fetchone() == (0,)
    # Kept for the operator like any rejected item.
    assert db.execute("SELECT source, field, reason FROM rejects").fetchall() == [
        ("curated", field, reason)]


def test_post_signal_malformed_body(api: str) -> None:
    response = post(api, {"url": "https://example.org/a", "published_at": "someday",
                          "source": "no spaces allowed"})
    assert {tuple(loc) for loc in loc_of(response)} == {("body", "published_at"),
                                                        ("body", "source")}


def test_post_bodies_too_large_or_with_lone_surrogates_are_4xx_not_500(api: str) -> None:
    # A lone surrogate broke the 422's echo of the input (a 500); a 50 MB text was held and
    # echoed back whole.
    raw = '{"url": "https://example.org/s1", "title": "a\\ud800b", "source": "a b"}'
    response = requests.post(f"{api}/signals", data=raw, timeout=30,
                             headers={**W, "Content-Type": "application/json"})
    assert response.status_code == 422
    long_text = post(api, {"url": "https://example.org/long", "text": "x" * 300_000})
    assert long_text.status_code == 422 and len(long_text.content) < 2_000
    huge = requests.post(f"{api}/signals", data=b"{" + b" " * 2_000_000 + b"}", timeout=30,
                         headers={**W, "Content-Type": "application/json"})
    assert huge.status_code == 413
    assert huge.json() == {"detail": "the request body is over 1,000,000 bytes"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(30):
            yield b" " * 100_000

    chunked = requests.post(f"{api}/signals", data=chunks(), timeout=30,
                            headers={**W, "Content-Type": "application/json"})
    assert chunked.status_code == 413


# -- sources, runs, briefs ------------------------------------------------------------------


def test_sources_and_runs(api: str, db: psycopg.Connection[Any]) -> None:
    db.execute("""INSERT INTO sources_state (source, last_attempt, last_success,
                  consecutive_failures, last_error) VALUES
                  ('alpha', now(), now() - interval '30 minutes', 0, NULL)""")
    db.execute("""INSERT INTO crawl_runs (id, spider, sources, started_at, finished_at,
                  finish_reason, scraped, stored) VALUES
                  (gen_random_uuid(), 'feed', '{alpha}', now() - interval '1 hour', now(),
                   'finished', 5, 4),
                  (gen_random_uuid(), 'feed', '{beta}', now(), now(), 'finished', 1, 1)""")
    add(db, 2)
    listed = {s["name"]: s for s in get(api, "/sources").json()["items"]}
    assert listed["alpha"]["state"] == "fresh" and listed["alpha"]["signals"] == 2
    assert listed["alpha"]["weight"] == 2.0
    assert listed["alpha"]["moved"] == {} and listed["beta"]["moved"] == {}
    # The latest run of alpha saw its listed URL redirect for good: /sources says where to.
    db.execute("""UPDATE crawl_runs SET stats = jsonb_build_object('harvest/by_source',
                  jsonb_build_object('alpha', jsonb_build_object('fetched', 1, 'entries', 5,
                  'moved', jsonb_build_object('http://127.0.0.1:9/a', 'http://127.0.0.1:9/b'))))
                  WHERE sources = '{alpha}'""")
    listed = {s["name"]: s for s in get(api, "/sources").json()["items"]}
    assert listed["alpha"]["moved"] == {"http://127.0.0.1:9/a": "http://127.0.0.1:9/b"}
    assert listed["beta"]["state"] == "off" and listed["beta"]["enabled"] is False
    assert len(utc_times(listed["alpha"])) == 3  # last success, last attempt, last signal
    runs = get(api, "/runs").json()["items"]
    assert [r["sources"] for r in runs] == [["beta"], ["alpha"]]
    assert len(utc_times(runs)) == 4  # started and finished
    only = get(api, "/runs", source="alpha").json()["items"]
    assert len(only) == 1 and only[0]["scraped"] == 5 and only[0]["stored"] == 4
    # A run that skipped its source looked like an empty successful one: each run says what
    # became of each of its sources, as `harvest stats` does.
    db.execute("""UPDATE crawl_runs SET stats = '{"harvest/by_source": {"beta":
                  {"skipped": "feed sources are switched off"}}}' WHERE sources = '{beta}'""")
    outcomes = [r["outcomes"] for r in get(api, "/runs").json()["items"]]
    assert outcomes == [{"beta": "skipped"}, {"alpha": "succeeded"}]

    db.execute("""INSERT INTO rejects (source, reason, field, url, raw) VALUES
                  ('alpha', 'missing_link_and_id', 'link', 'https://a.example/feed',
                   '{"title": "No link"}'),
                  ('beta', 'not_http_url', 'url', 'javascript:x', '{}')""")
    rejects = get(api, "/rejects").json()["items"]
    assert [(r["source"], r["reason"]) for r in rejects[:2]] == [
        ("beta", "not_http_url"), ("alpha", "missing_link_and_id")]
    assert len(utc_times(rejects)) == len(rejects)
    alpha = get(api, "/rejects", source="alpha", reason="missing_link_and_id").json()["items"]
    assert [(r["field"], r["url"], r["raw"]) for r in alpha] == [
        ("link", "https://a.example/feed", {"title": "No link"})]
    assert get(api, "/rejects", source="alpha", reason="nope").json() == {"items": []}


def test_briefs_current_or_204(api: str, db: psycopg.Connection[Any]) -> None:
    db.execute("DELETE FROM briefs")
    assert get(api, "/briefs/current").status_code == 204
    week = str(IsoWeek.of(datetime.now(UTC)))
    db.execute("""INSERT INTO briefs (week, markdown, html, signal_ids, params)
                  VALUES (%s, '# Weekly brief', '<h1>Weekly brief</h1>', '{1,2}',
                          '{"limit": 5}'), ('2026-W01', '# old', '<h1>old</h1>', '{}', '{}')
               """, (week,))
    current = get(api, "/briefs/current")
    assert current.status_code == 200
    assert current.json()["week"] == week and current.json()["signal_ids"] == [1, 2]
    assert len(utc_times(current.json())) == 1
    assert len(utc_times(get(api, "/briefs/2026-W01").json())) == 1
    assert get(api, "/briefs/current", format="markdown").text == "# Weekly brief"
    assert get(api, "/briefs/2026-W01", format="html").text == "<h1>old</h1>"
    assert get(api, "/briefs/2026-W02").status_code == 404
    db.execute("DELETE FROM briefs")


# -- crawl ------------------------------------------------------------------------------------


def test_crawl_without_a_reachable_node_is_503(api: str, db: psycopg.Connection[Any]) -> None:
    response = requests.post(f"{api}/crawl", json={"source": "alpha"}, headers=W, timeout=60)
    assert response.status_code == 503
    assert "no Scrapyd node can take it (Scrapyd at " in response.json()["detail"]
    assert "is not reachable" in response.json()["detail"]
    unknown = requests.post(f"{api}/crawl", json={"source": "nope"}, headers=W, timeout=30)
    assert unknown.status_code == 404


def test_crawl_schedules_on_a_real_scrapyd(db: psycopg.Connection[Any], home: Path,
                                           tmp_path: Path) -> None:
    root = tmp_path / "site"
    root.mkdir()
    (root / "robots.txt").write_text("User-agent: *\nAllow: /\n")
    (root / "slow.xml").write_text(rss(items("slow", 2)))
    with LocalSite(root) as site:
        site.set_delay("/slow.xml", 8.0)
        path = write_sources(tmp_path / "sources.toml", [
            {"name": "slow", "kind": "feed", "urls": [f"{site.url}/slow.xml"]}])
        port = free_port()
        node = Node(tmp_path / "scrapyd-home", port, {
            **CREDENTIALS, "SCRAPYD_HTTP_PORT": str(port), "HARVEST_SOURCES": str(path)})
        node.home.mkdir()
        node.start()
        try:
            env = {**CREDENTIALS, "HARVEST_SCRAPYD_URLS": node.url, "HARVEST_API_TOKENS": TOKEN}
            with serving(home, env, path) as base:
                # Five at once: each saw no job running and several were submitted.
                with ThreadPoolExecutor(5) as pool:
                    answers = list(pool.map(lambda _: requests.post(
                        f"{base}/crawl", json={"source": "slow"}, headers=W, timeout=60),
                        range(5)))
                codes = sorted(a.status_code for a in answers)
                assert codes == [202, 409, 409, 409, 409], [a.text for a in answers]
                assert len([j for j in node.job_ids() if j.startswith("slow.")]) == 1
                [first] = [a for a in answers if a.status_code == 202]
                accepted = first.json()
                assert accepted["node"] == node.url and accepted["source"] == "slow"
                assert accepted["job_id"] in node.job_ids()
                second = requests.post(f"{base}/crawl", json={"source": "slow"}, headers=W,
                                       timeout=60)
                assert second.status_code == 409, second.text
                assert accepted["job_id"] in second.json()["detail"]
        finally:
            node.stop()


def test_database_down_is_503_and_recovers(private_pg: tuple[Path, str], home: Path,
                                           sources: Path) -> None:
    pg_dir, url = private_pg
    with serving(home, {"HARVEST_DATABASE_URL": url}, sources) as base:
        assert get(base, "/signals", headers={}).json()["items"] == []
        embedded.stop(pg_dir, mode="fast")
        down = get(base, "/signals", headers={})
        assert down.status_code == 503
        assert down.json() == {"detail": "the database is unavailable; try again later"}
        embedded.start(pg_dir)
        assert get(base, "/signals", headers={}).status_code == 200
