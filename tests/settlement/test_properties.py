"""Property: whatever the order and number of settlement runs and sweeps, no fen is lost or doubled.

A state machine plays families paying, institutions teaching, parents confirming and asking for
refunds, time passing, settlement running at arbitrary moments (often twice in a row), and the
bank executing or bouncing payouts. It picks what to act on from the live state, so almost every
step does something. After every step:

- received = paid out to institutions + refunded to parents + still in escrow;
- every settlement batch took from releasable exactly what its entry says, each (institution,
  date) was settled at most once, and no lesson belongs to two batches;
- payable equals what was instructed and not yet executed (failed ones included, as they wait
  for their retry) - plus invariants 1-6 (the full verify).

After every settlement run, for each institution that is not held:

- no batch is for a date whose settlement lag has not passed, and none took money released after
  its date ended;
- everything released up to the latest due date has gone: what releasable still holds came in
  after that date.

Each example runs on a fresh database, and picks from rows in log order, so a failure replays.
"""

from __future__ import annotations

import itertools
from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import func, select

from ledger.accounts import AccountKind
from ledger.entities import (
    Contract,
    ContractStatus,
    Institution,
    Lesson,
    LessonStatus,
    Payout,
    PayoutStatus,
    Refund,
    RefundStatus,
    SettlementBatch,
)
from ledger.errors import LedgerError
from ledger.escrow import lessons, parties, refunds
from ledger.escrow.contracts import Terms, create_contract, institution_account
from ledger.escrow.lessons import LessonReport
from ledger.escrow.queries import seq_at
from ledger.models import Account, LogEntry, Posting
from settlement import payouts
from settlement.engine import BATCH_EVENT, HELD, end_of, latest_due
from settlement.sweeps import run_sweeps
from tests.escrow.world import WorldFactory

_REFS = itertools.count()


class SettlementMachine(RuleBasedStateMachine):
    worlds: WorldFactory

    def __init__(self) -> None:
        super().__init__()
        self.opened = type(self).worlds()  # the class holds the plain function
        self.world = w = self.opened.__enter__()
        self.institutions = [
            w.institution("national"),
            w.institution("advance"),
            w.institution("working-t1"),
        ]
        self.parent = w.do(parties.register_parent, name="P", phone=None, actor="admin:t").id
        self.students = [
            w.do(parties.register_student, parent_id=self.parent, name="S", actor="admin:t").id
            for _ in range(3)
        ]
        for index in range(2):  # something to teach from the first step
            self.family_pays(institution=index, student=index, lessons_=10, price=9_999)

    def teardown(self) -> None:
        self.opened.__exit__(None, None, None)

    # --- helpers ---------------------------------------------------------------------------------

    def _try(self, operation, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return self.world.do(operation, **kwargs)
        except LedgerError:
            return None

    def _pick(self, data: st.DataObject, query):  # type: ignore[no-untyped-def]
        with self.world.read() as session:
            rows = list(session.scalars(query))
        return data.draw(st.sampled_from(rows)) if rows else None

    # --- business ----------------------------------------------------------------------------------

    @rule(
        institution=st.integers(0, 2),
        student=st.integers(0, 2),
        lessons_=st.integers(1, 10),
        price=st.sampled_from([101, 9_999, 14_995, 15_000]),
    )
    def family_pays(self, institution: int, student: int, lessons_: int, price: int) -> None:
        start = self.world.ctx.today()
        contract = self._try(
            create_contract,
            parent_id=self.parent,
            terms=Terms(
                self.institutions[institution],
                self.students[student],
                f"s{next(_REFS)}",
                "course",
                lessons_,
                price,
                start,
                start + timedelta(days=60),
            ),
        )
        if contract is not None:
            self.world.pay(contract.id)

    @rule(data=st.data(), count=st.integers(1, 5))
    def lessons_delivered(self, data: st.DataObject, count: int) -> None:
        contract = self._pick(
            data,
            select(Contract)
            .where(
                Contract.status == ContractStatus.ACTIVE,
                Contract.institution_id.in_(self.institutions),
            )
            .order_by(Contract.created_seq),
        )
        if contract is None:
            return
        reports = [
            LessonReport(contract.id, f"R{next(_REFS)}", self.world.now(), "t")
            for _ in range(count)
        ]
        self._try(lessons.report_lessons, institution_id=contract.institution_id, reports=reports)

    @rule(data=st.data())
    def parent_confirms(self, data: st.DataObject) -> None:
        lesson = self._pick(
            data,
            select(Lesson)
            .where(
                Lesson.status == LessonStatus.REPORTED, Lesson.institution_id.in_(self.institutions)
            )
            .order_by(Lesson.reported_seq, Lesson.ref),
        )
        if lesson is not None:
            self._try(lessons.confirm_lesson, parent_id=self.parent, lesson_id=lesson.id)

    @rule(data=st.data(), count=st.integers(1, 3), answer=st.booleans())
    def refund(self, data: st.DataObject, count: int, answer: bool) -> None:
        contract = self._pick(
            data,
            select(Contract)
            .where(
                Contract.status == ContractStatus.ACTIVE,
                Contract.institution_id.in_(self.institutions),
            )
            .order_by(Contract.created_seq),
        )
        if contract is None:
            return
        asked = self._try(
            refunds.request_refund, parent_id=self.parent, contract_id=contract.id, lessons=count
        )
        if asked is not None and answer:
            self._try(
                refunds.approve_refund, institution_id=asked.institution_id, refund_id=asked.id
            )

    @rule(data=st.data())
    def bank_pays_a_refund(self, data: st.DataObject) -> None:
        refund = self._pick(
            data,
            select(Refund)
            .where(
                Refund.status == RefundStatus.APPROVED, Refund.institution_id.in_(self.institutions)
            )
            .order_by(Refund.requested_seq),
        )
        if refund is not None:
            self._try(
                refunds.pay_refund,
                bank_id=self.world.bank,
                refund_id=refund.id,
                bank_reference=f"F{next(_REFS)}",
            )

    # --- the clock, settlement and the bank ---------------------------------------------------------

    @rule(hours=st.integers(1, 96))
    def time_passes_and_sweeps_run(self, hours: int) -> None:
        self.world.advance_clock(hours=hours)
        run_sweeps(self.world.ledger.sessions, self.world.ctx)

    @rule(twice=st.booleans(), through_yesterday=st.booleans())
    def settlement_runs(self, twice: bool, through_yesterday: bool) -> None:
        through = self.world.ctx.today() - timedelta(days=1) if through_yesterday else None
        for _ in range(2 if twice else 1):
            report = self.world.settle(through=through, institutions=self.institutions)
            assert not report.failed
            self._nothing_early_and_nothing_due_left()

    def _nothing_early_and_nothing_due_left(self) -> None:
        ctx = self.world.ctx
        with self.world.read() as session:
            for institution in session.scalars(
                select(Institution).where(Institution.id.in_(self.institutions))
            ):
                if institution.status in HELD:
                    continue
                due = latest_due(ctx, ctx.policy(institution.policy).settlement_lag, ctx.today())
                batches = list(
                    session.scalars(
                        select(SettlementBatch).where(
                            SettlementBatch.institution_id == institution.id
                        )
                    )
                )
                for batch in batches:
                    assert batch.business_date <= due
                    assert batch.through_seq <= seq_at(
                        session, end_of(ctx, batch.business_date), inclusive=False
                    )
                releasable = session.scalar(
                    select(Account.id).where(
                        Account.code == institution_account(AccountKind.RELEASABLE, institution.id)
                    )
                )
                if releasable is None:
                    continue
                arrived_later = -int(
                    session.scalar(
                        select(func.coalesce(func.sum(Posting.amount), 0))
                        .join(LogEntry, LogEntry.seq == Posting.seq)
                        .where(
                            Posting.account_id == releasable,
                            Posting.amount < 0,
                            Posting.seq > seq_at(session, end_of(ctx, due), inclusive=False),
                            LogEntry.type != BATCH_EVENT,
                        )
                    )
                    or 0
                )
                held = self.world.fen(institution_account(AccountKind.RELEASABLE, institution.id))
                assert held <= arrived_later, (institution.id, due, held, arrived_later)

    @rule(data=st.data(), execute=st.booleans())
    def bank_answers_a_payout(self, data: st.DataObject, execute: bool) -> None:
        payout = self._pick(
            data,
            select(Payout)
            .where(
                Payout.status == PayoutStatus.INSTRUCTED,
                Payout.institution_id.in_(self.institutions),
            )
            .order_by(Payout.instructed_seq),
        )
        if payout is None:
            return
        if execute:
            self._try(
                payouts.execute_payout,
                bank_id=payout.bank_id,
                payout_id=payout.id,
                bank_reference=f"B{next(_REFS)}",
            )
        else:
            self._try(
                payouts.fail_payout,
                bank_id=payout.bank_id,
                payout_id=payout.id,
                bank_reference=f"RJ{next(_REFS)}",
                reason="bounced",
            )

    # --- what must always hold ----------------------------------------------------------------------

    @invariant()
    def no_fen_is_lost_or_doubled(self) -> None:
        with self.world.read() as session:
            escrow = select(Account.id).where(Account.code.like("escrow:%")).scalar_subquery()
            moved = dict(
                session.execute(
                    select(LogEntry.type, func.sum(Posting.amount))
                    .join(Posting, Posting.seq == LogEntry.seq)
                    .where(Posting.account_id.in_(escrow))
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
            assert int(moved.get("receipt.booked", 0)) + int(
                moved.get("risk_deposit.lodged", 0)
            ) == (-int(moved.get("payout.executed", 0)) - int(moved.get("refund.paid", 0)) + held)
            for institution in self.institutions:
                batches = list(
                    session.scalars(
                        select(SettlementBatch).where(SettlementBatch.institution_id == institution)
                    )
                )
                dates = [b.business_date for b in batches]
                assert len(dates) == len(set(dates))  # no date settled twice
                windows = sorted((b.after_seq, b.through_seq) for b in batches)
                # the windows tile the log from its start: each begins where the previous ended
                assert [a for a, _ in windows[:1]] in ([], [-1])
                assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))
                assert all(b.business_date <= self.world.ctx.today() for b in batches)
                outstanding = int(
                    session.scalar(
                        select(func.coalesce(func.sum(Payout.amount_fen), 0)).where(
                            Payout.institution_id == institution,
                            Payout.status.in_([PayoutStatus.INSTRUCTED, PayoutStatus.FAILED]),
                            Payout.retried.is_(False),
                        )
                    )
                    or 0
                )
                payable = self.world.fen(institution_account(AccountKind.PAYABLE, institution))
                assert payable == outstanding
                batched = session.scalar(
                    select(func.count())
                    .select_from(Lesson)
                    .where(Lesson.institution_id == institution, Lesson.batch_id.is_not(None))
                )
                assert batched == sum(b.lessons for b in batches)
        self.world.check()


def test_settlement_in_any_order_and_any_number_of_times_loses_and_doubles_nothing(
    worlds: WorldFactory,
) -> None:
    SettlementMachine.worlds = worlds
    run_state_machine_as_test(
        SettlementMachine,
        settings=settings(
            max_examples=12,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
