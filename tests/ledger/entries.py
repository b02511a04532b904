"""Journal entries shaped like the money flow of DESIGN.md, for tests of the generic journal.

The escrow operations of the lifecycle build their own events; these helpers only exercise the
journal and the log with realistic accounts and amounts.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from ledger.journal import Posting, balance
from ledger.log import Appended, Event
from ledger.money import Money
from ledger.runtime import Ledger

INSTITUTION_ACCOUNTS = ("pending", "releasable", "payable", "refund_payable")


def receipt(institution: str, contract: str, fen: int) -> Event:
    """The bank reports money received for a contract: escrow up, the contract's liability up."""
    return Event(
        "test.receipt",
        "bank:bank-1",
        {"contract": contract, "amount": fen},
        (
            Posting.debit(f"escrow:{institution}", Money(fen)),
            Posting.credit(f"contract:{contract}", Money(fen)),
        ),
    )


def lesson(institution: str, contract: str, fen: int) -> Event:
    """A delivered lesson: the contract's liability moves to the institution's pending account."""
    return Event(
        "test.lesson",
        f"institution:{institution}",
        {"contract": contract, "price": fen},
        (
            Posting.debit(f"contract:{contract}", Money(fen)),
            Posting.credit(f"pending:{institution}", Money(fen)),
        ),
    )


def move(source: str, target: str, fen: int, type_: str = "test.move") -> Event:
    """Move a liability from one account to another (confirm, settle, ...)."""
    return Event(
        type_,
        "system",
        {"from": source, "to": target, "amount": fen},
        (Posting.debit(source, Money(fen)), Posting.credit(target, Money(fen))),
    )


def payout(institution: str, fen: int) -> Event:
    """The bank pays the institution: payable down, escrow cash down."""
    return Event(
        "test.payout",
        "bank:bank-1",
        {"institution": institution, "amount": fen},
        (
            Posting.debit(f"payable:{institution}", Money(fen)),
            Posting.credit(f"escrow:{institution}", Money(fen)),
        ),
    )


def append(ledger: Ledger, *events: Event) -> list[Appended]:
    """Append events as one batch in their own committed transaction."""
    with ledger.sessions.begin() as session:
        return ledger.log.append_many(session, list(events))


def balances(ledger: Ledger, codes: Sequence[str]) -> dict[str, int]:
    """Stored normal-side balances in fen, by code."""
    with ledger.readers() as session:
        return {code: balance(session, code).amount for code in codes}


def escrow_equation_holds(session: Session, institution: str, contracts: Sequence[str]) -> bool:
    """Invariant 4 of DESIGN.md for one institution."""

    def fen(code: str) -> int:
        return balance(session, code).amount

    liabilities = sum(fen(f"contract:{c}") for c in contracts) + sum(
        fen(f"{kind}:{institution}") for kind in INSTITUTION_ACCOUNTS
    )
    return fen(f"escrow:{institution}") == liabilities - fen(f"advance:{institution}")
