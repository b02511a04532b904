"""T+1 settlement: releasable money moves to payable, one batch per institution and business date.

A batch covers a window of the log: the entries after the institution's previous batch, up to
the last entry before its business date D ended (midnight, Asia/Shanghai). It takes the money that
became releasable in that window - never more than releasable still holds, and never money that
arrived after the window - and moves it to payable. Cost advances owed back (``advance_due``) are
netted first; the rest goes to the custody bank as one payout instruction. The confirmed lessons of
the window point at the batch.

Which dates: the engine jumps from one day on which money became releasable (or a lesson was
confirmed) to the next, so an idle institution costs two index lookups, not a row per day. A date
is settled once the profile's lag has passed (``windows.settlement_lag``: T+1 calendar day by
default, working days where a profile says so); each institution follows its own profile.

Exactly once: one transaction per institution (all its due dates, batches, payouts and retries).
A crash between institutions leaves those done complete and the others untouched; the next run
completes them. A rerun finds nothing new: the next window starts after the last batch's. Frozen
and winding-down institutions are held: their money waits in escrow, and their failed payouts are
not sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import ColumnElement, exists, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from ledger.accounts import AccountKind
from ledger.entities import (
    Institution,
    InstitutionStatus,
    Lesson,
    LessonStatus,
    Payout,
    PayoutStatus,
    SettlementBatch,
)
from ledger.escrow.context import Context
from ledger.escrow.contracts import institution_account
from ledger.escrow.parties import new_id
from ledger.escrow.queries import seq_at
from ledger.journal import Posting, balance
from ledger.models import Account, LogEntry
from ledger.models import Posting as PostingRow
from ledger.money import Money
from ledger.policy import Window

log = logging.getLogger("settlement.engine")

BATCH_EVENT = "settlement.batched"
HELD = (InstitutionStatus.FROZEN, InstitutionStatus.WINDING_DOWN)
_MAX_LAG_SEARCH = 400  # days; profiles refuse windows over a year


@dataclass(frozen=True, slots=True)
class Planned:
    """A batch the engine would create (the dry run shows these; a run writes them)."""

    institution_id: str
    business_date: date
    after_seq: int
    through_seq: int
    gross_fen: int
    netted_fen: int
    lessons: int
    released_fen: int
    settled_fen: int

    @property
    def payable_fen(self) -> int:
        return self.gross_fen - self.netted_fen


@dataclass
class SettlementReport:
    """What a run did (or, for a dry run, would do), institution by institution."""

    created: list[SettlementBatch | Planned] = field(default_factory=list)
    existing: list[SettlementBatch] = field(default_factory=list)
    payouts: list[Payout] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    not_due: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def gross_fen(self) -> int:
        return sum(b.gross_fen for b in self.created)

    @property
    def payable_fen(self) -> int:
        return sum(b.payable_fen for b in self.created)

    @property
    def lessons(self) -> int:
        return sum(b.lessons for b in self.created)


def end_of(ctx: Context, day: date) -> datetime:
    """The first instant after business date ``day`` (local midnight), in UTC."""
    return datetime.combine(day + timedelta(days=1), time(0), ctx.zone).astimezone(UTC)


def latest_due(ctx: Context, lag: Window, today: date) -> date:
    """The latest business date whose settlement lag has passed by ``today``."""
    if not lag.working:
        return today - timedelta(days=max(lag.days, 1))
    day = today - timedelta(days=1)
    for _ in range(_MAX_LAG_SEARCH):
        if ctx.calendar.add(day, lag) <= today:
            return day
        day -= timedelta(days=1)
    raise ValueError(f"no business date is due with a settlement lag of {lag}")


class _Releasable:
    """Read-only questions about one institution's releasable account."""

    def __init__(self, session: Session, institution_id: str) -> None:
        self.session = session
        self.account_id = session.scalar(
            select(Account.id).where(
                Account.code == institution_account(AccountKind.RELEASABLE, institution_id)
            )
        )

    def _flows(self, after: int, upto: int | None, *, credits_only: bool) -> int:
        if self.account_id is None:
            return 0
        query = select(func.coalesce(func.sum(PostingRow.amount), 0)).where(
            PostingRow.account_id == self.account_id, PostingRow.seq > after
        )
        if upto is not None:
            query = query.where(PostingRow.seq <= upto)
        if credits_only:
            query = query.where(PostingRow.amount < 0)
        else:
            query = query.where(or_(PostingRow.amount < 0, ~_posted_by_settlement()))
        return -int(self.session.scalar(query) or 0)  # a liability grows on the credit side

    def released(self, after: int, upto: int) -> int:
        """Net money that became releasable in (after, upto], settlements aside."""
        return self._flows(after, upto, credits_only=False)

    def credited_after(self, after: int) -> int:
        """Money that came in after ``after``: not yet the business of earlier windows."""
        return self._flows(after, None, credits_only=True)

    def next_credit(self, after: int) -> int | None:
        if self.account_id is None:
            return None
        return self.session.scalar(
            select(func.min(PostingRow.seq)).where(
                PostingRow.account_id == self.account_id,
                PostingRow.seq > after,
                PostingRow.amount < 0,
            )
        )


def _posted_by_settlement() -> ColumnElement[bool]:
    """Whether the posting's entry is a settlement batch.

    Settlements are set aside only where they could appear: a batch debits releasable (``_write``)
    and never credits it, so a credit needs no look at its entry. Issue 8: joining every posting
    of the window to its entry was a third of settle; now only the window's debits are looked up.
    """
    return exists().where(LogEntry.seq == PostingRow.seq, LogEntry.type == BATCH_EVENT)


def _next_confirmation(session: Session, institution_id: str, after: int) -> int | None:
    """A lesson confirmed after ``after`` but releasing nothing (all advance) still needs a batch."""
    return session.scalar(
        select(func.min(Lesson.decided_seq)).where(
            Lesson.institution_id == institution_id,
            Lesson.decided_seq > after,
            Lesson.status == LessonStatus.CONFIRMED,
            Lesson.batch_id.is_(None),
        )
    )


def _window_lessons(institution_id: str, after: int, upto: int) -> tuple[ColumnElement[bool], ...]:
    """The confirmed, unsettled lessons of one institution confirmed in the window (after, upto]."""
    return (
        Lesson.institution_id == institution_id,
        Lesson.status == LessonStatus.CONFIRMED,
        Lesson.batch_id.is_(None),
        Lesson.decided_seq > after,
        Lesson.decided_seq <= upto,
    )


def plan(session: Session, ctx: Context, institution: Institution, target: date) -> list[Planned]:
    """The batches the institution is due up to ``target``, computed from reads alone."""
    previous = session.scalars(
        select(SettlementBatch)
        .where(SettlementBatch.institution_id == institution.id)
        .order_by(SettlementBatch.business_date.desc())
        .limit(1)
    ).first()
    after = -1 if previous is None else previous.through_seq
    released = 0 if previous is None else previous.released_fen
    settled = 0 if previous is None else previous.settled_fen
    releasable = _Releasable(session, institution.id)
    available = balance(session, institution_account(AccountKind.RELEASABLE, institution.id)).amount
    owed = balance(session, institution_account(AccountKind.ADVANCE_DUE, institution.id)).amount
    planned: list[Planned] = []
    while True:
        starts = [
            s
            for s in (
                releasable.next_credit(after),
                _next_confirmation(session, institution.id, after),
            )
            if s is not None
        ]
        if not starts:
            break
        first = session.scalar(select(LogEntry.time).where(LogEntry.seq == min(starts)))
        assert first is not None
        day = ctx.local_date(first)
        if day > target:
            break
        upto = seq_at(session, end_of(ctx, day), inclusive=False)
        released += releasable.released(after, upto)
        # Money that arrived after this window is the next window's, whatever recoveries took.
        gross = max(0, min(released - settled, available - releasable.credited_after(upto)))
        netted = min(owed, gross)
        lessons = int(
            session.scalar(
                select(func.count())
                .select_from(Lesson)
                .where(*_window_lessons(institution.id, after, upto))
            )
            or 0
        )
        settled += gross
        available -= gross
        owed -= netted
        planned.append(
            Planned(institution.id, day, after, upto, gross, netted, lessons, released, settled)
        )
        after = upto
    return planned


def _write(
    session: Session, ctx: Context, institution: Institution, item: Planned
) -> tuple[SettlementBatch, Payout | None]:
    batch = SettlementBatch(
        id=new_id("stl"),
        institution_id=institution.id,
        business_date=item.business_date,
        gross_fen=item.gross_fen,
        netted_fen=item.netted_fen,
        lessons=item.lessons,
        after_seq=item.after_seq,
        through_seq=item.through_seq,
        released_fen=item.released_fen,
        settled_fen=item.settled_fen,
        seq=-1,
    )
    payout = _payout(ctx, institution, batch, item.payable_fen) if item.payable_fen else None
    postings = [
        Posting.debit(
            institution_account(AccountKind.RELEASABLE, institution.id), Money(item.gross_fen)
        ),
        Posting.credit(
            institution_account(AccountKind.ADVANCE_DUE, institution.id), Money(item.netted_fen)
        ),
        Posting.credit(
            institution_account(AccountKind.PAYABLE, institution.id), Money(item.payable_fen)
        ),
    ]
    batch.seq = ctx.record(
        session,
        BATCH_EVENT,
        "system",
        {
            "batch": batch.id,
            "institution": institution.id,
            "business_date": item.business_date.isoformat(),
            # the lessons covered are those confirmed in this window of the log
            "window": [item.after_seq + 1, item.through_seq],
            "lessons": item.lessons,
            "gross": item.gross_fen,
            "netted_advance": item.netted_fen,
            "payable": item.payable_fen,
            "payout": None if payout is None else payout.id,
            "settlement_account": institution.settlement_account,
        },
        [p for p in postings if p.amount.amount],
    ).seq
    session.add(batch)
    session.flush()
    if item.lessons:
        session.execute(
            update(Lesson)
            .where(*_window_lessons(institution.id, item.after_seq, item.through_seq))
            .values(batch_id=batch.id),
            execution_options={"synchronize_session": False},
        )
    if payout is not None:
        payout.instructed_seq = batch.seq
        session.add(payout)
    session.flush()
    return batch, payout


def _payout(ctx: Context, institution: Institution, batch: SettlementBatch, amount: int) -> Payout:
    return Payout(
        id=new_id("e2e"),
        batch_id=batch.id,
        institution_id=institution.id,
        bank_id=institution.bank_id,
        instructed_on=ctx.today(),
        settlement_account=institution.settlement_account,
        escrow_account=institution.escrow_account,
        amount_fen=amount,
        status=PayoutStatus.INSTRUCTED,
        retried=False,
        instructed_seq=-1,
    )


def _retry_failed(session: Session, ctx: Context, institution: Institution) -> list[Payout]:
    """Instruct again every failed payout of the institution; the money never left payable.

    The retry goes to the institution's settlement account as it is now, so a corrected account
    is used from the next run on.
    """
    retries = []
    failed = session.scalars(
        select(Payout)
        .where(
            Payout.institution_id == institution.id,
            Payout.status == PayoutStatus.FAILED,
            Payout.retried.is_(False),
        )
        .order_by(Payout.instructed_seq)
    )
    for old in list(failed):
        batch = session.get(SettlementBatch, old.batch_id)
        assert batch is not None
        retry = _payout(ctx, institution, batch, old.amount_fen)
        retry.retry_of = old.id
        retry.instructed_seq = ctx.record(
            session,
            "payout.instructed",
            "system",
            {
                "payout": retry.id,
                "retry_of": old.id,
                "institution": institution.id,
                "amount": old.amount_fen,
                "settlement_account": retry.settlement_account,
            },
        ).seq
        old.retried = True
        session.add(retry)
        retries.append(retry)
    session.flush()
    return retries


def _target(
    ctx: Context, institution: Institution, through: date | None, report: SettlementReport
) -> date:
    due = latest_due(ctx, ctx.policy(institution.policy).settlement_lag, ctx.today())
    if through is not None and through > due:
        report.not_due.append(institution.id)
    return due if through is None else min(through, due)


def _settle_institution(
    session: Session,
    ctx: Context,
    institution: Institution,
    through: date | None,
    report: SettlementReport,
) -> None:
    if through is not None:
        report.existing += session.scalars(
            select(SettlementBatch).where(
                SettlementBatch.institution_id == institution.id,
                SettlementBatch.business_date == through,
            )
        )
    if institution.status in HELD:
        report.held.append(institution.id)
        return
    for item in plan(session, ctx, institution, _target(ctx, institution, through, report)):
        batch, payout = _write(session, ctx, institution, item)
        report.created.append(batch)
        if payout is not None:
            report.payouts.append(payout)
    report.payouts += _retry_failed(session, ctx, institution)


def _institution_ids(
    sessions: sessionmaker[Session], institutions: Collection[str] | None
) -> list[str]:
    with sessions() as session:
        query = select(Institution.id).order_by(Institution.id)
        if institutions is not None:
            query = query.where(Institution.id.in_(list(institutions)))
        return list(session.scalars(query))


def settle(
    sessions: sessionmaker[Session],
    ctx: Context,
    *,
    through: date | None = None,
    institutions: Collection[str] | None = None,
    between_institutions: Callable[[str], None] | None = None,
) -> SettlementReport:
    """Settle every institution (or those named) up to ``through`` or its latest due date.

    Each institution is its own transaction, and one failing (its profile unreadable, say) is
    reported without stopping the others. ``between_institutions`` is called after each
    institution's transaction ends; tests use it to inject a crash at a random point.
    """
    report = SettlementReport()
    for institution_id in _institution_ids(sessions, institutions):
        try:
            with sessions.begin() as session:
                ctx.lock(session)
                institution = session.get(Institution, institution_id)
                assert institution is not None
                _settle_institution(session, ctx, institution, through, report)
        except Exception as error:
            log.exception("settlement of %s failed", institution_id)
            report.failed[institution_id] = f"{type(error).__name__}: {error}"
        if between_institutions is not None:
            between_institutions(institution_id)
    return report


def preview(
    sessions: sessionmaker[Session], ctx: Context, *, through: date | None = None
) -> SettlementReport:
    """What ``settle`` would create now, from reads alone: no lock taken, nothing written."""
    report = SettlementReport()
    with sessions() as session:
        for institution in list(session.scalars(select(Institution).order_by(Institution.id))):
            if institution.status in HELD:
                report.held.append(institution.id)
                continue
            target = _target(ctx, institution, through, report)
            report.created += plan(session, ctx, institution, target)
    return report
