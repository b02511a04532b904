"""The double-entry journal: balanced postings and the balances they move.

The journal is always driven by the event log (``ledger.log``), which holds the log lock while a
batch of entries is prepared. Under that lock the journal loads every account the batch touches
(PostgreSQL: ``FOR UPDATE`` in id order, so lock order is fixed), applies each entry in memory,
refuses an entry that would take a non-negative account below zero, and finally writes accounts,
postings and balances with a handful of bulk statements. A refused entry fails the whole batch before
anything is written.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from ledger.accounts import AccountCode
from ledger.errors import (
    AmountOutOfRange,
    CurrencyMismatch,
    InsufficientFunds,
    InvalidEvent,
    UnbalancedEntry,
)
from ledger.models import Account, table
from ledger.models import Posting as PostingRow
from ledger.money import INT64_MAX, JSON_SAFE_MAX, Money

# One IN (...) list per batch; SQLite allows 32766 bound parameters, PostgreSQL 65535.
MAX_ACCOUNTS_PER_BATCH = 30_000


@dataclass(frozen=True, slots=True)
class Posting:
    """One leg of an entry: a debit-positive amount on the account named by ``account``."""

    account: str
    amount: Money

    @classmethod
    def debit(cls, account: str, amount: Money) -> Posting:
        """Debit ``amount``: grows an asset, shrinks a liability."""
        return cls(account, amount)

    @classmethod
    def credit(cls, account: str, amount: Money) -> Posting:
        """Credit ``amount``: grows a liability, shrinks an asset."""
        return cls(account, -amount)

    def to_json(self) -> dict[str, str | int]:
        """The posting as it appears in a log entry."""
        return {
            "account": self.account,
            "amount": self.amount.amount,
            "currency": self.amount.currency,
        }


def check_balanced(postings: Sequence[Posting]) -> None:
    """Refuse postings that do not form a balanced entry (none at all is allowed: no money moves)."""
    if not postings:
        return
    if len(postings) == 1:
        raise UnbalancedEntry(
            f"an entry needs at least two postings, got one on {postings[0].account}"
        )
    totals: dict[str, int] = defaultdict(int)
    for posting in postings:
        amount = posting.amount.amount
        if amount == 0:
            raise UnbalancedEntry(f"zero posting on {posting.account}", account=posting.account)
        if abs(amount) > JSON_SAFE_MAX:
            raise AmountOutOfRange(
                f"posting of {amount} on {posting.account} exceeds the log's exact-integer "
                f"range of ±{JSON_SAFE_MAX}",
                value=amount,
                limit=JSON_SAFE_MAX,
            )
        AccountCode.parse(posting.account)
        totals[posting.amount.currency] += amount
    unbalanced = {currency: total for currency, total in totals.items() if total != 0}
    if unbalanced:
        detail = ", ".join(
            f"{currency} {total:+d}" for currency, total in sorted(unbalanced.items())
        )
        raise UnbalancedEntry(f"postings do not sum to zero: {detail}", totals=unbalanced)


@dataclass(slots=True)
class _AccountState:
    """An account as the batch sees it: loaded (or about to be created) and moved in memory."""

    id: int | None
    code: str
    currency: str
    non_negative: bool
    sign: int
    balance: int
    opened_seq: int
    last_seq: int
    moved: bool = False

    @classmethod
    def of(
        cls,
        code: str,
        *,
        id: int | None,
        currency: str,
        balance: int,
        opened_seq: int,
        last_seq: int,
    ) -> _AccountState:
        """Attach the chart's rules (from the code, never from a stored column) to stored fields."""
        chart = AccountCode.parse(code).cls
        return cls(
            id=id,
            code=code,
            currency=currency,
            non_negative=chart.non_negative,
            sign=chart.type.normal_side.sign,
            balance=balance,
            opened_seq=opened_seq,
            last_seq=last_seq,
        )


_ACCOUNTS = table(Account)
_UPDATE_BALANCE = (
    update(_ACCOUNTS)
    .where(_ACCOUNTS.c.id == bindparam("key"))
    .values(balance=bindparam("new_balance"), last_seq=bindparam("new_last_seq"))
)

# Built once with bound parameters, so each batch reuses the compiled statement (issue 8).
_LOAD = (
    select(
        _ACCOUNTS.c.id,
        _ACCOUNTS.c.code,
        _ACCOUNTS.c.currency,
        _ACCOUNTS.c.balance,
        _ACCOUNTS.c.opened_seq,
        _ACCOUNTS.c.last_seq,
    )
    .where(_ACCOUNTS.c.code.in_(bindparam("codes", expanding=True)))
    .order_by(_ACCOUNTS.c.id)
    .with_for_update()
)
_BALANCES = select(_ACCOUNTS.c.code, _ACCOUNTS.c.balance).where(
    _ACCOUNTS.c.code.in_(bindparam("codes", expanding=True))
)


class Journal:
    """Applies the postings of a batch of entries; used by ``EventLog.append_many`` only."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._accounts: dict[str, _AccountState] = {}
        self._postings: list[tuple[int, str, int, str]] = []  # seq, code, amount, currency

    def load(self, codes: Iterable[str]) -> None:
        """Load (and on PostgreSQL row-lock, in id order) the accounts that exist among ``codes``.

        The log lock already serializes ledger writers; the row locks, taken in one statement in a
        fixed order, also keep any other writer of ``accounts`` out until commit.
        """
        wanted = sorted(set(codes) - self._accounts.keys())
        if not wanted:
            return
        if len(wanted) > MAX_ACCOUNTS_PER_BATCH:
            raise InvalidEvent(
                f"a batch may touch at most {MAX_ACCOUNTS_PER_BATCH} accounts, this one touches "
                f"{len(wanted)}; split it"
            )
        rows = self._session.execute(_LOAD, {"codes": wanted})
        for row in rows:
            self._accounts[row.code] = _AccountState.of(
                row.code,
                id=row.id,
                currency=row.currency,
                balance=row.balance,
                opened_seq=row.opened_seq,
                last_seq=row.last_seq,
            )

    def apply(self, seq: int, postings: Sequence[Posting]) -> None:
        """Move balances for one (already balance-checked) entry; refuse going below zero."""
        touched: list[_AccountState] = []
        for posting in postings:
            state = self._accounts.get(posting.account)
            if state is None:
                state = _AccountState.of(
                    posting.account,
                    id=None,
                    currency=posting.amount.currency,
                    balance=0,
                    opened_seq=seq,
                    last_seq=seq,
                )
                self._accounts[posting.account] = state
            if state.currency != posting.amount.currency:
                raise CurrencyMismatch(
                    f"posting in {posting.amount.currency} on {state.code}, "
                    f"an account in {state.currency}",
                    account=state.code,
                )
            state.balance += state.sign * posting.amount.amount
            touched.append(state)
            self._postings.append(
                (seq, posting.account, posting.amount.amount, posting.amount.currency)
            )
        for state in touched:
            state.moved = True
            state.last_seq = seq
            if state.non_negative and state.balance < 0:
                raise InsufficientFunds(
                    f"{state.code} would fall to {Money(state.balance, state.currency)}; "
                    "it may not go below zero",
                    account=state.code,
                    balance=state.balance,
                )
            if abs(state.balance) > INT64_MAX:
                raise AmountOutOfRange(
                    f"{state.code} would hold {state.balance}, beyond a signed 64-bit balance",
                    account=state.code,
                )

    def write(self) -> None:
        """Insert new accounts and the postings, then store the new balances."""
        moved = [s for s in self._accounts.values() if s.moved and s.id is not None]
        new = [s for s in self._accounts.values() if s.id is None]
        if new:
            rows = [
                {
                    "code": s.code,
                    "currency": s.currency,
                    "balance": s.balance,
                    "opened_seq": s.opened_seq,
                    "last_seq": s.last_seq,
                }
                for s in new
            ]
            returned = self._session.execute(
                insert(Account).returning(Account.id, Account.code), rows
            )
            for account_id, code in returned:
                self._accounts[code].id = account_id
        # Core statements on the tables: the ORM's bulk paths cost more than the rows (issue 8).
        if self._postings:
            self._session.execute(
                insert(table(PostingRow)),
                [
                    {
                        "seq": seq,
                        "account_id": self._accounts[code].id,
                        "amount": amount,
                        "currency": currency,
                    }
                    for seq, code, amount, currency in self._postings
                ],
            )
        if moved:
            self._session.execute(
                _UPDATE_BALANCE,
                [
                    {"key": s.id, "new_balance": s.balance, "new_last_seq": s.last_seq}
                    for s in moved
                ],
            )
        self._postings.clear()
        for state in self._accounts.values():
            state.moved = False


def balances(session: Session, codes: Iterable[str]) -> dict[str, int]:
    """The stored normal-side balances of many accounts in one query (absent: never posted to).

    Issue 8: one query per contract of a 1,000-lesson report was a tenth of its time on PostgreSQL.
    """
    wanted = sorted(set(codes))
    found: dict[str, int] = {}
    for first in range(0, len(wanted), MAX_ACCOUNTS_PER_BATCH):
        rows = session.execute(_BALANCES, {"codes": wanted[first : first + MAX_ACCOUNTS_PER_BATCH]})
        found.update({code: amount for code, amount in rows})
    return found


def balance(session: Session, code: str) -> Money:
    """The stored normal-side balance of an account; zero for an account never posted to."""
    row = session.execute(
        select(Account.balance, Account.currency).where(Account.code == code)
    ).one_or_none()
    if row is None:
        AccountCode.parse(code)  # a malformed code is an error, an unused one is simply zero
        return Money.zero()
    return Money(row.balance, row.currency)
