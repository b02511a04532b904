"""What each party reads: summaries, liability, and balances at a point in time."""

from datetime import timedelta

from ledger.accounts import AccountKind
from ledger.entities import Contract, Institution, LessonStatus
from ledger.escrow import queries
from ledger.escrow.contracts import contract_account, institution_account
from ledger.money import Money
from tests.escrow.world import LESSON, World


def test_a_parent_sees_each_contract_with_remaining_lessons_and_value(world: World) -> None:
    first = world.paid_contract(lessons=10, unit=LESSON)
    world.report(first, 3)
    second = world.contract(lessons=4, unit=10_000, subject="music")
    world.paid_contract(
        lessons=2, unit=LESSON, parent=world.other_parent, student=world.other_student
    )
    with world.read() as session:
        seen = {s.contract.id: s for s in queries.parent_contracts(session, world.parent)}
    assert set(seen) == {first, second}
    assert (seen[first].lessons_remaining, seen[first].value_remaining) == (7, Money(105_000))
    assert (seen[second].lessons_remaining, seen[second].value_remaining) == (4, Money(0))


def test_a_contract_lists_every_lesson_with_its_status(world: World) -> None:
    contract_id = world.paid_contract()
    first, second = world.report(contract_id, 2)
    world.confirm(first.id)
    with world.read() as session:
        listed = queries.contract_lessons(session, session.get(Contract, contract_id))  # type: ignore[arg-type]
    assert [(x.id, x.status) for x in listed] == [
        (first.id, LessonStatus.CONFIRMED),
        (second.id, LessonStatus.REPORTED),
    ]


def test_outstanding_liability_is_the_value_of_undelivered_lessons(world: World) -> None:
    a = world.paid_contract(lessons=10, unit=LESSON)
    world.report(a, 4)
    world.paid_contract(
        lessons=5, unit=LESSON, parent=world.other_parent, student=world.other_student
    )
    with world.read() as session:
        school = session.get(Institution, world.school)
        assert school is not None
        assert queries.institution_liability(session, school) == Money(6 * LESSON + 5 * LESSON)
        accounts = queries.institution_accounts(session, school)
    assert accounts[AccountKind.ESCROW] == Money(15 * LESSON)
    assert accounts[AccountKind.PENDING] == Money(4 * LESSON)
    assert accounts[AccountKind.PAYABLE] == Money(0)


def test_any_balance_can_be_read_as_of_a_seq_or_a_time(world: World) -> None:
    contract_id = world.paid_contract(lessons=10, unit=LESSON)
    paid_at = world.now()
    with world.read() as session:
        seq_paid = world.ledger.log.head(session).size - 1
    world.advance_clock(hours=1)
    world.report(contract_id, 2)
    world.advance_clock(hours=1)
    world.report(contract_id, 1)
    code = contract_account(contract_id)
    pending = institution_account(AccountKind.PENDING, world.school)
    with world.read() as session:
        assert queries.balance_as_of(session, code, seq=seq_paid) == Money(150_000)
        assert queries.balance_as_of(session, code, seq=seq_paid - 1) == Money(0)
        assert queries.balance_as_of(session, code, at=paid_at) == Money(150_000)
        assert queries.balance_as_of(session, code, at=paid_at + timedelta(minutes=90)) == Money(
            120_000
        )
        assert queries.balance_as_of(session, pending, at=world.now()) == Money(3 * LESSON)
        assert queries.balance_as_of(session, "escrow:ins_none", seq=5) == Money(0)
