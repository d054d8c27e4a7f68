"""Settings of ``harvest serve``'s API, read once from the environment.

``HARVEST_API_KEYS``          comma-separated keys for reads (``X-API-Key``); unset = reads
                              are open. Several keys let one be rotated without downtime.
``HARVEST_API_TOKENS``        comma-separated bearer tokens for writes (``POST /signals``,
                              ``POST /crawl``); ``HARVEST_API_TOKEN`` (one token) also works.
                              Unset = writes are refused. A write token also reads.
``HARVEST_API_RATE``          per-client token bucket, ``10/s burst 20`` (default); ``N/s``,
                              ``N/min``, ``N/h``; ``off`` disables it.
``HARVEST_API_CORS_ORIGINS``  comma-separated origins allowed by CORS; unset = no CORS headers.
``HARVEST_API_HOST``, ``HARVEST_API_PORT``  where it listens (127.0.0.1:8000)
``HARVEST_STALE_FACTOR``      /health and /sources call a source stale when its last success
                              is older than this many intervals (3); alerts read it too.

Only ``harvest serve`` reads them: a typo in the API's port stopped every crawl (cron's,
Scrapyd's jobs) when they lived in HarvestConfig.

Keys and tokens are ``SecretStr``: never printed, logged or shown in ``/health``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from harvester.config import (
    DEFAULT_STALE_FACTOR,
    ConfigError,
    StaleFactor,
    empty_is_default,
    settings_error,
)

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*"
                   r"(?:burst\s+(\d+))?\s*$", re.IGNORECASE)
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
        "h": 3600.0, "hour": 3600.0}


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_second`` tokens refill a bucket of ``burst``."""

    per_second: float
    burst: int


def parse_rate(value: str) -> Rate | None:
    """``"10/s burst 20"`` → Rate(10, 20); ``"off"`` → None (no limit)."""
    if value.strip().lower() in ("off", "0", "none", ""):
        return None
    match = _RATE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a rate like '10/s burst 20' or '600/min'")
    per_second = float(match.group(1)) / _PER[match.group(2).lower()]
    if per_second <= 0:
        raise ValueError(f"{value!r}: the rate must be positive (or 'off')")
    burst = int(match.group(3)) if match.group(3) else max(1, round(per_second * 2))
    if burst < 1:  # it was taken as 1 without a word
        raise ValueError(f"{value!r}: the burst must be at least 1 request")
    return Rate(per_second, burst)


def _split(value: SecretStr | None) -> tuple[bytes, ...]:
    if value is None:
        return ()
    return tuple(p.strip().encode() for p in value.get_secret_value().split(",") if p.strip())


class ApiSettings(BaseSettings):
    """``HARVEST_API_*`` settings of the HTTP API, and the stale factor it judges by."""

    model_config = SettingsConfigDict(env_prefix="HARVEST_API_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    keys: SecretStr | None = None
    tokens: SecretStr | None = None
    token: SecretStr | None = None
    rate: str = "10/s burst 20"
    cors_origins: str = ""
    stale_factor: StaleFactor = Field(default=DEFAULT_STALE_FACTOR,
                                      validation_alias="HARVEST_STALE_FACTOR")

    _empty_is_default = field_validator("host", mode="before")(classmethod(empty_is_default))

    @field_validator("rate")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    @field_validator("keys", "tokens", "token")
    @classmethod
    def _check_secrets(cls, value: SecretStr | None) -> SecretStr | None:
        # Set to " , " (or to an unset variable's empty expansion), the keys left reads
        # open without a word; a key outside ASCII matched only when a client sent it in
        # Latin-1. Neither is said with the value: it is a secret.
        if value is None:
            return None
        parts = [p.strip() for p in value.get_secret_value().split(",")]
        if not any(parts):
            raise ValueError("is set but names no key (comma-separated keys or tokens)")
        if not all(p.isascii() and p.isprintable() for p in parts):
            raise ValueError("holds a character outside printable ASCII, which an HTTP "
                             "header cannot carry as such")
        return value

    @property
    def read_keys(self) -> tuple[bytes, ...]:
        return _split(self.keys)

    @property
    def write_tokens(self) -> tuple[bytes, ...]:
        return _split(self.tokens) + _split(self.token)

    @property
    def rate_limit(self) -> Rate | None:
        return parse_rate(self.rate)

    @property
    def origins(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]


@lru_cache(maxsize=1)
def get_api_settings() -> ApiSettings:
    try:
        return ApiSettings()
    except ValidationError as exc:
        raise ConfigError(f"{settings_error(exc, 'HARVEST_API_')}; fix the variable, or unset "
                          "it for the default (docs/api.md)") from None
