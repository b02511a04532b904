"""Lesson consumption (消课): reports, confirmations, disputes, and confirmation by silence.

A reported lesson takes its exact share of what remains of the contract (``ledger.allocation``):
that share leaves the contract account for ``pending``, less its share of any cost advance, which
repays ``advance`` instead. Confirmation moves it on to ``releasable``; voiding puts it back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, insert, inspect, select, update
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from ledger.accounts import AccountKind
from ledger.allocation import next_share
from ledger.entities import (
    ConfirmedBy,
    Contract,
    ContractStatus,
    Institution,
    InstitutionStatus,
    Lesson,
    LessonStatus,
    RefundKind,
)
from ledger.errors import (
    ConfirmationWindowClosed,
    ContractNotActive,
    InstitutionNotActive,
    InvalidRequest,
    LessonBeforeStart,
    LessonInFuture,
    LessonNotOpen,
    LessonRefConflict,
    NoLessonsLeft,
    NotFound,
)
from ledger.escrow import advances, inputs, refunds, scope
from ledger.escrow.context import Context
from ledger.escrow.contracts import contract_account, institution_account
from ledger.escrow.parties import new_id
from ledger.journal import Posting, balances
from ledger.log import Event, format_time
from ledger.models import table
from ledger.money import Money
from ledger.party_keys import PartyKind, SignatureIn, lesson_message, signatures

MAX_BATCH = 1_000
AUTO_CONFIRM_CHUNK = 5_000
_LESSONS = cast(Table, Lesson.__table__)
# One statement, compiled once, run for many lessons (issue 8: a VALUES list of a chunk's lessons
# cost more to compile than to run).
_CONFIRM_BY_SILENCE = (
    update(_LESSONS)
    .where(_LESSONS.c.id == bindparam("lesson"), _LESSONS.c.status == LessonStatus.REPORTED)
    .values(
        status=LessonStatus.CONFIRMED,
        confirmed_by=ConfirmedBy.SILENCE,
        decided_seq=bindparam("seq"),
    )
)
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


@dataclass(frozen=True, slots=True)
class LessonReport:
    """One delivered lesson as the institution reports it."""

    contract_id: str
    ref: str
    delivered_at: datetime
    teacher_id: str
    signature: SignatureIn | None = None
    """The institution's signature over ``lesson_message``; required once it registered a key."""


def _check_report(report: LessonReport) -> None:
    inputs.code(report.ref, "lesson id")
    inputs.code(report.teacher_id, "teacher id")
    inputs.instant(report.delivered_at, "delivered_at")
    if not isinstance(report.contract_id, str):
        raise InvalidRequest("contract id must be text")


def _same(lesson: Lesson, report: LessonReport) -> bool:
    return (lesson.contract_id, lesson.delivered_at, lesson.teacher_id) == (
        report.contract_id,
        report.delivered_at,
        report.teacher_id,
    )


def _active_institution(institution: Institution) -> None:
    if institution.status is not InstitutionStatus.ACTIVE:
        raise InstitutionNotActive(
            f"{institution.id} is {institution.status.value}: it may not report lessons"
        )


# Built once with bound parameters: SQLAlchemy then reuses the compiled statement without building
# the expression and its cache key on every call, a tenth of a single-lesson report (issue 8).
_LESSONS_BY_REF = select(Lesson).where(
    Lesson.institution_id == bindparam("institution"),
    Lesson.ref.in_(bindparam("refs", expanding=True)),
)
_CONTRACTS_BY_ID = select(Contract).where(
    Contract.id.in_(bindparam("ids", expanding=True)),
    Contract.institution_id == bindparam("institution"),
)


def report_lessons(
    session: Session, ctx: Context, *, institution_id: str, reports: Sequence[LessonReport]
) -> list[Lesson]:
    """Record delivered lessons, all or none; a lesson id already reported is returned as it was.

    Refused for a frozen (or closing) institution, an unpaid or ended contract, a contract with no
    lessons left, and a lesson in the future or before the course started.
    """
    if not reports:
        return []
    if len(reports) > MAX_BATCH:
        raise InvalidRequest(f"at most {MAX_BATCH} lessons per batch, got {len(reports)}")
    for report in reports:
        _check_report(report)
    ctx.lock(session)
    institution = scope.institution(session, institution_id)
    now = ctx.now()
    refs = {r.ref for r in reports}
    existing = {
        lesson.ref: lesson
        for lesson in session.scalars(
            _LESSONS_BY_REF, {"institution": institution_id, "refs": sorted(refs)}
        )
    }
    # A retry of lessons already recorded answers as before, even if the institution has since
    # been frozen: idempotency must not depend on what happened in between.
    if not all(r.ref in existing for r in reports):
        _active_institution(institution)
    contract_ids = {r.contract_id for r in reports}
    contracts = {
        c.id: c
        for c in session.scalars(
            _CONTRACTS_BY_ID, {"institution": institution_id, "ids": sorted(contract_ids)}
        )
    }
    signed = signatures(session, PartyKind.INSTITUTION, institution_id)
    # each contract's remaining value as the batch cuts it, read for all contracts at once
    stored = balances(session, [contract_account(contract_id) for contract_id in contracts])
    values = {
        contract_id: stored.get(contract_account(contract_id), 0) for contract_id in contracts
    }
    confirm_by: dict[str, datetime] = {}  # per policy: every lesson of the batch shares ``now``
    results: list[Lesson] = []
    new: list[Lesson] = []
    events: list[Event] = []
    for report in reports:
        known = existing.get(report.ref)
        if known is not None:
            if not _same(known, report):
                raise LessonRefConflict(
                    f"lesson id {report.ref} was already used for another lesson",
                    lesson=known.id,
                )
            results.append(known)
            continue
        # An institution without a key reports unsigned: no message to build (issue 8).
        signature = (
            None
            if signed.key is None and report.signature is None
            else signed.check(
                lesson_message(
                    institution=institution_id,
                    contract=report.contract_id,
                    ref=report.ref,
                    delivered_at=report.delivered_at,
                    teacher=report.teacher_id,
                ),
                report.signature,
                what=f"lesson {report.ref}",
            )
        )
        contract = contracts.get(report.contract_id)
        if contract is None:
            raise NotFound(f"no contract {report.contract_id}")
        if contract.status is not ContractStatus.ACTIVE:
            raise ContractNotActive(
                f"{contract.id} is {contract.status.value}; lessons are reported on paid contracts"
            )
        if contract.lessons_available <= 0:
            raise NoLessonsLeft(
                f"{contract.id} has no lessons left to report "
                f"({contract.lessons_delivered} delivered, {contract.lessons_refunded} refunded, "
                f"{contract.lessons_reserved} reserved by refund requests)"
            )
        if report.delivered_at > now:
            raise LessonInFuture(
                f"delivered at {format_time(report.delivered_at)}, after now ({format_time(now)})"
            )
        if ctx.local_date(report.delivered_at) < contract.start_date:
            raise LessonBeforeStart(
                f"delivered {ctx.local_date(report.delivered_at)}; the course starts "
                f"{contract.start_date}"
            )
        remaining_lessons = contract.lessons_remaining
        price = next_share(values[contract.id], remaining_lessons)
        advance = (
            next_share(contract.advance_remaining_fen, remaining_lessons)
            if contract.advance_remaining_fen
            else 0
        )
        values[contract.id] -= price
        contract.advance_remaining_fen -= advance
        contract.lessons_delivered += 1
        if contract.lessons_remaining == 0:
            contract.status = ContractStatus.COMPLETED
        if contract.policy not in confirm_by:
            window = ctx.policy(contract.policy).confirmation_window
            confirm_by[contract.policy] = ctx.deadline(now, window)
        lesson = _new_lesson(
            {
                "id": new_id("les"),
                "institution_id": institution_id,
                "ref": report.ref,
                "contract_id": contract.id,
                "delivered_at": report.delivered_at,
                "teacher_id": report.teacher_id,
                "price_fen": price,
                "advance_fen": advance,
                "status": LessonStatus.REPORTED,
                "confirm_by": confirm_by[contract.policy],
                "reported_seq": -1,
                "confirmed_by": None,
                "dispute_reason": None,
                "decided_seq": None,
                "batch_id": None,
            }
        )
        existing[report.ref] = lesson
        new.append(lesson)
        results.append(lesson)
        postings = [
            Posting.debit(contract_account(contract.id), Money(price)),
            Posting.credit(
                institution_account(AccountKind.PENDING, institution_id), Money(price - advance)
            ),
        ]
        if advance:
            postings.append(
                Posting.credit(
                    institution_account(AccountKind.ADVANCE, institution_id), Money(advance)
                )
            )
        events.append(
            Event(
                "lesson.reported",
                f"institution:{institution_id}",
                {
                    "lesson": lesson.id,
                    "ref": report.ref,
                    "contract": contract.id,
                    "institution": institution_id,
                    "delivered_at": format_time(report.delivered_at),
                    "teacher": report.teacher_id,
                    "price": price,
                    "advance": advance,
                    "confirm_by": format_time(lesson.confirm_by),
                    **({} if signature is None else {"signature": signature}),
                },
                # the price is never 0: a contract's value covers every lesson at >= 1 fen
                tuple(p for p in postings if p.amount.amount),
            )
        )
    for lesson, appended in zip(new, ctx.log.append_many(session, events), strict=True):
        lesson.__dict__["reported_seq"] = appended.seq  # still transient: no change to track
    _insert_lessons(session, new)
    session.flush()
    return results


_LESSON_COLUMNS = tuple(column.key for column in table(Lesson).columns)
_LESSON_CLASS = inspect(Lesson).class_manager


def _new_lesson(columns: dict[str, Any]) -> Lesson:
    """A transient Lesson with every column set, built as the ORM builds the rows it loads.

    ``Lesson(**columns)`` fires an attribute event per column; for a 1,000-lesson report that was
    an eighth of the time (issue 8). The values go straight into the instance dictionary, which
    the ORM reads as loaded state once ``_insert_lessons`` attaches the object.
    """
    lesson: Lesson = _LESSON_CLASS.new_instance()
    lesson.__dict__.update(columns)
    return lesson


def _insert_lessons(session: Session, new: list[Lesson]) -> None:
    """Insert the new lessons with one Core statement and attach them to the session as loaded.

    The ORM's unit of work cost a fifth of a 1,000-lesson report (issue 8). Every column is set on
    the objects, so once attached (``make_transient_to_detached``) they are complete persistent
    rows: reading them loads nothing, and a later change is an UPDATE like any loaded object.
    """
    if not new:
        return
    session.execute(
        insert(table(Lesson)),
        [{name: getattr(lesson, name) for name in _LESSON_COLUMNS} for lesson in new],
    )
    for lesson in new:
        make_transient_to_detached(lesson)
        session.add(lesson)


def _release_postings(institution_id: str, pending_fen: int) -> tuple[Posting, ...]:
    if not pending_fen:
        return ()
    amount = Money(pending_fen)
    return (
        Posting.debit(institution_account(AccountKind.PENDING, institution_id), amount),
        Posting.credit(institution_account(AccountKind.RELEASABLE, institution_id), amount),
    )


def _confirmation(
    lesson_id: str,
    contract_id: str,
    institution_id: str,
    pending_fen: int,
    by: ConfirmedBy,
    actor: str,
    postings: tuple[Posting, ...] | None = None,
) -> Event:
    """The entry that confirms a lesson: its pending share becomes releasable.

    ``postings`` are ``_release_postings(institution_id, pending_fen)`` when the caller has them.
    """
    return Event(
        "lesson.confirmed",
        actor,
        {
            "lesson": lesson_id,
            "contract": contract_id,
            "institution": institution_id,
            "by": by.value,
            "releasable": pending_fen,
        },
        _release_postings(institution_id, pending_fen) if postings is None else postings,
    )


def _confirm(session: Session, ctx: Context, lesson: Lesson, by: ConfirmedBy, actor: str) -> Event:
    lesson.status = LessonStatus.CONFIRMED
    lesson.confirmed_by = by
    return _confirmation(
        lesson.id, lesson.contract_id, lesson.institution_id, lesson.pending_fen, by, actor
    )


def confirm_lesson(session: Session, ctx: Context, *, parent_id: str, lesson_id: str) -> Lesson:
    """The parent confirms a lesson (also one they disputed): it becomes releasable."""
    ctx.lock(session)
    lesson, _contract = scope.lesson_of_parent(session, parent_id, lesson_id)
    if lesson.status not in (LessonStatus.REPORTED, LessonStatus.DISPUTED):
        raise LessonNotOpen(f"{lesson.id} is {lesson.status.value}")
    event = _confirm(session, ctx, lesson, ConfirmedBy.PARENT, f"parent:{parent_id}")
    lesson.decided_seq = ctx.log.append(session, event).seq
    session.flush()
    return lesson


def dispute_lesson(
    session: Session, ctx: Context, *, parent_id: str, lesson_id: str, reason: str
) -> Lesson:
    """The parent disputes a lesson within the window; its money stays pending until resolved."""
    ctx.lock(session)
    lesson, _contract = scope.lesson_of_parent(session, parent_id, lesson_id)
    if lesson.status is not LessonStatus.REPORTED:
        raise LessonNotOpen(
            f"{lesson.id} is {lesson.status.value}; only a reported lesson can be disputed"
        )
    if ctx.now() >= lesson.confirm_by:
        raise ConfirmationWindowClosed(
            f"the window to dispute {lesson.id} closed at {format_time(lesson.confirm_by)}"
        )
    reason = inputs.required_text(reason, "a dispute's reason", limit=500)
    ctx.record(
        session,
        "lesson.disputed",
        f"parent:{parent_id}",
        {"lesson": lesson.id, "contract": lesson.contract_id, "reason": reason},
    )
    lesson.status = LessonStatus.DISPUTED
    lesson.dispute_reason = reason
    session.flush()
    return lesson


def _void(session: Session, ctx: Context, lesson: Lesson, actor: str, why: str) -> None:
    """Undo a lesson: its share goes back to the contract, its advance share back to the advance.

    If the contract has since moved to a successor operator, the lesson's money moves with it (from
    the old escrow account to the new one) and the old operator owes back the advance share the
    lesson had repaid. If the contract's institution is being wound down, the returned lesson is
    refunded at once, as every other undelivered lesson there was.
    """
    contract = session.get(Contract, lesson.contract_id)
    assert contract is not None
    old, current = lesson.institution_id, contract.institution_id
    price = Money(lesson.price_fen)
    postings = [
        Posting.credit(contract_account(contract.id), price),
        Posting.debit(institution_account(AccountKind.PENDING, old), Money(lesson.pending_fen)),
    ]
    facts: dict[str, object] = {}
    if old == current:
        postings.append(
            Posting.debit(institution_account(AccountKind.ADVANCE, old), Money(lesson.advance_fen))
        )
        contract.advance_remaining_fen += lesson.advance_fen
    else:
        recovery = advances.recover(session, old, lesson.advance_fen, from_advance=False)
        postings += [
            Posting.credit(institution_account(AccountKind.ESCROW, old), price),
            Posting.debit(institution_account(AccountKind.ESCROW, current), price),
            *recovery.postings(),
        ]
        facts = {"moved_to": current, **recovery.facts()}
    lesson.decided_seq = ctx.record(
        session,
        "lesson.voided",
        actor,
        {
            "lesson": lesson.id,
            "contract": contract.id,
            "why": why,
            "returned": lesson.price_fen,
            **facts,
        },
        [p for p in postings if p.amount.amount],
    ).seq
    lesson.status = LessonStatus.VOIDED
    contract.lessons_delivered -= 1
    if contract.status is ContractStatus.COMPLETED:
        contract.status = ContractStatus.ACTIVE
    institution = scope.institution(session, current)
    if institution.status is InstitutionStatus.WINDING_DOWN and contract.lessons_available:
        refunds.ordered_refund(
            session,
            ctx,
            contract,
            kind=RefundKind.WIND_DOWN,
            lessons=None,
            reason="wind-down: a voided lesson returned to the contract",
            actor=actor,
        )


def withdraw_lesson(
    session: Session, ctx: Context, *, institution_id: str, lesson_id: str
) -> Lesson:
    """The institution withdraws a disputed lesson: its money goes back to the contract."""
    ctx.lock(session)
    lesson = scope.lesson_of_institution(session, institution_id, lesson_id)
    if lesson.status is not LessonStatus.DISPUTED:
        raise LessonNotOpen(
            f"{lesson.id} is {lesson.status.value}; only a disputed lesson can be withdrawn"
        )
    _void(session, ctx, lesson, f"institution:{institution_id}", "withdrawn")
    session.flush()
    return lesson


def resolve_dispute(
    session: Session,
    ctx: Context,
    *,
    regulator_id: str,
    lesson_id: str,
    for_institution: bool,
    note: str,
) -> Lesson:
    """A regulator settles a dispute: confirmed for the institution, or voided for the parent."""
    ctx.lock(session)
    note = inputs.required_text(note, "the regulator's note", limit=500)
    lesson = session.get(Lesson, lesson_id) if isinstance(lesson_id, str) else None
    if lesson is None:
        raise NotFound(f"no lesson {lesson_id}")
    scope.institution_for_regulator(session, regulator_id, lesson.institution_id)
    if lesson.status is not LessonStatus.DISPUTED:
        raise LessonNotOpen(f"{lesson.id} is {lesson.status.value}; it is not disputed")
    actor = f"regulator:{regulator_id}"
    if for_institution:
        event = _confirm(session, ctx, lesson, ConfirmedBy.REGULATOR, actor)
        lesson.decided_seq = ctx.log.append(
            session, Event(event.type, actor, {**event.payload, "note": note}, event.postings)
        ).seq
    else:
        _void(session, ctx, lesson, actor, f"resolved for the parent: {note}")
    session.flush()
    return lesson


def auto_confirm(session: Session, ctx: Context, *, limit: int = AUTO_CONFIRM_CHUNK) -> int:
    """Confirm, by silence, every reported lesson whose window has passed; returns how many.

    Idempotent: a lesson confirmed once is no longer ``reported``. Run again while it returns
    ``limit`` to work through a backlog in bounded transactions.
    """
    ctx.lock(session)
    # issue 8: columns, not objects, and one precompiled UPDATE run for the chunk instead of the
    # unit of work: loading and flushing objects was two fifths of the sweep.
    due = session.execute(
        select(
            Lesson.id,
            Lesson.contract_id,
            Lesson.institution_id,
            (Lesson.price_fen - Lesson.advance_fen).label("pending_fen"),
        )
        .where(Lesson.status == LessonStatus.REPORTED, Lesson.confirm_by <= ctx.now())
        .order_by(Lesson.confirm_by, Lesson.id)
        .limit(limit)
    ).all()
    by = ConfirmedBy.SILENCE
    # Postings are immutable: lessons of one institution at one price share them (a tenth of
    # the sweep went to building them again).
    releases: dict[tuple[str, int], tuple[Posting, ...]] = {}
    events = []
    for row in due:
        key = (row.institution_id, row.pending_fen)
        postings = releases.get(key)
        if postings is None:
            postings = releases[key] = _release_postings(*key)
        events.append(
            _confirmation(
                row.id, row.contract_id, row.institution_id, row.pending_fen, by, "system", postings
            )
        )
    decided = [
        (row.id, appended.seq)
        for row, appended in zip(due, ctx.log.append_many(session, events), strict=True)
    ]
    if decided:
        result = session.execute(
            _CONFIRM_BY_SILENCE, [{"lesson": lesson_id, "seq": seq} for lesson_id, seq in decided]
        )
        # The log lock keeps every other writer out: a lesson logged but not updated is a bug.
        changed = cast("CursorResult[Any]", result).rowcount
        assert changed == len(decided), f"{changed} of {len(decided)} lessons confirmed"
    # Lessons this session already holds (reported in it, say) must not keep their old state.
    if len(session.identity_map):
        for lesson_id, seq in decided:
            held = session.identity_map.get(identity_key(Lesson, lesson_id))
            if held is not None:
                set_committed_value(held, "status", LessonStatus.CONFIRMED)
                set_committed_value(held, "confirmed_by", by)
                set_committed_value(held, "decided_seq", seq)
    return len(due)
