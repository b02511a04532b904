"""Alembic, driven from code: the schema is built and upgraded by the migrations, never create_all.

The migrations live inside the package (``ledger/migrations``) so that an installed service can
upgrade its own database; ``alembic.ini`` at the top level points at the same folder for the
``alembic`` command.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from ledger.db import READ_ONLY

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same in every process that migrates this database.
_PG_MIGRATION_LOCK = 0x657363726F77  # "escrow"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the package's migrations, optionally bound to an open connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` in one transaction.

    On PostgreSQL an advisory lock keeps two processes started together from migrating at once.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        command.upgrade(alembic_config(connection), revision)


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None for an empty database)."""
    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest revision the code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def is_current(engine: Engine) -> bool:
    """True when the database is at the code's head revision."""
    with engine.execution_options(**{READ_ONLY: True}).connect() as connection:
        return current_revision(connection) == head_revision()
