"""The double-entry journal: balanced postings and the balances they move.

The journal is always driven by the event log (``ledger.log``), which holds the log-head lock while a
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

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from ledger.accounts import AccountCode, AccountKind
from ledger.errors import AmountOutOfRange, CurrencyMismatch, InsufficientFunds, UnbalancedEntry
from ledger.models import Account
from ledger.models import Posting as PostingRow
from ledger.money import JSON_SAFE_MAX, Money

_IN_CHUNK = 500  # bound the number of bound parameters per IN (...) query


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
    kind: AccountKind
    currency: str
    non_negative: bool
    sign: int
    balance: int
    opened_seq: int
    last_seq: int
    moved: bool = False


class Journal:
    """Applies the postings of a batch of entries; used by ``EventLog.append_many`` only."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._accounts: dict[str, _AccountState] = {}
        self._postings: list[tuple[int, str, int, str]] = []  # seq, code, amount, currency

    def load(self, codes: Iterable[str]) -> None:
        """Lock and load the accounts that exist among ``codes``, in a fixed (id) order."""
        wanted = sorted(set(codes) - self._accounts.keys())
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            rows = self._session.execute(
                select(
                    Account.id,
                    Account.code,
                    Account.kind,
                    Account.currency,
                    Account.non_negative,
                    Account.balance,
                    Account.opened_seq,
                    Account.last_seq,
                )
                .where(Account.code.in_(chunk))
                .order_by(Account.id)
                .with_for_update()
            )
            for row in rows:
                self._accounts[row.code] = _AccountState(
                    id=row.id,
                    code=row.code,
                    kind=row.kind,
                    currency=row.currency,
                    non_negative=row.non_negative,
                    sign=AccountCode.parse(row.code).cls.type.normal_side.sign,
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
                state = self._open(posting.account, posting.amount.currency, seq)
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

    def _open(self, code: str, currency: str, seq: int) -> _AccountState:
        parsed = AccountCode.parse(code)
        state = _AccountState(
            id=None,
            code=code,
            kind=parsed.kind,
            currency=currency,
            non_negative=parsed.cls.non_negative,
            sign=parsed.cls.type.normal_side.sign,
            balance=0,
            opened_seq=seq,
            last_seq=seq,
        )
        self._accounts[code] = state
        return state

    def write(self) -> None:
        """Insert new accounts and the postings, then store the new balances."""
        moved = [s for s in self._accounts.values() if s.moved and s.id is not None]
        new = [s for s in self._accounts.values() if s.id is None]
        if new:
            rows = [
                {
                    "code": s.code,
                    "kind": s.kind,
                    "currency": s.currency,
                    "non_negative": s.non_negative,
                    "balance": s.balance,
                    "opened_seq": s.opened_seq,
                    "last_seq": s.last_seq,
                }
                for s in new
            ]
            for start in range(0, len(rows), _IN_CHUNK):
                returned = self._session.execute(
                    insert(Account).returning(Account.id, Account.code),
                    rows[start : start + _IN_CHUNK],
                )
                for account_id, code in returned:
                    self._accounts[code].id = account_id
        if self._postings:
            self._session.execute(
                insert(PostingRow),
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
                update(Account),
                [{"id": s.id, "balance": s.balance, "last_seq": s.last_seq} for s in moved],
            )
        self._postings.clear()
        for state in self._accounts.values():
            state.moved = False


def balance(session: Session, code: str) -> Money:
    """The stored normal-side balance of an account; zero for an account never posted to."""
    row = session.execute(
        select(Account.balance, Account.currency).where(Account.code == code)
    ).one_or_none()
    if row is None:
        AccountCode.parse(code)  # a malformed code is an error, an unused one is simply zero
        return Money.zero()
    return Money(row.balance, row.currency)
