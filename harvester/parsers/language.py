"""Language tags (BCP 47) as sources write them, checked."""

from __future__ import annotations

import re
from typing import Any

# No language: "und" (undetermined), "zxx" (no linguistic content), and X's q* codes (qme =
# media only, qht = hashtags only, qst = very short text).
_NO_LANGUAGE = re.compile(r"^(und|zxx|q[a-z]{2})$")
# A BCP 47 tag ("en", "pt", "zh-TW"); pages also write "de_DE" (og:locale).
_TAG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}")
# Withdrawn codes some sources still send.
_LEGACY = {"in": "id", "iw": "he"}


def language_tag(value: Any) -> str | None:
    """``value`` as a BCP 47 tag (``_`` written ``-``); None for none (``und``) or
    something that is no tag at all (``utf-8`` in a page's Content-Language)."""
    if not isinstance(value, str):
        return None
    value = value.strip().replace("_", "-")
    if not value or _NO_LANGUAGE.match(value) or not _TAG.fullmatch(value):
        return None
    return _LEGACY.get(value, value)


def is_no_language(value: Any) -> bool:
    """Whether ``value`` says "no language" in a tag's own words (``und``, ``zxx``)."""
    return isinstance(value, str) and _NO_LANGUAGE.match(value) is not None
