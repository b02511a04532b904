"""Concurrent writers cannot both spend the last fen of a non-negative account."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from ledger.errors import InsufficientFunds
from ledger.runtime import Ledger
from ledger.verify import verify_database
from tests.ledger.entries import append, balances, lesson, receipt

THREADS = 8
ATTEMPTS_PER_THREAD = 5
BALANCE = 17  # fen; fewer than THREADS * ATTEMPTS_PER_THREAD spends of 1 fen


def test_concurrent_spends_never_exceed_the_balance(ledger: Ledger) -> None:
    append(ledger, receipt("inst-1", "ctr-1", BALANCE))
    barrier = threading.Barrier(THREADS)

    def spend() -> tuple[int, int]:
        barrier.wait()
        ok = refused = 0
        for _ in range(ATTEMPTS_PER_THREAD):
            try:
                append(ledger, lesson("inst-1", "ctr-1", 1))
                ok += 1
            except InsufficientFunds:
                refused += 1
        return ok, refused

    with ThreadPoolExecutor(THREADS) as pool:
        results = [f.result() for f in [pool.submit(spend) for _ in range(THREADS)]]

    spent = sum(ok for ok, _ in results)
    assert spent == BALANCE
    assert sum(refused for _, refused in results) == THREADS * ATTEMPTS_PER_THREAD - BALANCE
    assert balances(ledger, ["contract:ctr-1", "pending:inst-1"]) == {
        "contract:ctr-1": 0,
        "pending:inst-1": BALANCE,
    }
    with ledger.readers() as session:
        assert ledger.log.head(session).size == 2 + BALANCE
    assert verify_database(ledger.engine, invariants=False).ok


def test_concurrent_batches_interleave_without_gaps_or_lost_updates(ledger: Ledger) -> None:
    append(ledger, receipt("inst-1", "ctr-1", 1_000_000))
    barrier = threading.Barrier(THREADS)

    def report_lessons() -> None:
        barrier.wait()
        for _ in range(ATTEMPTS_PER_THREAD):
            append(ledger, *(lesson("inst-1", "ctr-1", 100) for _ in range(10)))

    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(report_lessons) for _ in range(THREADS)]:
            future.result()

    lessons = THREADS * ATTEMPTS_PER_THREAD * 10
    assert balances(ledger, ["contract:ctr-1", "pending:inst-1"]) == {
        "contract:ctr-1": 1_000_000 - 100 * lessons,
        "pending:inst-1": 100 * lessons,
    }
    report = verify_database(ledger.engine, invariants=False)
    assert report.ok, report.problems
    assert report.entries == 2 + lessons
