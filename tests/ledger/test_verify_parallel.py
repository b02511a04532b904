"""escrow verify on two cores reports exactly what the replay in one process reports.

The log is split at every seq of a small history (the real threshold is tens of thousands of
entries): an intact log must be found intact by the joined parts, and a tampered one must be
reported exactly as the single replay reports it, whichever part the damage falls in.
"""

from collections.abc import Callable

import pytest
from sqlalchemy import Connection, text

from ledger import verify_parallel
from ledger.runtime import Ledger
from ledger.verify import Report, verify_database
from tests.ledger import tampering
from tests.ledger.entries import append, lesson, move, payout, receipt

LESSON = 15_000
SIZE = 19


@pytest.fixture
def history(ledger: Ledger) -> Ledger:
    """19 entries (seq 0..18): receipts, lessons, releases and payouts over two institutions."""
    append(ledger, receipt("inst-1", "ctr-1", 10 * LESSON), receipt("inst-2", "ctr-2", 8 * LESSON))
    for _ in range(5):
        append(ledger, lesson("inst-1", "ctr-1", LESSON), lesson("inst-2", "ctr-2", LESSON))
    append(ledger, move("pending:inst-1", "releasable:inst-1", 3 * LESSON))
    append(ledger, move("releasable:inst-1", "payable:inst-1", 3 * LESSON))
    append(ledger, payout("inst-1", 3 * LESSON))
    append(ledger, move("pending:inst-2", "releasable:inst-2", 2 * LESSON))
    append(ledger, move("releasable:inst-2", "payable:inst-2", 2 * LESSON))
    append(ledger, payout("inst-2", LESSON))
    tampering.disable_guards(ledger.engine)
    return ledger


@pytest.fixture
def split_at(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], list[str]]:
    """Force the parallel replay, split at a given seq; returns how each run ended."""
    runs: list[str] = []
    monkeypatch.setattr(verify_parallel, "_can_fork", lambda: True)
    parallel = verify_parallel._parallel

    def recorded(*args: object, **kwargs: object) -> verify_parallel.Outcome | None:
        outcome = parallel(*args, **kwargs)  # type: ignore[arg-type]
        runs.append("joined" if outcome is not None else "replayed again")
        return outcome

    monkeypatch.setattr(verify_parallel, "_parallel", recorded)

    def at(seq: int) -> list[str]:
        monkeypatch.setattr(verify_parallel, "_split", lambda last: seq)
        return runs

    return at


def _sequential(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> Report:
    with monkeypatch.context() as patch:
        patch.setattr(verify_parallel, "_can_fork", lambda: False)
        return verify_database(ledger.engine, invariants=False)


def _findings(report: Report) -> list[tuple[object, ...]]:
    return [(p.kind, p.seq, p.account, p.detail) for p in report.problems]


@pytest.mark.parametrize("split", [1, 2, 3, 4, 7, 8, 12, 16, 18])
def test_an_intact_log_is_joined_intact_wherever_it_is_split(
    history: Ledger, split_at: Callable[[int], list[str]], split: int
) -> None:
    runs = split_at(split)
    report = verify_database(history.engine, invariants=False)
    assert report.ok, report.problems
    assert (report.entries, report.accounts) == (SIZE, 10)
    assert runs == ["joined"]


def _edit_amount(conn: Connection, seq: int) -> None:
    body = tampering.entry(conn, seq)
    body["postings"][0]["amount"] += 100
    body["postings"][1]["amount"] -= 100
    tampering.rewrite(conn, seq, body, rehash=True)


TAMPERING: dict[str, Callable[[Connection], object]] = {
    "entry deleted at the split": lambda conn: (
        conn.execute(text("DELETE FROM postings WHERE seq = 8")),
        conn.execute(text("DELETE FROM log_entries WHERE seq = 8")),
    ),
    "entry deleted before the split": lambda conn: (
        conn.execute(text("DELETE FROM postings WHERE seq = 7")),
        conn.execute(text("DELETE FROM log_entries WHERE seq = 7")),
    ),
    "amount rehashed before the split": lambda conn: _edit_amount(conn, 5),
    "amount rehashed after the split": lambda conn: _edit_amount(conn, 13),
    "amount rehashed at the split": lambda conn: _edit_amount(conn, 8),
    "stored balance": lambda conn: conn.execute(
        text("UPDATE accounts SET balance = balance + 1 WHERE code = 'escrow:inst-2'")
    ),
    "opened_seq": lambda conn: conn.execute(
        text("UPDATE accounts SET opened_seq = 9 WHERE code = 'contract:ctr-1'")
    ),
    "posting row": lambda conn: conn.execute(
        text("UPDATE postings SET amount = amount + 1 WHERE id = (SELECT max(id) FROM postings)")
    ),
    "merkle node straddling the split": lambda conn: conn.execute(
        text("UPDATE merkle_nodes SET hash = :h WHERE level = 4 AND idx = 0"), {"h": b"\x02" * 32}
    ),
    "merkle node below the split": lambda conn: conn.execute(
        text("UPDATE merkle_nodes SET hash = :h WHERE level = 1 AND idx = 1"), {"h": b"\x02" * 32}
    ),
    "merkle node deleted after the split": lambda conn: conn.execute(
        text("DELETE FROM merkle_nodes WHERE level = 1 AND idx = 6")
    ),
    "actor column": lambda conn: conn.execute(
        text("UPDATE log_entries SET actor = 'bank:evil' WHERE seq = 11")
    ),
}


@pytest.mark.parametrize("name", sorted(TAMPERING))
def test_a_tampered_log_is_reported_as_the_single_replay_reports_it(
    history: Ledger,
    split_at: Callable[[int], list[str]],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    with history.engine.begin() as conn:
        TAMPERING[name](conn)
    expected = _sequential(history, monkeypatch)
    assert not expected.ok
    runs = split_at(8)
    report = verify_database(history.engine, invariants=False)
    assert _findings(report) == _findings(expected)
    assert (report.entries, report.postings, report.accounts, report.problems_total) == (
        expected.entries,
        expected.postings,
        expected.accounts,
        expected.problems_total,
    )
    # Damage to the entries or accounts sends the whole log through the exact replay; damage to
    # the Merkle nodes alone is named by the node check after an intact join.
    assert runs in (["replayed again"], ["joined"])


def test_a_second_part_that_goes_negative_is_caught_at_the_join(
    history: Ledger, split_at: Callable[[int], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last payout pays inst-2 more than its payable holds: only the running balance carried
    # over from the first part shows it going below zero.
    with history.engine.begin() as conn:
        body = tampering.entry(conn, 18)
        for leg in body["postings"]:
            leg["amount"] = leg["amount"] * 3
        tampering.rewrite(conn, 18, body, rehash=True)
    expected = _sequential(history, monkeypatch)
    runs = split_at(16)
    report = verify_database(history.engine, invariants=False)
    assert _findings(report) == _findings(expected)
    assert runs == ["replayed again"]
