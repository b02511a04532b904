"""Recovering cost advances that became due (成本预拨 owed back).

When lessons that were paid for in advance will never be delivered (refunded, or transferred to a
successor), their share of the advance moves from ``advance`` to ``advance_due``. It is recovered at
once from what the institution would otherwise be released (``releasable``), then from its risk
deposit. Whatever neither covers stays in ``advance_due``: a recorded shortfall and a risk signal,
never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from ledger.accounts import AccountKind
from ledger.escrow.contracts import institution_account
from ledger.journal import Posting, balance
from ledger.money import Money


@dataclass(frozen=True, slots=True)
class Recovery:
    """The postings of one recovery and how it went."""

    newly_due: int
    from_releasable: int
    from_deposit: int
    shortfall: int
    """Advance still owed by the institution after this recovery (all of it, not only the new part)."""
    legs: dict[str, int] = field(default_factory=dict)

    def postings(self) -> list[Posting]:
        return [Posting(code, Money(fen)) for code, fen in self.legs.items() if fen]

    def facts(self) -> dict[str, int]:
        return {
            "advance_due": self.newly_due,
            "recovered_from_releasable": self.from_releasable,
            "recovered_from_deposit": self.from_deposit,
            "shortfall": self.shortfall,
        }


def recover(
    session: Session, institution_id: str, newly_due: int, *, from_advance: bool = True
) -> Recovery:
    """Make ``newly_due`` of the advance due and recover all that is due as far as possible.

    ``from_advance``: the amount moves over from ``advance`` (lessons that will not be delivered).
    Otherwise the caller's own postings balance it (a voided lesson at an operator who no longer
    holds the contract owes back the advance share that lesson had repaid).
    """

    def account(kind: AccountKind) -> str:
        return institution_account(kind, institution_id)

    due = balance(session, account(AccountKind.ADVANCE_DUE)).amount + newly_due
    from_releasable = min(due, balance(session, account(AccountKind.RELEASABLE)).amount)
    from_deposit = min(
        due - from_releasable, balance(session, account(AccountKind.RISK_DEPOSIT)).amount
    )
    legs = {
        account(AccountKind.ADVANCE): -newly_due if from_advance else 0,
        account(AccountKind.ADVANCE_DUE): newly_due - from_releasable - from_deposit,
        account(AccountKind.RELEASABLE): from_releasable,
        account(AccountKind.RISK_DEPOSIT): from_deposit,
    }
    return Recovery(
        newly_due=newly_due,
        from_releasable=from_releasable,
        from_deposit=from_deposit,
        shortfall=due - from_releasable - from_deposit,
        legs=legs,
    )
