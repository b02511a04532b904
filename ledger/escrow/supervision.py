"""What regulators do to institutions: freeze, unfreeze, wind down, and transfer to a successor.

Freezing is one state change. Winding down and transferring are flows: they touch every contract of
an institution, each change its own log entry, all in one transaction so the flow happens whole or
not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.accounts import AccountKind
from ledger.entities import (
    Contract,
    ContractStatus,
    Institution,
    InstitutionStatus,
    Refund,
    RefundKind,
    RefundStatus,
    Transfer,
    TransferredContract,
)
from ledger.errors import InvalidState, NotFound, TransferWindowClosed
from ledger.escrow import advances, inputs, refunds, scope
from ledger.escrow.context import Context
from ledger.escrow.contracts import contract_account, institution_account
from ledger.escrow.parties import new_id
from ledger.journal import Posting, balance
from ledger.log import format_time
from ledger.money import Money


def _reason(text: object) -> str:
    return inputs.required_text(text, "a regulator's reason", limit=500)


def _change_status(
    session: Session,
    ctx: Context,
    *,
    regulator_id: str,
    institution_id: str,
    allowed_from: tuple[InstitutionStatus, ...],
    to: InstitutionStatus,
    event: str,
    reason: str,
) -> Institution:
    institution = scope.institution_for_regulator(session, regulator_id, institution_id)
    if institution.status not in allowed_from:
        raise InvalidState(
            f"{institution.id} is {institution.status.value}; cannot become {to.value}"
        )
    ctx.record(
        session,
        event,
        f"regulator:{regulator_id}",
        {
            "institution": institution.id,
            "from": institution.status.value,
            "reason": _reason(reason),
        },
    )
    institution.status = to
    session.flush()
    return institution


def freeze(
    session: Session, ctx: Context, *, regulator_id: str, institution_id: str, reason: str
) -> Institution:
    """No new contracts, no lesson reports, no releases, until unfrozen."""
    ctx.lock(session)
    return _change_status(
        session,
        ctx,
        regulator_id=regulator_id,
        institution_id=institution_id,
        allowed_from=(InstitutionStatus.ACTIVE,),
        to=InstitutionStatus.FROZEN,
        event="institution.frozen",
        reason=reason,
    )


def unfreeze(
    session: Session, ctx: Context, *, regulator_id: str, institution_id: str, reason: str
) -> Institution:
    """Back to normal trading."""
    ctx.lock(session)
    return _change_status(
        session,
        ctx,
        regulator_id=regulator_id,
        institution_id=institution_id,
        allowed_from=(InstitutionStatus.FROZEN,),
        to=InstitutionStatus.ACTIVE,
        event="institution.unfrozen",
        reason=reason,
    )


@dataclass
class WindDown:
    """What a wind-down did."""

    institution: Institution
    refunds: list[Refund] = field(default_factory=list)
    cancelled: list[Contract] = field(default_factory=list)

    @property
    def refunded_fen(self) -> int:
        return sum(r.amount_fen or 0 for r in self.refunds)


def _contracts(session: Session, institution_id: str, *statuses: ContractStatus) -> list[Contract]:
    return list(
        session.scalars(
            select(Contract)
            .where(Contract.institution_id == institution_id, Contract.status.in_(statuses))
            .order_by(Contract.created_seq)
        )
    )


def _settle_open_business(
    session: Session, ctx: Context, institution: Institution, actor: str, *, via: str, why: str
) -> tuple[list[Refund], list[Contract]]:
    """Before an institution stops: approve every open refund request, cancel unpaid contracts."""
    approved = []
    requested = session.scalars(
        select(Refund)
        .where(Refund.institution_id == institution.id, Refund.status == RefundStatus.REQUESTED)
        .order_by(Refund.requested_seq)
    )
    for refund in list(requested):
        contract = session.get(Contract, refund.contract_id)
        assert contract is not None
        approved.append(
            refunds.approve(session, ctx, refund, contract, actor=actor, via=via, reserved=True)
        )
    cancelled = _contracts(session, institution.id, ContractStatus.AWAITING_PAYMENT)
    for contract in cancelled:
        ctx.record(session, "contract.cancelled", actor, {"contract": contract.id, "why": why})
        contract.status = ContractStatus.CANCELLED
    return approved, cancelled


def wind_down(
    session: Session, ctx: Context, *, regulator_id: str, institution_id: str, reason: str
) -> WindDown:
    """Close an institution under supervision: every undelivered lesson is refunded in full.

    Pending refund requests are approved, unpaid contracts cancelled, and every open contract gets
    a refund of all its remaining lessons, each its own log entry. Lessons already delivered keep
    their normal course (confirmation, dispute, settlement).
    """
    ctx.lock(session)
    institution = _change_status(
        session,
        ctx,
        regulator_id=regulator_id,
        institution_id=institution_id,
        allowed_from=(InstitutionStatus.ACTIVE, InstitutionStatus.FROZEN),
        to=InstitutionStatus.WINDING_DOWN,
        event="institution.winding_down",
        reason=reason,
    )
    actor = f"regulator:{regulator_id}"
    outcome = WindDown(institution)
    outcome.refunds, outcome.cancelled = _settle_open_business(
        session, ctx, institution, actor, via="wind_down", why="institution wound down"
    )
    for contract in _contracts(session, institution.id, ContractStatus.ACTIVE):
        if contract.lessons_available > 0:
            outcome.refunds.append(
                refunds.ordered_refund(
                    session,
                    ctx,
                    contract,
                    kind=RefundKind.WIND_DOWN,
                    lessons=None,
                    reason=f"wind-down: {reason}",
                    actor=actor,
                )
            )
    session.flush()
    return outcome


@dataclass
class TransferOutcome:
    """What a transfer moved."""

    transfer: Transfer
    contracts: list[TransferredContract] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    cancelled: list[Contract] = field(default_factory=list)

    @property
    def value_fen(self) -> int:
        return sum(c.value_fen for c in self.contracts)


def approve_transfer(
    session: Session,
    ctx: Context,
    *,
    regulator_id: str,
    from_institution_id: str,
    to_institution_id: str,
    reason: str,
) -> TransferOutcome:
    """Move every open contract, with its escrow value, to a successor operator.

    Pending refund requests are honoured first. Each contract's remaining value moves from the old
    escrow account to the successor's; the old operator's advance on those lessons becomes due and
    is recovered. Parents may decline within the profile's window and be refunded in full.
    """
    ctx.lock(session)
    old = scope.institution_for_regulator(session, regulator_id, from_institution_id)
    new = scope.institution_for_regulator(session, regulator_id, to_institution_id)
    if new.id == old.id or new.status is not InstitutionStatus.ACTIVE:
        raise InvalidState(f"{new.id} cannot take over: it must be another, active institution")
    if old.status not in (InstitutionStatus.ACTIVE, InstitutionStatus.FROZEN):
        raise InvalidState(f"{old.id} is {old.status.value}; it has nothing left to transfer")
    actor = f"regulator:{regulator_id}"
    policy = ctx.policy(old.policy)
    now = ctx.now()
    transfer = Transfer(
        id=new_id("trf"),
        from_institution_id=old.id,
        to_institution_id=new.id,
        decline_by=ctx.deadline(now, policy.transfer_decline_window),
        approved_seq=-1,
    )
    outcome = TransferOutcome(transfer)
    transfer.approved_seq = ctx.record(
        session,
        "transfer.approved",
        actor,
        {
            "transfer": transfer.id,
            "from": old.id,
            "to": new.id,
            "decline_by": format_time(transfer.decline_by),
            "reason": _reason(reason),
        },
    ).seq
    session.add(transfer)
    session.flush()
    outcome.refunds, outcome.cancelled = _settle_open_business(
        session, ctx, old, actor, via="transfer", why=f"institution transferred to {new.id}"
    )
    for contract in _contracts(session, old.id, ContractStatus.ACTIVE):
        outcome.contracts.append(_move(session, ctx, transfer, contract, actor))
    old.status = InstitutionStatus.CLOSED
    old.successor_id = new.id
    session.flush()
    return outcome


def _move(
    session: Session, ctx: Context, transfer: Transfer, contract: Contract, actor: str
) -> TransferredContract:
    old_id, new_id_ = transfer.from_institution_id, transfer.to_institution_id
    value = balance(session, contract_account(contract.id)).amount
    recovery = advances.recover(session, old_id, contract.advance_remaining_fen)
    postings = [
        Posting.credit(institution_account(AccountKind.ESCROW, old_id), Money(value)),
        Posting.debit(institution_account(AccountKind.ESCROW, new_id_), Money(value)),
        *recovery.postings(),
    ]
    ctx.record(
        session,
        "contract.transferred",
        actor,
        {
            "transfer": transfer.id,
            "contract": contract.id,
            "from": old_id,
            "to": new_id_,
            "value": value,
            "lessons": contract.lessons_remaining,
            **recovery.facts(),
        },
        [p for p in postings if p.amount.amount],
    )
    contract.institution_id = new_id_
    contract.transferred_from = old_id
    contract.advance_remaining_fen = 0
    moved = TransferredContract(transfer_id=transfer.id, contract_id=contract.id, value_fen=value)
    session.add(moved)
    return moved


def decline_transfer(session: Session, ctx: Context, *, parent_id: str, contract_id: str) -> Refund:
    """A parent refuses the successor: every remaining lesson is refunded from the new escrow."""
    ctx.lock(session)
    contract = scope.contract_of_parent(session, parent_id, contract_id)
    moved = session.scalars(  # the latest transfer is the one the parent answers
        select(TransferredContract)
        .join(Transfer, Transfer.id == TransferredContract.transfer_id)
        .where(TransferredContract.contract_id == contract.id)
        .order_by(Transfer.approved_seq.desc())
    ).first()
    if moved is None:
        raise NotFound(f"{contract.id} was not transferred")
    transfer = session.get(Transfer, moved.transfer_id)
    assert transfer is not None
    if moved.declined_seq is not None or ctx.now() >= transfer.decline_by:
        raise TransferWindowClosed(
            f"the transfer of {contract.id} could be declined until "
            f"{format_time(transfer.decline_by)}"
            + (" and was already declined" if moved.declined_seq is not None else "")
        )
    refund = refunds.ordered_refund(
        session,
        ctx,
        contract,
        kind=RefundKind.TRANSFER_DECLINED,
        lessons=None,
        reason=f"declined transfer {transfer.id}",
        actor=f"parent:{parent_id}",
    )
    moved.declined_seq = refund.decided_seq
    session.flush()
    return refund
