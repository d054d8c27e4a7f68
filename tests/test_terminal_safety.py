"""Text from crawled sources reaches the operator's terminal as text: no rich markup
interpreted (or crashing a command), no terminal control sequences (ESC, C1, bidi
overrides), no line breaks that forge output lines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harvester.services.localsite import LocalSite
from tests.apiserver import ApiServer, Reply
from tests.conftest import ROOT, harvest, harvest_env, write_sources
from tests.feeds import items, rss

ESC = "\x1b"
FORGED = "line2 │ 99.9 │ fake-source"


def assert_safe(text: str) -> None:
    assert ESC not in text and "\x9b" not in text and "\u202e" not in text, repr(text)
    assert "MarkupError" not in text and "Traceback" not in text, text
    assert not any(line.startswith("line2") for line in text.splitlines()), text


def test_feed_titles_and_links_cannot_drive_the_terminal(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    (site.root / "f.xml").write_text(rss([
        # ESC in a link was stored raw: `harvest explain`/`top` cleared the screen (or wrote
        # the clipboard, OSC 52) of whoever listed it.
        {"title": "Ransomware [bold]here[/] &#x202E;lmth.exe&#x202C; &#x9b;2J",
         "link": "https://news.example.org/a&#27;[2J&#27;]52;c;ZXZpbA==&#7;"},
        {"title": "no link [/] &#27;[2J"},  # a rejection, listed by `harvest rejects`
        # A bidi override in a link was stored raw: shown in an alert, the link reads
        # backwards. A port out of range was stored too: no client can open it.
        {"title": "Backwards", "link": "https://news.example.org/ref?q=&#x202E;exe.gpj"},
        {"title": "Far port", "link": "https://news.example.org:99999/far"},
    ]))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "evil", "kind": "feed", "urls": [f"{site.url}/f.xml"]}],
        {"security": {"keywords": ["ransomware"], "weight": 2.0}})
    crawl = harvest("--sources", str(sources), "crawl", "evil", home=home)
    assert crawl.returncode == 0, crawl.stdout + crawl.stderr

    assert db.execute("SELECT url FROM signals WHERE title = 'Backwards'").fetchone() == (
        "https://news.example.org/ref?q=%E2%80%AEexe.gpj",)
    assert db.execute("SELECT reason FROM rejects WHERE raw::text LIKE '%99999%'").fetchall() \
        == [("unparsable_url",)]
    url, title = db.execute("SELECT url, title FROM signals WHERE title LIKE 'Ransomware%'"
                            ).fetchone()
    assert url == "https://news.example.org/a%1B[2J%1B]52;c;ZXZpbA==%07"
    assert title == "Ransomware [bold]here[/] lmth.exe\u202c 2J"
    for args in (["top"], ["explain", url], ["rejects"], ["stats"]):
        shown = harvest("--sources", str(sources), *args, home=home)
        assert shown.returncode == 0, (args, shown.stdout + shown.stderr)
        assert_safe(shown.stdout + shown.stderr)
    # Markup is shown as written, not applied.
    assert "[bold]here[/]" in harvest("explain", url, home=home).stdout


def test_a_server_s_error_text_is_one_plain_line_everywhere(
    db: psycopg.Connection[Any], home: Path, api: ApiServer, tmp_path: Path
) -> None:
    # Reddit's error document, quoted in the error: "Forbidden [/]" crashed `harvest
    # sources` (MarkupError) on every run until the source succeeded, and its ESC and
    # newline reached the summary, the log and `harvest notify`.
    api.add("/r/python/hot.json", lambda r: Reply.json(
        {"message": f"Forbidden [/] {ESC}[2J{ESC}]52;c;ZXZpbA==\x07\n{FORGED}",
         "reason": "[bold]private[/]", "error": 403}, status=403))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "redd", "kind": "reddit", "api_base": api.url, "subreddit": "python"}])
    crawl = harvest("--sources", str(sources), "crawl", "redd", home=home)
    assert crawl.returncode == 1
    assert_safe(crawl.stdout + crawl.stderr)
    assert "[bold]private[/]" in crawl.stdout  # shown, not applied
    for args in (["sources"], ["stats"], ["notify", "--dry-run"]):
        shown = harvest("--sources", str(sources), *args, home=home)
        assert shown.returncode == 0, (args, shown.stdout + shown.stderr)
        assert_safe(shown.stdout + shown.stderr)
    [log] = (home / "logs").glob("crawl-*.log")
    assert_safe(log.read_text())
    last_error = db.execute("SELECT last_error FROM sources_state").fetchone()[0]
    # Stored as the one line that was shown, the server's words kept.
    assert ESC not in last_error and "\n" not in last_error
    assert f"Forbidden [/] [2J]52;c;ZXZpbA== {FORGED}" in last_error, last_error


@pytest.mark.parametrize("args", [["top", "--source", "[/]x"], ["explain", "http://x/[/]"]])
def test_an_operator_s_argument_with_brackets_is_an_error_not_a_crash(
    db: psycopg.Connection[Any], home: Path, args: list[str]
) -> None:
    result = harvest(*args, home=home)
    assert result.returncode == 2
    assert "[/]" in result.stderr and "MarkupError" not in result.stderr


@pytest.mark.parametrize("narrow", [
    {"PYTHONIOENCODING": "latin-1", "COLUMNS": "60"},
    # The C locale's ASCII with "surrogateescape" raised as "strict" did (after the alerts
    # of `harvest notify` were sent: cron mailed a traceback for a good run).
    {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "COLUMNS": "60"},
])
def test_a_terminal_that_is_not_utf8_gets_every_command_s_output(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path,
    narrow: dict[str, str]
) -> None:
    # With a latin-1 locale (or PYTHONIOENCODING=latin-1) a CJK title, rich's "…" or
    # explain's "→" raised UnicodeEncodeError: a traceback and exit 1, also after a crawl
    # that had stored its items.
    (site.root / "f.xml").write_text(rss([
        {"title": "東京 ransomware outbreak → café …", "link": "https://news.example.org/t"}]))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "wide", "kind": "feed", "urls": [f"{site.url}/f.xml"]}],
        {"security": {"keywords": ["ransomware"], "weight": 2.0}})
    env = harvest_env(home, narrow)
    for args in (["crawl", "wide"], ["top"], ["explain", "https://news.example.org/t"],
                 ["stats"], ["brief"], ["top", "--json"]):
        done = subprocess.run([sys.executable, "-m", "harvester.cli", "--sources",
                               str(sources), *args], cwd=ROOT, env=env, capture_output=True,
                              timeout=180, check=False)
        out, errors = done.stdout.decode("latin-1"), done.stderr.decode("latin-1")
        assert done.returncode == 0, (args, out + errors)
        assert "Traceback" not in errors
    # The JSON says every character, escaped: a program reading it gets the title whole.
    assert json.loads(out)[0]["title"] == "東京 ransomware outbreak → café …"


def test_an_output_that_cannot_be_written_is_one_sentence(home: Path) -> None:
    # `harvest stats > /dev/full` (a full disk behind a redirect) printed a 40-line
    # traceback; a closed pipe (`| head -1`) must stay quiet.
    for args in (["stats"], ["--help"]):
        with open("/dev/full", "w") as full:
            done = subprocess.run([sys.executable, "-m", "harvester.cli", *args], cwd=ROOT,
                                  env=harvest_env(home), stdout=full, stderr=subprocess.PIPE,
                                  text=True, timeout=120, check=False)
        assert done.returncode == 1
        assert done.stderr.strip() == ("error: cannot write the output (No space left on "
                                       "device); write it somewhere with room, or to the "
                                       "terminal"), done.stderr


def test_the_crawl_summary_keeps_its_column_names_in_a_pipe_and_a_narrow_terminal(
    site: LocalSite, db: psycopg.Connection[Any], home: Path, tmp_path: Path
) -> None:
    # Without COLUMNS, output to a pipe (`make run | tee`, CI's log, a script) was laid
    # out for 80 columns: "fetc…", "re-s…", "reje…", and `harvest stats` cut source
    # names and times. An 80-column terminal cut the headers the same way.
    (site.root / "f.xml").write_text(rss(items("pipe", 2)))
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "technology-and-science-news", "kind": "feed", "urls": [f"{site.url}/f.xml"]}])
    piped = harvest_env(home)
    del piped["COLUMNS"]
    outputs = {}
    for name, env in (("pipe", piped), ("narrow", {**piped, "COLUMNS": "72"})):
        done = subprocess.run([sys.executable, "-m", "harvester.cli", "--sources", str(sources),
                               "crawl", "technology-and-science-news"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=180, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs[name] = done.stdout
    [header] = [ln for ln in outputs["pipe"].splitlines() if "source" in ln and "┃" in ln]
    assert [c.strip() for c in header.split("┃")[1:-1]] == [
        "source", "fetched", "new", "re-seen", "rejected", "errors", "304s", "entries",
        "spooled"]
    cut = re.compile(r"\w…\s*[│┃]")  # a cell rich shortened to fit
    assert not cut.search(outputs["pipe"]), outputs["pipe"]
    # The second crawl got a 304.
    assert ("technology-and-science-news: fetched 0, new 0, re-seen 0, rejected 0, errors 0, "
            "304s 1, entries 0, spooled 0") in " ".join(outputs["narrow"].split())
    stats = subprocess.run([sys.executable, "-m", "harvester.cli", "--sources", str(sources),
                            "stats"], cwd=ROOT, env=piped, capture_output=True, text=True,
                           timeout=120, check=False)
    assert stats.returncode == 0 and not cut.search(stats.stdout), stats.stdout


@pytest.mark.parametrize("columns", ["0", "5"])
def test_a_terminal_width_too_narrow_for_a_table_is_taken_as_unset(
    home: Path, tmp_path: Path, columns: str
) -> None:
    # COLUMNS=0 (set by some CI runners) made every command print nothing at all, errors
    # included, and exit as if all was well; COLUMNS=5 printed tables of bare borders.
    sources = write_sources(tmp_path / "s.toml", [
        {"name": "cve", "kind": "feed", "urls": ["https://example.org/a.xml"]}])
    listed = harvest("--sources", str(sources), "sources", "list", home=home,
                     env={"COLUMNS": columns})
    assert listed.returncode == 0, listed.stderr
    assert "│ cve " in listed.stdout and "enabled" in listed.stdout, listed.stdout
    missing = tmp_path / "none.toml"
    wrong = harvest("--sources", str(missing), "sources", "check", home=home,
                    env={"COLUMNS": columns})
    assert wrong.returncode == 2 and wrong.stderr.startswith(
        f"error: {missing}: no such sources file"), wrong.stderr
