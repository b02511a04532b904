"""Risk grading: each rule at its threshold, worked examples from the ledger, history and alerts.

The world starts on Tuesday 1 September 2026 (Shanghai). A business date is graded once it has
ended, from the ledger as it stood at its end; the national profile's [risk] table applies unless
a test registers an institution under a profile of its own.
"""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ledger.entities import Institution, LicenceType, Payout, PayoutStatus
from ledger.errors import InvalidRequest, InvalidState, NotFound
from ledger.escrow import lessons, parties, refunds, supervision
from ledger.models import LogEntry
from ledger.policy import POLICY_DIR, RISK_RULES, load_profile
from ledger.risk import (
    ACKNOWLEDGED_EVENT,
    GRADED_EVENT,
    RULES,
    Grade,
    RiskAlert,
    RiskGrade,
    acknowledge,
    assess,
    grade_all,
    grade_institution,
)
from ledger.risk_signals import Signals, open_breaks
from settlement import payouts
from settlement.worker import Worker
from tests.escrow.world import LESSON, World, shanghai

SEP = 9
NATIONAL = load_profile("national").risk


def _quiet(**changes: object) -> Signals:
    """Signals of a healthy institution; ``changes`` override single signals."""
    base = Signals(
        business_date=date(2026, 9, 1),
        through_seq=10,
        licence="non_academic",
        status="active",
        liability_fen=1_000_000,
        escrow_fen=1_000_000,
        advance_fen=0,
        owed_out_fen=0,
        coverage_percent=100,
        refunds_count=0,
        refunds_fen=0,
        refund_share_percent=0,
        overdue_refunds=0,
        overdue_refunds_fen=0,
        open_disputes=0,
        lessons_week=20,
        lessons_baseline=80,
        baseline_days=28,
        lessons_week_percent=100,
        outflow_fen=0,
        outflow_percent=0,
        failed_payouts=0,
        open_breaks=0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _grade(world: World, institution: str, day: date) -> RiskGrade:
    with world.ledger.sessions.begin() as session:
        found = session.get(Institution, institution)
        assert found is not None
        graded, _ = grade_institution(session, world.ctx, found, day)
        assert graded is not None
        session.expunge(graded)
        return graded


def _rules(grade: RiskGrade) -> dict[str, object]:
    return {r["rule"]: r["value"] for r in grade.reasons}


def _next_morning(world: World, day: int) -> None:
    world.set_clock(shanghai(2026, SEP, day + 1, 2))


# --- the rules, one by one -----------------------------------------------------------------------


def test_every_rule_of_the_profile_is_known_to_the_grader() -> None:
    assert set(RULES) == set(RISK_RULES) == {name for name, _ in NATIONAL.rules}


@pytest.mark.parametrize("name", sorted(RISK_RULES))
def test_each_rule_fires_at_its_threshold_and_not_short_of_it(name: str) -> None:
    spec = RULES[name]
    threshold = NATIONAL.rule(name).threshold
    if spec.comparison == ">=":
        fires, quiet = threshold, threshold - 1
    elif spec.comparison == "<=":
        fires, quiet = threshold, threshold + 1
    else:  # "<": coverage must be at least the threshold
        fires, quiet = threshold - 1, threshold
    fired = assess(_quiet(**{spec.signal: fires}), NATIONAL)
    assert name in fired.rules
    reason = next(r for r in fired.reasons if r["rule"] == name)
    assert reason == {
        "rule": name,
        "value": fires,
        "threshold": threshold,
        "comparison": spec.comparison,
        "unit": spec.unit,
        "points": NATIONAL.rule(name).points,
    }
    assert name not in assess(_quiet(**{spec.signal: quiet}), NATIONAL).rules


def test_a_quiet_institution_is_graded_a_with_no_reasons() -> None:
    assessed = assess(_quiet(), NATIONAL)
    assert (assessed.grade, assessed.score, assessed.reasons) == (Grade.A, 0, [])


def test_signals_without_enough_history_fire_nothing() -> None:
    assessed = assess(_quiet(lessons_week_percent=None, coverage_percent=None), NATIONAL)
    assert assessed.rules == []


@pytest.mark.parametrize(
    ("status", "rule"), [("frozen", "status_frozen"), ("winding_down", "status_winding_down")]
)
def test_a_frozen_or_winding_down_institution_is_red(status: str, rule: str) -> None:
    assessed = assess(_quiet(status=status), NATIONAL)
    assert assessed.rules == [rule]
    assert assessed.grade is Grade.D


def test_the_score_falls_into_the_grades_at_their_boundaries() -> None:
    # refund_share (20) = B; + payouts_failed (10) still B; + refund_surge (30) = 60: C
    assert assess(_quiet(refund_share_percent=10), NATIONAL).grade is Grade.B
    assert assess(_quiet(refund_share_percent=10, failed_payouts=1), NATIONAL).score == 30
    assert assess(_quiet(refund_share_percent=25), NATIONAL).grade is Grade.C
    # + a halving of the lessons (20) = 70: D
    assert (
        assess(_quiet(refund_share_percent=25, lessons_week_percent=50), NATIONAL).grade is Grade.D
    )


def test_an_academic_licence_weighs_half_again() -> None:
    plain = assess(_quiet(refund_share_percent=25), NATIONAL)
    academic = assess(_quiet(refund_share_percent=25, licence="academic"), NATIONAL)
    assert (plain.score, plain.grade) == (50, Grade.C)
    assert (academic.score, academic.grade) == (75, Grade.D)
    assert academic.reasons[-1] == {
        "rule": "academic_licence",
        "value": "academic",
        "threshold": 150,
        "comparison": "x%",
        "unit": "percent",
        "points": 25,
    }
    # nothing fired: the licence alone adds nothing
    assert assess(_quiet(licence="academic"), NATIONAL).reasons == []


# --- worked examples from the ledger -----------------------------------------------------------


def test_refund_requests_of_a_tenth_of_the_liability_fire_refund_share(world: World) -> None:
    # 20 lessons at ¥150 = ¥3,000 owed; asking 2 lessons back (¥300) is 10%, 1 lesson is 5%.
    first = world.paid_contract(lessons=20)
    world.request_refund(first, 1)
    _next_morning(world, 1)
    day1 = _grade(world, world.school, date(2026, SEP, 1))
    assert day1.signals["refund_share_percent"] == 5
    assert day1.grade is Grade.A
    assert day1.reasons == []
    world.request_refund(first, 1)
    _next_morning(world, 2)
    day2 = _grade(world, world.school, date(2026, SEP, 2))
    assert day2.signals["refunds_fen"] == 2 * LESSON
    assert day2.signals["liability_fen"] == 20 * LESSON
    assert _rules(day2) == {"refund_share": 10}
    assert day2.grade is Grade.B


def test_an_approved_refund_still_counts_against_what_was_owed(world: World) -> None:
    # approved: its ¥750 left the liability (¥2,250 remain), so the share is 750 / 3,000 = 25%
    contract = world.paid_contract(lessons=20)
    world.approve(world.request_refund(contract, 5))
    _next_morning(world, 1)
    graded = _grade(world, world.school, date(2026, SEP, 1))
    assert graded.signals["liability_fen"] == 15 * LESSON
    assert _rules(graded) == {"refund_share": 25, "refund_surge": 25}
    assert (graded.score, graded.grade) == (50, Grade.C)


def test_the_same_refunds_at_an_academic_institution_make_red(world: World) -> None:
    contract = world.paid_contract(world.academy, lessons=20, unit=5_000, class_size=20)
    world.approve(world.request_refund(contract, 5))
    _next_morning(world, 1)
    graded = _grade(world, world.academy, date(2026, SEP, 1))
    assert (graded.score, graded.grade) == (75, Grade.D)
    assert list(_rules(graded)) == ["refund_share", "refund_surge", "academic_licence"]


def test_a_refund_unpaid_past_its_deadline_is_overdue(world: World) -> None:
    # approved on 1 Sep after the start: the bank must pay within 15 calendar days (by 16 Sep)
    contract = world.paid_contract(lessons=20)
    refund = world.approve(world.request_refund(contract, 1))
    assert refund.pay_by is not None
    last_day = world.ctx.local_date(refund.pay_by - timedelta(microseconds=1))
    world.set_clock(shanghai(2026, SEP, 20, 2))
    before = _grade(world, world.school, last_day - timedelta(days=1))
    assert before.signals["overdue_refunds"] == 0
    assert "refunds_overdue" not in _rules(before)
    after = _grade(world, world.school, last_day)
    assert (after.signals["overdue_refunds"], after.signals["overdue_refunds_fen"]) == (1, LESSON)
    assert _rules(after)["refunds_overdue"] == 1
    assert after.grade is Grade.C


def test_three_open_disputes_fire_and_a_resolved_one_no_longer_counts(world: World) -> None:
    contract = world.paid_contract(lessons=20)
    reported = world.report(contract, 3)
    for lesson in reported[:2]:
        world.do(lessons.dispute_lesson, parent_id=world.parent, lesson_id=lesson.id, reason="no")
    _next_morning(world, 1)
    assert _grade(world, world.school, date(2026, SEP, 1)).signals["open_disputes"] == 2
    world.do(lessons.dispute_lesson, parent_id=world.parent, lesson_id=reported[2].id, reason="no")
    _next_morning(world, 2)
    day2 = _grade(world, world.school, date(2026, SEP, 2))
    assert _rules(day2) == {"disputes_open": 3}
    world.do(lessons.withdraw_lesson, institution_id=world.school, lesson_id=reported[0].id)
    _next_morning(world, 3)
    assert "disputes_open" not in _rules(_grade(world, world.school, date(2026, SEP, 3)))


def test_a_fifth_of_the_liability_leaving_in_a_day_fires_outflow_share(world: World) -> None:
    # ¥3,000 owed at the start of 2 Sep; a refund of ¥600 paid that day is 20% of it
    contract = world.paid_contract(lessons=20)
    world.set_clock(shanghai(2026, SEP, 2, 10))
    refund = world.approve(world.request_refund(contract, 4))
    world.do(refunds.pay_refund, bank_id=world.bank, refund_id=refund.id, bank_reference="RF-1")
    _next_morning(world, 2)
    graded = _grade(world, world.school, date(2026, SEP, 2))
    assert graded.signals["outflow_fen"] == 4 * LESSON
    assert _rules(graded)["outflow_share"] == 20


def test_a_bounced_payout_fires_payouts_failed_for_the_look_back(world: World) -> None:
    contract = world.paid_contract(lessons=20)
    for lesson in world.report(contract, 2):
        world.confirm(lesson.id)
    world.set_clock(shanghai(2026, SEP, 2, 2))
    world.settle()
    with world.read() as session:
        payout = session.scalars(select(Payout)).one()
    world.do(
        payouts.fail_payout,
        bank_id=world.bank,
        payout_id=payout.id,
        reason="account closed",
        bank_reference="RTN-1",
    )
    assert world.get(Payout, payout.id).status is PayoutStatus.FAILED
    _next_morning(world, 2)
    assert _rules(_grade(world, world.school, date(2026, SEP, 2))) == {"payouts_failed": 1}
    world.set_clock(shanghai(2026, 10, 3, 2))
    # 30 days later the bounce has left the look-back window (2 Sep .. 1 Oct is the last one)
    assert _rules(_grade(world, world.school, date(2026, 10, 1))) == {"payouts_failed": 1}
    assert _grade(world, world.school, date(2026, 10, 2)).reasons == []


def test_escrow_short_of_the_liability_after_an_unrecovered_advance_fires_coverage(
    world: World,
) -> None:
    # 7.5% of ¥3,000 (¥225) was advanced and paid out; escrow holds ¥2,775 for ¥3,000 - ¥225
    contract = world.paid_contract(world.advance, lessons=20)
    world.pay_out_releasable(world.advance)
    _next_morning(world, 2)
    whole = _grade(world, world.advance, date(2026, SEP, 2))
    assert (whole.signals["escrow_fen"], whole.signals["advance_fen"]) == (277_500, 22_500)
    assert whole.signals["coverage_percent"] == 100
    assert "coverage_short" not in _rules(whole)
    # half the lessons refunded: ¥1,500 owed back, ¥112.50 of advance due and nothing to
    # recover it from, so ¥1,275 of free escrow stands against ¥1,500 - ¥112.50 still owed
    world.approve(world.request_refund(contract, 10))
    _next_morning(world, 3)
    short = _grade(world, world.advance, date(2026, SEP, 3))
    assert short.signals["owed_out_fen"] == 150_000
    assert short.signals["coverage_percent"] == 127_500 * 100 // 138_750 == 91
    assert _rules(short)["coverage_short"] == 91
    assert short.grade is Grade.D


def _write_profile(world: World, name: str, replacements: dict[str, str]) -> str:
    """A deployment profile derived from the national one (read when first used)."""
    text = (
        (POLICY_DIR / "national.toml")
        .read_text()
        .replace('name = "national"', f'name = "{name}"', 1)
    )
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    folder = world.ledger.settings.policy_dir
    assert folder is not None
    Path(folder, f"{name}.toml").write_text(text)
    return world.do(
        parties.register_institution,
        name=f"{name} school",
        licence=LicenceType.NON_ACADEMIC,
        district="haishu",
        bank_id=world.bank,
        escrow_account=f"ESC-{name}",
        settlement_account=f"SET-{name}",
        is_new=False,
        risk_deposit_fen=0,
        policy=name,
        actor="admin:tests",
    ).id


def test_a_liability_at_the_profiles_size_fires_liability_large(world: World) -> None:
    # a profile whose "large" is ¥3,000: one contract of 20 lessons at ¥150 reaches it
    small = _write_profile(
        world,
        "small-town",
        {"liability_large = { threshold = 100000000,": "liability_large = { threshold = 300000,"},
    )
    world.paid_contract(small, lessons=19)
    _next_morning(world, 1)
    assert _grade(world, small, date(2026, SEP, 1)).reasons == []
    world.paid_contract(small, lessons=1, subject="chess")
    _next_morning(world, 2)
    graded = _grade(world, small, date(2026, SEP, 2))
    assert _rules(graded) == {"liability_large": 300_000}
    assert graded.policy == "small-town"


def test_a_day_of_outflows_at_the_profiles_amount_fires_outflow_daily(world: World) -> None:
    quiet_share = "outflow_share = { threshold = 20, points = 20 }"
    small = _write_profile(
        world,
        "small-outflow",
        {
            "outflow_daily = { threshold = 100000000,": "outflow_daily = { threshold = 30000,",
            quiet_share: "outflow_share = { threshold = 1000, points = 20 }",
        },
    )
    contract = world.paid_contract(small, lessons=20)
    refund = world.approve(world.request_refund(contract, 2))
    world.do(refunds.pay_refund, bank_id=world.bank, refund_id=refund.id, bank_reference="RF-9")
    _next_morning(world, 1)
    graded = _grade(world, small, date(2026, SEP, 1))
    assert graded.signals["outflow_fen"] == 30_000
    assert "outflow_daily" in _rules(graded)


def test_open_reconciliation_breaks_fire_breaks_open(world: World) -> None:
    reconcile = pytest.importorskip("settlement.reconcile")
    with world.read() as session:
        assert open_breaks(session, world.school) == 0
    account = world.get(Institution, world.school).escrow_account
    statement = (  # the bank shows ¥1.00 the ledger never received
        "account,currency,booking_date,direction,amount,bank_reference,end_to_end_id,remittance\n"
        f"{account},CNY,2026-09-01,OPBD,0,,,\n{account},CNY,2026-09-01,CRDT,1.00,X-1,,\n"
        f"{account},CNY,2026-09-01,CLBD,1.00,,,\n"
    )
    world.set_clock(shanghai(2026, SEP, 2, 10))  # 1 Sep's statement, once 1 Sep has ended
    world.do(reconcile.import_statement, bank_id=world.bank, data=statement.encode())
    with world.read() as session:
        found = open_breaks(session, world.school)
    assert found >= 1
    _next_morning(world, 2)
    assert _grade(world, world.school, date(2026, SEP, 1)).reasons == []  # imported later
    graded = _grade(world, world.school, date(2026, SEP, 2))
    assert graded.signals["open_breaks"] == found
    assert _rules(graded) == {"breaks_open": found}


def test_status_is_read_as_of_the_date(world: World) -> None:
    world.paid_contract(lessons=20)
    world.set_clock(shanghai(2026, SEP, 2, 10))
    world.freeze(world.school)
    world.set_clock(shanghai(2026, SEP, 4, 2))
    before = _grade(world, world.school, date(2026, SEP, 1))
    assert before.signals["status"] == "active"
    assert before.grade is Grade.A
    frozen = _grade(world, world.school, date(2026, SEP, 2))
    assert _rules(frozen) == {"status_frozen": "frozen"}


# --- the classic collapse ------------------------------------------------------------------------


def test_lessons_stop_while_refund_requests_rise_and_the_grade_turns_red_that_day(
    world: World,
) -> None:
    """Five packages taught three lessons a day for three weeks; from 22 September nothing is
    taught. Parents ask for the rest back on 23 and 24 September: yellow, then orange. On 25
    September the week's lessons are down to 42% of the usual week: red, the day before anyone
    would notice in a monthly report."""
    children = [
        world.do(parties.register_student, parent_id=world.parent, name=f"孩子{i}", actor="admin:t")
        for i in range(5)
    ]
    contracts = [world.paid_contract(lessons=20, student=child.id) for child in children]
    grades: dict[int, RiskGrade] = {}
    taught = {c: 0 for c in contracts}
    for day in range(1, 26):
        if day <= 21:
            world.set_clock(shanghai(2026, SEP, day, 19))
            for k in range(3):
                contract = contracts[(day + k) % 5]
                world.report(contract)
                taught[contract] += 1
        if day in (23, 24):
            world.set_clock(shanghai(2026, SEP, day, 10))
            contract = contracts[day - 23]
            world.request_refund(contract, 20 - taught[contract])
        _next_morning(world, day)
        report = grade_all(world.ledger.sessions, world.ctx)
        assert report.business_date == date(2026, SEP, day)
        grades[day] = next(g for g in report.graded if g.institution_id == world.school)
    letters = "".join(grades[d].grade.value for d in range(1, 26))
    assert letters == "A" * 22 + "BCD"
    assert grades[24].signals["lessons_week_percent"] > 50  # not yet a drop: orange for refunds
    assert list(_rules(grades[25])) == ["refund_share", "refund_surge", "lessons_drop"]
    assert grades[25].signals["lessons_week_percent"] == 42
    with world.read() as session:
        alerts = list(session.scalars(select(RiskAlert).order_by(RiskAlert.raised_seq)))
    assert [(a.business_date.day, a.from_grade, a.to_grade) for a in alerts] == [
        (24, Grade.B, Grade.C),
        (25, Grade.C, Grade.D),
    ]


# --- history, idempotency, alerts --------------------------------------------------------------


def _entries(world: World, kind: str) -> int:
    with world.read() as session:
        return int(
            session.scalar(select(func.count()).select_from(LogEntry).where(LogEntry.type == kind))
            or 0
        )


def test_grading_a_date_again_changes_nothing(world: World) -> None:
    contract = world.paid_contract(lessons=20)
    _next_morning(world, 1)
    first = grade_all(world.ledger.sessions, world.ctx)
    assert {g.institution_id for g in first.graded} == {
        world.school,
        world.academy,
        world.beijing,
        world.advance,
    }
    entries = _entries(world, GRADED_EVENT)
    assert entries == 4
    world.approve(world.request_refund(contract, 10))  # after the date: not part of its grade
    again = grade_all(world.ledger.sessions, world.ctx, date(2026, SEP, 1))
    assert again.graded == []
    assert {g.id for g in again.existing} == {g.id for g in first.graded}
    assert _entries(world, GRADED_EVENT) == entries
    with world.read() as session:
        count = session.scalar(select(func.count()).select_from(RiskGrade))
    assert count == 4


def test_a_date_that_has_not_ended_is_refused_and_one_before_registration_is_skipped(
    world: World,
) -> None:
    with pytest.raises(InvalidRequest, match="has not ended"):
        _grade(world, world.school, date(2026, SEP, 1))
    assert grade_all(world.ledger.sessions, world.ctx, date(2026, 8, 31)).graded == []


def test_the_log_entry_names_the_grade_and_the_rules(world: World) -> None:
    import json

    contract = world.paid_contract(lessons=20)
    world.approve(world.request_refund(contract, 5))
    _next_morning(world, 1)
    graded = _grade(world, world.school, date(2026, SEP, 1))
    with world.read() as session:
        body = session.scalar(select(LogEntry.body).where(LogEntry.seq == graded.seq))
    assert body is not None
    entry = json.loads(body)
    assert entry["type"] == GRADED_EVENT
    assert entry["actor"] == "system"
    payload = entry["payload"]
    assert payload["institution"] == world.school
    assert payload["business_date"] == "2026-09-01"
    assert (payload["grade"], payload["score"]) == ("C", 50)
    assert payload["rules"] == ["refund_share", "refund_surge"]
    assert payload["alert"] is not None


def test_an_alert_is_raised_on_worsening_into_c_or_d_only_and_acknowledged_once(
    world: World,
) -> None:
    contract = world.paid_contract(lessons=20)
    world.approve(world.request_refund(contract, 5))  # C from the start
    world.set_clock(shanghai(2026, SEP, 2, 12))
    world.freeze(world.school)  # D
    world.set_clock(shanghai(2026, SEP, 3, 12))
    world.do(
        supervision.unfreeze,
        regulator_id=world.regulator,
        institution_id=world.school,
        reason="cleared",
    )
    world.set_clock(shanghai(2026, SEP, 5, 2))
    grades = [_grade(world, world.school, date(2026, SEP, d)).grade for d in (1, 2, 3, 4)]
    assert grades == [Grade.C, Grade.D, Grade.C, Grade.C]  # back to C is no alert
    with world.read() as session:
        alerts = list(session.scalars(select(RiskAlert).order_by(RiskAlert.raised_seq)))
    assert [(a.from_grade, a.to_grade) for a in alerts] == [(None, Grade.C), (Grade.C, Grade.D)]
    first = alerts[0]
    assert first.reasons[0]["rule"] == "refund_share"

    with pytest.raises(NotFound):  # the school is in haishu: another district answers NotFound
        world.do(
            acknowledge,
            regulator_id=_yinzhou_regulator(world),
            alert_id=first.id,
            note="not mine",
        )
    done = world.do(
        acknowledge, regulator_id=world.district_regulator, alert_id=first.id, note="visit booked"
    )
    assert done.acknowledged_by == f"regulator:{world.district_regulator}"
    assert done.acknowledged_at is not None
    assert _entries(world, ACKNOWLEDGED_EVENT) == 1
    with pytest.raises(InvalidState, match="acknowledged"):
        world.do(acknowledge, regulator_id=world.regulator, alert_id=first.id, note="again")
    assert _entries(world, ACKNOWLEDGED_EVENT) == 1


def _yinzhou_regulator(world: World) -> str:
    return world.do(
        parties.register_regulator, name="Yinzhou bureau", jurisdiction="yinzhou", actor="admin:t"
    ).id


def test_the_worker_grades_the_day_that_ended_after_settling(world: World) -> None:
    world.paid_contract(lessons=20)
    world.set_clock(shanghai(2026, SEP, 2, 2))
    Worker(world.ledger).settle_due()
    with world.read() as session:
        dates = set(session.scalars(select(RiskGrade.business_date)))
    assert dates == {date(2026, SEP, 1)}


# --- the [risk] table is validated like the rest of a profile ----------------------------------


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "grade_c_points = 40 ",
            "grade_c_points = 80 ",
            (
                r"risk\.grade_c_points must lie strictly between grade_b_points \(20\) and "
                r"grade_d_points \(70\), got 80"
            ),
        ),
        (
            "academic_weight_percent = 150 ",
            "academic_weight_percent = 90 ",
            r"risk\.academic_weight_percent must be an integer from 100 to 1000, got 90",
        ),
        (
            "refund_share = { threshold = 10,",
            "refund_share = { threshold = 101,",
            r"risk\.refund_share\.threshold must be an integer from 1 to 100, got 101",
        ),
        (
            "disputes_open = { threshold = 3, points = 10 }",
            "disputes_open = { threshold = 3, points = 71 }",
            r"risk\.disputes_open\.points must be an integer from 0 to 70, got 71",
        ),
        (
            "lessons_drop = { threshold = 50, points = 20 }",
            "lessons_dropped = { threshold = 50, points = 20 }",
            r"risk\.lessons_dropped is not a known key \(did you mean lessons_drop\?\)",
        ),
        (
            "breaks_open = { threshold = 1, points = 20 }",
            "",
            r"risk\.breaks_open is missing",
        ),
    ],
)
def test_a_broken_risk_table_is_refused_naming_the_key(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    from ledger.policy import PolicyError

    text = (POLICY_DIR / "national.toml").read_text()
    assert old in text, old
    (tmp_path / "national.toml").write_text(text.replace(old, new, 1))
    with pytest.raises(PolicyError, match=f"^national.toml: {message}"):
        load_profile("national", tmp_path)
