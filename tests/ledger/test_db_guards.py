"""The database defends the ledger by itself: raw SQL that bypasses the code is refused."""

import threading

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from ledger.log import leaf_hash
from ledger.runtime import Ledger
from ledger.verify import verify_database
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


@pytest.mark.sqlite
def test_sqlite_runs_in_wal_mode_with_foreign_keys_on(ledger: Ledger) -> None:
    with ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_an_entry_out_of_seq_order_is_refused(booked: Ledger) -> None:
    with pytest.raises(DBAPIError, match="appended in order"):
        _raw_entry(booked.engine, 5, [])


@pytest.mark.parametrize("table", ["log_entries", "postings"])
@pytest.mark.sqlite
def test_sqlite_insert_or_replace_cannot_overwrite_history(booked: Ledger, table: str) -> None:
    statement = {
        "log_entries": "INSERT OR REPLACE INTO log_entries (seq, time, type, actor, body, hash) "
        "SELECT seq, time, 'forged.type', actor, body, hash FROM log_entries WHERE seq = 1",
        "postings": "INSERT OR REPLACE INTO postings (id, seq, account_id, amount, currency) "
        "SELECT id, 2, account_id, amount, currency FROM postings WHERE seq = 1",
    }[table]
    with pytest.raises(DBAPIError):
        _run(booked.engine, statement)


# SQLite converts integer-looking text and whole floats to INTEGER itself; these stay non-integers.
@pytest.mark.parametrize("amount", ["511.5", "'abc'", "x'00ff'", "1e300"])
@pytest.mark.sqlite
def test_sqlite_refuses_postings_whose_amount_is_not_an_integer(
    booked: Ledger, amount: str
) -> None:
    escrow, _contract = _account_ids(booked.engine)
    with pytest.raises(DBAPIError, match="integer seq, account and amount"):
        _run(
            booked.engine,
            f"INSERT INTO postings (seq, account_id, amount, currency) VALUES (2, {escrow}, {amount}, 'CNY')",
        )


@pytest.mark.postgresql
def test_postgres_replica_mode_does_not_silence_the_guards(booked: Ledger) -> None:
    with booked.engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        with pytest.raises(DBAPIError, match="append-only"):
            conn.exec_driver_sql("DELETE FROM log_entries WHERE seq = 1")


def test_a_raw_writer_serializes_with_the_application_and_cannot_smuggle_postings(
    booked: Ledger,
) -> None:
    """Postings written ahead for the next seq hold the log lock and fail at their own commit."""
    escrow, contract = _account_ids(booked.engine)
    intruder = booked.engine.connect()
    transaction = intruder.begin()
    for account_id, amount in ((escrow, 7), (contract, -7)):
        intruder.execute(
            text(
                "INSERT INTO postings (seq, account_id, amount, currency) VALUES (2, :a, :m, 'CNY')"
            ),
            {"a": account_id, "m": amount},
        )
    appended = threading.Event()

    def application() -> None:
        append(booked, receipt("inst-1", "ctr-1", 100))
        appended.set()

    worker = threading.Thread(target=application)
    worker.start()
    assert not appended.wait(0.5), "the application must wait for the raw writer's lock"
    with pytest.raises(DBAPIError, match="(?i)foreign key"):
        transaction.commit()
    intruder.close()
    worker.join(timeout=30)
    assert appended.is_set()
    report = verify_database(booked.engine, invariants=False)
    assert report.ok, report.problems
    assert report.postings == 4
