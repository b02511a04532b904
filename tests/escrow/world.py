"""A small world for escrow tests: a bank, regulators, institutions under each profile, families.

Every operation runs in its own committed transaction, as it would behind the API, through the
helpers here; tests then assert balances to the fen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.accounts import AccountKind
from ledger.entities import (
    Contract,
    Institution,
    Lesson,
    LicenceType,
    PayerType,
    Payout,
    PayoutStatus,
    Refund,
)
from ledger.escrow import contracts, lessons, parties, supervision
from ledger.escrow import refunds as refund_ops
from ledger.escrow.contracts import Terms, contract_account, institution_account
from ledger.escrow.invariants import check_all
from ledger.escrow.lessons import LessonReport
from ledger.journal import balance
from ledger.runtime import Ledger
from ledger.verify import verify_database
from settlement import payouts
from settlement.engine import SettlementReport, settle

T = TypeVar("T")
ADMIN = "admin:root"
LESSON = 15_000  # ¥150
START = date(2026, 9, 1)
SHANGHAI = ZoneInfo("Asia/Shanghai")


class World:
    """Parties under every profile and helpers that run one committed operation each."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.ctx = ledger.escrow
        self.bank = self.do(parties.register_bank, name="Bank of Ningbo", actor=ADMIN).id
        self.other_bank = self.do(parties.register_bank, name="Other Bank", actor=ADMIN).id
        self.regulator = self.do(
            parties.register_regulator, name="Municipal bureau", jurisdiction="*", actor=ADMIN
        ).id
        self.district_regulator = self.do(
            parties.register_regulator, name="Haishu bureau", jurisdiction="haishu", actor=ADMIN
        ).id
        self.school = self.institution("national", district="haishu")
        self.academy = self.institution("ningbo", licence=LicenceType.ACADEMIC, district="yinzhou")
        self.beijing = self.institution("beijing", district="haidian")
        self.advance = self.institution("advance", district="haishu", risk_deposit_fen=0)
        self.parent = self.do(
            parties.register_parent, name="王芳", phone="13800000001", actor=ADMIN
        ).id
        self.student = self.do(
            parties.register_student, parent_id=self.parent, name="李明", actor=ADMIN
        ).id
        self.other_parent = self.do(
            parties.register_parent, name="张伟", phone="13800000002", actor=ADMIN
        ).id
        self.other_student = self.do(
            parties.register_student, parent_id=self.other_parent, name="张小", actor=ADMIN
        ).id

    # --- plumbing ---------------------------------------------------------------------------

    def do(self, operation: Callable[..., T], **kwargs: Any) -> T:
        """Run one escrow operation in its own committed transaction."""
        with self.ledger.sessions.begin() as session:
            return operation(session, self.ctx, **kwargs)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self.ledger.readers() as session:
            yield session

    def get(self, model: type[T], key: str) -> T:
        with self.read() as session:
            found = session.get(model, key)
            assert found is not None
            return found

    def now(self) -> datetime:
        return self.ctx.now()

    def advance_clock(self, **delta: float) -> None:
        self.ledger.clock.advance(timedelta(**delta))  # type: ignore[attr-defined]

    def set_clock(self, when: datetime) -> None:
        self.ledger.clock.set(when)  # type: ignore[attr-defined]

    # --- parties -----------------------------------------------------------------------------

    def institution(
        self,
        policy: str,
        *,
        district: str = "haishu",
        licence: LicenceType = LicenceType.NON_ACADEMIC,
        risk_deposit_fen: int = 0,
        bank: str | None = None,
    ) -> str:
        institution: Institution = self.do(
            parties.register_institution,
            name=f"{policy} institution",
            licence=licence,
            district=district,
            bank_id=bank or self.bank,
            escrow_account=f"ESC-{policy}",
            settlement_account=f"SET-{policy}",
            is_new=False,
            risk_deposit_fen=risk_deposit_fen,
            policy=policy,
            actor=ADMIN,
        )
        return institution.id

    # --- contracts ---------------------------------------------------------------------------

    def contract(
        self,
        institution: str | None = None,
        *,
        lessons: int = 20,
        unit: int = LESSON,
        start: date = START,
        end: date | None = None,
        subject: str = "art",
        class_size: int | None = None,
        minutes: int = 45,
        parent: str | None = None,
        student: str | None = None,
    ) -> str:
        created: Contract = self.do(
            contracts.create_contract,
            parent_id=parent or self.parent,
            terms=Terms(
                institution_id=institution or self.school,
                student_id=student or self.student,
                subject=subject,
                course_name=f"{subject} course",
                lessons=lessons,
                unit_price_fen=unit,
                start_date=start,
                end_date=end or start + timedelta(days=80),
                class_size=class_size,
                lesson_minutes=minutes,
            ),
        )
        return created.id

    _refs = 0

    def pay(self, contract_id: str, *, payer: PayerType = PayerType.PARENT) -> None:
        contract = self.get(Contract, contract_id)
        World._refs += 1
        self.do(
            contracts.book_receipt,
            bank_id=self.bank,
            contract_id=contract_id,
            amount_fen=contract.total_fen,
            bank_reference=f"BR-{World._refs}",
            payer=payer,
        )

    def paid_contract(self, institution: str | None = None, **kwargs: Any) -> str:
        contract_id = self.contract(institution, **kwargs)
        self.pay(contract_id)
        return contract_id

    def report(
        self, contract_id: str, count: int = 1, *, at: datetime | None = None
    ) -> list[Lesson]:
        contract = self.get(Contract, contract_id)
        reports = []
        for _ in range(count):
            World._refs += 1
            reports.append(
                LessonReport(contract_id, f"L{World._refs}", at or self.now(), "teacher-1")
            )
        return self.do(
            lessons.report_lessons, institution_id=contract.institution_id, reports=reports
        )

    def confirm(self, lesson_id: str, parent: str | None = None) -> Lesson:
        return self.do(lessons.confirm_lesson, parent_id=parent or self.parent, lesson_id=lesson_id)

    def request_refund(self, contract_id: str, count: int | None = None) -> Refund:
        return self.do(
            refund_ops.request_refund, parent_id=self.parent, contract_id=contract_id, lessons=count
        )

    def approve(self, refund: Refund) -> Refund:
        return self.do(
            refund_ops.approve_refund, institution_id=refund.institution_id, refund_id=refund.id
        )

    def freeze(self, institution: str) -> None:
        self.do(
            supervision.freeze,
            regulator_id=self.regulator,
            institution_id=institution,
            reason="inspection",
        )

    # --- money ---------------------------------------------------------------------------------

    def fen(self, code: str) -> int:
        with self.read() as session:
            return balance(session, code).amount

    def owed(self, contract_id: str) -> int:
        return self.fen(contract_account(contract_id))

    def acct(self, kind: AccountKind, institution: str | None = None) -> int:
        return self.fen(institution_account(kind, institution or self.school))

    def escrow(self, institution: str | None = None) -> int:
        return self.acct(AccountKind.ESCROW, institution)

    # --- settlement --------------------------------------------------------------------------

    def settle(
        self, through: date | None = None, institutions: list[str] | None = None
    ) -> SettlementReport:
        return settle(self.ledger.sessions, self.ctx, through=through, institutions=institutions)

    def execute_payouts(self, institution: str | None = None) -> int:
        """The bank pays every instructed payout (of one institution); returns the fen paid."""
        with self.read() as session:
            query = select(Payout).where(Payout.status == PayoutStatus.INSTRUCTED)
            if institution is not None:
                query = query.where(Payout.institution_id == institution)
            instructed = list(session.scalars(query.order_by(Payout.instructed_seq)))
        for payout in instructed:
            World._refs += 1
            self.do(
                payouts.execute_payout,
                bank_id=payout.bank_id,
                payout_id=payout.id,
                bank_reference=f"PAY-{World._refs}",
            )
        return sum(p.amount_fen for p in instructed)

    def pay_out_releasable(self, institution: str) -> int:
        """A day passes, settlement runs and the bank pays: what settlement and payout really do."""
        self.advance_clock(days=1)
        self.settle(institutions=[institution])
        return self.execute_payouts(institution)

    def check(self) -> None:
        """Every invariant of DESIGN.md holds: the chain and balances (1, 2, 6), the escrow (3-5)."""
        report = verify_database(self.ledger.engine)
        assert report.ok, report.problems
        with self.read() as session:
            assert check_all(session) == []


def shanghai(year: int, month: int, day: int, hour: int = 9, minute: int = 0) -> datetime:
    """A Shanghai wall-clock time as an aware UTC datetime."""
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


WorldFactory = Callable[[], AbstractContextManager[World]]
"""Opens a new world on its own fresh database (the ``worlds`` fixture)."""
