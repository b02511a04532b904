"""T+1 settlement: releasable money moves to payable, one batch per institution and business date.

For business date D, an institution's batch takes everything that became releasable up to the end
of D (Asia/Shanghai), less what its earlier batches took, and never more than releasable holds
now. Cost advances owed back (``advance_due``) are netted first; the rest becomes payable, and one
payout instruction goes to the custody bank.

When: D may be settled once the profile's lag has passed (``windows.settlement_lag``: T+1 calendar
day by default, working days where a profile says so), so each institution has its own latest due
date. A run settles, for every institution, each date after its last batch up to that due date, in
order; a day with nothing to release still gets an (empty) batch, so progress is recorded and a
rerun finds the date done.

Exactly once: one transaction per institution (all its due dates together). A crash between
institutions leaves those done complete and the others untouched; the next run completes them. A
rerun creates nothing: the (institution, date) batch exists, and every settled lesson carries its
batch. Frozen institutions are skipped and their money waits in escrow.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, select, update
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
from ledger.journal import Posting, balance
from ledger.models import Account, LogEntry
from ledger.models import Posting as PostingRow
from ledger.money import Money
from ledger.policy import Window

BATCH_EVENT = "settlement.batched"
_MAX_LAG_SEARCH = 400  # days; a lag longer than a year is refused by the profile loader


@dataclass
class SettlementReport:
    """What a run did, institution by institution."""

    created: list[SettlementBatch] = field(default_factory=list)
    existing: list[SettlementBatch] = field(default_factory=list)
    payouts: list[Payout] = field(default_factory=list)
    skipped_frozen: list[str] = field(default_factory=list)
    not_due: list[str] = field(default_factory=list)

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
        return today - timedelta(days=lag.days)
    day = today - timedelta(days=1)
    for _ in range(_MAX_LAG_SEARCH):
        if ctx.calendar.add(day, lag) <= today:
            return day
        day -= timedelta(days=1)
    raise ValueError(f"no business date is due with a settlement lag of {lag}")


def _registered_on(session: Session, ctx: Context, institution: Institution) -> date:
    when = session.scalar(select(LogEntry.time).where(LogEntry.seq == institution.registered_seq))
    assert when is not None
    return ctx.local_date(when)


def last_settled(session: Session, ctx: Context, institution: Institution) -> date:
    """The last business date settled for the institution (the day before it registered if none)."""
    last = session.scalar(
        select(func.max(SettlementBatch.business_date)).where(
            SettlementBatch.institution_id == institution.id
        )
    )
    return (
        last if last is not None else _registered_on(session, ctx, institution) - timedelta(days=1)
    )


def _dates(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def _seq_before(session: Session, instant: datetime) -> int:
    """The last seq appended before ``instant`` (one probe of the (time, seq) index)."""
    found = session.scalar(
        select(LogEntry.seq)
        .where(LogEntry.time < instant)
        .order_by(LogEntry.time.desc(), LogEntry.seq.desc())
        .limit(1)
    )
    return -1 if found is None else int(found)


def _released_between(session: Session, account_code: str, after: int, upto: int) -> int:
    """Money that became releasable in seqs (after, upto], net of everything but settlements."""
    total = session.scalar(
        select(func.coalesce(func.sum(PostingRow.amount), 0))
        .join(Account, Account.id == PostingRow.account_id)
        .join(LogEntry, LogEntry.seq == PostingRow.seq)
        .where(
            Account.code == account_code,
            PostingRow.seq > after,
            PostingRow.seq <= upto,
            LogEntry.type != BATCH_EVENT,
        )
    )
    return -int(total or 0)  # a liability grows on the credit side


def _settle_one(
    session: Session, ctx: Context, institution: Institution, day: date
) -> tuple[SettlementBatch, Payout | None]:
    releasable = institution_account(AccountKind.RELEASABLE, institution.id)
    bound = _seq_before(session, end_of(ctx, day))
    previous = session.scalars(
        select(SettlementBatch)
        .where(SettlementBatch.institution_id == institution.id)
        .order_by(SettlementBatch.business_date.desc())
        .limit(1)
    ).first()
    before = -1 if previous is None else previous.through_seq
    released = (0 if previous is None else previous.released_fen) + _released_between(
        session, releasable, before, bound
    )
    settled = int(
        session.scalar(
            select(func.coalesce(func.sum(SettlementBatch.gross_fen), 0)).where(
                SettlementBatch.institution_id == institution.id
            )
        )
        or 0
    )
    gross = max(0, min(released - settled, balance(session, releasable).amount))
    due = balance(session, institution_account(AccountKind.ADVANCE_DUE, institution.id)).amount
    netted = min(due, gross)
    payable = gross - netted
    lesson_ids = list(
        session.scalars(
            select(Lesson.id)
            .where(
                Lesson.institution_id == institution.id,
                Lesson.status == LessonStatus.CONFIRMED,
                Lesson.batch_id.is_(None),
                Lesson.decided_seq <= bound,
            )
            .order_by(Lesson.decided_seq)
        )
    )
    batch = SettlementBatch(
        id=new_id("stl"),
        institution_id=institution.id,
        business_date=day,
        gross_fen=gross,
        netted_fen=netted,
        lessons=len(lesson_ids),
        through_seq=max(bound, before),
        released_fen=released,
        seq=-1,
    )
    payout = _payout(ctx, institution, batch, day, payable) if payable else None
    postings = [
        Posting.debit(releasable, Money(gross)),
        Posting.credit(institution_account(AccountKind.ADVANCE_DUE, institution.id), Money(netted)),
        Posting.credit(institution_account(AccountKind.PAYABLE, institution.id), Money(payable)),
    ]
    batch.seq = ctx.record(
        session,
        BATCH_EVENT,
        "system",
        {
            "batch": batch.id,
            "institution": institution.id,
            "business_date": day.isoformat(),
            "gross": gross,
            "netted_advance": netted,
            "payable": payable,
            "lessons": lesson_ids,
            "payout": None if payout is None else payout.id,
            "settlement_account": institution.settlement_account,
        },
        [p for p in postings if p.amount.amount],
    ).seq
    session.add(batch)
    session.flush()
    if lesson_ids:
        session.execute(
            update(Lesson).where(Lesson.id.in_(lesson_ids)).values(batch_id=batch.id),
            execution_options={"synchronize_session": False},
        )
    if payout is not None:
        payout.instructed_seq = batch.seq
        session.add(payout)
    session.flush()
    return batch, payout


def _payout(
    ctx: Context, institution: Institution, batch: SettlementBatch, day: date, amount: int
) -> Payout:
    return Payout(
        id=new_id("e2e"),
        batch_id=batch.id,
        institution_id=institution.id,
        bank_id=institution.bank_id,
        business_date=day,
        settlement_account=institution.settlement_account,
        escrow_account=institution.escrow_account,
        amount_fen=amount,
        status=PayoutStatus.INSTRUCTED,
        retried=False,
        instructed_seq=-1,
    )


def _retry_failed(
    session: Session, ctx: Context, institution: Institution, day: date
) -> list[Payout]:
    """Instruct again every failed payout of the institution; the money never left payable."""
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
        retry = _payout(ctx, institution, batch, day, old.amount_fen)
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
                "business_date": day.isoformat(),
            },
        ).seq
        old.retried = True
        session.add(retry)
        retries.append(retry)
    session.flush()
    return retries


def settle(
    sessions: sessionmaker[Session],
    ctx: Context,
    *,
    through: date | None = None,
    institutions: Collection[str] | None = None,
    between_institutions: Callable[[str], None] | None = None,
) -> SettlementReport:
    """Settle every institution (or those named) up to ``through`` or its latest due date.

    Dates are settled oldest first. ``between_institutions`` is called after each institution's
    transaction commits; tests use it to inject a crash at a random point.
    """
    report = SettlementReport()
    with sessions() as session:
        query = select(Institution.id).order_by(Institution.id)
        if institutions is not None:
            query = query.where(Institution.id.in_(list(institutions)))
        institution_ids = list(session.scalars(query))
    for institution_id in institution_ids:
        with sessions.begin() as session:
            ctx.lock(session)
            institution = session.get(Institution, institution_id)
            assert institution is not None
            _settle_institution(session, ctx, institution, through, report)
        if between_institutions is not None:
            between_institutions(institution_id)
    return report


def _settle_institution(
    session: Session,
    ctx: Context,
    institution: Institution,
    through: date | None,
    report: SettlementReport,
) -> None:
    due = latest_due(ctx, ctx.policy(institution.policy).settlement_lag, ctx.today())
    target = due if through is None else min(through, due)
    if through is not None and through > due:
        report.not_due.append(institution.id)
    if through is not None:
        done = session.scalars(
            select(SettlementBatch).where(
                SettlementBatch.institution_id == institution.id,
                SettlementBatch.business_date == through,
            )
        ).one_or_none()
        if done is not None:
            report.existing.append(done)
            return
    if institution.status is InstitutionStatus.FROZEN:
        report.skipped_frozen.append(institution.id)
        return
    for day in _dates(last_settled(session, ctx, institution) + timedelta(days=1), target):
        batch, payout = _settle_one(session, ctx, institution, day)
        report.created.append(batch)
        if payout is not None:
            report.payouts.append(payout)
    report.payouts += _retry_failed(session, ctx, institution, target)


def preview(session: Session, ctx: Context, *, through: date | None = None) -> SettlementReport:
    """What ``settle`` would do now, computed inside ``session`` and never committed (dry run)."""
    report = SettlementReport()
    ctx.lock(session)
    for institution in list(session.scalars(select(Institution).order_by(Institution.id))):
        _settle_institution(session, ctx, institution, through, report)
    return report
