"""Storage: `open_store(url)` gives the one interface over SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from host.store.sql import POSTGRES, SQLITE, SqlStore


def open_store(url: str, migrate: bool = True) -> SqlStore:
    """url: a file path or sqlite:///PATH (SQLite, the default), or postgresql://... ."""
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        store = SqlStore(psycopg.connect(url), POSTGRES, url)
    else:
        path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss, not only a process crash; acks follow commits.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        store = SqlStore(_AutoBegin(conn), SQLITE, url)
    if migrate:
        store.migrate()
    return store


class _AutoBegin:
    """sqlite3 in autocommit mode, with commit/rollback that are no-ops outside a transaction, so
    the store drives transactions the same way for both drivers."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def cursor(self) -> sqlite3.Cursor:
        return self._conn.cursor()

    def execute(self, sql: str) -> sqlite3.Cursor:
        return self._conn.execute(sql)

    def commit(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self._conn.close()


__all__ = ["open_store", "SqlStore"]
