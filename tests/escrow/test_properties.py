"""Property: any sequence of escrow operations keeps invariants 1-6, whatever is refused.

A Hypothesis state machine plays parents, institutions, banks and regulators on two institutions:
one under the national profile (no advance) and one under a 7.5% cost advance, so that shares do
not divide evenly. Every operation either succeeds or is refused with a LedgerError that changed
nothing (the log did not grow); any other exception is a bug. After every step the whole chain is
verified and invariants 3-5 are checked.
"""

from __future__ import annotations

import itertools
from datetime import timedelta

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from ledger.allocation import allocate, next_share, portion
from ledger.entities import Contract, Lesson, LicenceType, Payout, PayoutStatus, Refund
from ledger.errors import LedgerError
from ledger.escrow import contracts, lessons, parties, refunds, supervision
from ledger.escrow.contracts import Terms
from ledger.escrow.lessons import LessonReport
from ledger.models import Account, LogEntry, Posting
from settlement import payouts
from settlement.sweeps import run_sweeps
from tests.escrow.world import WorldFactory

prices = st.sampled_from([1, 7, 99, 14_995, 14_999, 15_000, 33_333])
_REFS = itertools.count()


class EscrowMachine(RuleBasedStateMachine):
    worlds: WorldFactory

    contracts = Bundle("contracts")
    lessons = Bundle("lessons")
    refunds = Bundle("refunds")

    def __init__(self) -> None:
        super().__init__()
        # Every example gets a fresh database (the class holds the plain factory function).
        self.opened = type(self).worlds()
        self.world = w = self.opened.__enter__()
        self.institutions = [
            w.institution("national"),
            w.institution("advance"),
            w.institution("ningbo", licence=LicenceType.ACADEMIC, district="haishu"),
        ]
        self.successor = w.institution("national")
        self.parent = w.do(parties.register_parent, name="P", phone=None, actor="admin:t").id
        self.student = w.do(
            parties.register_student, parent_id=self.parent, name="S", actor="admin:t"
        ).id

        self.frozen = ""
        self.freezes = 0
        self.ended = False
        self.steps = 0
        self.deposits = 0

    def teardown(self) -> None:
        self.opened.__exit__(None, None, None)

    def ref(self, prefix: str) -> str:
        return f"{prefix}{next(_REFS)}"

    # --- plumbing -----------------------------------------------------------------------------

    def _size(self) -> int:
        with self.world.read() as session:
            return int(session.scalar(select(func.count()).select_from(LogEntry)) or 0)

    def attempt(self, operation, **kwargs):  # type: ignore[no-untyped-def]
        """Run an operation; a refusal must be a LedgerError that left the log as it was."""
        before = self._size()
        try:
            result = self.world.do(operation, **kwargs)
        except LedgerError as error:
            assert self._size() == before, f"{operation.__name__} was refused but wrote to the log"
            event(f"{operation.__name__}: refused ({error.code})")
            return None
        event(f"{operation.__name__}: done")
        return result

    # --- parents and banks ----------------------------------------------------------------------

    @rule(
        target=contracts,
        institution=st.integers(0, 2),
        lessons_=st.integers(1, 12),
        price=prices,
        starts_in=st.integers(-10, 3),
        pay_now=st.booleans(),
    )
    def sign(
        self, institution: int, lessons_: int, price: int, starts_in: int, pay_now: bool
    ) -> str:
        w = self.world
        start = w.ctx.today() + timedelta(days=starts_in)
        created = self.attempt(
            contracts.create_contract,
            parent_id=self.parent,
            terms=Terms(
                institution_id=self.institutions[institution],
                student_id=self.student,
                subject=f"s{lessons_ % 3}",
                course_name="course",
                lessons=lessons_,
                unit_price_fen=price,
                start_date=start,
                end_date=start + timedelta(days=60),
                class_size=12 if institution == 2 else None,
            ),
        )
        if created is None:
            return "ctr_refused"
        if pay_now:  # most contracts are paid at once, so that later steps have money to move
            self.pay(created.id)
        return created.id

    @rule(contract=contracts)
    def pay_later(self, contract: str) -> None:
        self.pay(contract)

    @rule(contract=contracts)
    def lender_pays(self, contract: str) -> None:
        self.attempt(
            contracts.book_receipt,
            bank_id=self.world.bank,
            contract_id=contract,
            amount_fen=1_000,
            bank_reference=self.ref("L"),
            payer="lender",
        )

    @rule(contract=contracts)
    def cancel(self, contract: str) -> None:
        self.attempt(contracts.cancel_contract, parent_id=self.parent, contract_id=contract)

    @precondition(lambda self: self.deposits < 2)
    @rule(institution=st.integers(0, 2), amount=st.integers(1, 50_000))
    def lodge_deposit(self, institution: int, amount: int) -> None:
        self.deposits += 1
        self.attempt(
            contracts.lodge_risk_deposit,
            bank_id=self.world.bank,
            institution_id=self.institutions[institution],
            amount_fen=amount,
            bank_reference=self.ref("D"),
        )

    def pay(self, contract: str) -> None:
        with self.world.read() as session:
            found = session.get(Contract, contract)
            amount = found.total_fen if found else 1
        self.attempt(
            contracts.book_receipt,
            bank_id=self.world.bank,
            contract_id=contract,
            amount_fen=amount,
            bank_reference=self.ref("P"),
            payer="parent",
        )

    # --- institutions ---------------------------------------------------------------------------

    @rule(target=lessons, contract=contracts, count=st.integers(1, 3))
    def report(self, contract: str, count: int) -> str:
        with self.world.read() as session:
            found = session.get(Contract, contract)
            institution = found.institution_id if found else self.institutions[0]
        batch = []
        for _ in range(count):
            batch.append(LessonReport(contract, self.ref("R"), self.world.now(), "t"))
        reported = self.attempt(lessons.report_lessons, institution_id=institution, reports=batch)
        return reported[0].id if reported else "les_refused"

    @rule(lesson=lessons)
    def confirm(self, lesson: str) -> None:
        self.attempt(lessons.confirm_lesson, parent_id=self.parent, lesson_id=lesson)

    @rule(lesson=lessons)
    def dispute(self, lesson: str) -> None:
        self.attempt(lessons.dispute_lesson, parent_id=self.parent, lesson_id=lesson, reason="no")

    @rule(lesson=lessons)
    def withdraw(self, lesson: str) -> None:
        with self.world.read() as session:
            found = session.get(Lesson, lesson)
        if found is not None:
            self.attempt(
                lessons.withdraw_lesson, institution_id=found.institution_id, lesson_id=lesson
            )

    @rule(lesson=lessons, for_institution=st.booleans())
    def resolve(self, lesson: str, for_institution: bool) -> None:
        self.attempt(
            lessons.resolve_dispute,
            regulator_id=self.world.regulator,
            lesson_id=lesson,
            for_institution=for_institution,
            note="resolved",
        )

    # --- refunds --------------------------------------------------------------------------------

    @rule(target=refunds, contract=contracts, count=st.none() | st.integers(1, 4))
    def ask_refund(self, contract: str, count: int | None) -> str:
        made = self.attempt(
            refunds.request_refund, parent_id=self.parent, contract_id=contract, lessons=count
        )
        return made.id if made is not None else "rfd_refused"

    @rule(refund=refunds, yes=st.booleans())
    def answer(self, refund: str, yes: bool) -> None:
        with self.world.read() as session:
            found = session.get(Refund, refund)
        if found is None:
            return
        if yes:
            self.attempt(
                refunds.approve_refund, institution_id=found.institution_id, refund_id=refund
            )
        else:
            self.attempt(
                refunds.reject_refund,
                institution_id=found.institution_id,
                refund_id=refund,
                reason="no",
            )

    @rule(contract=contracts, count=st.none() | st.integers(1, 3))
    def force(self, contract: str, count: int | None) -> None:
        self.attempt(
            refunds.force_refund,
            regulator_id=self.world.regulator,
            contract_id=contract,
            lessons=count,
            reason="ordered",
        )

    @rule(refund=consumes(refunds))
    def bank_pays_refund(self, refund: str) -> None:
        self.attempt(
            refunds.pay_refund,
            bank_id=self.world.bank,
            refund_id=refund,
            bank_reference=self.ref("F"),
        )

    # --- time, settlement and regulators --------------------------------------------------------

    @rule(days=st.integers(0, 8))
    def time_passes(self, days: int) -> None:
        self.world.advance_clock(days=days, hours=1)
        run_sweeps(self.world.ledger.sessions, self.world.ctx)

    @rule()
    def settlement_runs(self) -> None:
        """Settlement may run at any moment, as often as it likes: it only settles what is due."""
        self.world.settle(institutions=self.institutions + [self.successor])

    @rule(data=st.data())
    def bank_answers_a_payout(self, data: st.DataObject) -> None:
        with self.world.read() as session:
            instructed = list(
                session.scalars(
                    select(Payout)
                    .where(
                        Payout.status == PayoutStatus.INSTRUCTED,
                        Payout.institution_id.in_(self.institutions + [self.successor]),
                    )
                    .order_by(Payout.instructed_seq)
                )
            )
        if not instructed:
            return
        payout = data.draw(st.sampled_from(instructed))
        if data.draw(st.booleans()):
            self.attempt(
                payouts.execute_payout,
                bank_id=payout.bank_id,
                payout_id=payout.id,
                bank_reference=self.ref("X"),
            )
        else:
            self.attempt(
                payouts.fail_payout,
                bank_id=payout.bank_id,
                payout_id=payout.id,
                bank_reference=self.ref("RJ"),
                reason="bounced",
            )

    @rule(institution=st.integers(0, 2))
    def settle_and_pay_out(self, institution: int) -> None:
        self.world.pay_out_releasable(self.institutions[institution])

    @precondition(lambda self: not self.frozen and self.freezes < 2)
    @rule(institution=st.integers(0, 2))
    def freeze(self, institution: int) -> None:
        done = self.attempt(
            supervision.freeze,
            regulator_id=self.world.regulator,
            institution_id=self.institutions[institution],
            reason="inspection",
        )
        if done is not None:
            self.frozen, self.freezes = self.institutions[institution], self.freezes + 1

    @precondition(lambda self: self.frozen)
    @rule()
    def unfreeze(self) -> None:
        self.attempt(
            supervision.unfreeze,
            regulator_id=self.world.regulator,
            institution_id=self.frozen,
            reason="inspection passed",
        )
        self.frozen = ""

    @precondition(lambda self: not self.ended and self.steps > 25)
    @rule(institution=st.integers(0, 2), transfer=st.booleans())
    def end_an_institution(self, institution: int, transfer: bool) -> None:
        """Wind one down, or hand its contracts to the successor (once per example)."""
        if transfer:
            done = self.attempt(
                supervision.approve_transfer,
                regulator_id=self.world.regulator,
                from_institution_id=self.institutions[institution],
                to_institution_id=self.successor,
                reason="merger",
            )
        else:
            done = self.attempt(
                supervision.wind_down,
                regulator_id=self.world.regulator,
                institution_id=self.institutions[institution],
                reason="closing",
            )
        self.ended = done is not None

    @rule(contract=contracts)
    def decline_transfer(self, contract: str) -> None:
        self.attempt(supervision.decline_transfer, parent_id=self.parent, contract_id=contract)

    @invariant()
    def every_invariant_holds(self) -> None:
        self.steps += 1  # institutions may only be ended late in a run, after business happened
        self.world.check()

    @invariant()
    def money_in_equals_money_out_plus_money_held(self) -> None:
        """Received = paid out to institutions + refunded to parents + still in escrow."""
        with self.world.read() as session:
            moved = dict(
                session.execute(
                    select(LogEntry.type, func.sum(Posting.amount))
                    .join(Posting, Posting.seq == LogEntry.seq)
                    .join(Account, Account.id == Posting.account_id)
                    .where(Account.code.like("escrow:%"))
                    .group_by(LogEntry.type)
                ).all()
            )
            held = int(
                session.scalar(
                    select(func.coalesce(func.sum(Account.balance), 0)).where(
                        Account.code.like("escrow:%")
                    )
                )
                or 0
            )
        received = int(moved.get("receipt.booked", 0)) + int(moved.get("risk_deposit.lodged", 0))
        paid_out = -int(moved.get("payout.executed", 0))
        refunded = -int(moved.get("refund.paid", 0))
        assert received == paid_out + refunded + held


def test_any_sequence_of_escrow_operations_keeps_every_invariant(worlds: WorldFactory) -> None:
    EscrowMachine.worlds = worlds
    run_state_machine_as_test(
        EscrowMachine,
        settings=settings(
            max_examples=20,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@settings(max_examples=300, deadline=None)
@given(
    total=st.integers(0, 10**9),
    parts=st.integers(1, 200),
    refunds_at=st.lists(st.integers(1, 200), max_size=5),
)
def test_lesson_by_lesson_shares_are_the_largest_remainder_split(
    total: int, parts: int, refunds_at: list[int]
) -> None:
    """next_share lesson by lesson hands out exactly allocate(); refunds on the way lose nothing."""
    remaining, left, shares = total, parts, []
    while left:
        share = next_share(remaining, left)
        shares.append(share)
        remaining, left = remaining - share, left - 1
    assert shares == allocate(total, parts)
    remaining, left, taken = total, parts, 0
    for cut in refunds_at:
        if left == 0:
            break
        k = min(cut, left)
        piece = portion(remaining, k, left)
        remaining, left, taken = remaining - piece, left - k, taken + piece
        if left:
            share = next_share(remaining, left)
            remaining, left, taken = remaining - share, left - 1, taken + share
    while left:
        share = next_share(remaining, left)
        remaining, left, taken = remaining - share, left - 1, taken + share
    assert (remaining, taken) == (0, total)
