"""Engine behaviour the ledger relies on."""

import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

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
