"""The database defends the ledger by itself: raw SQL that bypasses the code is refused."""

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from ledger.log import leaf_hash
from ledger.runtime import Ledger
from tests.ledger.entries import append, receipt


@pytest.fixture
def booked(ledger: Ledger) -> Ledger:
    """A ledger with one receipt (seq 1) holding two postings."""
    append(ledger, receipt("inst-1", "ctr-1", 30_000))
    return ledger


def _run(engine: Engine, sql: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE log_entries SET actor = 'bank:evil' WHERE seq = 1",
        "DELETE FROM log_entries WHERE seq = 1",
        "UPDATE postings SET amount = amount + 1",
        "DELETE FROM postings",
    ],
)
def test_the_log_and_postings_refuse_update_and_delete(booked: Ledger, sql: str) -> None:
    with pytest.raises(DBAPIError, match="append-only"):
        _run(booked.engine, sql)


@pytest.mark.postgresql
@pytest.mark.parametrize("table", ["log_entries", "postings"])
def test_postgres_refuses_truncate_of_the_log(booked: Ledger, table: str) -> None:
    with pytest.raises(DBAPIError, match="append-only"):
        _run(booked.engine, f"TRUNCATE {table} CASCADE")


def _raw_entry(engine: Engine, seq: int, legs: list[tuple[int, int]]) -> None:
    """Write postings and then an entry for ``seq`` with raw SQL, in one transaction."""
    body = b'{"raw":true}'
    with engine.begin() as conn:
        for account_id, amount in legs:
            conn.execute(
                text(
                    "INSERT INTO postings (seq, account_id, amount, currency) VALUES (:s, :a, :m, 'CNY')"
                ),
                {"s": seq, "a": account_id, "m": amount},
            )
        conn.execute(
            text(
                "INSERT INTO log_entries (seq, time, type, actor, body, hash) "
                "VALUES (:s, CURRENT_TIMESTAMP, 'raw.entry', 'system', :b, :h)"
            ),
            {"s": seq, "b": body, "h": leaf_hash(body)},
        )


def _account_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(text("SELECT id FROM accounts ORDER BY id"))]


def test_an_unbalanced_entry_written_with_raw_sql_is_refused(booked: Ledger) -> None:
    escrow, contract = _account_ids(booked.engine)
    with pytest.raises(DBAPIError, match="unbalanced entry"):
        _raw_entry(booked.engine, 2, [(escrow, 500), (contract, -499)])


def test_a_balanced_entry_written_with_raw_sql_is_accepted_by_the_database(booked: Ledger) -> None:
    # The database checks balance and immutability; chain integrity is escrow verify's job.
    escrow, contract = _account_ids(booked.engine)
    _raw_entry(booked.engine, 2, [(escrow, 500), (contract, -500)])


def _raw_postings(engine: Engine, seq: int, legs: list[tuple[int, int]]) -> None:
    """Write postings for ``seq`` with raw SQL and commit, without writing an entry."""
    with engine.begin() as conn:
        for account_id, amount in legs:
            conn.execute(
                text(
                    "INSERT INTO postings (seq, account_id, amount, currency) "
                    "VALUES (:s, :a, :m, 'CNY')"
                ),
                {"s": seq, "a": account_id, "m": amount},
            )


def test_postings_cannot_be_added_to_an_entry_already_written(booked: Ledger) -> None:
    escrow, contract = _account_ids(booked.engine)
    with pytest.raises(DBAPIError, match="already written"):
        _raw_postings(booked.engine, 1, [(escrow, 1), (contract, -1)])


def test_postings_without_an_entry_are_refused_at_commit(booked: Ledger) -> None:
    escrow, contract = _account_ids(booked.engine)
    with pytest.raises(DBAPIError, match="(?i)foreign key"):
        _raw_postings(booked.engine, 99, [(escrow, 1), (contract, -1)])


def test_a_non_negative_account_cannot_be_stored_below_zero(booked: Ledger) -> None:
    with pytest.raises(DBAPIError, match="(?i)check"):
        _run(booked.engine, "UPDATE accounts SET balance = -1 WHERE code = 'contract:ctr-1'")


def test_sqlite_runs_in_wal_mode_with_foreign_keys_on(ledger: Ledger, db_kind: str) -> None:
    if db_kind != "sqlite":
        pytest.skip("SQLite pragmas")
    with ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
