"""Persistence: SQLModel tables, Alembic migrations and the ``Store`` (SQLite or PostgreSQL).

Depends on nothing else in Stepline, so the TUI can read it without loading
the step runtime, Prefect or any provider SDK.
"""
