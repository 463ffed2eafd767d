"""Engine, sessions and schema migration for the store."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import CursorResult, Engine, Update, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS = "training.store:migrations"
# Any constant works; it only has to be the same for every replica migrating one database.
_MIGRATION_LOCK_ID = 0x15_5E_1A_BE


class StoreUnavailable(Exception):
    """The database cannot be reached or opened; the message says which and how to fix it."""


SQLITE_SYNCHRONOUS = ("full", "normal")


def sqlite_synchronous(database_url: str) -> str:
    """The ``?synchronous=`` of a SQLite URL: ``full`` (the default: a commit survives a power
    loss) or ``normal`` (survives a crash of the process, not of the machine; commits skip the
    disk flush, which on a slow or shared disk is most of a commit's time)."""
    value = make_url(database_url).query.get("synchronous", "full")
    value = value if isinstance(value, str) else value[-1]
    if value.lower() not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"synchronous={value!r} in the database URL: use full or normal")
    return value.lower()


def create_store_engine(database_url: str) -> Engine:
    """An engine for the URL; SQLite files get their folder, foreign keys, WAL and a busy timeout."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        synchronous = sqlite_synchronous(database_url)
        url = url.difference_update_query(["synchronous"])
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
            cursor.close()

        return engine
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; safe to call from several processes at once."""
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except OperationalError as exc:
        raise StoreUnavailable(
            f"cannot open the store at {engine.url.render_as_string(hide_password=True)}: "
            f"{exc.orig}. Check ISSUE_LABELER_DATABASE_URL and that the database server is running."
        ) from None
    # reached, but not a database this bot can use: a file of another kind, no rights
    except DatabaseError as exc:
        raise StoreUnavailable(
            f"cannot use the store at {engine.url.render_as_string(hide_password=True)}: {exc.orig}. "
            "Check that ISSUE_LABELER_DATABASE_URL names this bot's database (a new, empty one is set up) "
            "and that its user may create tables there."
        ) from None


def rows_matched(session: Session, statement: Update) -> int:
    """How many rows an UPDATE matched: the conditional updates that let one of several
    processes through read it (``Session.execute`` is not typed as returning a row count)."""
    return cast(CursorResult[Any], session.execute(statement)).rowcount


class Store:
    """An open, migrated database and a session factory for it."""

    def __init__(self, database_url: str) -> None:
        self.engine = create_store_engine(database_url)
        migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def close(self) -> None:
        self.engine.dispose()
