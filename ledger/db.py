"""Engines and sessions for SQLite (embedded default) and PostgreSQL (production).

SQLite: WAL journal so readers never block the writer, foreign keys on, and every write transaction
opened with ``BEGIN IMMEDIATE`` so that it holds the database's single write lock from its first
statement. That is SQLite's form of the log lock: no writer can read state, decide, and then be
overtaken by another writer. Read-only sessions open a deferred transaction instead.

PostgreSQL (psycopg 3): READ COMMITTED (pinned), and writers serialize on the log's advisory lock
(``ledger.log.EventLog.lock``), taken before they read anything they will decide on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

READ_ONLY = "escrow_read_only"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def is_sqlite(url: str | URL) -> bool:
    """True for any SQLite URL."""
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Create an engine with the pragmas and transaction behaviour this ledger relies on."""
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, **kwargs)
    kwargs.setdefault("pool_pre_ping", True)
    # Pinned, not inherited from the server: the log lock relies on each statement seeing every
    # transaction committed before the lock was granted, which REPEATABLE READ would not.
    kwargs.setdefault("isolation_level", "READ COMMITTED")
    return create_engine(url, **kwargs)


def _sqlite_engine(url: URL, **kwargs: Any) -> Engine:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
    engine = create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so that "begin" below decides.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # FULL (the default) makes each commit durable against power loss, not only a crash.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, _record: Any) -> None:
        # A COMMIT that SQLite refuses (a deferred foreign key) leaves the transaction open and
        # the write lock held, while SQLAlchemy believes it ended and skips its reset. A pooled
        # connection must never keep the lock, or every later writer waits out its busy timeout.
        if dbapi_connection.in_transaction:
            dbapi_connection.rollback()

    return engine


def session_factory(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions that do not expire objects on commit; read-only ones skip SQLite's write lock."""
    bind = engine.execution_options(**{READ_ONLY: True}) if read_only else engine
    return sessionmaker(bind=bind, expire_on_commit=False, autoflush=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit once at the end, roll back on any exception.

    This is the single commit point for jobs and commands; services only flush.
    """
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
