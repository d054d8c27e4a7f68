"""``harvest notify`` against stand-in Slack, Telegram and webhook servers on 127.0.0.1:
each alert is delivered once per channel, retried after a 5xx, held back by a 429, given up
and reported after too many failures; ops alerts open once and resolve once."""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
import subprocess
import time
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg.types.json import Jsonb

from harvester.services import alerts
from harvester.services.alerts import messages
from harvester.services.alerts.config import AlertsConfig
from harvester.services.localsite import LocalSite
from tests.apiserver import ApiRequest, ApiServer, Reply
from tests.conftest import free_port, harvest, wait_for, write_sources
from tests.feeds import items, rfc822, rss
from tests.test_story_clusters import OTHER, STORY

SLACK_PATH = "/services/T000/B000/s3cr3tSlackPath"
TOKEN = "123456:S3cretBotTokenXYZ"
WEBHOOK_SECRET = "hmac-s3cret-value"
FAST = ("-s", "AUTOTHROTTLE_ENABLED=False", "-s", "RETRY_TIMES=0")
NO_CHANNELS = {"HARVEST_SLACK_WEBHOOK_URL": "", "HARVEST_TELEGRAM_BOT_TOKEN": "",
               "HARVEST_TELEGRAM_CHAT_ID": "", "HARVEST_WEBHOOK_URL": "",
               "HARVEST_WEBHOOK_SECRET": ""}
BREAKDOWN = {"topics": {"security": {"keywords": ["cve", "ransomware"], "points": 6.0}},
             "points": 6.0, "relevance": 0.78, "age_hours": 2.0, "half_life_hours": 24,
             "freshness": 0.95, "source_weight": 1.2, "score": 0}


def notify(*args: str, home: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``harvest notify ARGS`` in a subprocess, the way an operator (or cron) runs it, with
    no channel configured unless ``env`` sets one."""
    return harvest("notify", *args, home=home, env={**NO_CHANNELS, **env})


def add_signal(db: psycopg.Connection[Any], title: str, score: float,
               source: str = "news") -> int:
    url = f"https://news.example.org/{abs(hash(title))}"
    row = db.execute(
        "INSERT INTO signals (key, source, kind, url, title, fetched_at, published_at, score,"
        " score_breakdown) VALUES (%s, %s, 'feed', %s, %s, now(), now(), %s, %s) RETURNING id",
        (url, source, url, title, score, Jsonb({**BREAKDOWN, "score": score}))).fetchone()
    assert row is not None
    return int(row[0])


def statuses(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute("SELECT kind, channel, status, attempts FROM notifications "
                      "ORDER BY id").fetchall()


def ok_telegram(request: ApiRequest) -> Reply:
    return Reply.json({"ok": True, "result": {"message_id": 1}})


def channels_env(api: ApiServer, webhook: bool = True) -> dict[str, str]:
    env = {"HARVEST_SLACK_WEBHOOK_URL": api.url + SLACK_PATH,
           "HARVEST_TELEGRAM_BOT_TOKEN": TOKEN, "HARVEST_TELEGRAM_CHAT_ID": "-1001",
           "HARVEST_TELEGRAM_API_BASE": api.url}
    if webhook:
        env |= {"HARVEST_WEBHOOK_URL": api.url + "/hook", "HARVEST_WEBHOOK_SECRET":
                WEBHOOK_SECRET}
    return env


def assert_no_secrets(*results: subprocess.CompletedProcess[str]) -> None:
    for result in results:
        for secret in (SLACK_PATH, TOKEN, WEBHOOK_SECRET):
            assert secret not in result.stdout + result.stderr


def test_each_signal_is_announced_once_per_channel_highest_first(
    db: psycopg.Connection[Any], home: Path, api: ApiServer
) -> None:
    api.add(SLACK_PATH, lambda r: Reply.text("ok"))
    api.add(f"/bot{TOKEN}/sendMessage", ok_telegram)
    api.add("/hook", lambda r: Reply.json({}))
    # A long title: chat messages cut it, the webhook had it cut at 300 characters too.
    title = "Ransomware hits <Acme> & co <!channel> " + "and all of its suppliers " * 20
    top = add_signal(db, title, 95)
    add_signal(db, "CVE-2026-1 in a router", 85)
    add_signal(db, "Patch Tuesday roundup", 81)
    add_signal(db, "Cat pictures", 40)
    env = channels_env(api)

    first = notify("--threshold", "80", "--limit", "2", "--no-ops", home=home, env=env)
    assert first.returncode == 0, first.stderr
    slack = api.hits(SLACK_PATH)
    assert len(slack) == 2 and len(api.hits("/hook")) == 2
    assert len(api.hits(f"/bot{TOKEN}/sendMessage")) == 2
    body = json.loads(slack[0].body)
    section = body["blocks"][0]["text"]["text"]
    assert "Ransomware hits &lt;Acme&gt; &amp; co" in section
    assert len(section.split("|", 1)[1].split(">*")[0]) == 300, "the title cut, with '…'"
    # The fallback text (what notifications show) too: a raw <!channel> pinged everyone.
    assert "&lt;!channel&gt;" in body["text"] and "<!channel>" not in body["text"]
    assert "security (cve, ransomware; 6 pts)" in body["text"]
    assert "score 95" in body["text"] and "https://news.example.org/" in body["text"]
    assert "CVE-2026-1" in json.loads(slack[1].body)["text"], "highest score first"
    assert slack[1].at - slack[0].at >= 0.9, "Slack gets at most one message a second"

    tg = json.loads(api.hits(f"/bot{TOKEN}/sendMessage")[0].body)
    assert tg["chat_id"] == "-1001" and tg["parse_mode"] == "HTML"
    assert "Ransomware hits &lt;Acme&gt; &amp; co" in tg["text"]

    hook = api.hits("/hook")[0]
    signature = hmac.new(WEBHOOK_SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hook.headers["x-harvest-signature"] == f"sha256={signature}"
    data = json.loads(hook.body)
    assert data["type"] == "signal" and data["signal"]["id"] == top
    assert data["signal"]["title"] == title
    assert data["score"] == 95 and data["breakdown"]["topics"]["security"]["points"] == 6.0
    assert data["url"].startswith("https://news.example.org/")

    second = notify("--threshold", "80", "--limit", "2", "--no-ops", home=home, env=env)
    assert second.returncode == 0, second.stderr
    assert len(api.hits(SLACK_PATH)) == 3, "only the third signal is new"
    assert "Patch Tuesday" in json.loads(api.hits(SLACK_PATH)[2].body)["text"]

    third = notify("--threshold", "80", "--limit", "2", "--no-ops", home=home, env=env)
    assert third.returncode == 0, third.stderr
    assert len(api.requests) == 9, "rerunning sends nothing new"
    assert "0 messages sent" in third.stdout
    assert {s for (_, _, s, _) in statuses(db)} == {"sent"} and len(statuses(db)) == 9
    assert_no_secrets(first, second, third)


def test_one_alert_a_story_however_many_sources_carry_it(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, api: ApiServer, tmp_path: Path
) -> None:
    # Ten feeds carrying one story made ten alerts on every channel: the best copy now
    # stands for the story, naming the other sources, and a copy that comes later adds none.
    api.add(SLACK_PATH, lambda r: Reply.text("ok"))
    api.add(f"/bot{TOKEN}/sendMessage", ok_telegram)
    api.add("/hook", lambda r: Reply.json({}))
    copy = {"title": "Hospital network hit by ransomware", "description": STORY,
            "date": rfc822(1)}
    (site.root / "a.xml").write_text(rss([
        {**copy, "link": "https://a.example/1"},
        {"title": "Ransomware and copper", "link": "https://a.example/2",
         "description": OTHER, "date": rfc822(2)}]))
    (site.root / "b.xml").write_text(rss([{**copy, "link": "https://b.example/1"}]))
    (site.root / "c.xml").write_text(rss([]))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "wire-a", "kind": "feed", "urls": [f"{site.url}/a.xml"]},
        {"name": "wire-b", "kind": "feed", "urls": [f"{site.url}/b.xml"], "weight": 2.0},
        {"name": "wire-c", "kind": "feed", "urls": [f"{site.url}/c.xml"], "weight": 3.0}],
        {"security": {"keywords": ["ransomware"], "weight": 2.0}})
    crawl = harvest("--sources", str(sources), "crawl", "--all", *FAST, home=home)
    assert crawl.returncode == 0, crawl.stdout + crawl.stderr
    env = channels_env(api)
    first = harvest("--sources", str(sources), "notify", "--threshold", "1", "--no-ops",
                    home=home, env={**NO_CHANNELS, **env})
    assert first.returncode == 0, first.stdout + first.stderr
    hooks = [json.loads(hit.body) for hit in api.hits("/hook")]
    assert [(h["signal"]["source"], h["signal"]["also_from"]) for h in hooks] == [
        ("wire-b", ["wire-a"]), ("wire-a", [])]  # the heavier source's copy, highest first
    assert len(api.hits(SLACK_PATH)) == len(api.hits(f"/bot{TOKEN}/sendMessage")) == 2
    assert "wire-b (also wire-a) · score" in json.loads(api.hits(SLACK_PATH)[0].body)["text"]
    tg = json.loads(api.hits(f"/bot{TOKEN}/sendMessage")[0].body)["text"]
    assert "wire-b (also wire-a) · score" in tg

    (site.root / "c.xml").write_text(rss([{**copy, "link": "https://c.example/1"}]))
    assert harvest("--sources", str(sources), "crawl", "wire-c", *FAST,
                   home=home).returncode == 0
    clusters = db.execute("SELECT count(DISTINCT cluster_id) FROM signals "
                          "WHERE title = %s", (copy["title"],)).fetchone()
    assert clusters == (1,), "the third copy joined the story"
    again = harvest("--sources", str(sources), "notify", "--threshold", "1", "--no-ops",
                    home=home, env={**NO_CHANNELS, **env})
    assert again.returncode == 0 and "0 messages sent" in again.stdout, again.stdout
    assert len(api.requests) == 6
    assert db.execute("SELECT count(*) FROM notifications").fetchone() == (6,)

    # The announced copy archived (its source stopped listing it): the story was announced
    # again through a copy that is left.
    db.execute("UPDATE signals SET first_seen = now() - interval '61 days', "
               "last_seen = now() - interval '60 days' WHERE source = 'wire-b'")
    archive = harvest("archive", "--older-than", "45d", "--dir", str(tmp_path / "a"),
                      home=home)
    assert archive.returncode == 0, archive.stdout + archive.stderr
    assert db.execute("SELECT count(*) FROM signals WHERE source = 'wire-b'").fetchone() == (0,)
    after = harvest("--sources", str(sources), "notify", "--threshold", "1", "--no-ops",
                    home=home, env={**NO_CHANNELS, **env})
    assert after.returncode == 0 and "0 messages sent" in after.stdout, after.stdout
    assert len(api.requests) == 6
    # Every copy archived, then its source lists the announced URL anew: a new signal of a
    # story of its own, and no new alert for it.
    db.execute("UPDATE signals SET first_seen = now() - interval '61 days', "
               "last_seen = now() - interval '60 days' WHERE title = %s", (copy["title"],))
    assert harvest("archive", "--older-than", "45d", "--dir", str(tmp_path / "a"),
                   home=home).returncode == 0
    (site.root / "b.xml").write_text(rss([{**copy, "link": "https://b.example/1",
                                           "description": STORY + " Updated."}]))
    assert harvest("--sources", str(sources), "crawl", "wire-b", *FAST,
                   home=home).returncode == 0
    assert db.execute("SELECT count(*) FROM signals WHERE source = 'wire-b'").fetchone() == (1,)
    back = harvest("--sources", str(sources), "notify", "--threshold", "1", "--no-ops",
                   home=home, env={**NO_CHANNELS, **env})
    assert back.returncode == 0 and "0 messages sent" in back.stdout, back.stdout


def test_channel_answering_500_then_200_gets_the_message_once(
    db: psycopg.Connection[Any], home: Path, api: ApiServer
) -> None:
    answers = iter([500])

    def hook(request: ApiRequest) -> Reply:
        return Reply.text("oops", status=next(answers, 200))

    api.add("/hook", hook)
    add_signal(db, "Zero-day in the wild", 90)
    env = {"HARVEST_WEBHOOK_URL": api.url + "/hook"}
    result = notify("--no-ops", home=home, env=env)
    assert result.returncode == 0, result.stderr
    hits = api.hits("/hook")
    assert len(hits) == 2 and hits[0].body == hits[1].body
    assert hits[1].at - hits[0].at >= 0.9, "retried after a 1 s backoff"
    assert statuses(db) == [("signal", "webhook", "sent", 2)]
    again = notify("--no-ops", home=home, env=env)
    assert again.returncode == 0 and len(api.hits("/hook")) == 2


def test_429_retry_after_is_waited_out(db: psycopg.Connection[Any], home: Path,
                                       api: ApiServer) -> None:
    slack_answers = iter([Reply.text("rate_limited", status=429,
                                     headers={"Retry-After": "2"})])
    tg_answers = iter([Reply.json({"ok": False, "error_code": 429,
                                   "description": "Too Many Requests: retry after 2",
                                   "parameters": {"retry_after": 2}}, status=429)])
    api.add(SLACK_PATH, lambda r: next(slack_answers, Reply.text("ok")))
    api.add(f"/bot{TOKEN}/sendMessage", lambda r: next(tg_answers, ok_telegram(r)))
    add_signal(db, "Breach at a bank", 99)
    result = notify("--no-ops", home=home, env=channels_env(api, webhook=False))
    assert result.returncode == 0, result.stderr
    for path in (SLACK_PATH, f"/bot{TOKEN}/sendMessage"):
        hits = api.hits(path)
        assert len(hits) == 2, path
        assert hits[1].at - hits[0].at >= 1.9, f"{path}: Retry-After 2 s honoured"
    assert sorted(statuses(db)) == [("signal", "slack", "sent", 2),
                                     ("signal", "telegram", "sent", 2)]
    assert_no_secrets(result)


def test_a_webhook_that_redirects_is_given_up_at_once(
    db: psycopg.Connection[Any], home: Path, api: ApiServer
) -> None:
    # A 302 was retried like a 5xx, five times; the body is not re-sent elsewhere.
    api.add("/hook", lambda r: Reply(302, b"", {"Location": "https://elsewhere.example/h"}))
    add_signal(db, "Supply-chain attack", 88)
    result = notify("--no-ops", home=home, env={"HARVEST_WEBHOOK_URL": api.url + "/hook"})
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "on webhook after 1 attempt: HTTP 302: redirects to https://elsewhere.example/h; "
        "check the URL"), result.stderr
    assert len(api.hits("/hook")) == 1


def test_a_secret_url_written_percent_encoded_is_redacted(
    db: psycopg.Connection[Any], home: Path, api: ApiServer
) -> None:
    # The webhook URL came back percent-encoded (a login redirect's ?next=): only its plain
    # form was redacted, so the secret path reached stderr and the database.
    secret = "/hook/S3cretWebhookPath"
    encoded = quote(api.url + secret, safe="")
    api.add(secret, lambda r: Reply(302, b"", {"Location": f"/login?next={encoded}"}))
    add_signal(db, "Supply-chain attack", 88)
    result = notify("--no-ops", home=home, env={"HARVEST_WEBHOOK_URL": api.url + secret})
    assert result.returncode == 1
    assert "redirects to /login?next=***" in result.stderr, result.stderr
    errors = [e for (e,) in db.execute("SELECT last_error FROM notifications").fetchall()]
    assert "S3cretWebhookPath" not in result.stderr + "".join(errors)


@pytest.mark.parametrize("wait", ["99999999999999999", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_retry_after_of_more_than_a_day_is_given_up_not_a_crash(
    db: psycopg.Connection[Any], home: Path, api: ApiServer, wait: str
) -> None:
    # The first overflowed PostgreSQL's interval (a traceback on every run); the second
    # left the alert pending until year 9999.
    api.add("/hook", lambda r: Reply.text("slow down", status=429,
                                          headers={"Retry-After": wait}))
    add_signal(db, "Supply-chain attack", 88)
    env = {"HARVEST_WEBHOOK_URL": api.url + "/hook"}
    result = notify("--no-ops", home=home, env=env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("given up: ") and line.endswith("more than a day"), line
    assert sorted(statuses(db)) == [("signal", "webhook", "given_up", 1)]
    again = notify("--no-ops", home=home, env=env)
    assert again.returncode == 0 and len(api.hits("/hook")) == 1


def test_failures_are_given_up_and_reported_without_secrets(
    db: psycopg.Connection[Any], home: Path, api: ApiServer
) -> None:
    api.add(SLACK_PATH, lambda r: Reply.text("no_service", status=404))  # revoked webhook
    api.add("/hook", lambda r: Reply.text(  # a proxy's error page: its title is the news
        "<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head>"
        "<body><h1>Down</h1><p>Try again.</p></body></html>", status=503,
        content_type="text/html; charset=utf-8"))
    add_signal(db, "Supply-chain attack", 88)
    env = {"HARVEST_SLACK_WEBHOOK_URL": api.url + SLACK_PATH,
           "HARVEST_WEBHOOK_URL": api.url + "/hook",
           # Nothing listens on port 9: the connection error names the URL with the token.
           "HARVEST_TELEGRAM_BOT_TOKEN": TOKEN, "HARVEST_TELEGRAM_CHAT_ID": "7",
           "HARVEST_TELEGRAM_API_BASE": "http://127.0.0.1:9",
           "HARVEST_NOTIFY_MAX_ATTEMPTS": "3", "HARVEST_NOTIFY_BACKOFF_MAX": "1"}
    result = notify("--no-ops", home=home, env=env)
    assert result.returncode == 1
    given_up = [line for line in result.stderr.splitlines() if line.startswith("given up")]
    assert len(given_up) == 3, result.stderr
    # One line each on stderr: the log's copy of the same news stays out of it.
    assert len(result.stderr.strip().splitlines()) == 3, result.stderr
    assert any("on slack after 1 attempt: HTTP 404: no_service" in g for g in given_up)
    assert any(g.endswith("on webhook after 3 attempts: HTTP 503: 503 Service Unavailable")
               for g in given_up), given_up
    assert all("Supply-chain attack" in g for g in given_up)
    assert len(api.hits(SLACK_PATH)) == 1, "a 404 is not retried"
    assert len(api.hits("/hook")) == 3
    assert sorted(statuses(db)) == [("signal", "slack", "given_up", 1),
                                     ("signal", "telegram", "given_up", 3),
                                     ("signal", "webhook", "given_up", 3)]
    errors = [e for (e,) in db.execute("SELECT last_error FROM notifications").fetchall()]
    assert all(TOKEN not in e and SLACK_PATH not in e for e in errors)
    assert any("ConnectionError" in e for e in errors)
    again = notify("--no-ops", home=home, env=env)
    assert again.returncode == 0 and len(api.hits("/hook")) == 3, "given up means given up"
    every = AlertsConfig(webhook_url=api.url + "/hook", slack_webhook_url=api.url + SLACK_PATH,
                         telegram_bot_token=TOKEN, telegram_chat_id="7")
    health = alerts.status(db, every)
    assert health["channels"] == ["slack", "telegram", "webhook"] and health["pending"] == {}
    assert health["given_up"] == {"slack": 1, "telegram": 1, "webhook": 1}
    assert "/hook" not in json.dumps(health) and SLACK_PATH not in json.dumps(health)
    assert_no_secrets(result, again)
    # Slack and Telegram taken out of the configuration: their given-up messages no longer
    # say a configured channel fails.
    health = alerts.status(db, AlertsConfig(webhook_url=api.url + "/hook"))
    assert health["given_up"] == {"webhook": 1} and health["unconfigured"] == {}

    # The webhook works again and delivers a later alert: its given-up one no longer keeps
    # /health degraded and the alert rule firing (it counted every given-up row ever).
    api.add("/hook", lambda r: Reply.text("ok"))
    add_signal(db, "Another attack", 90)
    delivered = notify("--no-ops", home=home, env={"HARVEST_WEBHOOK_URL": api.url + "/hook"})
    assert delivered.returncode == 0, delivered.stderr
    assert alerts.status(db, every)["given_up"] == {"slack": 1, "telegram": 1}


def test_messages_waiting_for_a_channel_taken_out_wait_without_alarming(
    db: psycopg.Connection[Any], home: Path, api: ApiServer
) -> None:
    # Their rows stayed "pending" for good: /health, the backlog gauge and its alert rule
    # reported a channel the operator had removed, and nothing said what became of them.
    api.add(SLACK_PATH, lambda r: Reply.text("busy", status=500))
    api.add("/hook", lambda r: Reply.text("ok"))
    add_signal(db, "Supply-chain attack", 88)
    both = {"HARVEST_SLACK_WEBHOOK_URL": api.url + SLACK_PATH,
            "HARVEST_WEBHOOK_URL": api.url + "/hook", "HARVEST_NOTIFY_MAX_WAIT": "0"}
    first = notify("--no-ops", home=home, env=both)
    assert first.returncode == 0, first.stderr
    assert sorted(statuses(db)) == [("signal", "slack", "failed", 1),
                                     ("signal", "webhook", "sent", 1)]
    webhook_only = {"HARVEST_WEBHOOK_URL": api.url + "/hook"}
    later = notify("--no-ops", home=home, env=webhook_only)
    assert later.returncode == 0, later.stderr
    assert ("1 message waits for slack, which is not configured now: sent when it is "
            "configured again") in later.stdout
    health = alerts.status(db, AlertsConfig(webhook_url=api.url + "/hook"))
    assert health["pending"] == {} and health["unconfigured"] == {"slack": 1}
    # Configured again, the channel gets it.
    api.add(SLACK_PATH, lambda r: Reply.text("ok"))
    db.execute("UPDATE notifications SET next_attempt_at = now()")
    back = notify("--no-ops", home=home, env=both)
    assert back.returncode == 0 and "sent to slack" in back.stdout, back.stdout
    assert sorted(statuses(db)) == [("signal", "slack", "sent", 2),
                                     ("signal", "webhook", "sent", 1)]


def test_dry_run_prints_and_records_nothing(db: psycopg.Connection[Any], home: Path,
                                            api: ApiServer, tmp_path: Path) -> None:
    add_signal(db, "Exploit kit returns", 91)
    db.execute("INSERT INTO crawl_runs (id, spider, sources, started_at, finished_at, "
                "finish_reason, errors) VALUES (gen_random_uuid(), 'feed', '{news}', now(), "
                "now(), 'shutdown', 0)")
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "news", "kind": "feed", "urls": ["http://127.0.0.1:9/feed.xml"]}])
    result = notify("--dry-run", home=home,
                    env={"HARVEST_WEBHOOK_URL": api.url + "/hook",
                         "HARVEST_SOURCES": str(sources)})
    assert result.returncode == 0, result.stderr
    assert "dry run: nothing recorded, nothing sent (webhook)" in result.stdout
    assert "Exploit kit returns" in result.stdout and "score 91" in result.stdout
    assert "ALERT: crawl of 'news' failed (finish reason shutdown" in result.stdout
    assert api.requests == []
    assert db.execute("SELECT (SELECT count(*) FROM notifications), "
                       "(SELECT count(*) FROM alerts)").fetchone() == (0, 0)


def test_without_a_channel_alerts_are_recorded_and_the_operator_told(
    db: psycopg.Connection[Any], home: Path
) -> None:
    add_signal(db, "Ransomware gang arrested", 90)
    add_signal(db, "New CVE scoring system", 80)
    result = notify("--no-ops", home=home, env={})
    assert result.returncode == 0, result.stderr
    assert ("no alert channel configured (set HARVEST_SLACK_WEBHOOK_URL, "
            "HARVEST_TELEGRAM_BOT_TOKEN and HARVEST_TELEGRAM_CHAT_ID, or HARVEST_WEBHOOK_URL):"
            " 2 alerts recorded, none sent") in result.stdout
    assert statuses(db) == [("signal", "none", "recorded", 0)] * 2
    again = notify("--no-ops", home=home, env={})
    assert "0 alerts recorded, none sent" in again.stdout


def test_failed_run_alert_opens_once_and_resolves_once(
    db: psycopg.Connection[Any], home: Path, api: ApiServer, tmp_path: Path
) -> None:
    healthy = {"ok": False}

    def feed(request: ApiRequest) -> Reply:
        if healthy["ok"]:
            return Reply.text(rss(items("h", 2)), content_type="application/rss+xml")
        return Reply.text("broken", status=500)

    api.add("/feed.xml", feed)
    api.add("/hook", lambda r: Reply.json({}))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "flaky", "kind": "feed", "urls": [f"{api.url}/feed.xml"]}])
    env = {"HARVEST_WEBHOOK_URL": api.url + "/hook", "HARVEST_SOURCES": str(sources)}

    def ops_messages() -> list[dict[str, Any]]:
        return [json.loads(r.body) for r in api.hits("/hook")]

    crawl = harvest("--sources", str(sources), "crawl", "flaky", *FAST, home=home)
    assert crawl.returncode == 1, crawl.stdout
    opened = notify(home=home, env=env)
    assert opened.returncode == 0, opened.stderr
    runs = db.execute("SELECT finish_reason, errors, stats -> 'harvest/by_source' "
                       "FROM crawl_runs").fetchall()
    assert "ops alert opened: crawl of 'flaky' failed" in opened.stdout, (crawl.stdout, runs)
    assert [(m["event"], m["alert"]["key"]) for m in ops_messages()] == [
        ("opened", "run_failed:flaky")]
    assert "HTTP 500" in ops_messages()[0]["text"]

    harvest("--sources", str(sources), "crawl", "flaky", *FAST, home=home)
    # A channel configured while the alert is open hears of it (it got only "RESOLVED",
    # for an alert it had never seen); the webhook is not told again.
    api.add(SLACK_PATH, lambda r: Reply.text("ok"))
    env["HARVEST_SLACK_WEBHOOK_URL"] = api.url + SLACK_PATH
    still = notify(home=home, env=env)
    assert still.returncode == 0 and len(ops_messages()) == 1, "an open alert is sent once"
    assert "ops alert opened" not in still.stdout  # not a new alert
    slack = [json.loads(r.body)["text"] for r in api.hits(SLACK_PATH)]
    assert len(slack) == 1 and slack[0].startswith("ALERT: crawl of 'flaky' failed"), slack

    healthy["ok"] = True
    crawl = harvest("--sources", str(sources), "crawl", "flaky", *FAST, home=home)
    assert crawl.returncode == 0, crawl.stdout
    resolved = notify("--threshold", "100", home=home, env=env)
    assert resolved.returncode == 0, resolved.stderr
    assert [(m["event"], m["alert"]["key"]) for m in ops_messages()] == [
        ("opened", "run_failed:flaky"), ("resolved", "run_failed:flaky")]
    assert json.loads(api.hits(SLACK_PATH)[-1].body)["text"].startswith("RESOLVED: crawls")
    notify("--threshold", "100", home=home, env=env)
    assert len(ops_messages()) == 2, "a resolved alert is announced once"
    rows = db.execute("SELECT key, resolved_at IS NOT NULL FROM alerts").fetchall()
    assert rows == [("run_failed:flaky", True)]


def test_reject_spike_opens_an_alert(db: psycopg.Connection[Any], home: Path,
                                     api: ApiServer, tmp_path: Path) -> None:
    # One good entry and three with no title nor text: 75 % rejected.
    entries = items("r", 1) + [{"link": f"https://news.example.org/bare/{i}"}
                               for i in range(3)]
    api.add("/feed.xml", lambda r: Reply.text(rss(entries),
                                              content_type="application/rss+xml"))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "messy", "kind": "feed", "urls": [f"{api.url}/feed.xml"]}])
    harvest("--sources", str(sources), "crawl", "messy", *FAST, home=home)
    result = notify("--threshold", "100", home=home, env={"HARVEST_SOURCES": str(sources)})
    assert result.returncode == 0, result.stderr
    assert ("ops alert opened: 'messy': 75 % of its items were rejected in its last run "
            "with items (3 of 4; limit 50 %)") in result.stdout
    # A run with no items (an empty feed, a 304) rejected 0 % of nothing: it resolved the
    # alert, which opened again with the next change of the feed.
    entries.clear()
    harvest("--sources", str(sources), "crawl", "messy", *FAST, home=home)
    quiet = notify("--threshold", "100", home=home, env={"HARVEST_SOURCES": str(sources)})
    assert "ops alert" not in quiet.stdout, quiet.stdout
    # A source no longer crawled is not said to recover.
    other = write_sources(tmp_path / "other.toml", [
        {"name": "other", "kind": "feed", "urls": [f"{api.url}/other.xml"]}])
    gone = notify("--threshold", "100", home=home, env={"HARVEST_SOURCES": str(other)})
    assert ("ops alert resolved: 'messy' is no longer crawled (not in the sources file, or "
            "switched off); the alert is closed unresolved") in " ".join(gone.stdout.split())
    back = notify("--threshold", "100", home=home, env={"HARVEST_SOURCES": str(sources)})
    assert "ops alert opened: 'messy': 75 %" in back.stdout
    relaxed = notify(home=home, env={"HARVEST_SOURCES": str(sources),
                                     "HARVEST_REJECT_SPIKE_PERCENT": "80"})
    assert "ops alert resolved: 'messy': rejections back under the limit" in relaxed.stdout


def test_items_spooled_in_an_outage_count_against_the_rejections(
        db: psycopg.Connection[Any], home: Path, api: ApiServer, tmp_path: Path) -> None:
    # Three good items spooled (the database away) and one rejected read as "100 % of its
    # items were rejected (1 of 1)": every outage paged the operator for a reject spike.
    entries = [*items("o", 3), {"link": "https://news.example.org/bare/0"}]
    api.add("/feed.xml", lambda r: Reply.text(rss(entries),
                                              content_type="application/rss+xml"))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "outage", "kind": "feed", "urls": [f"{api.url}/feed.xml"]}])
    away = {"HARVEST_DATABASE_URL": f"postgresql://harvest@127.0.0.1:{free_port()}/x"}
    crawl = harvest("--sources", str(sources), "crawl", "outage", *FAST, home=home, env=away)
    assert crawl.returncode == 0, crawl.stdout + crawl.stderr
    assert harvest("replay", home=home).returncode == 0
    result = notify("--threshold", "100", home=home, env={"HARVEST_SOURCES": str(sources)})
    assert result.returncode == 0, result.stderr
    assert db.execute("SELECT count(*) FROM signals").fetchone() == (3,)
    assert "reject" not in result.stdout, result.stdout


def test_a_source_that_moved_opens_an_alert_until_the_file_is_fixed(
        db: psycopg.Connection[Any], home: Path, api: ApiServer, tmp_path: Path) -> None:
    api.add("/old.xml", lambda r: Reply.text("", status=301, headers={"Location": "/new.xml"}))
    api.add("/new.xml", lambda r: Reply.text(rss(items("n", 1)),
                                             content_type="application/rss+xml"))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "relocated", "kind": "feed", "urls": [f"{api.url}/old.xml"]}])
    crawl = harvest("--sources", str(sources), "crawl", "relocated", *FAST, home=home)
    assert crawl.returncode == 0, crawl.stdout
    opened = notify("--threshold", "100", home=home, env={"HARVEST_SOURCES": str(sources)})
    assert opened.returncode == 0, opened.stderr
    assert (f"ops alert opened: 'relocated': a URL of the sources file redirects "
            f"permanently ({api.url}/old.xml → {api.url}/new.xml); put the new URL in the "
            "sources file") in " ".join(opened.stdout.split())

    fixed = write_sources(tmp_path / "s.toml", [
        {"name": "relocated", "kind": "feed", "urls": [f"{api.url}/new.xml"]}])
    harvest("--sources", str(fixed), "crawl", "relocated", *FAST, home=home)
    resolved = notify("--threshold", "100", home=home, env={"HARVEST_SOURCES": str(fixed)})
    assert ("ops alert resolved: 'relocated': its URLs answer without a permanent redirect"
            in resolved.stdout), resolved.stdout


def test_stale_source_alert(db: psycopg.Connection[Any], home: Path, api: ApiServer,
                            tmp_path: Path) -> None:
    api.add("/hook", lambda r: Reply.json({}))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "slow", "kind": "feed", "interval": "1h",
         "urls": ["http://127.0.0.1:9/feed.xml"]},
        {"name": "off", "kind": "feed", "interval": "1h", "enabled": False,
         "urls": ["http://127.0.0.1:9/feed.xml"]}])
    db.execute("INSERT INTO sources_state (source, last_attempt, last_success) VALUES "
                "('slow', now(), now() - interval '4 hours'), "
                "('off', now(), now() - interval '9 hours')")
    env = {"HARVEST_WEBHOOK_URL": api.url + "/hook", "HARVEST_SOURCES": str(sources)}

    lenient = notify(home=home, env={**env, "HARVEST_STALE_FACTOR": "5"})
    assert lenient.returncode == 0 and api.hits("/hook") == [], "4 h < 5 × 1 h"
    stale = notify(home=home, env=env)
    assert stale.returncode == 0, stale.stderr
    sent = [json.loads(r.body) for r in api.hits("/hook")]
    assert [m["alert"]["key"] for m in sent] == ["stale:slow"], "a switched-off source is fine"
    assert "'slow' has not been crawled successfully for 4 h (limit 3 × 1 h)" in (
        sent[0]["text"])

    db.execute("UPDATE sources_state SET last_success = now() WHERE source = 'slow'")
    fresh = notify(home=home, env=env)
    assert fresh.returncode == 0, fresh.stderr
    sent = [json.loads(r.body) for r in api.hits("/hook")]
    assert [(m["event"], m["alert"]["key"]) for m in sent] == [
        ("opened", "stale:slow"), ("resolved", "stale:slow")]


def test_bad_setting_is_one_sentence(home: Path) -> None:
    result = notify(home=home, env={"HARVEST_TELEGRAM_BOT_TOKEN": TOKEN})
    assert result.returncode == 2
    assert "set both HARVEST_TELEGRAM_BOT_TOKEN and HARVEST_TELEGRAM_CHAT_ID" in result.stderr
    assert "Traceback" not in result.stderr and TOKEN not in result.stderr
    # "inf" passed and failed in the socket's timeout (a traceback after the alerts were
    # recorded).
    result = notify(home=home, env={"HARVEST_NOTIFY_TIMEOUT": "inf"})
    assert result.returncode == 2
    assert "HARVEST_NOTIFY_TIMEOUT: Input should be less than or equal to 600" in result.stderr


@pytest.mark.parametrize("name", ["HARVEST_SLACK_WEBHOOK_URL", "HARVEST_WEBHOOK_URL"])
@pytest.mark.parametrize("value", ["hooks.slack.com/services/T0/B0/sekrit", "ftp://x/sekrit",
                                   "https://hooks slack.com/sekrit"])
def test_a_webhook_url_that_is_not_one_is_refused_at_once(name: str, value: str,
                                                          home: Path) -> None:
    # It was retried as a network failure, the first notify exiting 0 with nothing sent.
    for args in ((), ("--dry-run",)):
        result = notify(*args, home=home, env={name: value})
        assert result.returncode == 2
        assert result.stderr.strip() == (f"error: {name}: not an http(s) URL; copy the whole "
                                         "URL the service gave.")
        assert "sekrit" not in result.stdout + result.stderr


def test_a_signal_matching_hundreds_of_keywords_fits_a_telegram_message() -> None:
    # "why" named every matched keyword: 700 of them made a message past Telegram's 4,096
    # characters, refused as too long and given up after its first attempt.
    keywords = [f"vendor{i}" for i in range(700)]
    row = {"id": 1, "title": "Big advisory " + "x" * 400, "source": "adv",
           "url": "https://news.example.org/a", "score": 99.0,
           "score_breakdown": {"topics": {"adv": {"keywords": keywords, "points": 40}},
                               "age_hours": 1, "freshness": 0.97, "source_weight": 1}}
    payload = messages.signal_payload(row)
    assert len(messages.render_telegram(payload)) < 4096
    assert "vendor0, vendor1" in payload["why"] and "and 692 more" in payload["why"]
    assert payload["breakdown"]["topics"]["adv"]["keywords"] == keywords  # kept whole


def test_long_links_and_long_ops_texts_fit_the_chat_limits() -> None:
    # A 3,700-character query made a Slack section of 4,608 (Slack refuses past 3,000) and
    # a source with 20 moved URLs an ops text of 5,840 (Telegram refuses past 4,096): both
    # were given up as permanent failures.
    long_url = "https://news.example.org/a?" + "&".join(f"p{i}=" + "v" * 30 for i in range(120))
    row = {"id": 42, "title": "CVE ransomware exploit", "source": "adv", "url": long_url,
           "score": 99.0, "score_breakdown": {}}
    signal = messages.signal_payload(row)
    moved = "; ".join(f"https://old.example.org/{'p' * 230}/{i} → https://new.example.org/{i}"
                      for i in range(20))
    ops = messages.ops_payload("moved:adv", "opened", f"'adv': URLs redirect ({moved})", {},
                               datetime.now(UTC), None)
    for payload in (signal, ops):
        assert len(messages.render_slack(payload)) < 3000
        assert len(messages.render_telegram(payload)) < 4096
    assert "`harvest explain 42` shows it" in messages.render_slack(signal)
    assert long_url not in messages.render_telegram(signal)
    assert messages.render_webhook(signal, 1)["url"] == long_url  # the JSON keeps it whole
    assert messages.render_webhook(ops, 2)["text"] == ops["text"]

    # Cut before escaping, a text of moved URLs whose queries hold '&' made a section of
    # 3,787 characters (each '&' sent as '&amp;'): Slack refuses it, and it was given up.
    moved = "; ".join(f"https://old.example.org/{i}?{'&'.join(['a=&b'] * 12)} → "
                      f"https://new.example.org/{i}" for i in range(25))
    ampersands = messages.ops_payload("moved:adv", "opened", f"'adv': URLs redirect ({moved})",
                                      {}, datetime.now(UTC), None)
    slack = messages.render_slack(ampersands)
    assert len(slack) < 3000, len(slack)
    assert slack.startswith("ALERT: 'adv': URLs redirect (https://old.example.org/0?a=&amp;")
    cut = slack.split("… (")[0].removeprefix("ALERT: ")
    assert 1995 <= len(cut) <= 2000
    assert ampersands["text"].startswith(html.unescape(cut)), "never half an escape"
    assert len(messages.render_telegram(ampersands)) < 4096


def test_a_score_shown_as_the_threshold_meets_it(
    db: psycopg.Connection[Any], home: Path, api: ApiServer
) -> None:
    # The score column is float4: 15.74 is stored as 15.7399997..., which a float8
    # threshold of 15.74 left out of `top --min-score 15.74`, the API and alerts.
    add_signal(db, "Wiper malware spreads", 15.74)
    add_signal(db, "Below the line", 15.73)
    top = json.loads(harvest("top", "--min-score", "15.74", "--json", home=home).stdout)
    assert [row["title"] for row in top] == ["Wiper malware spreads"]
    result = notify("--dry-run", "--no-ops", "--threshold", "15.74", home=home,
                    env={"HARVEST_WEBHOOK_URL": api.url + "/hook"})
    assert result.returncode == 0, result.stderr
    assert "Wiper malware spreads" in result.stdout and "Below the line" not in result.stdout


def test_backoff_counts_from_the_failure_and_a_telegram_wait_of_0_backs_off(
    db: psycopg.Connection[Any], home: Path, api: ApiServer
) -> None:
    # The next attempt was set from when the run claimed the row, before a post that
    # waited for its answer: a slow receiver got every retry back to back. Telegram's
    # "retry_after": 0 was taken as it was: a retry a second, until given up.
    def slow(request: ApiRequest) -> Reply:
        time.sleep(1.0)
        return Reply.text("late", status=500)
    api.add("/hook", slow)
    api.add(f"/bot{TOKEN}/sendMessage", lambda r: Reply.json(
        {"ok": False, "error_code": 429, "parameters": {"retry_after": 0}}, status=429))
    add_signal(db, "Breach at a bank", 99)
    # A token from a mounted secret file ends in a newline: it went into the path as %0A.
    env = {**channels_env(api), "HARVEST_SLACK_WEBHOOK_URL": "",
           "HARVEST_TELEGRAM_BOT_TOKEN": TOKEN + "\n", "HARVEST_WEBHOOK_URL": f" {api.url}/hook\n",
           "HARVEST_NOTIFY_MAX_ATTEMPTS": "3", "HARVEST_NOTIFY_BACKOFF_MAX": "2"}
    result = notify("--no-ops", home=home, env=env)
    assert result.returncode == 1, result.stderr
    for path in ("/hook", f"/bot{TOKEN}/sendMessage"):
        hits = [h.at for h in api.hits(path)]
        assert len(hits) == 3, path
        gaps = [later - earlier for earlier, later in pairwise(hits)]
        answer = 1 if path == "/hook" else 0  # the webhook took 1 s to answer each post
        assert gaps[0] >= answer + 0.9 and gaps[1] >= answer + 1.9, (path, gaps)


def test_a_channel_that_keeps_failing_is_not_hammered_and_its_alerts_wait(
    db: psycopg.Connection[Any], home: Path, api: ApiServer
) -> None:
    # Every retry of every queued message was spent in one run (1, 2, 4, 8 s backoffs were
    # due by the time the loop came back to each): a channel down for a minute lost all of
    # them, 10 messages making 50 posts. Now a failing channel is sent nothing else in the
    # run, only its failed message once more, and the backoffs reach across runs.
    up = {"ok": False}
    api.add("/hook", lambda r: Reply.json({}) if up["ok"] else Reply.text("down", status=500))
    for n in range(3):
        add_signal(db, f"Breach {n}", 90 + n)
    env = {"HARVEST_WEBHOOK_URL": api.url + "/hook"}
    down = notify("--no-ops", home=home, env=env)
    assert down.returncode == 0, down.stderr
    hits = api.hits("/hook")
    assert len(hits) == 2 and hits[0].body == hits[1].body, "one message, retried once"
    assert "webhook failed, so its 2 other messages wait for the next `harvest notify`" in (
        down.stdout), down.stdout
    assert sorted(statuses(db)) == [("signal", "webhook", "failed", 2),
                                     ("signal", "webhook", "pending", 0),
                                     ("signal", "webhook", "pending", 0)]
    due = db.execute("SELECT extract(epoch FROM next_attempt_at - clock_timestamp()) "
                     "FROM notifications WHERE status = 'failed'").fetchone()
    assert due is not None and 5 < due[0] <= 10, "the third attempt waits 10 s"

    up["ok"] = True  # the next run (cron's, minutes later: not waiting for the retry)
    back = notify("--no-ops", home=home, env={**env, "HARVEST_NOTIFY_MAX_WAIT": "0"})
    assert back.returncode == 0, back.stderr
    assert "2 messages sent (webhook 2)" in back.stdout, back.stdout
    assert "retries left for the next `harvest notify`: webhook in" in back.stdout
    assert sorted(statuses(db)) == [("signal", "webhook", "failed", 2),
                                     ("signal", "webhook", "sent", 1),
                                     ("signal", "webhook", "sent", 1)]


def test_a_receiver_slower_than_the_timeout_is_not_retried_in_the_same_run(
    db: psycopg.Connection[Any], home: Path, api: ApiServer
) -> None:
    # It got the message five times, and harvest said it had given up: a timeout after the
    # post may have delivered it. Each attempt carries the same delivery id for the
    # receiver to drop repeats, and the run does not post it again.
    def slow(request: ApiRequest) -> Reply:
        time.sleep(1.5)
        return Reply.json({})
    api.add("/hook", slow)
    signal = add_signal(db, "Breach at a bank", 99)
    env = {"HARVEST_WEBHOOK_URL": api.url + "/hook", "HARVEST_NOTIFY_TIMEOUT": "1",
           "HARVEST_NOTIFY_MAX_ATTEMPTS": "2"}
    first = notify("--no-ops", home=home, env=env)
    assert first.returncode == 0, first.stderr
    assert len(api.hits("/hook")) == 1, "a timeout after the post is not retried at once"
    assert statuses(db) == [("signal", "webhook", "failed", 1)]
    wait_for(lambda: db.execute("SELECT next_attempt_at <= clock_timestamp() "
                                "FROM notifications").fetchone() == (True,), "retry due", 10)
    second = notify("--no-ops", home=home, env=env)
    assert second.returncode == 1
    assert second.stderr.strip().endswith(
        "on webhook after 2 attempts: ReadTimeout: no answer within 1 s (it may have arrived "
        "all the same); raise HARVEST_NOTIFY_TIMEOUT if the receiver is this slow"), (
        second.stderr)
    [(delivery,)] = db.execute("SELECT id FROM notifications").fetchall()
    hits = api.hits("/hook")
    assert len(hits) == 2 and hits[0].body == hits[1].body
    for hit in hits:
        assert hit.headers["x-harvest-delivery"] == str(delivery)
        body = json.loads(hit.body)
        assert body["delivery_id"] == delivery and body["signal"]["id"] == signal


def test_a_429_holds_its_channel_across_runs(
    db: psycopg.Connection[Any], home: Path, api: ApiServer
) -> None:
    # The hold lived in one run's memory: each later `harvest notify` (cron, a minute on)
    # posted the next row at once, used up its attempt, and said the retry was due "now".
    api.add("/hook", lambda r: Reply.text("slow down", status=429,
                                          headers={"Retry-After": "3600"}))
    for n in range(3):
        add_signal(db, f"Breach {n}", 90 + n)
    env = {"HARVEST_WEBHOOK_URL": api.url + "/hook"}
    waits = []
    for _ in range(2):
        result = notify("--no-ops", home=home, env=env)
        assert result.returncode == 0, result.stderr
        said = re.search(r"retries left for the next `harvest notify`: webhook in (\d+) s",
                         result.stdout)
        assert said, result.stdout
        waits.append(int(said[1]))
    # The second run keeps the first's hold, less the seconds gone by (not a new one).
    assert 3500 < waits[1] <= waits[0] <= 3600, waits
    assert len(api.hits("/hook")) == 1
    assert sorted(statuses(db)) == [("signal", "webhook", "failed", 1),
                                     ("signal", "webhook", "pending", 0),
                                     ("signal", "webhook", "pending", 0)]
