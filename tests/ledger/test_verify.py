"""escrow verify against every way of altering history through the database.

Each scenario tampers with a clean ledger through raw SQL (triggers switched off, as an attacker with
full database access could) and checks that verification names the right seq and reason.
"""

import pytest
import rfc8785
from sqlalchemy import text

from ledger.log import leaf_hash
from ledger.runtime import Ledger
from ledger.verify import ProblemKind, Report, verify_database
from tests.ledger import tampering
from tests.ledger.entries import append, lesson, move, payout, receipt

LESSON = 15_000


@pytest.fixture
def history(ledger: Ledger) -> Ledger:
    """A clean history of 9 entries (seq 0..8): genesis, two receipts, lessons, release, payout."""
    append(ledger, receipt("inst-1", "ctr-1", 10 * LESSON))  # 1
    append(ledger, receipt("inst-1", "ctr-2", 5 * LESSON))  # 2
    append(ledger, lesson("inst-1", "ctr-1", LESSON), lesson("inst-1", "ctr-2", LESSON))  # 3, 4
    append(ledger, lesson("inst-1", "ctr-1", LESSON))  # 5
    append(ledger, move("pending:inst-1", "releasable:inst-1", 2 * LESSON))  # 6
    append(ledger, move("releasable:inst-1", "payable:inst-1", 2 * LESSON))  # 7
    append(ledger, payout("inst-1", 2 * LESSON))  # 8
    tampering.disable_guards(ledger.engine)
    return ledger


def _verify(ledger: Ledger) -> Report:
    return verify_database(ledger.engine, invariants=False)


def _first(report: Report) -> tuple[ProblemKind, int | None]:
    assert not report.ok
    assert report.first is not None
    return report.first.kind, report.first.seq


def test_a_clean_history_verifies(history: Ledger) -> None:
    report = _verify(history)
    assert report.ok, report.problems
    assert (report.entries, report.postings, report.accounts) == (9, 16, 6)


def test_an_edited_posting_amount_is_a_posting_mismatch_at_its_seq(history: Ledger) -> None:
    with history.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE postings SET amount = amount + 100 WHERE id = (SELECT min(id) FROM postings WHERE seq = 4)"
            )
        )
    assert _first(_verify(history)) == (ProblemKind.POSTING_MISMATCH, 4)


def test_an_amount_edited_inside_the_entry_is_a_hash_mismatch_at_its_seq(history: Ledger) -> None:
    with history.engine.begin() as conn:
        body = tampering.entry(conn, 3)
        body["postings"][0]["amount"] += 100
        body["postings"][1]["amount"] -= 100
        tampering.rewrite(conn, 3, body, rehash=False)
    report = _verify(history)
    assert _first(report) == (ProblemKind.HASH_MISMATCH, 3)
    assert (ProblemKind.BROKEN_LINK, 4) in {(p.kind, p.seq) for p in report.problems}


def test_an_edited_payload_byte_is_a_hash_mismatch_at_its_seq(history: Ledger) -> None:
    with history.engine.begin() as conn:
        body = conn.execute(text("SELECT body FROM log_entries WHERE seq = 2")).scalar_one()
        forged = body.replace(b'"contract":"ctr-2"', b'"contract":"ctr-3"')
        assert forged != body
        conn.execute(text("UPDATE log_entries SET body = :b WHERE seq = 2"), {"b": forged})
    assert _first(_verify(history)) == (ProblemKind.HASH_MISMATCH, 2)


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(history: Ledger) -> None:
    with history.engine.begin() as conn:
        body = tampering.entry(conn, 5)
        body["actor"] = "institution:inst-2"
        tampering.rewrite(conn, 5, body, rehash=True)
        conn.execute(text("UPDATE log_entries SET actor = 'institution:inst-2' WHERE seq = 5"))
    assert _first(_verify(history)) == (ProblemKind.BROKEN_LINK, 6)


def test_a_deleted_entry_is_a_gap_at_its_seq(history: Ledger) -> None:
    with history.engine.begin() as conn:
        conn.execute(text("DELETE FROM postings WHERE seq = 4"))
        conn.execute(text("DELETE FROM log_entries WHERE seq = 4"))
    report = _verify(history)
    assert _first(report) == (ProblemKind.GAP, 4)
    assert "entries 4 are missing" in report.problems[0].detail


def test_two_swapped_entries_are_out_of_order_at_the_first(history: Ledger) -> None:
    with history.engine.begin() as conn:
        rows = {
            r.seq: r
            for r in conn.execute(
                text(
                    "SELECT seq, time, type, actor, body, hash FROM log_entries WHERE seq IN (3, 5)"
                )
            )
        }
        for seq, other in ((3, 5), (5, 3)):
            source = rows[other]
            conn.execute(
                text(
                    "UPDATE log_entries SET time = :t, type = :ty, actor = :a, body = :b, hash = :h "
                    "WHERE seq = :s"
                ),
                {
                    "t": source.time,
                    "ty": source.type,
                    "a": source.actor,
                    "b": source.body,
                    "h": source.hash,
                    "s": seq,
                },
            )
    report = _verify(history)
    assert _first(report) == (ProblemKind.OUT_OF_ORDER, 3)
    assert (ProblemKind.OUT_OF_ORDER, 5) in {(p.kind, p.seq) for p in report.problems}


def test_an_entry_inserted_in_the_middle_is_caught_at_the_entry_it_displaced(
    history: Ledger,
) -> None:
    with history.engine.begin() as conn:
        tampering.shift_seqs(conn, 4, by=1)
        previous = tampering.entry(conn, 3)
        previous_hash = conn.execute(
            text("SELECT hash FROM log_entries WHERE seq = 3")
        ).scalar_one()
        forged = {
            "seq": 4,
            "time": previous["time"],
            "type": "test.note",
            "actor": "regulator:edu-1",
            "payload": {"note": "never happened"},
            "postings": [],
            "prev_hash": previous_hash.hex(),
        }
        raw = rfc8785.dumps(forged)
        conn.execute(
            text(
                "INSERT INTO log_entries (seq, time, type, actor, body, hash) "
                "SELECT 4, time, 'test.note', 'regulator:edu-1', :b, :h FROM log_entries WHERE seq = 3"
            ),
            {"b": raw, "h": leaf_hash(raw)},
        )
    report = _verify(history)
    assert _first(report) == (ProblemKind.OUT_OF_ORDER, 5)
    assert (ProblemKind.BROKEN_LINK, 5) in {(p.kind, p.seq) for p in report.problems}


def test_an_edited_stored_balance_is_a_balance_mismatch_for_that_account(history: Ledger) -> None:
    with history.engine.begin() as conn:
        conn.execute(text("UPDATE accounts SET balance = balance + 1 WHERE code = 'escrow:inst-1'"))
    report = _verify(history)
    assert report.first is not None
    assert (report.first.kind, report.first.account) == (
        ProblemKind.BALANCE_MISMATCH,
        "escrow:inst-1",
    )
    assert report.problems_total == 1


def test_an_unbalanced_last_entry_rewritten_with_its_hash_is_caught_as_unbalanced(
    history: Ledger,
) -> None:
    with history.engine.begin() as conn:
        body = tampering.entry(conn, 8)
        body["postings"][1]["amount"] += 1  # escrow pays out 1 fen less than payable drops
        tampering.rewrite(conn, 8, body, rehash=True)
    assert _first(_verify(history)) == (ProblemKind.UNBALANCED, 8)


def test_an_edited_query_column_is_a_column_mismatch(history: Ledger) -> None:
    with history.engine.begin() as conn:
        conn.execute(text("UPDATE log_entries SET actor = 'bank:evil' WHERE seq = 8"))
    assert _first(_verify(history)) == (ProblemKind.COLUMN_MISMATCH, 8)


@pytest.mark.sqlite
def test_a_column_holding_an_undecodable_value_is_reported_not_crashed_on(history: Ledger) -> None:
    with history.engine.begin() as conn:
        conn.execute(text("UPDATE log_entries SET time = 'yesterday' WHERE seq = 4"))
    assert _first(_verify(history)) == (ProblemKind.MALFORMED, 4)


@pytest.mark.sqlite
def test_text_stored_in_the_body_column_is_a_hash_mismatch(history: Ledger) -> None:
    with history.engine.begin() as conn:
        conn.execute(text("UPDATE log_entries SET body = CAST(body AS TEXT) || ' ' WHERE seq = 2"))
    assert _first(_verify(history)) == (ProblemKind.HASH_MISMATCH, 2)


def test_progress_is_reported_up_to_the_number_of_entries(history: Ledger) -> None:
    seen: list[int] = []
    report = verify_database(history.engine, progress=seen.append, invariants=False)
    assert report.ok
    assert seen[-1] == report.entries == 9


def test_an_entry_dated_before_its_predecessor_is_caught(history: Ledger) -> None:
    with history.engine.begin() as conn:
        body = tampering.entry(conn, 8)
        body["time"] = "2020-01-01T00:00:00.000000Z"
        tampering.rewrite(conn, 8, body, rehash=True)
    report = _verify(history)
    assert _first(report) == (ProblemKind.TIME_BACKWARDS, 8)


def test_an_edited_account_last_seq_is_an_account_mismatch(history: Ledger) -> None:
    with history.engine.begin() as conn:
        conn.execute(text("UPDATE accounts SET last_seq = 1 WHERE code = 'escrow:inst-1'"))
    report = _verify(history)
    assert report.first is not None
    assert (report.first.kind, report.first.account) == (
        ProblemKind.ACCOUNT_MISMATCH,
        "escrow:inst-1",
    )


@pytest.mark.sqlite
def test_a_posting_seq_holding_text_is_reported_not_crashed_on(history: Ledger) -> None:
    tampering.sqlite_without_foreign_keys(
        history.engine, "UPDATE postings SET seq = 'x' WHERE id = 3"
    )
    report = _verify(history)
    assert not report.ok
    assert ProblemKind.MALFORMED in {p.kind for p in report.problems}


def test_the_problem_at_the_lowest_seq_comes_before_the_account_problems_it_causes(
    history: Ledger,
) -> None:
    with history.engine.begin() as conn:
        conn.execute(text("DELETE FROM postings WHERE seq = 6"))
        conn.execute(text("DELETE FROM log_entries WHERE seq = 6"))
    report = _verify(history)
    assert _first(report) == (ProblemKind.GAP, 6)
    assert {p.kind for p in report.problems} >= {ProblemKind.BALANCE_MISMATCH}


def test_an_edited_merkle_node_is_a_merkle_mismatch(history: Ledger) -> None:
    with history.engine.begin() as conn:
        conn.execute(
            text("UPDATE merkle_nodes SET hash = :h WHERE level = 2 AND idx = 0"),
            {"h": b"\x01" * 32},
        )
    report = _verify(history)
    # The edited node no longer hashes its children, and its parent no longer hashes it.
    assert {(p.kind, p.seq) for p in report.problems} == {(ProblemKind.MERKLE_MISMATCH, 0)}
    details = sorted(p.detail for p in report.problems)
    assert details[0].startswith("Merkle node (2, 0) over leaves 0..3")
    assert details[1].startswith("Merkle node (3, 0) over leaves 0..7")


def test_a_deleted_merkle_node_is_reported_missing(history: Ledger) -> None:
    with history.engine.begin() as conn:
        conn.execute(text("DELETE FROM merkle_nodes WHERE level = 1 AND idx = 3"))
    report = _verify(history)
    assert report.problems_total >= 1
    kinds = {p.kind for p in report.problems}
    assert kinds == {ProblemKind.MERKLE_MISMATCH}
    assert any("stored Merkle nodes" in p.detail for p in report.problems)
