"""Which database errors mean what, for code that must stay light (the store worker
imports neither pydantic nor Scrapy)."""

from __future__ import annotations

import psycopg

#: Errors that mean "the database is not there" (the connection failed or broke), as
#: opposed to a bug in our SQL or rows it refuses.
DB_DOWN = (psycopg.OperationalError, psycopg.InterfaceError)
#: The database aborted the transaction for a conflict with a concurrent one (both are
#: OperationalErrors, so in DB_DOWN as well): run it again.
CONFLICTS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
