"""Two weeks across the 2026 National Day holiday, settled daily, checked against a table by hand.

Three institutions, one contract each: 20 lessons at ¥100 (10,000 fen), paid on 27 September. A
lesson is delivered every day at 18:00 from Monday 28 September to Sunday 11 October. Settlement
runs every day at 02:00, the bank pays what was instructed at 10:00.

- A (national, T+1 calendar day): the parent confirms each lesson at 20:00 the same day. The
  payout for 30 September fails at the bank on 1 October and is instructed again by the next run.
- B (``working-t1``: settlement one *working* day after release): the parent confirms two days
  later at 09:00. 1-7 October are holidays, 10 October is a make-up working Saturday, so nothing
  released from 30 September on is due before Thursday 8 October.
- C (national): the parent confirms the next morning at 09:00. The regulator freezes C on
  2 October at 12:00 and unfreezes it on 6 October at 12:00: C can report no lesson on 2-5 October,
  the runs of 3-6 October skip it, and the run of 7 October catches up 2-6 October in order.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from ledger.accounts import AccountKind
from ledger.entities import Payout, PayoutStatus, SettlementBatch
from ledger.errors import InstitutionNotActive
from ledger.escrow import lessons, supervision
from ledger.escrow.lessons import LessonReport
from settlement import payouts
from tests.escrow.world import World, shanghai

PRICE = 10_000
FIRST, LAST = date(2026, 9, 28), date(2026, 10, 11)
FROZEN_FROM, UNFROZEN_ON = date(2026, 10, 2), date(2026, 10, 6)
FAILING_BATCH = date(2026, 9, 30)


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


# (institution, business date) -> (lessons, payable fen, date of the run that created it),
# worked out by hand from the rules above; only batches that moved money are listed.
EXPECTED = {
    # A: each day's lesson, released that evening, settled by the next night's run.
    **{("A", d): (1, PRICE, d + timedelta(days=1)) for d in _days(FIRST, date(2026, 10, 11))},
    # B: released on d+2; due one working day later. Releases of 30 Sep - 7 Oct wait for 8 Oct.
    **{
        ("B", d): (1, PRICE, date(2026, 10, 8)) for d in _days(date(2026, 9, 30), date(2026, 10, 7))
    },
    ("B", date(2026, 10, 8)): (1, PRICE, date(2026, 10, 9)),
    ("B", date(2026, 10, 9)): (1, PRICE, date(2026, 10, 10)),  # due on the make-up Saturday
    ("B", date(2026, 10, 10)): (1, PRICE, date(2026, 10, 12)),  # Sunday 11 October is off
    ("B", date(2026, 10, 11)): (1, PRICE, date(2026, 10, 12)),
    # C: released the next morning; frozen 2-6 Oct (runs of 3-6 Oct skip it); no lessons 2-5 Oct.
    ("C", date(2026, 9, 29)): (1, PRICE, date(2026, 9, 30)),
    ("C", date(2026, 9, 30)): (1, PRICE, date(2026, 10, 1)),
    ("C", date(2026, 10, 1)): (1, PRICE, date(2026, 10, 2)),
    ("C", date(2026, 10, 2)): (1, PRICE, date(2026, 10, 7)),  # confirmed before the freeze
    **{
        ("C", d): (1, PRICE, d + timedelta(days=1))
        for d in _days(date(2026, 10, 7), date(2026, 10, 11))
    },
}


@pytest.fixture
def story(world: World) -> dict[str, str]:
    a = world.institution("national")
    b = world.institution("working-t1")
    c = world.institution("national")
    world.set_clock(shanghai(2026, 9, 27, 12))
    contracts = {}
    for name, institution in (("A", a), ("B", b), ("C", c)):
        contract = world.contract(
            institution, lessons=20, unit=PRICE, start=FIRST, end=date(2026, 11, 30)
        )
        world.pay(contract)
        contracts[name] = contract
    return {"A": a, "B": b, "C": c, **{f"contract {k}": v for k, v in contracts.items()}}


def _run_the_fortnight(world: World, story: dict[str, str]) -> dict[tuple[str, date], date]:
    """Play the two weeks; returns, for each batch that moved money, the day its run happened."""
    names = {story[n]: n for n in "ABC"}
    created_on: dict[tuple[str, date], date] = {}
    reported: dict[str, list[str]] = {n: [] for n in "ABC"}
    institutions = [story[n] for n in "ABC"]
    for day in _days(FIRST, LAST + timedelta(days=1)):
        world.set_clock(shanghai(day.year, day.month, day.day, 2))
        for batch in world.settle(institutions=institutions).created:
            if batch.gross_fen:
                created_on[(names[batch.institution_id], batch.business_date)] = day
        world.set_clock(shanghai(day.year, day.month, day.day, 9))
        for name, delay in (("B", 2), ("C", 1)):
            for lesson_id in reported[name]:
                lesson = world.get(lessons.Lesson, lesson_id)
                if world.ctx.local_date(lesson.delivered_at) == day - timedelta(days=delay):
                    world.confirm(lesson_id)
        world.set_clock(shanghai(day.year, day.month, day.day, 10))
        _bank_answers(world, day)
        world.set_clock(shanghai(day.year, day.month, day.day, 12))
        if day == FROZEN_FROM:
            world.freeze(story["C"])
        if day == UNFROZEN_ON:
            world.do(
                supervision.unfreeze,
                regulator_id=world.regulator,
                institution_id=story["C"],
                reason="inspection passed",
            )
        if day > LAST:
            break
        world.set_clock(shanghai(day.year, day.month, day.day, 18))
        for name in "ABC":
            report = LessonReport(story[f"contract {name}"], f"{name}-{day}", world.now(), "t")
            if name == "C" and FROZEN_FROM <= day < UNFROZEN_ON:
                with pytest.raises(InstitutionNotActive):
                    world.do(lessons.report_lessons, institution_id=story[name], reports=[report])
                continue
            [lesson] = world.do(
                lessons.report_lessons, institution_id=story[name], reports=[report]
            )
            reported[name].append(lesson.id)
        world.set_clock(shanghai(day.year, day.month, day.day, 20))
        world.confirm(reported["A"][-1])
    return created_on


def _bank_answers(world: World, day: date) -> None:
    with world.read() as session:
        instructed = list(
            session.scalars(select(Payout).where(Payout.status == PayoutStatus.INSTRUCTED))
        )
    for payout in instructed:
        with world.read() as session:
            batch = session.get(SettlementBatch, payout.batch_id)
        assert batch is not None
        if batch.business_date == FAILING_BATCH and payout.retry_of is None:
            world.do(
                payouts.fail_payout,
                bank_id=payout.bank_id,
                payout_id=payout.id,
                bank_reference=f"RJCT-{payout.id}",
                reason="account frozen by bank",
            )
        else:
            world.do(
                payouts.execute_payout,
                bank_id=payout.bank_id,
                payout_id=payout.id,
                bank_reference=f"PAY-{payout.id}",
            )


def test_a_fortnight_across_national_day_settles_to_the_fen(
    world: World, story: dict[str, str]
) -> None:
    created_on = _run_the_fortnight(world, story)
    with world.read() as session:
        batches = {
            (name, b.business_date): (b.lessons, b.payable_fen, created_on[(name, b.business_date)])
            for name in "ABC"
            for b in session.scalars(
                select(SettlementBatch).where(
                    SettlementBatch.institution_id == story[name], SettlementBatch.gross_fen > 0
                )
            )
        }
    assert batches == EXPECTED

    paid = {n: sum(p for (i, _), (_, p, _) in EXPECTED.items() if i == n) for n in "ABC"}
    assert paid == {"A": 140_000, "B": 120_000, "C": 90_000}
    for name in "ABC":
        institution = story[name]
        assert world.acct(AccountKind.PAYABLE, institution) == 0  # every instruction was paid
        assert world.escrow(institution) == 200_000 - paid[name]
    # Still in escrow and not yet released: B's lessons of 10-11 Oct (confirmed 12 Oct, then one
    # not yet), C's of 11 Oct (confirmed the morning of 12 Oct).
    assert world.acct(AccountKind.RELEASABLE, story["B"]) == PRICE
    assert world.acct(AccountKind.PENDING, story["B"]) == PRICE
    assert world.acct(AccountKind.RELEASABLE, story["C"]) == PRICE
    assert (
        world.owed(story["contract C"]) == 200_000 - 10 * PRICE
    )  # 10 lessons, 4 lost to the freeze


def test_the_failed_payout_was_instructed_again_by_the_next_run(
    world: World, story: dict[str, str]
) -> None:
    _run_the_fortnight(world, story)
    with world.read() as session:
        batch = session.scalars(
            select(SettlementBatch).where(
                SettlementBatch.institution_id == story["A"],
                SettlementBatch.business_date == FAILING_BATCH,
            )
        ).one()
        attempts = list(
            session.scalars(
                select(Payout).where(Payout.batch_id == batch.id).order_by(Payout.instructed_seq)
            )
        )
    assert [(p.status, p.instructed_on) for p in attempts] == [
        (PayoutStatus.FAILED, date(2026, 10, 1)),  # instructed by the run of 1 October
        (PayoutStatus.EXECUTED, date(2026, 10, 2)),  # and again by the run of 2 October
    ]
    assert attempts[1].retry_of == attempts[0].id
    assert attempts[0].failure_reason == "account frozen by bank"


def test_nothing_was_settled_for_the_frozen_institution_while_it_was_frozen(
    world: World, story: dict[str, str]
) -> None:
    created_on = _run_the_fortnight(world, story)
    frozen_runs = {date(2026, 10, 3), date(2026, 10, 4), date(2026, 10, 5), date(2026, 10, 6)}
    assert not any(name == "C" and run in frozen_runs for (name, _), run in created_on.items())
    with world.read() as session:
        dates = sorted(
            session.scalars(
                select(SettlementBatch.business_date).where(
                    SettlementBatch.institution_id == story["C"]
                )
            )
        )
    # one batch per day that released money, none missing, none twice: the catch-up went in order
    assert dates == sorted(day for (name, day) in EXPECTED if name == "C")
