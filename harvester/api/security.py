"""Who may call: ``X-API-Key`` for reads, ``Authorization: Bearer`` for writes.

Every comparison is ``hmac.compare_digest`` over every configured secret (no early exit
that would time which key matched), and a refusal says only "missing" or "invalid": never
which keys exist, how many, or how close a guess was.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from harvester.api.settings import ApiSettings

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="Read key (HARVEST_API_KEYS), when keys are set.")
bearer = HTTPBearer(auto_error=False,
                    description="Write token (HARVEST_API_TOKENS) for POST endpoints.")


def matches(candidate: str | None, secrets: Sequence[bytes]) -> bool:
    if not candidate or not secrets:
        return False
    value = candidate.encode("utf-8", "surrogateescape")
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(value, secret)
    return found


def _settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.api_settings
    return settings


def _refuse(code: int, detail: str, scheme: str) -> HTTPException:
    return HTTPException(code, detail, headers={"WWW-Authenticate": scheme}
                         if code == status.HTTP_401_UNAUTHORIZED else None)


ApiKey = Annotated[str | None, Depends(api_key_header)]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require_read(request: Request, key: ApiKey, credentials: Bearer) -> None:
    """Reads are open unless HARVEST_API_KEYS is set; a write token reads too."""
    settings = _settings(request)
    if not settings.read_keys:
        return
    token = credentials.credentials if credentials else None
    # A write token reads too, however it is sent (the rate limiter took it as X-API-Key).
    if matches(key, settings.read_keys + settings.write_tokens) or matches(
            token, settings.write_tokens):
        return
    if key is None and token is None:
        raise _refuse(status.HTTP_401_UNAUTHORIZED, "API key required", "ApiKey")
    raise _refuse(status.HTTP_403_FORBIDDEN, "invalid credentials", "ApiKey")


def require_write(request: Request, credentials: Bearer) -> None:
    """Writes need a bearer token of HARVEST_API_TOKENS; without any configured, none pass."""
    if (refusal := write_refusal(request, credentials.credentials if credentials else None)):
        raise refusal


def write_refusal(request: Request, token: str | None = None) -> HTTPException | None:
    """Why a write request is refused (401 without a token, 403 with a wrong one), or None.

    Also asked by the 422 handler with the token read from the headers: FastAPI parses a
    JSON body before any dependency runs, so a malformed body answered 422 (and echoed the
    parse error) to callers without a token before they were asked for one."""
    if token is None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" and value.strip() else None
    if token is None:
        return _refuse(status.HTTP_401_UNAUTHORIZED, "bearer token required", "Bearer")
    if not matches(token, _settings(request).write_tokens):
        return _refuse(status.HTTP_403_FORBIDDEN, "invalid credentials", "Bearer")
    return None


def client_identity(settings: ApiSettings, api_key: str | None, authorization: str | None,
                    peer: str) -> str:
    """The rate-limit bucket of a request: its valid key or token (hashed: buckets never
    hold a secret), else its address. An invalid key falls back to the address, so guessing
    keys does not buy fresh buckets."""
    if api_key and matches(api_key, settings.read_keys + settings.write_tokens):
        return "key:" + hashlib.sha256(api_key.encode()).hexdigest()[:16]
    if authorization and authorization[:7].lower() == "bearer ":
        token = authorization[7:].strip()
        if matches(token, settings.write_tokens):
            return "key:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    return "ip:" + peer
