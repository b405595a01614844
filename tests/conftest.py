"""Shared fixtures: a private Mosquitto with our config, and databases (SQLite, PostgreSQL)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.broker import Broker, make_broker
from host.store import SqlStore, open_store

PG_ENV = "SOXBMS_TEST_PG"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """Mosquitto with the project's config, anonymous, on a free loopback port."""
    b = make_broker(tmp_path / "broker", prefer="mosquitto")
    assert b.kind == "mosquitto", "tests run on Mosquitto: apt-get install mosquitto"
    b.start()
    yield b
    b.stop()


def _pg_admin_url() -> str | None:
    return os.environ.get(PG_ENV) or ("postgresql://postgres@127.0.0.1:5432/postgres" if os.environ.get("CI")
                                      else None)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """Admin URL of a reachable PostgreSQL; skipped without one, except under CI where it fails."""
    import psycopg

    url = _pg_admin_url() or "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL required under CI ({PG_ENV}={url}): {e}")
        pytest.skip(f"no PostgreSQL at {url}: {e}")
    return url


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the server, dropped afterwards."""
    import psycopg

    name = f"soxbms_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield _url_with_db(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _url_with_db(url: str, name: str) -> str:
    """The same server URL with another database name (the path after the last '/')."""
    base, _, _ = url.partition("?")[0].rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "test.sqlite")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    s = open_store(db_url)
    yield s
    s.close()
