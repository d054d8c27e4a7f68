"""One-sentence messages to operators (logs, CLI, API): the first line of an error, a
source whose URL moved."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first non-empty line of ``exc``'s message, or its type's name when it has none.
    Imports nothing: the store worker uses it too."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def moved(source: str, old: str, new: str) -> str:
    """A listed URL of ``source`` that redirects permanently, and what to do about it."""
    return f"{source}: {old} redirects permanently to {new}; put the new URL in the sources file"
