"""The three ways an alert leaves: Slack incoming webhook, Telegram bot, generic webhook.

Each channel renders a stored message (see ``messages``) for its API, posts it, and turns the
answer into a ``SendResult``: delivered, retryable (with the server's ``Retry-After`` when it
gave one) or permanent. Secrets (the Slack URL, the bot token, the webhook URL) are redacted
from every error text a channel returns, so they never reach the database or the terminal.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urlsplit

import requests

from harvester import __version__
from harvester.services.alerts import messages
from harvester.services.alerts.config import AlertsConfig
from harvester.services.ratelimit import retry_after_seconds

USER_AGENT = f"harvester/{__version__} (alerts)"

_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    error: str | None = None
    retry_after: float | None = None  # seconds the server asked us to wait
    permanent: bool = False  # retrying cannot help (revoked webhook, unknown chat)
    maybe_delivered: bool = False  # sent, and no answer in time: it may have arrived


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Channel:
    """Base: one HTTP POST per message, paced by ``min_interval`` seconds."""

    name: ClassVar[str]
    min_interval: ClassVar[float] = 0.0

    def __init__(self, url: str, secrets: tuple[str, ...], timeout: float) -> None:
        self._url = url
        # Longest first, and never a trivial fragment such as a bare "/" path; also as
        # an error or a redirect may write them: percent-encoded, or decoded.
        forms = {form for s in secrets
                 for form in (s, quote(s, safe=""), quote(s, safe="/:"), unquote(s))}
        self._secrets = tuple(sorted({s for s in forms if len(s) >= 6}, key=len,
                                     reverse=True))
        self._timeout = timeout
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT

    def describe(self) -> str:
        """Name and host only: safe to print."""
        return f"{self.name} ({_host(self._url)})"

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def body(self, payload: dict[str, Any], delivery_id: int) -> bytes:
        raise NotImplementedError

    def headers(self, body: bytes, delivery_id: int) -> dict[str, str]:
        return {"Content-Type": "application/json; charset=utf-8"}

    def send(self, payload: dict[str, Any], delivery_id: int) -> SendResult:
        """Post one message; ``delivery_id`` (the notification's id) is the same on every
        attempt, for a receiver to drop a repeat."""
        data = self.body(payload, delivery_id)
        try:
            response = self._session.post(self._url, data=data,
                                          headers=self.headers(data, delivery_id),
                                          timeout=self._timeout, allow_redirects=False)
        except requests.ReadTimeout:
            # The request went out: a slow receiver may have taken it all the same.
            return SendResult(False, f"ReadTimeout: no answer within {self._timeout:g} s (it "
                              "may have arrived all the same); raise HARVEST_NOTIFY_TIMEOUT "
                              "if the receiver is this slow", maybe_delivered=True)
        except requests.RequestException as exc:
            return SendResult(False, self.redact(f"{type(exc).__name__}: {exc}"))
        return self._result(response)

    def _result(self, response: requests.Response) -> SendResult:
        if 200 <= response.status_code < 300:
            return SendResult(True)
        status_code = response.status_code
        if 300 <= status_code < 400:
            where = self.redact(response.headers.get("Location", "?"))
            error = f"HTTP {status_code}: redirects to {where[:200]}; check the URL"
        else:
            body = response.text.strip()
            if "html" in response.headers.get("Content-Type", "").lower():
                # An error page: its title says it (a proxy's "502 Bad Gateway"), not its
                # markup.
                title = _TITLE_RE.search(body)
                body = html.unescape(title.group(1)) if title else ""
            snippet = self.redact(" ".join(body.split())[:200])
            error = f"HTTP {status_code}" + (f": {snippet}" if snippet else "")
        # Other 4xx answers (bad payload, revoked webhook, unknown chat) will not change on
        # a retry; 408 and 429 will, and so will any 5xx. A redirect is not followed (the
        # body would be re-sent elsewhere) and will not change either.
        permanent = 300 <= status_code < 500 and status_code not in (408, 429)
        return SendResult(False, error, retry_after_seconds(response.headers.get("Retry-After")),
                          permanent)

    def close(self) -> None:
        self._session.close()


class SlackChannel(Channel):
    """Slack incoming webhook: ``text`` (fallback, notifications) plus one section block."""

    name = "slack"
    min_interval = 1.0  # Slack: 1 message per second per channel

    def __init__(self, url: str, timeout: float) -> None:
        super().__init__(url, (url, urlsplit(url).path), timeout)

    def body(self, payload: dict[str, Any], delivery_id: int) -> bytes:
        text = messages.render_slack(payload)
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
        return json.dumps({"text": messages.slack_fallback(payload), "blocks": blocks}).encode()


class TelegramChannel(Channel):
    """Telegram Bot API ``sendMessage`` in HTML parse mode."""

    name = "telegram"
    min_interval = 1.0  # Telegram: about 1 message per second per chat

    def __init__(self, api_base: str, token: str, chat_id: str, timeout: float) -> None:
        base = api_base.rstrip("/")
        super().__init__(f"{base}/bot{token}/sendMessage", (token,), timeout)
        self._chat_id = chat_id

    def body(self, payload: dict[str, Any], delivery_id: int) -> bytes:
        return json.dumps({"chat_id": self._chat_id, "text": messages.render_telegram(payload),
                           "parse_mode": "HTML", "disable_web_page_preview": True}).encode()

    def _result(self, response: requests.Response) -> SendResult:
        result = super()._result(response)
        if result.ok or response.status_code != 429:
            return result
        # Telegram says how long to wait in its JSON body, not always in a header.
        try:
            wait = response.json().get("parameters", {}).get("retry_after")
        except (ValueError, AttributeError):
            wait = None
        # 0 (or less) asks for no wait: backed off as without it, as a Retry-After of 0
        # is (taken as it was, every retry went a second apart until given up).
        if (isinstance(wait, (int, float)) and not isinstance(wait, bool) and 0 < wait
                < float("inf") and result.retry_after is None):
            return SendResult(False, result.error, float(wait))
        return result


class WebhookChannel(Channel):
    """Generic JSON webhook; ``X-Harvest-Delivery`` (and ``delivery_id`` in the body) is the
    same on every attempt of a message; with a secret, ``X-Harvest-Signature: sha256=<hex
    HMAC>`` of the exact body bytes."""

    name = "webhook"

    def __init__(self, url: str, secret: str | None, timeout: float) -> None:
        super().__init__(url, (url, urlsplit(url).path, urlsplit(url).query, secret or ""),
                         timeout)
        self._secret = secret

    def body(self, payload: dict[str, Any], delivery_id: int) -> bytes:
        return json.dumps(messages.render_webhook(payload, delivery_id),
                          ensure_ascii=False).encode()

    def headers(self, body: bytes, delivery_id: int) -> dict[str, str]:
        headers = super().headers(body, delivery_id)
        headers["X-Harvest-Delivery"] = str(delivery_id)
        if self._secret:
            digest = hmac.new(self._secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Harvest-Signature"] = f"sha256={digest}"
        return headers


def build_channels(cfg: AlertsConfig) -> dict[str, Channel]:
    """The configured channels by name (none configured → empty)."""
    channels: dict[str, Channel] = {}
    if cfg.slack_webhook_url:
        channels["slack"] = SlackChannel(cfg.slack_webhook_url.get_secret_value(),
                                         cfg.notify_timeout)
    if cfg.telegram_bot_token and cfg.telegram_chat_id:
        channels["telegram"] = TelegramChannel(
            cfg.telegram_api_base, cfg.telegram_bot_token.get_secret_value(),
            cfg.telegram_chat_id, cfg.notify_timeout)
    if cfg.webhook_url:
        secret = cfg.webhook_secret.get_secret_value() if cfg.webhook_secret else None
        channels["webhook"] = WebhookChannel(cfg.webhook_url.get_secret_value(), secret,
                                             cfg.notify_timeout)
    return channels


def configured_names(cfg: AlertsConfig) -> list[str]:
    """Names of the configured channels, without building them (for /health)."""
    names = []
    if cfg.slack_webhook_url:
        names.append("slack")
    if cfg.telegram_bot_token and cfg.telegram_chat_id:
        names.append("telegram")
    if cfg.webhook_url:
        names.append("webhook")
    return names
