"""The event log as a supervisor reads it: which institutions each entry concerns, scanned in bounds.

A district regulator may see the entries about the institutions of its district and nothing else,
so every entry needs an answer to "whose is this?". The answer comes from the entry itself:

1. **Named institutions.** Payload keys that hold an institution id (``institution``,
   ``successor``, ``moved_to``; ``from`` and ``to`` only in transfer entries, since elsewhere they
   hold a status or an account number), and the institution-owned accounts its postings move
   (``escrow:<institution>``, ``pending:<institution>``, ...; see ``ledger.accounts``).
2. **Resolved references**, only when step 1 found nothing: a lesson, refund, payout, settlement
   batch or risk deposit id gives the institution stored with it; a receipt gives its contract; a
   transfer both of its institutions; a contract id (or a ``contract:<id>`` posting) gives the
   institution that held the contract *at that entry's seq*: contracts move to a successor on a
   transfer, and an entry written before the move belongs to the old operator. A transfer's own
   entries name both institutions (step 1), so the moment of the move never has to be guessed.

An entry that concerns no institution (the genesis, bank, regulator, parent and student
registrations, tokens, erasures) is a system entry. An id that cannot be resolved adds nothing,
which can only hide an entry from a district regulator, never show it to the wrong one.

Reading is bounded: ``scan`` looks at no more than ``SCAN_LIMIT`` log positions per call and says
where to continue, so no request's cost grows with the size of the log.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from ledger.accounts import AccountCode, AccountKind, OwnerKind
from ledger.entities import (
    Contract,
    Lesson,
    Payout,
    Receipt,
    Refund,
    RiskDeposit,
    SettlementBatch,
    Transfer,
    TransferredContract,
)
from ledger.errors import InvalidAccount
from ledger.models import LogEntry

SCAN_LIMIT = 5_000
"""Log positions one request looks at, at most; the client continues from ``next_cursor``."""
CHUNK = 500
"""Entries decoded and resolved together (one lookup per referenced table per chunk)."""

INSTITUTION_KEYS = ("institution", "successor", "moved_to")
TRANSFER_TYPES = frozenset({"transfer.approved", "contract.transferred"})
"""Entry types whose ``from`` and ``to`` are institution ids."""

_OWNED = {  # payload key -> the table and column that know the referenced object's institution
    "lesson": (Lesson.id, Lesson.institution_id),
    "refund": (Refund.id, Refund.institution_id),
    "payout": (Payout.id, Payout.institution_id),
    "batch": (SettlementBatch.id, SettlementBatch.institution_id),
    "deposit": (RiskDeposit.id, RiskDeposit.institution_id),
}


@dataclass(frozen=True, slots=True)
class Entry:
    """A log entry decoded from its canonical body, with the institutions it concerns."""

    seq: int
    time: datetime
    type: str
    actor: str
    payload: dict[str, Any]
    postings: list[dict[str, Any]]
    hash: bytes
    institutions: frozenset[str]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _accounts(postings: Iterable[Any]) -> Iterable[AccountCode]:
    for posting in postings:
        code = posting.get("account") if isinstance(posting, dict) else None
        if isinstance(code, str):
            try:
                yield AccountCode.parse(code)
            except InvalidAccount:
                continue


def named_institutions(type_: str, payload: dict[str, Any], postings: list[Any]) -> set[str]:
    """Step 1: the institutions an entry names itself, in its payload or its postings."""
    keys = INSTITUTION_KEYS + (("from", "to") if type_ in TRANSFER_TYPES else ())
    found = {v for v in (_text(payload.get(k)) for k in keys) if v is not None}
    found.update(
        code.owner_id for code in _accounts(postings) if code.cls.owner is OwnerKind.INSTITUTION
    )
    return found


@dataclass
class _Refs:
    """Ids an entry refers to, by kind, for entries that name no institution."""

    owned: dict[str, str] = field(default_factory=dict)
    receipt: str | None = None
    transfer: str | None = None
    contracts: set[str] = field(default_factory=set)


def _references(payload: dict[str, Any], postings: list[Any]) -> _Refs:
    refs = _Refs()
    for key in _OWNED:
        value = _text(payload.get(key))
        if value is not None:
            refs.owned[key] = value
    refs.receipt = _text(payload.get("receipt"))
    refs.transfer = _text(payload.get("transfer"))
    contract = _text(payload.get("contract"))
    if contract is not None:
        refs.contracts.add(contract)
    refs.contracts.update(
        code.owner_id for code in _accounts(postings) if code.kind is AccountKind.CONTRACT
    )
    return refs


class Resolver:
    """Answers "which institutions does this entry concern?", caching lookups for one request."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._owned: dict[str, dict[str, str | None]] = {key: {} for key in _OWNED}
        self._receipts: dict[str, str | None] = {}
        self._transfers: dict[str, tuple[str, str] | None] = {}
        # contract -> (its institution now, [(approved_seq, institution before it)] by seq)
        self._contracts: dict[str, tuple[str, list[tuple[int, str]]] | None] = {}

    def decode(self, rows: Sequence[LogEntry]) -> list[Entry]:
        """Decode entries and work out whom each concerns (a few lookups per call, not per row)."""
        bodies = [json.loads(row.body) for row in rows]
        named = [
            named_institutions(row.type, body.get("payload", {}), body.get("postings", []))
            for row, body in zip(rows, bodies, strict=True)
        ]
        refs = {
            index: _references(body.get("payload", {}), body.get("postings", []))
            for index, body in enumerate(bodies)
            if not named[index]
        }
        self._load(refs.values())
        entries = []
        for index, (row, body) in enumerate(zip(rows, bodies, strict=True)):
            concerned = named[index] if index not in refs else self._resolve(refs[index], row.seq)
            entries.append(
                Entry(
                    seq=row.seq,
                    time=row.time,
                    type=row.type,
                    actor=row.actor,
                    payload=body.get("payload", {}),
                    postings=body.get("postings", []),
                    hash=row.hash,
                    institutions=frozenset(concerned),
                )
            )
        return entries

    def _resolve(self, refs: _Refs, seq: int) -> set[str]:
        found: set[str] = set()
        for key, ident in refs.owned.items():
            owner = self._owned[key].get(ident)
            if owner is not None:
                found.add(owner)
        contracts = set(refs.contracts)
        if refs.receipt is not None and (paid := self._receipts.get(refs.receipt)) is not None:
            contracts.add(paid)
        if refs.transfer is not None and (moved := self._transfers.get(refs.transfer)) is not None:
            found.update(moved)
        for contract in contracts:
            owner = self._owner(contract, seq)
            if owner is not None:
                found.add(owner)
        return found

    def _owner(self, contract_id: str, seq: int) -> str | None:
        """The institution that held the contract when entry ``seq`` was written."""
        known = self._contracts.get(contract_id)
        if known is None:
            return None
        current, history = known
        for approved_seq, previous in history:
            if seq <= approved_seq:
                return previous
        return current

    def _load(self, all_refs: Iterable[_Refs]) -> None:
        wanted_owned: dict[str, set[str]] = {key: set() for key in _OWNED}
        receipts: set[str] = set()
        transfers: set[str] = set()
        contracts: set[str] = set()
        for refs in all_refs:
            for key, ident in refs.owned.items():
                wanted_owned[key].add(ident)
            if refs.receipt is not None:
                receipts.add(refs.receipt)
            if refs.transfer is not None:
                transfers.add(refs.transfer)
            contracts.update(refs.contracts)
        for key, ids in wanted_owned.items():
            cache = self._owned[key]
            missing = ids - cache.keys()
            if missing:
                ident_column, owner_column = _OWNED[key]
                cache.update(dict.fromkeys(missing))
                rows = self.session.execute(
                    select(ident_column, owner_column).where(ident_column.in_(missing))
                )
                cache.update({ident: owner for ident, owner in rows})
        missing = receipts - self._receipts.keys()
        if missing:
            self._receipts.update(dict.fromkeys(missing))
            rows = self.session.execute(
                select(Receipt.id, Receipt.contract_id).where(Receipt.id.in_(missing))
            )
            self._receipts.update({ident: contract for ident, contract in rows})
        contracts.update(c for r in receipts if (c := self._receipts.get(r)) is not None)
        missing = transfers - self._transfers.keys()
        if missing:
            self._transfers.update(dict.fromkeys(missing))
            moved = self.session.execute(
                select(Transfer.id, Transfer.from_institution_id, Transfer.to_institution_id).where(
                    Transfer.id.in_(missing)
                )
            )
            self._transfers.update({ident: (old, new) for ident, old, new in moved})
        self._load_contracts(contracts - self._contracts.keys())

    def _load_contracts(self, missing: set[str]) -> None:
        if not missing:
            return
        self._contracts.update(dict.fromkeys(missing))
        history: dict[str, list[tuple[int, str]]] = {}
        moves = self.session.execute(
            select(
                TransferredContract.contract_id,
                Transfer.approved_seq,
                Transfer.from_institution_id,
            )
            .join(Transfer, Transfer.id == TransferredContract.transfer_id)
            .where(TransferredContract.contract_id.in_(missing))
            .order_by(Transfer.approved_seq)
        )
        for contract_id, approved_seq, previous in moves:
            history.setdefault(contract_id, []).append((approved_seq, previous))
        current = self.session.execute(
            select(Contract.id, Contract.institution_id).where(Contract.id.in_(missing))
        )
        for contract_id, institution_id in current:
            self._contracts[contract_id] = (institution_id, history.get(contract_id, []))


@dataclass(frozen=True, slots=True)
class Scanned:
    """What one bounded scan found, and where the next one starts (None: nothing left now)."""

    entries: list[Entry]
    next_after: int | None
    resume_after: int
    """Where this scan stopped: the next scan starts after it, now or once the log has grown."""


def scan(
    session: Session,
    *,
    after: int,
    last: int,
    limit: int,
    accept: Callable[[Entry], bool],
    type_filter: Callable[[Select[Any]], Select[Any]] | None = None,
    budget: int | None = None,
) -> Scanned:
    """Entries in (``after``, ``last``] that ``accept`` keeps: at most ``limit`` of them, looking at
    no more than ``budget`` log positions (default ``SCAN_LIMIT``).

    ``next_after`` is the last seq returned when the page is full, else the end of the window when
    the budget ran out before ``last``, else None. Seqs only grow, so continuing after it never
    skips an entry or repeats one, however many entries were appended in between.
    """
    end = min(last, after + (SCAN_LIMIT if budget is None else budget))
    found: list[Entry] = []
    resolver = Resolver(session)
    position = after
    while position < end and len(found) <= limit:
        upper = min(end, position + CHUNK)
        query = select(LogEntry).where(LogEntry.seq > position, LogEntry.seq <= upper)
        if type_filter is not None:
            query = type_filter(query)
        rows = session.scalars(query.order_by(LogEntry.seq)).all()
        found.extend(e for e in resolver.decode(rows) if accept(e))
        position = upper
    if len(found) > limit:
        return Scanned(found[:limit], found[limit - 1].seq, found[limit - 1].seq)
    return Scanned(found, end if end < last else None, max(end, after))
