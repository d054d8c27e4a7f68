"""The only reader of environment variables: every ``HARVEST_*`` setting lives here."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import psycopg
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from harvester.services.embedded import DEFAULT_SHARED_BUFFERS, SIZE

if TYPE_CHECKING:
    from harvester.sources import Source


#: ``HARVEST_STALE_FACTOR``: a source is stale when its last success is older than this many
#: intervals. Read by what judges staleness, each with its own settings: the API's /health
#: and /sources, and harvest notify's ops alerts.
StaleFactor = Annotated[float, Field(gt=0, le=1000)]
DEFAULT_STALE_FACTOR = 3.0


def empty_is_default(cls: type[BaseSettings], value: object, info: ValidationInfo) -> object:
    """A settings field's documented default for an empty value (a ``before`` validator):
    "HARVEST_HOME=" was Path("") = the current directory, a server under ./pg and metrics
    files in the checkout."""
    if isinstance(value, str) and not value.strip():
        return cls.model_fields[info.field_name].get_default()  # type: ignore[index]
    return value


class HarvestConfig(BaseSettings):
    """Process-wide configuration read once from the environment.

    ``HARVEST_HOME``          state directory (embedded PostgreSQL, spool), default ``./var``
    ``HARVEST_DATABASE_URL``  PostgreSQL URL; when unset the embedded server under
                              ``$HARVEST_HOME/pg`` is used
    ``HARVEST_PG_SHARED_BUFFERS`` the embedded server's ``shared_buffers`` when harvest
                              starts it (default 512MB)
    ``HARVEST_SOURCES``       the sources file, default ``./sources.toml``
    ``HARVEST_<KIND>_ENABLED`` ``false`` switches a whole kind of source off
                              (``HARVEST_REDDIT_ENABLED=false``); default on
    ``HARVEST_DISABLE_AFTER`` consecutive failed runs after which a source is disabled
                              until ``harvest sources enable NAME``; 0 = never (default 5)
    ``HARVEST_SCRAPYD_URLS``  Scrapyd nodes, comma-separated (default: the local one,
                              http://127.0.0.1:$SCRAPYD_HTTP_PORT)
    ``PROMETHEUS_MULTIPROC_DIR`` metrics files shared by crawl processes and `harvest serve`
                              (default ``$HARVEST_HOME/metrics``)

    Those only a few commands read are theirs, so that a typo there stops only them: the
    API's (``HARVEST_API_*``, ``HARVEST_STALE_FACTOR``) in api/settings.py, the alerts' in
    services/alerts/config.py.

    API credentials keep their vendors' usual names and are never logged:
    ``X_BEARER_TOKEN``, ``REDDIT_CLIENT_ID``, ``REDDIT_CLIENT_SECRET``, and Scrapyd's own
    ``SCRAPYD_USERNAME``/``SCRAPYD_PASSWORD``.
    """

    model_config = SettingsConfigDict(env_prefix="HARVEST_", extra="ignore", frozen=True)

    home: Path = Field(default=Path("var"))
    database_url: str | None = None
    pg_shared_buffers: str = DEFAULT_SHARED_BUFFERS
    sources: Path = Field(default=Path("sources.toml"))
    disable_after: int = Field(default=5, ge=0)
    scrapyd_urls: str = "http://127.0.0.1:6800"
    # prometheus-client's own variable; default $HARVEST_HOME/metrics.
    prometheus_multiproc_dir: Path | None = Field(
        default=None, validation_alias="PROMETHEUS_MULTIPROC_DIR")
    feed_enabled: bool = True
    reddit_enabled: bool = True
    hackernews_enabled: bool = True
    x_enabled: bool = True
    pages_enabled: bool = True
    sitemap_enabled: bool = True
    rendered_enabled: bool = True

    _empty_is_default = field_validator("home", "sources", "prometheus_multiproc_dir",
                                        mode="before")(classmethod(empty_is_default))

    @field_validator("prometheus_multiproc_dir")
    @classmethod
    def _a_directory(cls, value: Path | None) -> Path | None:
        # A file there failed the crawl ("FileExistsError … check the -s settings") and
        # serve ("check HARVEST_HOME"), neither naming this variable.
        if value is not None and value.exists() and not value.is_dir():
            raise ValueError(f"{value} is a file, not a directory; point it at a directory, "
                             "or unset it for $HARVEST_HOME/metrics")
        return value

    @field_validator("pg_shared_buffers")
    @classmethod
    def _size(cls, value: str) -> str:
        # Checked only where the embedded server starts, a wrong size read as "the
        # database is unreachable" and the crawl went on into the spool.
        if not SIZE.fullmatch(value):
            raise ValueError(f"must be a size in kB, MB, GB or TB such as 512MB, not {value!r}")
        return value

    @field_validator("home")
    @classmethod
    def _home(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} is a file, not a directory; point it at a directory "
                             "harvest may create and write")
        return value

    @field_validator("database_url")
    @classmethod
    def _conninfo(cls, value: str | None) -> str | None:
        # Checked here, once, in words that never repeat the value: psycopg's own error
        # quotes the whole string, password included.
        if value:
            try:
                psycopg.conninfo.conninfo_to_dict(value)
            except psycopg.ProgrammingError:
                raise ValueError("not a PostgreSQL connection string like "
                                 "postgresql://user:password@host/db or 'host=H dbname=D'"
                                 ) from None
        return value

    def kind_enabled(self, kind: str) -> bool:
        return bool(getattr(self, f"{kind}_enabled", True))

    def crawled(self, sources: Iterable[Source]) -> list[Source]:
        """The sources crawls run: enabled, of a kind not switched off by
        HARVEST_<KIND>_ENABLED. Staleness (/health, notify, /metrics) is judged of them."""
        return [s for s in sources if s.enabled and self.kind_enabled(s.kind)]

    @property
    def spool_dir(self) -> Path:
        return self.home.absolute() / "spool"

    @property
    def metrics_dir(self) -> Path:
        return (self.prometheus_multiproc_dir or self.home / "metrics").absolute()

    @property
    def scrapyd_configured(self) -> bool:
        """Whether HARVEST_SCRAPYD_URLS was set (health checks Scrapyd only then)."""
        return "scrapyd_urls" in self.model_fields_set

    @property
    def pg_dir(self) -> Path:
        return self.home.absolute() / "pg"


class Credentials(BaseSettings):
    """API credentials, read from the environment under their vendors' usual names."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    x_bearer_token: SecretStr | None = None
    reddit_client_id: SecretStr | None = None
    reddit_client_secret: SecretStr | None = None


class ScrapydEnv(BaseSettings):
    """The variables Scrapyd itself reads (``SCRAPYD_*``); we read the same ones so the
    server, the scheduler and ``harvest jobs`` agree."""

    model_config = SettingsConfigDict(env_prefix="SCRAPYD_", extra="ignore", frozen=True)

    username: str | None = None
    password: SecretStr | None = None
    bind_address: str = "127.0.0.1"
    http_port: int = Field(default=6800, ge=1, le=65535)


class ConfigError(ValueError):
    """A wrong ``HARVEST_*`` setting; the message is one sentence naming the variable."""


def settings_error(exc: ValidationError, prefix: str = "HARVEST_") -> str:
    """One sentence for a settings class's first error: the variable and what is wrong
    (pydantic's message; never the value, which may be a secret)."""
    first = exc.errors()[0]
    name = "_".join(str(p) for p in first["loc"]).upper()
    # A field read under its own name (an alias) is named so, without the class's prefix.
    aliased = name.startswith(("PROMETHEUS_", "HARVEST_"))
    where = f"{name if aliased else prefix + name}: " if name else ""
    return f"{where}{first['msg'].removeprefix('Value error, ')}"


@lru_cache(maxsize=1)
def get_config() -> HarvestConfig:
    try:
        return HarvestConfig()
    except ValidationError as exc:
        raise ConfigError(f"{settings_error(exc)}; fix the variable, or unset it for the "
                          "default (README lists every HARVEST_* setting)") from None


@lru_cache(maxsize=1)
def get_credentials() -> Credentials:
    return Credentials()


@lru_cache(maxsize=1)
def get_scrapyd_env() -> ScrapydEnv:
    try:
        return ScrapydEnv()
    except ValidationError as exc:
        raise ConfigError(f"{settings_error(exc, 'SCRAPYD_')}; fix the variable, or unset it "
                          "for the default (README lists it)") from None
