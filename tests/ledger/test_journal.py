"""Worked examples of the double-entry journal, asserted to the fen on both databases."""

import pytest
from sqlalchemy import func, select

from ledger.errors import (
    AmountOutOfRange,
    CurrencyMismatch,
    InsufficientFunds,
    InvalidAccount,
    UnbalancedEntry,
)
from ledger.journal import Posting, balance
from ledger.log import Event
from ledger.models import Account, LogEntry
from ledger.models import Posting as PostingRow
from ledger.money import Money
from ledger.runtime import Ledger
from tests.ledger.entries import (
    append,
    balances,
    escrow_equation_holds,
    lesson,
    move,
    payout,
    receipt,
)

LESSON = 15_000  # ¥150 per lesson


def _log_size(ledger: Ledger) -> int:
    with ledger.readers() as session:
        return ledger.log.head(session).size


def test_a_prepayment_for_20_lessons_then_3_delivered_2_confirmed_and_paid_out(
    ledger: Ledger,
) -> None:
    append(ledger, receipt("inst-1", "ctr-1", 20 * LESSON))
    append(ledger, *(lesson("inst-1", "ctr-1", LESSON) for _ in range(3)))
    append(ledger, move("pending:inst-1", "releasable:inst-1", 2 * LESSON, "test.confirm"))
    append(ledger, move("releasable:inst-1", "payable:inst-1", 2 * LESSON, "test.settle"))
    append(ledger, payout("inst-1", 2 * LESSON))

    assert balances(
        ledger,
        [
            "escrow:inst-1",
            "contract:ctr-1",
            "pending:inst-1",
            "releasable:inst-1",
            "payable:inst-1",
        ],
    ) == {
        "escrow:inst-1": 270_000,  # ¥3,000 received, ¥300 paid out
        "contract:ctr-1": 255_000,  # 17 lessons still owed to the parent
        "pending:inst-1": 15_000,  # 1 delivered lesson awaiting confirmation
        "releasable:inst-1": 0,
        "payable:inst-1": 0,
    }
    with ledger.readers() as session:
        assert escrow_equation_holds(session, "inst-1", ["ctr-1"])
        assert ledger.log.head(session).size == 1 + 1 + 3 + 1 + 1 + 1  # genesis + 7 events


def test_every_entry_stores_balanced_postings_with_debits_positive(ledger: Ledger) -> None:
    [appended] = append(ledger, receipt("inst-1", "ctr-1", 300_000))
    with ledger.readers() as session:
        rows = session.execute(
            select(Account.code, PostingRow.amount, PostingRow.currency)
            .join(Account, Account.id == PostingRow.account_id)
            .where(PostingRow.seq == appended.seq)
            .order_by(PostingRow.id)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("escrow:inst-1", 300_000, "CNY"),
        ("contract:ctr-1", -300_000, "CNY"),
    ]


def test_an_unbalanced_entry_is_refused_and_nothing_is_written(ledger: Ledger) -> None:
    event = Event(
        "test.bad",
        "system",
        {},
        (Posting.debit("escrow:inst-1", Money(100)), Posting.credit("contract:ctr-1", Money(99))),
    )
    with pytest.raises(UnbalancedEntry, match="do not sum to zero: CNY \\+1"):
        append(ledger, event)
    assert _log_size(ledger) == 1


def test_a_single_posting_is_refused(ledger: Ledger) -> None:
    with pytest.raises(UnbalancedEntry, match="at least two postings"):
        append(ledger, Event("test.bad", "system", {}, (Posting.debit("escrow:i", Money(1)),)))


def test_a_zero_posting_is_refused(ledger: Ledger) -> None:
    zero = (Posting.debit("escrow:i", Money(0)), Posting.credit("contract:c", Money(0)))
    with pytest.raises(UnbalancedEntry, match="zero posting"):
        append(ledger, Event("test.bad", "system", {}, zero))


def test_a_posting_beyond_the_exact_json_integer_range_is_refused(ledger: Ledger) -> None:
    huge = Money(2**53)
    with pytest.raises(AmountOutOfRange):
        append(
            ledger,
            Event(
                "test.bad",
                "system",
                {},
                (Posting.debit("escrow:i", huge), Posting.credit("contract:c", huge)),
            ),
        )


def test_an_unknown_account_kind_is_refused(ledger: Ledger) -> None:
    legs = (Posting.debit("wallet:i", Money(1)), Posting.credit("contract:c", Money(1)))
    with pytest.raises(InvalidAccount, match="unknown kind 'wallet'"):
        append(ledger, Event("test.bad", "system", {}, legs))


def test_a_contract_cannot_give_more_than_it_holds(ledger: Ledger) -> None:
    append(ledger, receipt("inst-1", "ctr-1", 2 * LESSON))
    append(ledger, lesson("inst-1", "ctr-1", LESSON), lesson("inst-1", "ctr-1", LESSON))
    before = _log_size(ledger)
    with pytest.raises(InsufficientFunds, match="contract:ctr-1 would fall to -¥150.00"):
        append(ledger, lesson("inst-1", "ctr-1", LESSON))
    assert _log_size(ledger) == before
    assert balances(ledger, ["contract:ctr-1", "pending:inst-1"]) == {
        "contract:ctr-1": 0,
        "pending:inst-1": 2 * LESSON,
    }


def test_a_batch_is_all_or_nothing_and_names_the_refused_event(ledger: Ledger) -> None:
    append(ledger, receipt("inst-1", "ctr-1", 2 * LESSON))
    before = _log_size(ledger)
    with pytest.raises(InsufficientFunds) as refused:
        append(ledger, *(lesson("inst-1", "ctr-1", LESSON) for _ in range(3)))
    assert refused.value.context["index"] == 2
    assert _log_size(ledger) == before
    assert balances(ledger, ["contract:ctr-1", "pending:inst-1"]) == {
        "contract:ctr-1": 2 * LESSON,
        "pending:inst-1": 0,
    }


def test_the_non_negative_rule_applies_to_each_entry_not_to_each_leg(ledger: Ledger) -> None:
    append(ledger, receipt("inst-1", "ctr-1", 100))
    pass_through = Event(
        "test.pass_through",
        "system",
        {},
        (
            Posting.debit(
                "pending:inst-1", Money(100)
            ),  # pending would be -100 after this leg alone
            Posting.debit("contract:ctr-1", Money(100)),
            Posting.credit("pending:inst-1", Money(100)),
            Posting.credit("releasable:inst-1", Money(100)),
        ),
    )
    append(ledger, pass_through)
    assert balances(ledger, ["pending:inst-1", "contract:ctr-1", "releasable:inst-1"]) == {
        "pending:inst-1": 0,
        "contract:ctr-1": 0,
        "releasable:inst-1": 100,
    }


def test_an_account_keeps_the_currency_of_its_first_posting(ledger: Ledger) -> None:
    append(ledger, receipt("inst-1", "ctr-1", 100))
    usd = (
        Posting.debit("escrow:inst-1", Money(5, "USD")),
        Posting.credit("contract:ctr-2", Money(5, "USD")),
    )
    with pytest.raises(CurrencyMismatch, match="escrow:inst-1, an account in CNY"):
        append(ledger, Event("test.usd", "system", {}, usd))


def test_an_account_comes_into_being_with_its_first_posting(ledger: Ledger) -> None:
    with ledger.readers() as session:
        assert balance(session, "escrow:inst-9") == Money(0)
        assert session.scalar(select(func.count()).select_from(Account)) == 0
    [appended] = append(ledger, receipt("inst-9", "ctr-9", 500))
    with ledger.readers() as session:
        account = session.execute(
            select(Account).where(Account.code == "escrow:inst-9")
        ).scalar_one()
        assert (account.balance, account.opened_seq, account.last_seq) == (
            500,
            appended.seq,
            appended.seq,
        )
        assert account.type.value == "asset"
        assert account.normal_side.value == "debit"
        assert account.non_negative


def test_a_rolled_back_transaction_leaves_no_entry_posting_or_balance(ledger: Ledger) -> None:
    session = ledger.sessions()
    try:
        ledger.log.append(session, receipt("inst-1", "ctr-1", 300))
        session.rollback()
    finally:
        session.close()
    with ledger.readers() as check:
        assert ledger.log.head(check).size == 1
        assert check.scalar(select(func.count()).select_from(PostingRow)) == 0
        assert check.scalar(select(func.count()).select_from(LogEntry)) == 1
        assert balance(check, "escrow:inst-1") == Money(0)


def test_a_balance_beyond_a_signed_64_bit_column_is_refused(ledger: Ledger) -> None:
    biggest = 2**53 - 1
    with pytest.raises(AmountOutOfRange, match="beyond a signed 64-bit balance"):
        append(ledger, *(receipt("inst-1", "ctr-1", biggest) for _ in range(1025)))
    assert _log_size(ledger) == 1
