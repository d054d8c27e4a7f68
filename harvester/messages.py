"""The first line of an error, for one-sentence messages to operators (logs, CLI, API)."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first non-empty line of ``exc``'s message, or its type's name when it has none.
    Imports nothing: the store worker uses it too."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
