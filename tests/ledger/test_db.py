"""Engine behaviour the ledger relies on."""

import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ledger.db import SQLITE_WAL_AUTOCHECKPOINT_PAGES
from ledger.runtime import Ledger
from tests.ledger.entries import append, receipt


def test_a_refused_commit_does_not_leave_the_write_lock_held(ledger: Ledger) -> None:
    append(ledger, receipt("inst-1", "ctr-1", 100))
    session = ledger.sessions()
    session.execute(
        text("INSERT INTO postings (seq, account_id, amount, currency) VALUES (9, 1, 5, 'CNY')")
    )
    session.execute(
        text("INSERT INTO postings (seq, account_id, amount, currency) VALUES (9, 2, -5, 'CNY')")
    )
    with pytest.raises(DBAPIError, match="(?i)foreign key"):
        session.commit()  # deferred foreign key: no entry 9
    session.close()
    started = time.monotonic()
    append(ledger, receipt("inst-1", "ctr-1", 100))
    assert time.monotonic() - started < 5, "the next writer waited for a lock left behind"


@pytest.mark.postgresql
def test_postgres_sessions_run_read_committed_whatever_the_server_default(ledger: Ledger) -> None:
    with ledger.engine.connect() as conn:
        database = conn.exec_driver_sql("SELECT current_database()").scalar()
        conn.exec_driver_sql(
            f"ALTER DATABASE \"{database}\" SET default_transaction_isolation = 'repeatable read'"
        )
    ledger.engine.dispose()
    with ledger.engine.connect() as conn:
        level = conn.exec_driver_sql("SHOW transaction_isolation").scalar()
    assert level == "read committed"


@pytest.mark.sqlite
def test_the_wal_is_copied_back_by_the_checkpointer_not_by_the_writer(ledger: Ledger) -> None:
    """Below the writers' threshold only the background thread copies the WAL into the file."""
    database = Path(ledger.engine.url.database or "")
    with ledger.engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert pages == SQLITE_WAL_AUTOCHECKPOINT_PAGES
    append(ledger, *(receipt("inst-1", f"ctr-{n}", 100) for n in range(300)))
    written = database.stat().st_size
    deadline = time.monotonic() + 10
    while database.stat().st_size == written and time.monotonic() < deadline:
        time.sleep(0.05)
    assert database.stat().st_size > written, "nothing checkpointed the WAL"
    ledger.close()
    assert ledger._checkpointer is None


def test_only_sqlite_files_get_a_checkpointer(ledger: Ledger) -> None:
    is_file = ledger.engine.url.get_backend_name() == "sqlite"
    assert (ledger._checkpointer is not None) == is_file
