"""Contracts under the regulation rules, and the receipts that pay for them."""

from datetime import date, timedelta
from pathlib import Path

import pytest

from ledger.accounts import AccountKind
from ledger.config import Settings
from ledger.entities import Contract, ContractStatus, LicenceType, PayerType, Receipt, ReceiptStatus
from ledger.errors import (
    BalanceMaxAmount,
    BalanceMaxLessons,
    BalanceMaxMonths,
    ContractNotAwaitingPayment,
    DuplicateBankReference,
    EarliestCollection,
    InstitutionNotActive,
    InvalidRequest,
    MaxAmount,
    MaxLessons,
    MaxMonths,
    NotFound,
    PriceCap,
    WrongAmount,
)
from ledger.escrow import contracts
from tests.escrow.world import LESSON, START, World


def test_a_signed_contract_waits_for_payment_and_moves_no_money(world: World) -> None:
    contract_id = world.contract(lessons=20, unit=LESSON)
    contract = world.get(Contract, contract_id)
    assert contract.status is ContractStatus.AWAITING_PAYMENT
    assert contract.total_fen == 300_000
    assert world.owed(contract_id) == 0
    assert world.escrow() == 0


def test_a_receipt_puts_the_prepayment_in_escrow_and_activates_the_contract(world: World) -> None:
    contract_id = world.paid_contract(lessons=20, unit=LESSON)
    assert world.get(Contract, contract_id).status is ContractStatus.ACTIVE
    assert world.escrow() == 300_000
    assert world.owed(contract_id) == 300_000
    assert world.acct(AccountKind.RELEASABLE) == 0


@pytest.mark.parametrize(
    ("lessons", "unit", "error", "detail"),
    [
        (61, 5_000, MaxLessons, "61 lessons requested; the limit is 60"),
        (34, LESSON, MaxAmount, "¥5,100.00 requested; the limit is ¥5,000.00"),
    ],
)
def test_one_charge_is_limited_in_lessons_and_amount(
    world: World, lessons: int, unit: int, error: type[Exception], detail: str
) -> None:
    with pytest.raises(error, match=detail) as refused:
        world.contract(lessons=lessons, unit=unit)
    assert refused.value.context["profile"] == "national"  # type: ignore[attr-defined]


def test_the_limits_themselves_are_allowed(world: World) -> None:
    world.contract(
        lessons=60, unit=8_333, end=date(2026, 11, 30)
    )  # 60 lessons, ¥4,999.80, 3 months


def test_one_charge_covers_at_most_three_months(world: World) -> None:
    world.contract(lessons=10, start=START, end=date(2026, 11, 30))
    with pytest.raises(MaxMonths, match="until 2026-11-30"):
        world.contract(lessons=10, start=START, end=date(2026, 12, 1), subject="music")


def test_a_large_charge_cannot_be_split_into_small_ones(world: World) -> None:
    world.contract(lessons=20, unit=LESSON)  # ¥3,000, awaiting payment still counts
    with pytest.raises(BalanceMaxAmount, match="undelivered balance would be ¥6,000.00"):
        world.contract(lessons=20, unit=LESSON, subject="music")


def test_undelivered_lessons_are_limited_per_subject(world: World) -> None:
    world.paid_contract(lessons=40, unit=5_000, subject="art")
    world.contract(lessons=40, unit=5_000, subject="chess")  # another subject is fine
    with pytest.raises(BalanceMaxLessons, match="61 undelivered art lessons; the limit is 60"):
        world.contract(lessons=21, unit=100, subject="art")


def test_prepaid_lessons_reach_at_most_three_months_ahead(world: World) -> None:
    world.contract(lessons=5, unit=1_000, start=START, end=date(2026, 10, 31))
    with pytest.raises(BalanceMaxMonths, match="2026-09-01 to 2026-12-15"):
        world.contract(
            lessons=5, unit=1_000, start=date(2026, 11, 1), end=date(2026, 12, 15), subject="go"
        )


def test_delivered_lessons_free_the_balance_for_a_new_charge(world: World) -> None:
    first = world.paid_contract(lessons=20, unit=LESSON)
    world.report(first, 10)
    world.contract(lessons=10, unit=LESSON, subject="music")  # ¥1,500 left + ¥1,500 new


@pytest.mark.parametrize(
    ("class_size", "minutes", "unit", "allowed"),
    [
        (8, 45, 6_600, True),  # ¥60 cap under 10 pupils, +10%
        (8, 45, 6_601, False),
        (20, 45, 5_500, True),  # ¥50 for 10-35
        (20, 45, 5_501, False),
        (36, 45, 4_400, True),  # ¥40 over 35
        (36, 45, 4_401, False),
        (20, 90, 11_000, True),  # a 90-minute lesson is capped at twice the 45-minute price
        (20, 90, 11_001, False),
    ],
)
def test_academic_prices_are_capped_by_class_size_in_ningbo(
    world: World, class_size: int, minutes: int, unit: int, allowed: bool
) -> None:
    def sign() -> str:
        return world.contract(
            world.academy, lessons=10, unit=unit, class_size=class_size, minutes=minutes
        )

    if allowed:
        sign()
    else:
        with pytest.raises(PriceCap, match="the cap with 10% tolerance"):
            sign()


def test_national_profile_has_no_price_cap(world: World) -> None:
    academic = world.institution("national", licence=LicenceType.ACADEMIC)
    world.contract(academic, lessons=10, unit=20_000, class_size=40)


def test_an_academic_course_needs_its_class_size(world: World) -> None:
    with pytest.raises(InvalidRequest, match="class size"):
        world.contract(world.academy, lessons=10, unit=4_000)


def test_beijing_collects_no_earlier_than_a_month_before_the_start(world: World) -> None:
    world.contract(world.beijing, lessons=10, start=date(2026, 10, 1))  # exactly a month ahead
    with pytest.raises(EarliestCollection, match="money may be collected from 2026-09-02"):
        world.contract(world.beijing, lessons=10, start=date(2026, 10, 2), subject="music")


def test_beijing_allows_an_early_renewal_when_20_or_fewer_lessons_remain(world: World) -> None:
    current = world.paid_contract(world.beijing, lessons=30, unit=5_000, end=date(2026, 11, 30))
    renewal = {"lessons": 10, "unit": 5_000, "start": date(2026, 11, 1), "end": date(2026, 11, 30)}
    with pytest.raises(EarliestCollection):
        world.contract(world.beijing, **renewal)  # type: ignore[arg-type]
    world.report(current, 10)  # 20 left
    world.contract(world.beijing, **renewal)  # type: ignore[arg-type]


def test_the_balance_period_counts_from_today_not_from_an_old_start(world: World) -> None:
    world.paid_contract(lessons=10, unit=1_000, start=START, end=date(2026, 11, 30))
    world.set_clock(world.now() + timedelta(days=61))  # 1 November
    world.contract(
        lessons=5, unit=1_000, start=date(2026, 11, 1), end=date(2027, 1, 31), subject="music"
    )


def test_a_frozen_institution_takes_no_new_contract(world: World) -> None:
    world.freeze(world.school)
    with pytest.raises(InstitutionNotActive, match="frozen"):
        world.contract()


def test_a_parent_cannot_sign_for_another_familys_student(world: World) -> None:
    with pytest.raises(NotFound):
        world.contract(student=world.other_student)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lessons": 0}, "lessons must be within 1..10000, got 0"),
        ({"unit": 0}, "unit price"),
        ({"end": START - timedelta(days=1)}, "ends"),
        ({"minutes": 0}, "lesson minutes must be within 1..480"),
    ],
)
def test_malformed_terms_are_refused(world: World, change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        world.contract(**change)  # type: ignore[arg-type]


def test_an_unpaid_contract_can_be_cancelled_once(world: World) -> None:
    contract_id = world.contract()
    world.do(contracts.cancel_contract, parent_id=world.parent, contract_id=contract_id)
    assert world.get(Contract, contract_id).status is ContractStatus.CANCELLED
    with pytest.raises(ContractNotAwaitingPayment):
        world.do(contracts.cancel_contract, parent_id=world.parent, contract_id=contract_id)


def test_a_receipt_of_the_wrong_amount_is_refused_and_changes_nothing(world: World) -> None:
    contract_id = world.contract(lessons=20, unit=LESSON)
    with pytest.raises(
        WrongAmount, match="¥2,999.99 received; the contract's prepayment is ¥3,000.00"
    ):
        world.do(
            contracts.book_receipt,
            bank_id=world.bank,
            contract_id=contract_id,
            amount_fen=299_999,
            bank_reference="X1",
            payer=PayerType.PARENT,
        )
    assert world.escrow() == 0
    assert world.get(Contract, contract_id).status is ContractStatus.AWAITING_PAYMENT


def test_a_receipt_for_a_contract_the_bank_does_not_hold_is_not_found(world: World) -> None:
    contract_id = world.contract()
    for bank, contract in ((world.other_bank, contract_id), (world.bank, "ctr_missing")):
        with pytest.raises(NotFound):
            world.do(
                contracts.book_receipt,
                bank_id=bank,
                contract_id=contract,
                amount_fen=300_000,
                bank_reference="X1",
                payer=PayerType.PARENT,
            )


def test_a_bank_reference_is_used_once(world: World) -> None:
    first, second = world.contract(), world.contract(subject="music", lessons=5)
    world.do(
        contracts.book_receipt,
        bank_id=world.bank,
        contract_id=first,
        amount_fen=300_000,
        bank_reference="SAME",
        payer=PayerType.PARENT,
    )
    with pytest.raises(DuplicateBankReference):
        world.do(
            contracts.book_receipt,
            bank_id=world.bank,
            contract_id=second,
            amount_fen=75_000,
            bank_reference="SAME",
            payer=PayerType.PARENT,
        )


def test_a_paid_contract_cannot_be_paid_twice(world: World) -> None:
    contract_id = world.paid_contract()
    with pytest.raises(ContractNotAwaitingPayment):
        world.pay(contract_id)
    assert world.escrow() == 300_000


def test_a_lenders_payment_is_not_booked_but_marked_for_return(world: World) -> None:
    contract_id = world.contract()
    outcome = world.do(
        contracts.book_receipt,
        bank_id=world.bank,
        contract_id=contract_id,
        amount_fen=300_000,
        bank_reference="LOAN-1",
        payer=PayerType.LENDER,
    )
    assert not outcome.booked
    assert world.get(Receipt, outcome.receipt.id).status is ReceiptStatus.RETURNED
    assert world.escrow() == 0
    assert world.get(Contract, contract_id).status is ContractStatus.AWAITING_PAYMENT
    world.pay(contract_id)  # the family pays itself afterwards
    assert world.escrow() == 300_000


def test_a_prepayment_releases_the_cost_advance_up_front(world: World) -> None:
    contract_id = world.paid_contract(world.advance, lessons=20, unit=14_995)
    # 299,900 × 7.5% = 22,492.5 -> 22,492 fen, rounded down in the parent's favour
    assert world.get(Contract, contract_id).advance_fen == 22_492
    assert world.acct(AccountKind.ADVANCE, world.advance) == 22_492
    assert world.acct(AccountKind.RELEASABLE, world.advance) == 22_492
    assert world.owed(contract_id) == 299_900
    assert world.escrow(world.advance) == 299_900


def test_a_frozen_institution_gets_no_advance_on_a_late_payment(world: World) -> None:
    contract_id = world.contract(world.advance, lessons=20, unit=LESSON)
    world.freeze(world.advance)
    world.pay(contract_id)
    assert world.acct(AccountKind.RELEASABLE, world.advance) == 0
    assert world.get(Contract, contract_id).advance_fen == 0


def test_a_broken_profile_stops_the_service_at_start_naming_the_key(
    settings: Settings, tmp_path: Path
) -> None:
    from ledger.policy import POLICY_DIR, PolicyError
    from ledger.runtime import Ledger

    folder = tmp_path / "broken"
    folder.mkdir()
    text = (
        (POLICY_DIR / "national.toml")
        .read_text()
        .replace("max_lessons = 60", "max_lessons = -3", 1)
    )
    (folder / "national.toml").write_text(text)
    with pytest.raises(PolicyError, match="national.toml: limits.max_lessons"):
        Ledger.open(settings.model_copy(update={"policy_dir": folder}), migrate=False)


def test_a_subject_spelt_differently_is_still_the_same_subject(world: World) -> None:
    world.paid_contract(lessons=40, unit=1_000, subject="Math")
    with pytest.raises(BalanceMaxLessons, match="61 undelivered math lessons"):
        world.contract(lessons=21, unit=100, subject=" math ")
    with pytest.raises(BalanceMaxLessons):
        world.contract(lessons=21, unit=100, subject="ＭＡＴＨ")  # full-width letters


@pytest.mark.parametrize(
    ("start", "end"),
    [(date(2027, 1, 31), date(2027, 4, 30)), (date(2026, 11, 30), date(2027, 2, 28))],
)
def test_a_course_from_a_month_end_may_run_to_the_month_end_three_months_later(
    world: World, start: date, end: date
) -> None:
    world.set_clock(world.now() + (start - START))
    world.contract(lessons=10, unit=1_000, start=start, end=end)


def test_a_profile_change_does_not_change_the_advance_of_a_signed_contract(world: World) -> None:
    from dataclasses import replace

    contract_id = world.contract(world.advance, lessons=20, unit=LESSON)
    policies = world.ctx.policies
    policies._cache["advance"] = replace(policies.get("advance"), advance_bp=5_000)  # type: ignore[attr-defined]
    world.pay(contract_id)
    assert world.get(Contract, contract_id).advance_fen == 22_500  # 7.5% as signed, not 50%


def test_risk_deposits_and_receipts_share_one_set_of_bank_references(world: World) -> None:
    world.do(
        contracts.lodge_risk_deposit,
        bank_id=world.bank,
        institution_id=world.school,
        amount_fen=100_000,
        bank_reference="DEP-1",
    )
    with pytest.raises(DuplicateBankReference):
        world.do(
            contracts.lodge_risk_deposit,
            bank_id=world.bank,
            institution_id=world.school,
            amount_fen=100_000,
            bank_reference="DEP-1",
        )
    with pytest.raises(DuplicateBankReference):
        world.do(
            contracts.book_receipt,
            bank_id=world.bank,
            contract_id=world.contract(),
            amount_fen=300_000,
            bank_reference="DEP-1",
            payer=PayerType.PARENT,
        )
    assert world.acct(AccountKind.RISK_DEPOSIT) == 100_000


def test_a_non_default_profile_that_is_broken_also_stops_the_start(
    settings: Settings, tmp_path: Path
) -> None:
    from ledger.policy import POLICY_DIR, PolicyError
    from ledger.runtime import Ledger

    folder = tmp_path / "extra"
    folder.mkdir()
    text = (
        (POLICY_DIR / "national.toml").read_text().replace('name = "national"', 'name = "city"', 1)
    )
    (folder / "city.toml").write_text(text.replace("basis_points = 0", "basis_points = 10001", 1))
    with pytest.raises(PolicyError, match="city.toml: advance.basis_points"):
        Ledger.open(settings.model_copy(update={"policy_dir": folder}), migrate=False)


def _terms(world: World, **change: object) -> contracts.Terms:
    base = {
        "institution_id": world.school,
        "student_id": world.student,
        "subject": "art",
        "course_name": "art",
        "lessons": 10,
        "unit_price_fen": 1_000,
        "start_date": START,
        "end_date": START + timedelta(days=30),
    }
    base.update(change)
    return contracts.Terms(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"subject": None},
        {"subject": "art\x00"},
        {"course_name": "x" * 201},
        {"lessons": "3"},
        {"lessons": 2.0},
        {"lessons": True},
        {"unit_price_fen": 10**30},
        {"start_date": date(9999, 11, 1), "end_date": date(9999, 12, 1)},
        {"start_date": "2026-09-01"},
        {"class_size": 10**12},
    ],
)
def test_malformed_contract_input_is_an_invalid_request(
    world: World, change: dict[str, object]
) -> None:
    with pytest.raises(InvalidRequest):
        world.do(contracts.create_contract, parent_id=world.parent, terms=_terms(world, **change))


@pytest.mark.parametrize(
    ("field", "value"),
    [("amount_fen", -1), ("amount_fen", 1.5), ("payer", "bogus"), ("bank_reference", None)],
)
def test_malformed_receipts_are_invalid_requests_even_from_a_lender(
    world: World, field: str, value: object
) -> None:
    kwargs: dict[str, object] = {
        "bank_id": world.bank,
        "contract_id": world.contract(),
        "amount_fen": 300_000,
        "bank_reference": "R-1",
        "payer": PayerType.LENDER,
    }
    kwargs[field] = value
    with pytest.raises(InvalidRequest):
        world.do(contracts.book_receipt, **kwargs)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", None),
        ("licence", "foo"),
        ("policy", "shanghai"),
        ("district", "a b"),
        ("is_new", "no"),
        ("risk_deposit_fen", -1),
    ],
)
def test_malformed_institution_registration_is_an_invalid_request(
    world: World, field: str, value: object
) -> None:
    from ledger.escrow import parties

    kwargs: dict[str, object] = {
        "name": "x",
        "licence": "academic",
        "district": "d",
        "bank_id": world.bank,
        "escrow_account": "E",
        "settlement_account": "S",
        "is_new": False,
        "actor": "admin:a",
    }
    kwargs[field] = value
    with pytest.raises(InvalidRequest):
        world.do(parties.register_institution, **kwargs)
