"""Alembic migrations (plain SQL). ``HEAD`` names the newest revision so a crawl can check
the schema without importing Alembic; tests/test_database.py keeps the two in step."""

HEAD = "0011"
