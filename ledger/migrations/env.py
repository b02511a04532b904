"""Alembic environment: runs against the connection ledger.schema hands in, or the configured URL."""

from __future__ import annotations

import logging.config
from types import ModuleType
from typing import Any, Literal

from alembic import context
from sqlalchemy import Connection

from ledger import access, checkpoints, entities, party_keys, witnesses
from ledger import risk as risk_grading
from ledger.config import Settings
from ledger.db import make_engine
from ledger.models import Base, UTCDateTime
from settlement import statement_tables

# Importing these modules registers their tables on the metadata autogenerate compares with.
MODEL_MODULES: tuple[ModuleType, ...] = (
    access,
    checkpoints,
    entities,
    party_keys,
    witnesses,
    statement_tables,
)
MODEL_MODULES += (risk_grading,)

config = context.config
target_metadata = Base.metadata


def _render_item(type_: str, obj: Any, _context: Any) -> str | Literal[False]:
    """Write app-specific column types as the plain types they store, so migrations never import
    application code that may change after they were written."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


# Tables other software owns in the same database: APScheduler creates and migrates its job store.
FOREIGN_TABLES = frozenset({"apscheduler_jobs"})


def _include_name(name: str | None, type_: str, _parents: Any) -> bool:
    return not (type_ == "table" and name in FOREIGN_TABLES)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
        include_name=_include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    if config.config_file_name is not None:
        logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)
    url = Settings().database_url
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: triggers differ per dialect")
run_migrations_online()
