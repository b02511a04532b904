"""``escrow demo``: a realistic month of supervised prepaid tuition, built through the services.

Three institutions (two under the national profile, one academic under Ningbo's), two custody
banks, a municipal and a district regulator, and 30 families. Over the 31 days that end now, lessons
are reported every evening, parents confirm some and let silence confirm others, one lesson is
disputed and withdrawn and another resolved by the regulator, refunds are asked before and after
courses start (one rejected, one approved by silence), a lender's payment is returned, and a
contract beyond the limits is refused. One institution stops teaching, draws refund requests, is
frozen and then wound down; its risk grade goes from A to D before the freeze. Settlement and
risk grading run every night at 02:00 and the banks pay the instructions at 10:00 (one payout bounces and is retried the next night). Everything goes through
the same services the API uses, with the clock moved forward, and the run ends with a full
verification.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from ledger.accounts import AccountKind
from ledger.clock import ManualClock
from ledger.entities import (
    Contract,
    ContractStatus,
    Institution,
    Lesson,
    LessonStatus,
    LicenceType,
    PayerType,
    Payout,
    PayoutStatus,
    Refund,
    RefundStatus,
)
from ledger.errors import LedgerError, RuleViolation
from ledger.escrow import contracts, lessons, parties, queries, refunds, supervision
from ledger.escrow.contracts import Terms
from ledger.escrow.invariants import check_all
from ledger.escrow.lessons import LessonReport
from ledger.risk import grade_all, history
from ledger.runtime import Ledger
from ledger.verify import Report, verify_database
from settlement import payouts
from settlement.engine import settle
from settlement.sweeps import run_sweeps

T = TypeVar("T")
DAYS = 31
ADMIN = "admin:demo"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = [
    "伟",
    "芳",
    "娜",
    "敏",
    "静",
    "磊",
    "洋",
    "艳",
    "勇",
    "军",
    "杰",
    "娟",
    "涛",
    "明",
    "超",
    "秀英",
    "华",
    "丹",
    "平",
    "刚",
]


def demo_start(now: datetime, zone: ZoneInfo) -> datetime:
    """09:00 local on the day 31 days before ``now``, so the demo month ends in the past."""
    first = (now.astimezone(zone) - timedelta(days=DAYS)).date()
    return datetime.combine(first, time(9), zone).astimezone(UTC)


@dataclass
class InstitutionRow:
    """One line of the closing table."""

    name: str
    status: str
    contracts: int
    lessons: int
    confirmed: int
    paid_out_fen: int
    """Settled and paid to the institution by its bank."""
    refunds: int
    refunded_fen: int
    escrow_fen: int
    liability_fen: int
    grades: str = ""
    """Its risk grade for each day of the month, oldest first (e.g. ``AAAABDD``)."""


@dataclass
class DemoSummary:
    """What the demo did and whether the result verifies."""

    institutions: list[InstitutionRow] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    returned_receipts: int = 0
    failed_payouts: int = 0
    entries: int = 0
    report: Report | None = None
    invariant_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.report is not None and self.report.ok and not self.invariant_problems


class _Month:
    def __init__(self, ledger: Ledger, clock: ManualClock, seed: int) -> None:
        self.ledger = ledger
        self.ctx = ledger.escrow
        self.clock = clock
        self.random = random.Random(seed)
        self.zone = ledger.settings.zone
        self.summary = DemoSummary()
        self.refs = 0
        self.first_day = clock.now().astimezone(self.zone).date()
        self.schedule: dict[str, tuple[int, ...]] = {}  # contract -> weekdays with a lesson
        self.families: list[tuple[str, list[str]]] = []

    # --- plumbing -----------------------------------------------------------------------------

    def do(self, operation: Callable[..., T], **kwargs: Any) -> T:
        with self.ledger.sessions.begin() as session:
            return operation(session, self.ctx, **kwargs)

    def at(self, day: int, hour: int, minute: int = 0) -> None:
        local = datetime.combine(
            self.first_day + timedelta(days=day), time(hour, minute), self.zone
        )
        self.clock.set(max(self.clock.now(), local.astimezone(UTC)))

    def ref(self, prefix: str) -> str:
        self.refs += 1
        return f"{prefix}{self.refs:05d}"

    def name(self) -> str:
        return self.random.choice(SURNAMES) + self.random.choice(GIVEN)

    # --- the story ----------------------------------------------------------------------------

    def setup(self) -> None:
        self.bank = self.do(parties.register_bank, name="宁波银行", actor=ADMIN).id
        self.bank_b = self.do(parties.register_bank, name="鄞州银行", actor=ADMIN).id
        self.regulator = self.do(
            parties.register_regulator, name="宁波市教育局", jurisdiction="*", actor=ADMIN
        ).id
        self.do(parties.register_regulator, name="海曙区教育局", jurisdiction="haishu", actor=ADMIN)
        self.arts = self._institution(
            "星河艺术中心", LicenceType.NON_ACADEMIC, "haishu", self.bank, "national"
        )
        self.academy = self._institution(
            "启明学堂", LicenceType.ACADEMIC, "yinzhou", self.bank, "ningbo"
        )
        self.sports = self._institution(
            "飞跃体育", LicenceType.NON_ACADEMIC, "jiangbei", self.bank_b, "national"
        )
        for _ in range(30):
            parent = self.do(
                parties.register_parent,
                name=self.name(),
                phone=f"138{self.random.randrange(10**8):08d}",
                actor=ADMIN,
            ).id
            students = [
                self.do(
                    parties.register_student, parent_id=parent, name=self.name(), actor=ADMIN
                ).id
                for _ in range(self.random.choice((1, 1, 2)))
            ]
            self.families.append((parent, students))

    def _institution(
        self, name: str, licence: LicenceType, district: str, bank: str, policy: str
    ) -> str:
        institution: Institution = self.do(
            parties.register_institution,
            name=name,
            licence=licence,
            district=district,
            bank_id=bank,
            escrow_account=self.ref("ESC"),
            settlement_account=self.ref("SET"),
            is_new=False,
            risk_deposit_fen=0,
            policy=policy,
            actor=ADMIN,
        )
        return institution.id

    def sign_contracts(self) -> None:
        courses = [
            (self.arts, "art", "少儿美术", None, (12_000, 15_000, 18_000)),
            (self.arts, "music", "钢琴启蒙", None, (20_000, 25_000)),
            (self.academy, "maths", "数学思维", 20, (4_500, 5_000, 5_500)),
            (self.academy, "english", "英语阅读", 8, (6_000, 6_600)),
            (self.sports, "swimming", "游泳进阶", None, (10_000, 12_000)),
            (self.sports, "basketball", "篮球训练营", None, (9_000, 11_000)),
        ]
        today = self.first_day
        for index, (parent, students) in enumerate(self.families):
            for student in students:
                institution, subject, course, size, prices = self.random.choice(courses)
                unit = self.random.choice(prices)
                lessons_ = min(self.random.choice((10, 16, 20, 24)), 500_000 // unit)
                # a few courses start in three weeks: their refunds come before the start
                start = today + timedelta(
                    days=21 if index % 10 == 9 else -self.random.randrange(0, 5)
                )
                terms = Terms(
                    institution_id=institution,
                    student_id=student,
                    subject=subject,
                    course_name=course,
                    lessons=lessons_,
                    unit_price_fen=unit,
                    start_date=start,
                    end_date=start + timedelta(days=80),
                    class_size=size,
                )
                try:
                    contract = self.do(contracts.create_contract, parent_id=parent, terms=terms)
                except RuleViolation as refused:
                    self.summary.refused.append(f"{refused.code}: {refused.detail}")
                    continue
                self.schedule[contract.id] = tuple(sorted(self.random.sample(range(7), 2)))
        # One family asks for a year of lessons in one go: beyond every limit.
        parent, students = self.families[0]
        try:
            self.do(
                contracts.create_contract,
                parent_id=parent,
                terms=Terms(
                    institution_id=self.arts,
                    student_id=students[0],
                    subject="calligraphy",
                    course_name="书法全年班",
                    lessons=72,
                    unit_price_fen=10_000,
                    start_date=today,
                    end_date=today + timedelta(days=360),
                ),
            )
        except RuleViolation as refused:
            self.summary.refused.append(f"{refused.code}: {refused.detail}")

    def collect_payments(self, day: int) -> None:
        """The banks report prepayments over the first two days; one comes from a lender."""
        with self.ledger.readers() as session:
            unpaid = list(
                session.scalars(
                    select(Contract)
                    .where(Contract.status == ContractStatus.AWAITING_PAYMENT)
                    .order_by(Contract.created_seq)
                )
            )
        for index, contract in enumerate(unpaid):
            if day == 0 and index % 3 == 2:
                continue  # paid tomorrow
            bank = self.bank_b if contract.institution_id == self.sports else self.bank
            payer = PayerType.LENDER if (day == 0 and index == 0) else PayerType.PARENT
            outcome = self.do(
                contracts.book_receipt,
                bank_id=bank,
                contract_id=contract.id,
                amount_fen=contract.total_fen,
                bank_reference=self.ref("RCV"),
                payer=payer,
            )
            if not outcome.booked:
                self.summary.returned_receipts += 1

    def deliver(self, day: int) -> None:
        """Each institution reports the day's lessons in one batch in the evening."""
        self.at(day, 19)
        weekday = (self.first_day + timedelta(days=day)).weekday()
        with self.ledger.readers() as session:
            active = list(
                session.scalars(select(Contract).where(Contract.status == ContractStatus.ACTIVE))
            )
        batches: dict[str, list[LessonReport]] = {}
        delivered_at = self.clock.now() - timedelta(hours=1)
        for contract in active:
            if contract.institution_id == self.sports and day >= 14:
                continue  # the operator stops teaching: the classic warning sign
            if weekday not in self.schedule.get(contract.id, ()):
                continue
            if (
                contract.lessons_available <= 0
                or self.ctx.local_date(delivered_at) < contract.start_date
            ):
                continue
            batches.setdefault(contract.institution_id, []).append(
                LessonReport(
                    contract.id, self.ref("LSN"), delivered_at, f"teacher-{contract.subject}"
                )
            )
        for institution, reports in batches.items():
            try:
                self.do(lessons.report_lessons, institution_id=institution, reports=reports)
            except LedgerError:
                continue  # e.g. frozen: nothing is recorded

    def parents_answer(self, day: int) -> None:
        """Parents look at the last two days' lessons and confirm about half; the rest stay
        unanswered and are confirmed by silence when the window closes."""
        self.at(day, 8)
        recent = self.clock.now() - timedelta(days=2)
        with self.ledger.readers() as session:
            open_lessons = list(
                session.execute(
                    select(Lesson, Contract.parent_id)
                    .join(Contract, Contract.id == Lesson.contract_id)
                    .where(Lesson.status == LessonStatus.REPORTED, Lesson.delivered_at >= recent)
                    .order_by(Lesson.reported_seq)
                ).all()
            )
        for lesson, parent in open_lessons:
            if self.random.random() < 0.45:
                self.do(lessons.confirm_lesson, parent_id=parent, lesson_id=lesson.id)

    def story(self, day: int) -> None:
        """The month's particular events."""
        if day == 3:
            self._dispute(withdrawn=True)
        if day == 8:
            self._dispute(withdrawn=False)
        if day == 6:
            self._refund_after_start(approve=True)
        if day == 12:
            self._refund_before_start()
        if day == 14:
            self._refund_after_start(approve=False)
        if day in (17, 18):  # a third of the families ask for their money back
            for contract in self._contracts(self.sports)[day - 17 :: 6]:
                self._ask(contract, None, "教练两周没来上课")
        if day == 20:
            self.do(
                supervision.freeze,
                regulator_id=self.regulator,
                institution_id=self.sports,
                reason="停课投诉增多, 冻结资金",
            )
        if day == 22:
            self.do(
                supervision.wind_down,
                regulator_id=self.regulator,
                institution_id=self.sports,
                reason="经营者失联, 启动清退",
            )

    def _contracts(self, institution: str) -> list[Contract]:
        with self.ledger.readers() as session:
            return list(
                session.scalars(
                    select(Contract)
                    .where(
                        Contract.institution_id == institution,
                        Contract.status == ContractStatus.ACTIVE,
                    )
                    .order_by(Contract.created_seq)
                )
            )

    def _ask(self, contract: Contract, count: int | None, reason: str) -> Refund | None:
        try:
            return self.do(
                refunds.request_refund,
                parent_id=contract.parent_id,
                contract_id=contract.id,
                lessons=count,
                reason=reason,
            )
        except LedgerError:
            return None

    def _dispute(self, *, withdrawn: bool) -> None:
        with self.ledger.readers() as session:
            found = session.execute(
                select(Lesson, Contract.parent_id)
                .join(Contract, Contract.id == Lesson.contract_id)
                .where(Lesson.status == LessonStatus.REPORTED, Lesson.institution_id == self.arts)
                .order_by(Lesson.reported_seq.desc())
                .limit(1)
            ).first()
        if found is None:
            return
        lesson, parent = found
        self.do(
            lessons.dispute_lesson,
            parent_id=parent,
            lesson_id=lesson.id,
            reason="孩子当天请假, 未上课",
        )
        if withdrawn:
            self.do(
                lessons.withdraw_lesson, institution_id=lesson.institution_id, lesson_id=lesson.id
            )
        else:
            self.do(
                lessons.resolve_dispute,
                regulator_id=self.regulator,
                lesson_id=lesson.id,
                for_institution=True,
                note="签到表显示已上课",
            )

    def _refund_after_start(self, *, approve: bool) -> None:
        for contract in self._contracts(self.arts):
            if contract.lessons_delivered >= 2 and contract.lessons_available >= 4:
                refund = self._ask(contract, 4, "孩子学业紧张, 退部分课时")
                if refund is None:
                    continue
                if approve:
                    self.do(refunds.approve_refund, institution_id=self.arts, refund_id=refund.id)
                else:
                    self.do(
                        refunds.reject_refund,
                        institution_id=self.arts,
                        refund_id=refund.id,
                        reason="合同约定的优惠课时不予退还",
                    )
                return

    def _refund_before_start(self) -> None:
        today = self.ctx.today()
        for institution in (self.academy, self.arts):
            for contract in self._contracts(institution):
                if contract.start_date > today:
                    self._ask(contract, None, "课程尚未开始, 申请全额退费")  # silence will approve
                    return

    def banks_pay_refunds(self) -> None:
        with self.ledger.readers() as session:
            approved = list(
                session.execute(
                    select(Refund, Institution.bank_id)
                    .join(Institution, Institution.id == Refund.institution_id)
                    .where(Refund.status == RefundStatus.APPROVED)
                    .order_by(Refund.decided_seq)
                ).all()
            )
        for refund, bank in approved:
            self.do(
                refunds.pay_refund,
                bank_id=bank,
                refund_id=refund.id,
                bank_reference=self.ref("RFD"),
            )

    def sweep(self, day: int) -> None:
        self.at(day, 23, 30)
        run_sweeps(self.ledger.sessions, self.ctx)

    def settle(self, day: int) -> None:
        """The nightly run: yesterday's confirmed lessons become payouts (T+1)."""
        self.at(day, 2)
        settle(self.ledger.sessions, self.ctx)
        # after settlement, as the worker does: every institution's grade for the day that ended
        grade_all(self.ledger.sessions, self.ctx)

    def banks_pay_institutions(self, day: int) -> None:
        """The banks execute the night's payout instructions; one bounces and is retried."""
        with self.ledger.readers() as session:
            instructed = list(
                session.scalars(
                    select(Payout)
                    .where(Payout.status == PayoutStatus.INSTRUCTED)
                    .order_by(Payout.instructed_seq)
                )
            )
        bounced = False
        for payout in instructed:
            # the arts centre's, so that which institution bounces does not depend on random ids
            if day == 8 and not bounced and payout.institution_id == self.arts:
                bounced = True
                self.do(
                    payouts.fail_payout,
                    bank_id=payout.bank_id,
                    payout_id=payout.id,
                    reason="收款账户户名不符",
                    bank_reference=self.ref("RTN"),
                )
                self.summary.failed_payouts += 1
                continue
            self.do(
                payouts.execute_payout,
                bank_id=payout.bank_id,
                payout_id=payout.id,
                bank_reference=self.ref("PAY"),
            )

    def run(self) -> DemoSummary:
        self.setup()
        self.sign_contracts()
        for day in range(DAYS):
            if day:
                self.settle(day)
            self.at(day, 9)
            if day < 2:
                self.collect_payments(day)
            if day:
                self.parents_answer(day)
            self.at(day, 10)
            self.banks_pay_institutions(day)
            self.story(day)
            self.at(day, 15)
            self.banks_pay_refunds()
            self.deliver(day)
            self.sweep(day)
        return self.close()

    def close(self) -> DemoSummary:
        summary = self.summary
        with self.ledger.readers() as session:
            for institution in session.scalars(
                select(Institution).order_by(Institution.registered_seq)
            ):
                all_contracts = list(
                    session.scalars(
                        select(Contract).where(Contract.institution_id == institution.id)
                    )
                )
                all_lessons = [
                    x
                    for c in all_contracts
                    for x in queries.contract_lessons(session, c)
                    if x.status is not LessonStatus.VOIDED
                ]
                all_refunds = list(
                    session.scalars(
                        select(Refund).where(
                            Refund.institution_id == institution.id,
                            Refund.status.in_([RefundStatus.APPROVED, RefundStatus.PAID]),
                        )
                    )
                )
                accounts = queries.institution_accounts(session, institution)
                summary.institutions.append(
                    InstitutionRow(
                        name=institution.name,
                        status=institution.status.value,
                        contracts=sum(c.paid_seq is not None for c in all_contracts),
                        lessons=len(all_lessons),
                        confirmed=sum(x.status is LessonStatus.CONFIRMED for x in all_lessons),
                        paid_out_fen=int(
                            session.scalar(
                                select(func.coalesce(func.sum(Payout.amount_fen), 0)).where(
                                    Payout.institution_id == institution.id,
                                    Payout.status == PayoutStatus.EXECUTED,
                                )
                            )
                            or 0
                        ),
                        refunds=len(all_refunds),
                        refunded_fen=sum(r.amount_fen or 0 for r in all_refunds),
                        escrow_fen=accounts[AccountKind.ESCROW].amount,
                        liability_fen=queries.institution_liability(session, institution).amount,
                        grades="".join(g.grade.value for g in history(session, institution.id)),
                    )
                )
            summary.entries = self.ledger.log.head(session).size
            summary.invariant_problems = check_all(session)
        summary.report = verify_database(self.ledger.engine)
        return summary


def build_demo(ledger: Ledger, clock: ManualClock, *, seed: int = 2026) -> DemoSummary:
    """Play the demo month into ``ledger`` (opened on ``clock``) and verify the result."""
    return _Month(ledger, clock, seed).run()
