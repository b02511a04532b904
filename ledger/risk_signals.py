"""The signals a risk grade is computed from: one institution, as of the end of one business date.

Everything comes from the ledger (postings, lessons, refunds, payouts, the log) read as of the last
entry before business date D ended (midnight Asia/Shanghai, ``settlement.engine.end_of``), so a
date graded late reads what was known that night, not what happened since. Two inputs are
approximations, both bounded by what happened after D: a dispute raised after D on a lesson reported
before it counts as open (the lesson table keeps no dispute time), and an institution's licence is
its current one (licences do not change in this ledger). The day's cut-off is the one settlement
uses (``settlement.engine.end_of``).

Open reconciliation breaks come from ``open_breaks``, which reads the tables of bank
reconciliation (``settlement/``) when they exist and counts 0 otherwise.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import and_, func, inspect, literal, or_, select, text
from sqlalchemy.orm import Session

from ledger.accounts import AccountKind
from ledger.entities import (
    Contract,
    Institution,
    InstitutionStatus,
    Lesson,
    LessonStatus,
    LicenceType,
    Payout,
    PayoutStatus,
    Refund,
    RefundStatus,
)
from ledger.escrow.context import Context
from ledger.escrow.contracts import institution_account
from ledger.escrow.queries import balance_as_of, seq_at
from ledger.models import Account, LogEntry, Posting
from ledger.money import JSON_SAFE_MAX
from ledger.policy import RiskPolicy

STATUS_EVENTS = ("institution.frozen", "institution.unfrozen", "institution.winding_down")
OUTFLOW_EVENTS = ("refund.paid", "payout.executed")
"""Money leaving escrow as a whole (invariant 5); moves between two escrow accounts are not."""
WEEK = 7
BASELINE_DAYS = 28
"""The four weeks before the week graded."""


@dataclass(frozen=True, slots=True)
class Signals:
    """One institution's risk signals at the end of ``business_date``; money in fen."""

    business_date: date
    through_seq: int
    """The last log entry before the business date ended: what the signals read."""
    licence: str
    status: str
    liability_fen: int
    """学生余量: value of the undelivered lessons (Σ contract accounts)."""
    escrow_fen: int
    advance_fen: int
    owed_out_fen: int
    """Escrow money already owed elsewhere: settled payouts and approved refunds not yet paid."""
    coverage_percent: int | None
    """(escrow − owed_out) / (liability − advance), floored; None when nothing is owed."""
    refunds_count: int
    refunds_fen: int
    """Refunds requested or paid in the look-back, not rejected by D."""
    refund_share_percent: int
    overdue_refunds: int
    overdue_refunds_fen: int
    open_disputes: int
    lessons_week: int
    lessons_baseline: int
    """Lessons delivered in the four weeks before the week (or since registration)."""
    baseline_days: int
    lessons_week_percent: int | None
    """This week's lessons as a share of the usual week; None without enough history."""
    outflow_fen: int
    outflow_percent: int
    failed_payouts: int
    open_breaks: int

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data["business_date"] = self.business_date.isoformat()
        return data


def open_breaks(session: Session, institution_id: str, seq: int | None = None) -> int:
    """Open reconciliation breaks of the institution (after entry ``seq``, or now).

    A break is what reconciliation (``settlement/reconcile.py``) found between the custody bank's
    statement and the ledger; it is open until a resolution row closes it. Read through SQL on the
    two tables rather than their models, so grading works the same on a database (or a checkout)
    without reconciliation: there, nothing can be open and the count is 0.
    """
    # The session's own connection: another one could wait behind this transaction's write lock.
    inspector = inspect(session.connection())
    if not (
        inspector.has_table("reconciliation_breaks")
        and inspector.has_table("reconciliation_break_resolutions")
    ):
        return 0
    bound = JSON_SAFE_MAX if seq is None else seq
    found = session.execute(
        text(
            "SELECT count(*) FROM reconciliation_breaks b "
            "WHERE b.institution_id = :institution AND b.seq <= :seq AND NOT EXISTS ("
            "SELECT 1 FROM reconciliation_break_resolutions r "
            "WHERE r.break_id = b.id AND r.seq <= :seq)"
        ),
        {"institution": institution_id, "seq": bound},
    ).scalar()
    return int(found or 0)


def _percent(part: int, whole: int) -> int:
    """floor(100 · part / whole) with integers; ``whole`` > 0. Floor keeps threshold tests exact:
    for an integer threshold t, floor(x) >= t exactly when x >= t."""
    return part * 100 // whole


def _day_start(ctx: Context, day: date) -> datetime:
    """Local midnight opening ``day``, in UTC: ``settlement.engine.end_of`` of the day before (the
    same cut-off settlement uses; computed here because ``ledger`` does not import ``settlement``)."""
    return datetime.combine(day, time(0), ctx.zone).astimezone(UTC)


def _seq_before(session: Session, ctx: Context, day: date) -> int:
    """The last entry before business date ``day`` began."""
    return seq_at(session, _day_start(ctx, day), inclusive=False)


def _liability(session: Session, institution_id: str, seq: int) -> int:
    """Σ contract accounts of the institution's contracts after entry ``seq`` (credit-normal)."""
    total = session.scalar(
        select(func.coalesce(func.sum(Posting.amount), 0))
        .select_from(Contract)
        .join(Account, Account.code == literal(f"{AccountKind.CONTRACT.value}:") + Contract.id)
        .join(Posting, Posting.account_id == Account.id)
        .where(Contract.institution_id == institution_id, Posting.seq <= seq)
    )
    return -int(total or 0)


def _balance(session: Session, kind: AccountKind, institution_id: str, seq: int) -> int:
    return balance_as_of(session, institution_account(kind, institution_id), seq=seq).amount


def _status_at(session: Session, institution: Institution, seq: int) -> InstitutionStatus:
    """The status after entry ``seq``: the ``from`` of the first status change after it, if any."""
    later = session.scalars(
        select(LogEntry.body)
        .where(LogEntry.seq > seq, LogEntry.type.in_(STATUS_EVENTS))
        .order_by(LogEntry.seq)
    )
    for body in later:
        payload = json.loads(body)["payload"]
        if payload.get("institution") == institution.id:
            return InstitutionStatus(payload["from"])
    return institution.status


def _refund_value(refund: Refund, unit_price: int, seq: int) -> int:
    """Its amount once approved by ``seq``; before that, the requested lessons at contract price."""
    if (
        refund.amount_fen is not None
        and refund.decided_seq is not None
        and refund.decided_seq <= seq
    ):
        return refund.amount_fen
    return refund.lessons * unit_price


def _refunds(session: Session, institution_id: str, after: int, seq: int) -> tuple[int, int, int]:
    """Count and value of refunds requested or paid in (after, seq], not rejected by ``seq``, and
    the part of that value already out of the liability (approved by ``seq``)."""
    rows = session.execute(
        select(Refund, Contract.unit_price_fen)
        .join(Contract, Contract.id == Refund.contract_id)
        .where(
            Refund.institution_id == institution_id,
            Refund.requested_seq <= seq,
            or_(
                Refund.requested_seq > after,
                and_(Refund.paid_seq > after, Refund.paid_seq <= seq),
            ),
        )
    ).all()
    count = value = approved = 0
    for refund, unit_price in rows:
        decided = refund.decided_seq is not None and refund.decided_seq <= seq
        if decided and refund.status is RefundStatus.REJECTED:
            continue
        amount = _refund_value(refund, unit_price, seq)
        count += 1
        value += amount
        if decided:
            approved += amount
    return count, value, approved


def _overdue(session: Session, institution_id: str, seq: int, end: datetime) -> tuple[int, int]:
    """Approved refunds whose payout deadline had come by ``end`` (as the overdue sweep counts:
    ``pay_by <= now``) and still unpaid after ``seq``."""
    row = session.execute(
        select(func.count(), func.coalesce(func.sum(Refund.amount_fen), 0)).where(
            Refund.institution_id == institution_id,
            Refund.pay_by.is_not(None),
            Refund.pay_by <= end,
            Refund.decided_seq <= seq,
            Refund.status.in_([RefundStatus.APPROVED, RefundStatus.PAID]),
            or_(Refund.paid_seq.is_(None), Refund.paid_seq > seq),
        )
    ).one()
    return int(row[0]), int(row[1] or 0)


def _open_disputes(session: Session, institution_id: str, seq: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Lesson)
            .where(
                Lesson.institution_id == institution_id,
                Lesson.dispute_reason.is_not(None),
                Lesson.reported_seq <= seq,
                or_(Lesson.decided_seq.is_(None), Lesson.decided_seq > seq),
            )
        )
        or 0
    )


def _lessons(
    session: Session, institution_id: str, seq: int, start: datetime, end: datetime
) -> int:
    """Lessons delivered in [start, end), reported by ``seq`` and not voided by then."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Lesson)
            .where(
                Lesson.institution_id == institution_id,
                Lesson.delivered_at >= start,
                Lesson.delivered_at < end,
                Lesson.reported_seq <= seq,
                or_(
                    Lesson.status != LessonStatus.VOIDED,
                    Lesson.decided_seq > seq,
                ),
            )
        )
        or 0
    )


def _outflow(session: Session, institution_id: str, after: int, seq: int) -> int:
    """Money that left the institution's escrow account to the outside in (after, seq]."""
    total = session.scalar(
        select(func.coalesce(func.sum(Posting.amount), 0))
        .join(Account, Account.id == Posting.account_id)
        .join(LogEntry, LogEntry.seq == Posting.seq)
        .where(
            Account.code == institution_account(AccountKind.ESCROW, institution_id),
            Posting.seq > after,
            Posting.seq <= seq,
            Posting.amount < 0,
            LogEntry.type.in_(OUTFLOW_EVENTS),
        )
    )
    return -int(total or 0)


def _failed_payouts(session: Session, institution_id: str, after: int, seq: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Payout)
            .where(
                Payout.institution_id == institution_id,
                Payout.status == PayoutStatus.FAILED,
                Payout.answered_seq > after,
                Payout.answered_seq <= seq,
            )
        )
        or 0
    )


def registered_on(session: Session, ctx: Context, institution: Institution) -> date:
    """The business date on which the institution was registered."""
    when = session.scalar(select(LogEntry.time).where(LogEntry.seq == institution.registered_seq))
    assert when is not None
    return ctx.local_date(when)


def compute(
    session: Session, ctx: Context, institution: Institution, day: date, policy: RiskPolicy
) -> Signals:
    """Every signal of one institution as of the end of business date ``day``."""
    seq = _seq_before(session, ctx, day + timedelta(days=1))
    end = _day_start(ctx, day + timedelta(days=1))
    iid = institution.id

    liability = _liability(session, iid, seq)
    escrow = _balance(session, AccountKind.ESCROW, iid, seq)
    advance = _balance(session, AccountKind.ADVANCE, iid, seq)
    owed_out = _balance(session, AccountKind.PAYABLE, iid, seq) + _balance(
        session, AccountKind.REFUND_PAYABLE, iid, seq
    )
    needed = liability - advance
    coverage = _percent(escrow - owed_out, needed) if needed > 0 else None

    lookback_after = _seq_before(session, ctx, day - timedelta(days=policy.lookback_days - 1))
    count, value, approved = _refunds(session, iid, lookback_after, seq)
    exposure = liability + approved
    share = _percent(value, exposure) if exposure > 0 else (100 if value else 0)
    overdue, overdue_fen = _overdue(session, iid, seq, end)

    week_start = _day_start(ctx, day - timedelta(days=WEEK - 1))
    first_day = max(
        day - timedelta(days=WEEK - 1 + BASELINE_DAYS), registered_on(session, ctx, institution)
    )
    baseline_days = max(0, (day - timedelta(days=WEEK - 1) - first_day).days)
    week = _lessons(session, iid, seq, week_start, end)
    baseline = (
        _lessons(session, iid, seq, _day_start(ctx, first_day), week_start) if baseline_days else 0
    )
    ratio = None
    if baseline_days >= WEEK and baseline >= policy.baseline_min_lessons:
        # this week against the usual week: baseline · 7 / baseline_days lessons
        ratio = week * 100 * baseline_days // (baseline * WEEK)

    day_after = _seq_before(session, ctx, day)
    outflow = _outflow(session, iid, day_after, seq)
    liability_before = _liability(session, iid, day_after)
    outflow_share = (
        _percent(outflow, liability_before) if liability_before > 0 else (100 if outflow else 0)
    )

    return Signals(
        business_date=day,
        through_seq=seq,
        licence=LicenceType(institution.licence).value,
        status=_status_at(session, institution, seq).value,
        liability_fen=liability,
        escrow_fen=escrow,
        advance_fen=advance,
        owed_out_fen=owed_out,
        coverage_percent=coverage,
        refunds_count=count,
        refunds_fen=value,
        refund_share_percent=share,
        overdue_refunds=overdue,
        overdue_refunds_fen=overdue_fen,
        open_disputes=_open_disputes(session, iid, seq),
        lessons_week=week,
        lessons_baseline=baseline,
        baseline_days=baseline_days,
        lessons_week_percent=ratio,
        outflow_fen=outflow,
        outflow_percent=outflow_share,
        failed_payouts=_failed_payouts(session, iid, lookback_after, seq),
        open_breaks=open_breaks(session, iid, seq),
    )
