"""The only reader of environment variables: every ``HARVEST_*`` setting lives here."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class HarvestConfig(BaseSettings):
    """Process-wide configuration read once from the environment.

    ``HARVEST_HOME``          state directory (embedded PostgreSQL, spool), default ``./var``
    ``HARVEST_DATABASE_URL``  PostgreSQL URL; when unset the embedded server under
                              ``$HARVEST_HOME/pg`` is used
    ``HARVEST_SOURCES``       the sources file, default ``./sources.toml``
    """

    model_config = SettingsConfigDict(env_prefix="HARVEST_", extra="ignore", frozen=True)

    home: Path = Field(default=Path("var"))
    database_url: str | None = None
    sources: Path = Field(default=Path("sources.toml"))

    @property
    def spool_dir(self) -> Path:
        return self.home.absolute() / "spool"

    @property
    def pg_dir(self) -> Path:
        return self.home.absolute() / "pg"


@lru_cache(maxsize=1)
def get_config() -> HarvestConfig:
    return HarvestConfig()
