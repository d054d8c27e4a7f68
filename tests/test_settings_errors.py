"""A wrong HARVEST_* setting stops every command with one sentence naming the variable,
never a traceback and never the value of a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import harvest


@pytest.mark.parametrize(("env", "says"), [
    ({"HARVEST_DISABLE_AFTER": "abc"}, "HARVEST_DISABLE_AFTER: Input should be a valid integer"),
    ({"HARVEST_STALE_FACTOR": "0"}, "HARVEST_STALE_FACTOR: Input should be greater than 0"),
    ({"HARVEST_FEED_ENABLED": "maybe"}, "HARVEST_FEED_ENABLED: Input should be a valid boolean"),
    ({"HARVEST_DATABASE_URL": "postgres//admin:S3cretPW@db.example/harvest"},
     "HARVEST_DATABASE_URL: not a PostgreSQL connection string"),
    ({"HARVEST_DATABASE_URL": "mysql://admin:S3cretPW@db.example/harvest"},
     "HARVEST_DATABASE_URL: not a PostgreSQL connection string"),
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


def test_a_sources_path_that_is_a_directory_is_one_sentence(tmp_path: Path) -> None:
    result = harvest("--sources", str(tmp_path), "sources", "check", home=tmp_path / "home")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {tmp_path} is a directory, not a sources file; "
                                     "point HARVEST_SOURCES/--sources at the TOML file.")
