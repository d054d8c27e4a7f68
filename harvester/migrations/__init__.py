"""Alembic migrations (plain SQL). ``HEAD`` names the newest revision so a crawl can check
the schema without importing Alembic; tests/test_database.py keeps the two in step."""

HEAD = "0014"


def schema_advice(revision: str | None) -> str:
    """What to say of a database at ``revision`` when this code needs ``HEAD``: behind it
    is a migration away; past it (a later harvest migrated it, then this older code was
    put back) no command of this code can help, and `harvest migrate` failed with a
    95-line Alembic traceback ("Can't locate revision")."""
    if schema_newer(revision):
        return (f"the database's schema is {revision}, which this code (schema {HEAD}) does "
                "not know: a newer harvest migrated it; run that version, or restore a "
                "backup taken before it")
    return f"the schema is at {revision or 'none'}, this code needs {HEAD}; run `harvest migrate`"


def schema_newer(revision: str | None) -> bool:
    """Whether ``revision`` is none this code knows (revisions are numbered ``0001``…)."""
    return revision is not None and not (revision.isdigit() and revision <= HEAD)
