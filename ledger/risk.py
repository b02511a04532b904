"""Daily risk grades of institutions (A green, B yellow, C orange, D red), their history and alerts.

Every business date, each institution's signals (``ledger.risk_signals``) are checked against the
rules of its policy profile (``[risk]``): each rule that fires adds its points, an academic licence
multiplies the total (DOMAIN.md: Zhenhai grades by institution type, students' remaining balance,
refund amount and operating status), and the score falls into a grade. The grade, the score, every
signal and the list of rules that fired (rule, value, threshold, points) are stored per institution
and date, and written to the log as ``risk.graded``, so a regulator sees why and the history is on
the chain. Grading a date again changes nothing: the stored grade is the grade of that date.

A grade that worsens into C or D raises an alert in the same transaction (an improvement does not:
a regulator is told when to act, not when things get better). A regulator acknowledges an alert
(``risk.alert_acknowledged``); the alert keeps who and when.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    ForeignKey,
    Integer,
    Select,
    String,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.orm import Mapped, Session, aliased, mapped_column, sessionmaker

from ledger import risk_signals
from ledger.entities import Institution, InstitutionStatus, LicenceType, Regulator, string_enum
from ledger.errors import InvalidRequest, InvalidState, NotFound
from ledger.escrow import inputs, scope
from ledger.escrow.context import Context
from ledger.escrow.parties import ALL_DISTRICTS, new_id
from ledger.models import Base, UTCDateTime
from ledger.policy import RiskPolicy
from ledger.risk_signals import Signals

log = logging.getLogger("ledger.risk")

GRADED_EVENT = "risk.graded"
ACKNOWLEDGED_EVENT = "risk.alert_acknowledged"
ACADEMIC_RULE = "academic_licence"


class Grade(StrEnum):
    """Risk grades, best first; each gets its own inspection intensity (docs/risk.md)."""

    A = "A"
    """Green: routine supervision."""
    B = "B"
    """Yellow: watch; look at the reasons at the next review."""
    C = "C"
    """Orange: inspect; an alert is raised when an institution gets here."""
    D = "D"
    """Red: act now (inspection on site, freeze, forced refunds); an alert is raised."""

    @property
    def rank(self) -> int:
        return "ABCD".index(self.value)


ALERT_GRADES = (Grade.C, Grade.D)


def _grade_column(name: str, *, nullable: bool = False) -> Mapped[Any]:
    return mapped_column(string_enum(Grade, name, length=1), nullable=nullable)


class RiskGrade(Base):
    """One institution's grade for one business date, with the signals and rules behind it."""

    __tablename__ = "risk_grades"
    __table_args__ = (UniqueConstraint("institution_id", "business_date"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"))
    business_date: Mapped[date] = mapped_column(Date, index=True)
    grade: Mapped[Grade] = _grade_column("risk_grade")
    score: Mapped[int] = mapped_column(Integer)
    policy: Mapped[str] = mapped_column(String(64))
    """The profile whose [risk] table graded it."""
    signals: Mapped[dict[str, Any]] = mapped_column(JSON)
    """``Signals.as_json()``: every input, as of the end of the business date."""
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    """The rules that fired: ``{rule, value, threshold, comparison, unit, points}`` each."""
    seq: Mapped[int] = mapped_column(BigInteger)
    """The ``risk.graded`` entry."""


class RiskAlert(Base):
    """A grade that worsened into C or D; open until a regulator acknowledges it."""

    __tablename__ = "risk_alerts"
    __table_args__ = (UniqueConstraint("institution_id", "business_date"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"))
    business_date: Mapped[date] = mapped_column(Date)
    from_grade: Mapped[Grade | None] = _grade_column("risk_alert_from", nullable=True)
    """The previous graded date's grade; None for an institution's first grade."""
    to_grade: Mapped[Grade] = _grade_column("risk_alert_to")
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    raised_seq: Mapped[int] = mapped_column(BigInteger, index=True)
    """The ``risk.graded`` entry that raised it."""
    acknowledged_by: Mapped[str | None] = mapped_column(String(128))
    """The acknowledging regulator's actor (``regulator:<id>``)."""
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_seq: Mapped[int | None] = mapped_column(BigInteger)
    note: Mapped[str | None] = mapped_column(String(500))


# --- the rules ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """How one rule of the profile reads its signal."""

    signal: str
    """The ``Signals`` field it tests."""
    comparison: str
    """``>=``: fires at or above the threshold; ``<=`` at or below; ``<`` below."""
    unit: str


RULES: dict[str, RuleSpec] = {
    "liability_large": RuleSpec("liability_fen", ">=", "fen"),
    "coverage_short": RuleSpec("coverage_percent", "<", "percent"),
    "refund_share": RuleSpec("refund_share_percent", ">=", "percent"),
    "refund_surge": RuleSpec("refund_share_percent", ">=", "percent"),
    "refunds_overdue": RuleSpec("overdue_refunds", ">=", "refunds"),
    "disputes_open": RuleSpec("open_disputes", ">=", "lessons"),
    "lessons_drop": RuleSpec("lessons_week_percent", "<=", "percent"),
    "lessons_stopped": RuleSpec("lessons_week_percent", "<=", "percent"),
    "outflow_daily": RuleSpec("outflow_fen", ">=", "fen"),
    "outflow_share": RuleSpec("outflow_percent", ">=", "percent"),
    "payouts_failed": RuleSpec("failed_payouts", ">=", "payouts"),
    "breaks_open": RuleSpec("open_breaks", ">=", "breaks"),
}


def _fires(value: int, comparison: str, threshold: int) -> bool:
    if comparison == ">=":
        return value >= threshold
    if comparison == "<=":
        return value <= threshold
    return value < threshold


@dataclass(frozen=True, slots=True)
class Assessment:
    """What the rules make of one institution's signals."""

    grade: Grade
    score: int
    reasons: list[dict[str, Any]]

    @property
    def rules(self) -> list[str]:
        return [r["rule"] for r in self.reasons]


def assess(signals: Signals, policy: RiskPolicy) -> Assessment:
    """Apply the profile's rules to the signals: which fired, the score, the grade."""
    reasons: list[dict[str, Any]] = []
    for name, rule in policy.rules:
        spec = RULES[name]
        value = getattr(signals, spec.signal)
        if rule.points == 0 or value is None or not _fires(value, spec.comparison, rule.threshold):
            continue
        reasons.append(
            {
                "rule": name,
                "value": value,
                "threshold": rule.threshold,
                "comparison": spec.comparison,
                "unit": spec.unit,
                "points": rule.points,
            }
        )
    for status, points in (
        (InstitutionStatus.FROZEN, policy.frozen_points),
        (InstitutionStatus.WINDING_DOWN, policy.winding_down_points),
    ):
        if signals.status == status.value and points:
            reasons.append(
                {
                    "rule": f"status_{status.value}",
                    "value": status.value,
                    "threshold": None,
                    "comparison": "==",
                    "unit": "status",
                    "points": points,
                }
            )
    raw = sum(int(r["points"]) for r in reasons)
    score = raw
    if (
        signals.licence == LicenceType.ACADEMIC.value
        and raw
        and policy.academic_weight_percent > 100
    ):
        score = raw * policy.academic_weight_percent // 100
        reasons.append(
            {
                "rule": ACADEMIC_RULE,
                "value": signals.licence,
                "threshold": policy.academic_weight_percent,
                "comparison": "x%",
                "unit": "percent",
                "points": score - raw,
            }
        )
    if score >= policy.grade_d_points:
        grade = Grade.D
    elif score >= policy.grade_c_points:
        grade = Grade.C
    elif score >= policy.grade_b_points:
        grade = Grade.B
    else:
        grade = Grade.A
    return Assessment(grade, score, reasons)


# --- grading -----------------------------------------------------------------------------------


def last_complete_day(ctx: Context) -> date:
    """The latest business date that has ended: yesterday, in the business zone."""
    return ctx.today() - timedelta(days=1)


def _ended(ctx: Context, day: date) -> bool:
    start_of_next = datetime.combine(day + timedelta(days=1), time(0), ctx.zone)
    return ctx.now() >= start_of_next


def stored_grade(session: Session, institution_id: str, day: date) -> RiskGrade | None:
    return session.scalars(
        select(RiskGrade).where(
            RiskGrade.institution_id == institution_id, RiskGrade.business_date == day
        )
    ).one_or_none()


def _previous(session: Session, institution_id: str, day: date) -> RiskGrade | None:
    return session.scalars(
        select(RiskGrade)
        .where(RiskGrade.institution_id == institution_id, RiskGrade.business_date < day)
        .order_by(RiskGrade.business_date.desc())
        .limit(1)
    ).first()


def grade_institution(
    session: Session, ctx: Context, institution: Institution, day: date, *, actor: str = "system"
) -> tuple[RiskGrade | None, bool]:
    """Grade one institution for business date ``day`` (which must have ended).

    Returns the grade and whether this call wrote it; an already graded date is returned as it was
    stored. None for an institution registered after the date.
    """
    ctx.lock(session)
    if not _ended(ctx, day):
        raise InvalidRequest(f"business date {day.isoformat()} has not ended yet", field="date")
    existing = stored_grade(session, institution.id, day)
    if existing is not None:
        return existing, False
    policy = ctx.policy(institution.policy).risk
    signals = risk_signals.compute(session, ctx, institution, day, policy)
    if institution.registered_seq > signals.through_seq:
        return None, False
    outcome = assess(signals, policy)
    previous = _previous(session, institution.id, day)
    was = None if previous is None else previous.grade
    alert = None
    if outcome.grade in ALERT_GRADES and (was is None or outcome.grade.rank > was.rank):
        alert = RiskAlert(
            id=new_id("alr"),
            institution_id=institution.id,
            business_date=day,
            from_grade=was,
            to_grade=outcome.grade,
            reasons=outcome.reasons,
            raised_seq=-1,
        )
    seq = ctx.record(
        session,
        GRADED_EVENT,
        actor,
        {
            "institution": institution.id,
            "business_date": day.isoformat(),
            "grade": outcome.grade.value,
            "previous": None if was is None else was.value,
            "score": outcome.score,
            "rules": outcome.rules,
            "policy": institution.policy,
            "through_seq": signals.through_seq,
            "alert": None if alert is None else alert.id,
        },
    ).seq
    graded = RiskGrade(
        id=new_id("rsk"),
        institution_id=institution.id,
        business_date=day,
        grade=outcome.grade,
        score=outcome.score,
        policy=institution.policy,
        signals=signals.as_json(),
        reasons=outcome.reasons,
        seq=seq,
    )
    session.add(graded)
    if alert is not None:
        alert.raised_seq = seq
        session.add(alert)
    session.flush()
    return graded, True


@dataclass
class RiskReport:
    """What one grading run did, institution by institution."""

    business_date: date
    graded: list[RiskGrade] = field(default_factory=list)
    existing: list[RiskGrade] = field(default_factory=list)
    alerts: list[RiskAlert] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def grades(self) -> list[RiskGrade]:
        return sorted(self.graded + self.existing, key=lambda g: g.institution_id)


def grade_all(sessions: sessionmaker[Session], ctx: Context, day: date | None = None) -> RiskReport:
    """Grade every institution for ``day`` (default: the last business date that has ended).

    One transaction per institution, as settlement does: one failing (its profile unreadable, say)
    is logged and reported without stopping the others, and a rerun completes what is missing.
    """
    target = last_complete_day(ctx) if day is None else day
    report = RiskReport(target)
    with sessions() as session:
        ids = list(session.scalars(select(Institution.id).order_by(Institution.id)))
    for institution_id in ids:
        try:
            with sessions.begin() as session:
                institution = session.get(Institution, institution_id)
                assert institution is not None
                graded, new = grade_institution(session, ctx, institution, target)
                if graded is None:
                    continue
                (report.graded if new else report.existing).append(graded)
                if new:
                    report.alerts += session.scalars(
                        select(RiskAlert).where(RiskAlert.raised_seq == graded.seq)
                    )
                session.flush()
                session.expunge_all()
        except Exception as error:
            log.exception("risk grading of %s for %s failed", institution_id, target)
            report.failed[institution_id] = f"{type(error).__name__}: {error}"
    return report


# --- alerts ------------------------------------------------------------------------------------


def alert_for_regulator(session: Session, regulator_id: str, alert_id: str) -> RiskAlert:
    """An alert about an institution of the regulator's jurisdiction; any other is NotFound."""
    found = session.get(RiskAlert, alert_id)
    if found is None:
        raise NotFound(f"no alert {alert_id}")
    try:
        scope.institution_for_regulator(session, regulator_id, found.institution_id)
    except NotFound:
        raise NotFound(f"no alert {alert_id}") from None
    return found


def acknowledge(
    session: Session, ctx: Context, *, regulator_id: str, alert_id: str, note: str
) -> RiskAlert:
    """A regulator takes note of an alert (and says what it does about it); logged, once."""
    ctx.lock(session)
    alert = alert_for_regulator(session, regulator_id, alert_id)
    if alert.acknowledged_seq is not None:
        raise InvalidState(f"alert {alert.id} was acknowledged by {alert.acknowledged_by}")
    actor = f"regulator:{regulator_id}"
    text = inputs.required_text(note, "an acknowledgement's note", limit=500)
    appended = ctx.record(
        session,
        ACKNOWLEDGED_EVENT,
        actor,
        {
            "alert": alert.id,
            "institution": alert.institution_id,
            "business_date": alert.business_date.isoformat(),
            "grade": alert.to_grade.value,
            "note": text,
        },
    )
    alert.acknowledged_by = actor
    alert.acknowledged_at = appended.time
    alert.acknowledged_seq = appended.seq
    alert.note = text
    session.flush()
    return alert


# --- reads -------------------------------------------------------------------------------------


def _jurisdiction(query: Select[Any], regulator: Regulator, column: Any) -> Select[Any]:
    query = query.join(Institution, Institution.id == column)
    if regulator.jurisdiction != ALL_DISTRICTS:
        query = query.where(Institution.district == regulator.jurisdiction)
    return query


def current_grades_query(regulator: Regulator, grade: Grade | None = None) -> Select[Any]:
    """Each institution's latest grade, in the regulator's jurisdiction (optionally one grade)."""
    later = aliased(RiskGrade)
    latest = (
        select(func.max(later.business_date))
        .where(later.institution_id == RiskGrade.institution_id)
        .scalar_subquery()
    )
    query = _jurisdiction(select(RiskGrade), regulator, RiskGrade.institution_id).where(
        RiskGrade.business_date == latest
    )
    if grade is not None:
        query = query.where(RiskGrade.grade == grade)
    return query


def history_query(institution: Institution, since: date | None = None) -> Select[Any]:
    query = select(RiskGrade).where(RiskGrade.institution_id == institution.id)
    if since is not None:
        query = query.where(RiskGrade.business_date >= since)
    return query


def alerts_query(regulator: Regulator, acknowledged: bool | None = None) -> Select[Any]:
    query = _jurisdiction(select(RiskAlert), regulator, RiskAlert.institution_id)
    if acknowledged is True:
        query = query.where(RiskAlert.acknowledged_seq.is_not(None))
    elif acknowledged is False:
        query = query.where(RiskAlert.acknowledged_seq.is_(None))
    return query


def history(session: Session, institution_id: str) -> list[RiskGrade]:
    """An institution's grades, oldest date first."""
    return list(
        session.scalars(
            select(RiskGrade)
            .where(RiskGrade.institution_id == institution_id)
            .order_by(RiskGrade.business_date)
        )
    )
