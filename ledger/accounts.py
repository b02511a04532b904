"""The chart of accounts.

Every account the ledger may hold is one of a fixed set of kinds, and its code is ``kind:owner`` where
the owner is an institution or a contract id. Because the kind fixes the type, the normal side and
whether the account may go negative, an account needs no "opened" event of its own: it comes into
being with its first posting, and a replay of the log rebuilds it from the code alone.

Signs: a posting's amount is debit-positive and credit-negative, so every entry sums to zero. A stored
balance is expressed on the account's normal side, so a positive number always means "the account
holds what its name says" (cash in escrow, value owed to a parent, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from ledger.errors import InvalidAccount


class NormalSide(StrEnum):
    """The side on which an account's balance grows."""

    DEBIT = "debit"
    CREDIT = "credit"

    @property
    def sign(self) -> int:
        """Multiply a debit-positive posting sum by this to get the normal-side balance."""
        return 1 if self is NormalSide.DEBIT else -1


class AccountType(StrEnum):
    """Asset or liability; the escrow ledger has no income, expense or equity of its own."""

    ASSET = "asset"
    """Something held: cash in the custody account, cost advances the institution owes back."""
    LIABILITY = "liability"
    """Something owed: to parents (undelivered lessons, refunds) or to the institution (releases)."""

    @property
    def normal_side(self) -> NormalSide:
        """Assets grow on the debit side, liabilities on the credit side."""
        return NormalSide.DEBIT if self is AccountType.ASSET else NormalSide.CREDIT


class OwnerKind(StrEnum):
    """What the part of an account code after the colon identifies."""

    INSTITUTION = "institution"
    CONTRACT = "contract"


class AccountKind(StrEnum):
    """The accounts of the money flow in DESIGN.md; one per institution, or one per contract."""

    ESCROW = "escrow"
    """Cash in the institution's custody account at the bank."""
    CONTRACT = "contract"
    """Value of a contract's undelivered lessons, owed to the parent. Never below zero."""
    PENDING = "pending"
    """Lessons the institution reported that the parent has not yet confirmed."""
    RELEASABLE = "releasable"
    """Confirmed lessons (and cost advances) waiting for the next settlement run."""
    PAYABLE = "payable"
    """Settled amounts waiting for the bank to pay the institution."""
    REFUND_PAYABLE = "refund_payable"
    """Approved refunds waiting for the bank to pay parents."""
    ADVANCE = "advance"
    """Cost pre-allocations released up front, to be repaid by lessons still to be delivered."""
    ADVANCE_DUE = "advance_due"
    """Advance for lessons that will never be delivered (refunded, transferred): owed back now."""
    RISK_DEPOSIT = "risk_deposit"
    """The institution's risk deposit (风险保证金) lodged in escrow; owed to it, drawn on shortfalls."""


@dataclass(frozen=True, slots=True)
class AccountClass:
    """What the chart says about every account of one kind."""

    type: AccountType
    owner: OwnerKind
    non_negative: bool


CHART: dict[AccountKind, AccountClass] = {
    AccountKind.ESCROW: AccountClass(AccountType.ASSET, OwnerKind.INSTITUTION, non_negative=True),
    AccountKind.CONTRACT: AccountClass(
        AccountType.LIABILITY, OwnerKind.CONTRACT, non_negative=True
    ),
    AccountKind.PENDING: AccountClass(
        AccountType.LIABILITY, OwnerKind.INSTITUTION, non_negative=True
    ),
    AccountKind.RELEASABLE: AccountClass(
        AccountType.LIABILITY, OwnerKind.INSTITUTION, non_negative=True
    ),
    AccountKind.PAYABLE: AccountClass(
        AccountType.LIABILITY, OwnerKind.INSTITUTION, non_negative=True
    ),
    AccountKind.REFUND_PAYABLE: AccountClass(
        AccountType.LIABILITY, OwnerKind.INSTITUTION, non_negative=True
    ),
    AccountKind.ADVANCE: AccountClass(AccountType.ASSET, OwnerKind.INSTITUTION, non_negative=True),
    AccountKind.ADVANCE_DUE: AccountClass(
        AccountType.ASSET, OwnerKind.INSTITUTION, non_negative=True
    ),
    AccountKind.RISK_DEPOSIT: AccountClass(
        AccountType.LIABILITY, OwnerKind.INSTITUTION, non_negative=True
    ),
}

OWNER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class AccountCode:
    """A parsed ``kind:owner`` account code."""

    kind: AccountKind
    owner_id: str

    @classmethod
    def parse(cls, code: str) -> AccountCode:
        """Split and validate a code; unknown kinds and malformed owners are refused."""
        kind_text, sep, owner_id = code.partition(":")
        if not sep:
            raise InvalidAccount(f"account code {code!r} is not of the form kind:owner", code=code)
        try:
            kind = AccountKind(kind_text)
        except ValueError:
            raise InvalidAccount(
                f"account code {code!r}: unknown kind {kind_text!r}; "
                f"the chart has {', '.join(k.value for k in AccountKind)}",
                code=code,
            ) from None
        if not OWNER_ID.match(owner_id):
            raise InvalidAccount(f"account code {code!r}: malformed owner id", code=code)
        return cls(kind, owner_id)

    @property
    def cls(self) -> AccountClass:
        """The chart entry for this account's kind."""
        return CHART[self.kind]

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.owner_id}"


def account_code(kind: AccountKind, owner_id: str) -> str:
    """Build a validated account code for an owner."""
    return str(AccountCode.parse(f"{kind.value}:{owner_id}"))
