"""Payout instructions: what the custody banks must pay, what they report back, and the files.

A payout moves no money when it is instructed: the amount sits in ``payable``. When the bank
reports it executed, it leaves escrow (payable ↓, escrow ↓). When the bank reports it failed, the
amount simply stays payable and the next settlement run instructs it again under a new
end-to-end id. A bank reads its instructions per instruction date (the day of the run that issued
them, so a file once read never grows) or as everything it has not answered yet.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.accounts import AccountKind
from ledger.entities import Institution, Payout, PayoutStatus, SettlementBatch
from ledger.errors import InvalidState, NotFound
from ledger.escrow import inputs
from ledger.escrow.context import Context
from ledger.escrow.contracts import institution_account
from ledger.journal import Posting
from ledger.money import Money

EXPORT_COLUMNS = (
    "end_to_end_id",
    "instructed_on",
    "settles",
    "bank_id",
    "debit_account",
    "institution_id",
    "institution_name",
    "credit_account",
    "amount_fen",
    "amount",
    "currency",
    "retry_of",
    "batch_id",
    "status",
)


def _payout_for_bank(session: Session, bank_id: str, payout_id: str) -> Payout:
    payout = session.get(Payout, payout_id) if isinstance(payout_id, str) else None
    if payout is None or payout.bank_id != bank_id:
        raise NotFound(f"no payout {payout_id}")
    return payout


def _open(payout: Payout) -> None:
    if payout.status is not PayoutStatus.INSTRUCTED:
        raise InvalidState(f"{payout.id} is {payout.status.value}; it was already answered")


def execute_payout(
    session: Session, ctx: Context, *, bank_id: str, payout_id: str, bank_reference: str
) -> Payout:
    """The bank paid the institution: the amount leaves escrow.

    A payout instructed before a freeze may still be reported executed afterwards: freezing stops
    new releases, it cannot recall an instruction the bank already acted on.
    """
    ctx.lock(session)
    payout = _payout_for_bank(session, bank_id, payout_id)
    _open(payout)
    payout.bank_reference = inputs.code(bank_reference, "bank reference")
    amount = Money(payout.amount_fen)
    payout.answered_seq = ctx.record(
        session,
        "payout.executed",
        f"bank:{bank_id}",
        {
            "payout": payout.id,
            "institution": payout.institution_id,
            "amount": payout.amount_fen,
            "bank_reference": payout.bank_reference,
        },
        [
            Posting.debit(institution_account(AccountKind.PAYABLE, payout.institution_id), amount),
            Posting.credit(institution_account(AccountKind.ESCROW, payout.institution_id), amount),
        ],
    ).seq
    payout.status = PayoutStatus.EXECUTED
    session.flush()
    return payout


def fail_payout(
    session: Session,
    ctx: Context,
    *,
    bank_id: str,
    payout_id: str,
    reason: str,
    bank_reference: str,
) -> Payout:
    """The bank could not pay (closed account, wrong name, ...): the money stays payable."""
    ctx.lock(session)
    payout = _payout_for_bank(session, bank_id, payout_id)
    _open(payout)
    payout.failure_reason = inputs.required_text(reason, "the failure reason", limit=500)
    payout.bank_reference = inputs.code(bank_reference, "bank reference")
    payout.answered_seq = ctx.record(
        session,
        "payout.failed",
        f"bank:{bank_id}",
        {
            "payout": payout.id,
            "institution": payout.institution_id,
            "reason": payout.failure_reason,
            "bank_reference": payout.bank_reference,
        },
    ).seq
    payout.status = PayoutStatus.FAILED
    session.flush()
    return payout


def instructions(
    session: Session, bank_id: str, *, on: date | None = None, open_only: bool = False
) -> list[Payout]:
    """A bank's instructions issued on a business date, and/or those it has not answered yet."""
    query = select(Payout).where(Payout.bank_id == bank_id)
    if on is not None:
        query = query.where(Payout.instructed_on == on)
    if open_only:
        query = query.where(Payout.status == PayoutStatus.INSTRUCTED)
    return list(session.scalars(query.order_by(Payout.instructed_seq, Payout.id)))


def _rows(session: Session, payouts: list[Payout]) -> list[dict[str, Any]]:
    names = dict(
        session.execute(
            select(Institution.id, Institution.name).where(
                Institution.id.in_({p.institution_id for p in payouts})
            )
        ).all()
    )
    settles = dict(
        session.execute(
            select(SettlementBatch.id, SettlementBatch.business_date).where(
                SettlementBatch.id.in_({p.batch_id for p in payouts})
            )
        ).all()
    )
    return [
        {
            "end_to_end_id": p.id,
            "instructed_on": p.instructed_on.isoformat(),
            "settles": settles[p.batch_id].isoformat(),
            "bank_id": p.bank_id,
            "debit_account": p.escrow_account,
            "institution_id": p.institution_id,
            "institution_name": names.get(p.institution_id, ""),
            "credit_account": p.settlement_account,
            "amount_fen": p.amount_fen,
            "amount": str(Decimal(p.amount_fen).scaleb(-2)),
            "currency": "CNY",
            "retry_of": p.retry_of or "",
            "batch_id": p.batch_id,
            "status": p.status.value,
        }
        for p in payouts
    ]


def export_csv(
    session: Session, bank_id: str, *, on: date | None = None, open_only: bool = False
) -> str:
    """A bank's instructions as CSV (header row, one payout per line)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(_rows(session, instructions(session, bank_id, on=on, open_only=open_only)))
    return buffer.getvalue()


def export_json(
    session: Session, bank_id: str, *, on: date | None = None, open_only: bool = False
) -> str:
    """A bank's instructions as JSON, with a count and a total for control."""
    rows = _rows(session, instructions(session, bank_id, on=on, open_only=open_only))
    document = {
        "bank_id": bank_id,
        "instructed_on": None if on is None else on.isoformat(),
        "open_only": open_only,
        "count": len(rows),
        "total_fen": sum(r["amount_fen"] for r in rows),
        "payouts": rows,
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
