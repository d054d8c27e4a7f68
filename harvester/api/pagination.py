"""Opaque keyset cursors: ``base64url(JSON [sort, key, id])`` of the last row of a page.

The next page is "rows strictly after (key, id) in the page's order", so pages never
overlap or skip a row however many rows arrive meanwhile. A cursor that does not decode,
names another sort, or holds a key of the wrong type is refused (422), never guessed at.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Sort = Literal["recent", "score"]


#: The range of PostgreSQL's real that scores are stored as (normal numbers, and 0).
_REAL_MIN, _REAL_MAX = 1.1754944e-38, 3.4028234e38

class CursorError(ValueError):
    """The cursor is not one this API handed out for this sort."""


@dataclass(frozen=True, slots=True)
class Cursor:
    sort: Sort
    key: float | datetime
    id: int

    def encode(self) -> str:
        key = self.key.isoformat() if isinstance(self.key, datetime) else self.key
        raw = json.dumps([self.sort, key, self.id], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str, sort: Sort) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            data: Any = json.loads(raw)
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise CursorError("not a cursor returned by this API") from None
        if not (isinstance(data, list) and len(data) == 3 and data[0] in ("recent", "score")):
            raise CursorError("not a cursor returned by this API")
        kind, key, row_id = data
        if kind != sort:
            raise CursorError(f"this cursor belongs to sort={kind}, not sort={sort}")
        if isinstance(row_id, bool) or not isinstance(row_id, int) or not 0 < row_id < 2**63:
            raise CursorError("not a cursor returned by this API")
        if kind == "score":
            # Scores are real (float4): 1e39 or 1e-50 overflowed the ::real cast (a 500).
            if isinstance(key, bool) or not isinstance(key, (int, float)) \
                    or not math.isfinite(key) or not (key == 0 or _REAL_MIN <= abs(key)
                                                      <= _REAL_MAX):
                raise CursorError("not a cursor returned by this API")
            return cls("score", float(key), row_id)
        try:
            moment = datetime.fromisoformat(key) if isinstance(key, str) else None
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise CursorError("not a cursor returned by this API")
        return cls("recent", moment, row_id)
