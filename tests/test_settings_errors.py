"""A wrong HARVEST_* setting stops every command with one sentence naming the variable,
never a traceback and never the value of a secret."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from harvester import setting_values
from tests.conftest import ROOT, free_port, harvest


@pytest.mark.parametrize(("env", "says"), [
    ({"HARVEST_DISABLE_AFTER": "abc"}, "HARVEST_DISABLE_AFTER: Input should be a valid integer"),
    ({"HARVEST_FEED_ENABLED": "maybe"}, "HARVEST_FEED_ENABLED: Input should be a valid boolean"),
    ({"HARVEST_DATABASE_URL": "postgres//admin:S3cretPW@db.example/harvest"},
     "HARVEST_DATABASE_URL: not a PostgreSQL connection string"),
    ({"HARVEST_DATABASE_URL": "mysql://admin:S3cretPW@db.example/harvest"},
     "HARVEST_DATABASE_URL: not a PostgreSQL connection string"),
    # Checked only where the embedded server started: "the database is unreachable", and
    # the crawl went on into the spool.
    ({"HARVEST_PG_SHARED_BUFFERS": "256mb"},
     "HARVEST_PG_SHARED_BUFFERS: must be a size in kB, MB, GB or TB such as 512MB, not '256mb'"),
])
def test_a_malformed_setting_is_one_sentence(env: dict[str, str], says: str,
                                             tmp_path: Path) -> None:
    for command in (["stats"], ["sources"], ["top"]):
        result = harvest(*command, home=tmp_path / "home", env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.startswith(f"error: {says}"), result.stderr
        assert "fix the variable, or unset it" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "S3cretPW" not in result.stdout + result.stderr


def test_a_metrics_directory_that_is_a_file_names_the_variable(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    result = harvest("stats", home=tmp_path / "home", env={"PROMETHEUS_MULTIPROC_DIR": str(afile)})
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: PROMETHEUS_MULTIPROC_DIR: {afile} is a file, not a "
                                    "directory"), result.stderr


def test_a_sources_path_that_is_a_directory_is_one_sentence(tmp_path: Path) -> None:
    result = harvest("--sources", str(tmp_path), "sources", "check", home=tmp_path / "home")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {tmp_path} is a directory, not a sources file; "
                                     "point HARVEST_SOURCES/--sources at the TOML file.")


@pytest.mark.parametrize(("value", "says"), [
    ("http://127.0.0.1:abc", "'http://127.0.0.1:abc' is not a Scrapyd URL"),
    ("http://ops:S3cretPW@127.0.0.1:abc", "'http://***@127.0.0.1:abc' is not a Scrapyd URL"),
    # An unencoded "#" in the password: its tail was shown.
    ("http://ops:s3:et@#S3cretPW@127.0.0.1:6801", "'http://***@127.0.0.1:6801' is not a"),
    # Without "http://" the password was shown whole (in the open /health too).
    ("ops:S3cretPW@127.0.0.1:6800", "'***@127.0.0.1:6800' is not a Scrapyd URL"),
    ("http//ops:S3cretPW@127.0.0.1:6800", "'***@127.0.0.1:6800' is not a Scrapyd URL"),
    (" , ", "HARVEST_SCRAPYD_URLS names no Scrapyd node"),  # said nothing, exit 0
    # One answer overwrote the other in the report.
    ("http://127.0.0.1:6899,http://ops:S3cretPW@127.0.0.1:6899/",
     "HARVEST_SCRAPYD_URLS lists the node http://127.0.0.1:6899 more than once"),
])
def test_a_wrong_scrapyd_node_list_is_one_sentence(value: str, says: str,
                                                   tmp_path: Path) -> None:
    result = harvest("scrapyd", "status", home=tmp_path / "home",
                     env={"HARVEST_SCRAPYD_URLS": value, "SCRAPYD_USERNAME": "u",
                          "SCRAPYD_PASSWORD": "p"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: {says}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "S3cretPW" not in result.stdout + result.stderr


def test_a_scheduler_tick_that_would_spin_is_refused(tmp_path: Path) -> None:
    for tick in ("0", "-1"):  # ran a pass over every node and source back to back
        result = harvest("scheduler", "--tick", tick, home=tmp_path / "home")
        assert result.returncode == 2 and "--tick" in result.stderr


def test_serve_with_a_wrong_api_setting_says_so_before_serving(tmp_path: Path) -> None:
    # It printed "serving on …", then a traceback.
    result = harvest("serve", home=tmp_path / "home", env={"HARVEST_API_RATE": "fast"})
    assert result.returncode == 2
    assert result.stderr.startswith("error: HARVEST_API_RATE: 'fast' is not a rate like")
    assert "serving on" not in result.stdout
    # A burst of 0 was taken as 1 without a word.
    zero = harvest("serve", home=tmp_path / "home", env={"HARVEST_API_RATE": "10/s burst 0"})
    assert zero.returncode == 2 and "the burst must be at least 1 request" in zero.stderr


@pytest.mark.parametrize(("env", "says"), [
    ({"HARVEST_API_PORT": "abc"}, "HARVEST_API_PORT: Input should be a valid integer"),
    ({"HARVEST_API_PORT": "99999"}, "HARVEST_API_PORT: Input should be less than or equal to "
                                    "65535"),
    ({"HARVEST_STALE_FACTOR": "0"}, "HARVEST_STALE_FACTOR: Input should be greater than 0"),
    # Passed, then /health and /sources answered 500 and notify failed on an OverflowError.
    ({"HARVEST_STALE_FACTOR": "inf"},
     "HARVEST_STALE_FACTOR: Input should be less than or equal to 1000"),
])
def test_the_api_s_settings_stop_only_serve(env: dict[str, str], says: str,
                                           tmp_path: Path) -> None:
    result = harvest("serve", home=tmp_path / "home", env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: {says}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "serving on" not in result.stdout
    # They lived in the configuration every command reads: `harvest stats`, `top` and every
    # crawl (tests/test_crawl.py) stopped on the API's port.
    for command in (["stats"], ["top"]):
        other = harvest(*command, home=tmp_path / "home", env=env)
        assert other.returncode == 0, other.stdout + other.stderr


@pytest.mark.parametrize(("env", "says"), [
    # " , " (or an unset variable's empty expansion) left reads open without a word.
    ({"HARVEST_API_KEYS": " , "}, "HARVEST_API_KEYS: is set but names no key"),
    ({"HARVEST_API_TOKENS": ""}, "HARVEST_API_TOKENS: is set but names no key"),
    # Matched only when a client sent it in Latin-1.
    ({"HARVEST_API_KEYS": "ok,cl\u00e9S3cret"}, "HARVEST_API_KEYS: holds a character outside"),
])
def test_api_keys_that_would_leave_the_api_open_or_unusable_are_refused(
        env: dict[str, str], says: str, tmp_path: Path) -> None:
    result = harvest("serve", home=tmp_path / "home", env=env)
    assert result.returncode == 2 and result.stderr.startswith(f"error: {says}"), result.stderr
    assert "serving on" not in result.stdout and "S3cret" not in result.stderr


def test_a_harvest_home_that_is_a_file_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    result = harvest("stats", home=tmp_path / "afile")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: HARVEST_HOME: {tmp_path / 'afile'} is a file, "
                                    "not a directory")


def test_serve_on_a_port_in_use_is_one_sentence(tmp_path: Path) -> None:
    # uvicorn said it after "serving on", as an ERROR line, and exited 3.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = harvest("serve", "--port", str(port), home=tmp_path / "home")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: cannot listen on 127.0.0.1:{port} (Address "
                                     "already in use); stop what uses it or choose another "
                                     "--port (HARVEST_API_PORT)")
    assert "serving on" not in result.stdout


def test_a_harvest_home_that_cannot_be_created_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    home = tmp_path / "afile" / "home"  # under a file: no directory can be made there
    # The embedded server (HARVEST_DATABASE_URL empty) lives under HARVEST_HOME.
    result = harvest("stats", home=home, env={"HARVEST_DATABASE_URL": ""})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: Not a directory: "), result.stderr
    assert "check HARVEST_HOME" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_malformed_scrapyd_variable_is_one_sentence(tmp_path: Path) -> None:
    for command in (["jobs", "list"], ["scrapyd", "status"]):
        result = harvest(*command, home=tmp_path / "home",
                         env={"SCRAPYD_HTTP_PORT": "abc", "SCRAPYD_USERNAME": "u",
                              "SCRAPYD_PASSWORD": "p"})
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.startswith("error: SCRAPYD_HTTP_PORT: Input should be a valid "
                                        "integer"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_an_unreachable_external_database_is_not_sent_to_the_embedded_one(
        tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        result = harvest("migrate", home=tmp_path / "home",
                         env={"HARVEST_DATABASE_URL": f"postgresql://u:S3cretPW@127.0.0.1:{port}/db"})
    assert result.returncode == 2
    assert "check HARVEST_DATABASE_URL and that its server runs" in result.stderr
    assert "harvest db start" not in result.stderr  # not used while the variable is set
    assert "S3cretPW" not in result.stderr


def test_an_empty_home_is_the_default_not_the_current_directory(tmp_path: Path) -> None:
    # "HARVEST_HOME=" started a server under ./pg and wrote metrics files into the checkout.
    result = harvest("db", "status", home=tmp_path, cwd=tmp_path,
                     env={"HARVEST_HOME": "", "PROMETHEUS_MULTIPROC_DIR": "",
                          "HARVEST_DATABASE_URL": ""})
    assert result.returncode in (0, 1), result.stderr
    assert f"embedded PostgreSQL in {tmp_path / 'var' / 'pg'}" in " ".join(result.stdout.split())


def test_scrapyd_s_port_moves_the_default_node_and_is_checked(tmp_path: Path) -> None:
    port = free_port()
    env = {"SCRAPYD_USERNAME": "u", "SCRAPYD_PASSWORD": "p", "SCRAPYD_HTTP_PORT": str(port)}
    # Without HARVEST_SCRAPYD_URLS every command asked 6800 while Scrapyd listened here.
    status = harvest("scrapyd", "status", home=tmp_path / "home", env=env)
    assert status.returncode == 1 and f"down http://127.0.0.1:{port}" in status.stdout
    ipv6 = harvest("scrapyd", "status", home=tmp_path / "home",
                   env={**env, "HARVEST_SCRAPYD_URLS": f"http://[::1]:{port}"})
    assert f"down http://[::1]:{port}" in ipv6.stdout, ipv6.stdout + ipv6.stderr
    wrong = harvest("scrapyd", "status", home=tmp_path / "home",
                    env={**env, "SCRAPYD_HTTP_PORT": "99999"})
    assert wrong.returncode == 2
    assert wrong.stderr.startswith("error: SCRAPYD_HTTP_PORT: Input should be less than")


def test_every_number_and_switch_of_a_crawl_is_checked_before_it_starts() -> None:
    # HARVEST_RETRY_AFTER_MAX and HARVEST_RATE_LIMIT_RETRIES were read unchecked (NaN turned
    # the cap off), switches by Scrapy's getbool, whose error named no setting. README's
    # settings table lists them all; those of free text are the exceptions.
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Settings (Scrapy")[1].split("\n## ")[0]
    names = {n for row in re.findall(r"^\| (`HARVEST_[^|]*)\|", table, re.MULTILINE)
             for n in re.findall(r"`(HARVEST_\w+)`", row)}
    texts = {"HARVEST_STORE_SPOOL_DIR", "HARVEST_SOURCES_FILE", "HARVEST_CHROMIUM_PATH",
             "HARVEST_REDDIT_USERNAME"}
    assert texts < names and len(names) > 20, names
    for name in sorted(names - texts):
        said = setting_values.refused(name, "nan")
        assert said is not None and said.startswith(f"{name} must be "), (name, said)
        assert said.endswith("not 'nan'"), said
    # 400 digits raised an OverflowError (a traceback) and were echoed whole.
    huge = "9" * 400
    for name in ("HARVEST_STORE_BATCH_SIZE", "HARVEST_RETRY_AFTER_MAX"):
        said = setting_values.refused(name, huge)
        assert said is not None and said.startswith(f"{name} must be "), said
        assert said.endswith(f"not '{'9' * 39}…'"), said
    # Scrapy's counts take no fraction ("invalid literal for int()"), its delays do.
    assert setting_values.refused("CONCURRENT_REQUESTS", "1.5") == (
        "CONCURRENT_REQUESTS must be a whole number, not '1.5'")
    assert setting_values.refused("CONCURRENT_REQUESTS_PER_DOMAIN", "4") is None
    assert setting_values.refused("DOWNLOAD_DELAY", "1.5") is None
