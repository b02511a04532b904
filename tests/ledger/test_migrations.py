"""The schema comes from the migrations, and the models never drift from them."""

import pytest
from alembic import command
from sqlalchemy import Engine, inspect

from ledger import schema


def test_models_and_migrations_do_not_drift(engine: Engine) -> None:
    with engine.begin() as conn:
        command.check(schema.alembic_config(conn))  # raises if autogenerate finds a difference


def test_a_fresh_database_is_at_the_head_revision(engine: Engine) -> None:
    assert schema.is_current(engine)
    tables = set(inspect(engine).get_table_names())
    assert {"accounts", "postings", "log_entries", "personal_data", "alembic_version"} <= tables
    assert {"institutions", "contracts", "lessons", "refunds", "receipts", "transfers"} <= tables


def test_upgrading_an_up_to_date_database_changes_nothing(engine: Engine) -> None:
    schema.upgrade(engine)
    assert schema.is_current(engine)


def test_the_ledger_refuses_to_be_downgraded(engine: Engine) -> None:
    with pytest.raises(RuntimeError, match="cannot be downgraded"), engine.begin() as conn:
        command.downgrade(schema.alembic_config(conn), "base")
    assert schema.is_current(engine)
