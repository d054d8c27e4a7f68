"""Alert settings, read once from the environment (``HARVEST_*``).

Channels (any combination; none configured → alerts are recorded, not sent):
``HARVEST_SLACK_WEBHOOK_URL``      Slack incoming-webhook URL (a secret: never logged)
``HARVEST_TELEGRAM_BOT_TOKEN``     Telegram bot token (a secret) ...
``HARVEST_TELEGRAM_CHAT_ID``       ... and the chat it writes to; both or neither
``HARVEST_TELEGRAM_API_BASE``      Bot API base URL (default https://api.telegram.org)
``HARVEST_WEBHOOK_URL``            generic JSON webhook (treated as a secret)
``HARVEST_WEBHOOK_SECRET``         optional: signs each body, ``X-Harvest-Signature``

Delivery: ``HARVEST_NOTIFY_MAX_ATTEMPTS`` (6), ``HARVEST_NOTIFY_BACKOFF_MAX`` (1,800 s, the
longest pause between two attempts; with the defaults a message is tried for about 50
minutes), ``HARVEST_NOTIFY_MAX_WAIT`` (10 s: how long one ``harvest notify`` spends on
retries of messages that failed in it), ``HARVEST_NOTIFY_TIMEOUT`` (10 s per HTTP request).
Ops alerts: ``HARVEST_STALE_FACTOR`` (3 × the source's interval) and
``HARVEST_REJECT_SPIKE_PERCENT`` (50 % of a run's items rejected).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from harvester.config import DEFAULT_STALE_FACTOR, StaleFactor, settings_error
from harvester.services.urls import split_error


class AlertsConfigError(ValueError):
    """A wrong alert setting; the message is one sentence naming the variable."""


class AlertsConfig(BaseSettings):
    """Channels and delivery policy of ``harvest notify``."""

    model_config = SettingsConfigDict(env_prefix="HARVEST_", extra="ignore", frozen=True,
                                      env_ignore_empty=True)

    slack_webhook_url: SecretStr | None = None
    telegram_bot_token: SecretStr | None = None
    telegram_chat_id: str | None = None
    telegram_api_base: str = Field(default="https://api.telegram.org",
                                   pattern=r"^https?://[^/\s]+")
    webhook_url: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    notify_max_attempts: int = Field(default=6, ge=1, le=100)
    # Bounded: "inf" passed and failed in time arithmetic or socket timeouts (a traceback).
    notify_backoff_max: float = Field(default=1800.0, gt=0, le=86400)
    notify_max_wait: float = Field(default=10.0, ge=0, le=3600)
    notify_timeout: float = Field(default=10.0, gt=0, le=600)
    stale_factor: StaleFactor = DEFAULT_STALE_FACTOR
    reject_spike_percent: float = Field(default=50.0, ge=0, le=100)

    @field_validator("slack_webhook_url", "webhook_url", "telegram_bot_token",
                     "telegram_chat_id", "telegram_api_base", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        # A secret mounted from a file ends in a newline (kubectl create secret
        # --from-file): it went into every post's path as %0A, and real services said 404.
        return value.strip() if isinstance(value, str) else value

    @field_validator("slack_webhook_url", "webhook_url")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        # A typo was retried as a network failure until given up; the value is a secret
        # (its path is the credential): the message does not repeat it.
        if value is not None:
            url = value.get_secret_value().strip()
            parts = urlsplit(url)
            if (split_error(url) or parts.scheme not in ("http", "https")
                    or not parts.hostname or " " in parts.netloc):
                raise ValueError("not an http(s) URL; copy the whole URL the service gave")
        return value

    @model_validator(mode="after")
    def _telegram_pair(self) -> AlertsConfig:
        if bool(self.telegram_bot_token) != bool(self.telegram_chat_id):
            raise ValueError("set both HARVEST_TELEGRAM_BOT_TOKEN and HARVEST_TELEGRAM_CHAT_ID,"
                             " or neither")
        return self


def load_alerts_config() -> AlertsConfig:
    """The settings, or ``AlertsConfigError`` with one sentence (never a secret's value)."""
    try:
        return AlertsConfig()
    except ValidationError as exc:
        raise AlertsConfigError(f"{settings_error(exc)}.") from None
