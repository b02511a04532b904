"""Loading what a party may act on; anything outside its reach is ``NotFound``.

A parent reaches their own students and contracts, an institution its own contracts, lessons and
refunds, a bank the institutions whose escrow it holds, a regulator the institutions of its
jurisdiction. Another tenant's resource answers exactly like a missing one.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from ledger.entities import Contract, Institution, Lesson, Refund, Regulator, Student
from ledger.errors import NotFound
from ledger.escrow.parties import ALL_DISTRICTS


def institution(session: Session, institution_id: str) -> Institution:
    found = session.get(Institution, institution_id)
    if found is None:
        raise NotFound(f"no institution {institution_id}")
    return found


def student_of(session: Session, parent_id: str, student_id: str) -> Student:
    found = session.get(Student, student_id)
    if found is None or found.parent_id != parent_id:
        raise NotFound(f"no student {student_id}")
    return found


def contract_of_parent(session: Session, parent_id: str, contract_id: str) -> Contract:
    found = session.get(Contract, contract_id)
    if found is None or found.parent_id != parent_id:
        raise NotFound(f"no contract {contract_id}")
    return found


def contract_of_institution(session: Session, institution_id: str, contract_id: str) -> Contract:
    found = session.get(Contract, contract_id)
    if found is None or found.institution_id != institution_id:
        raise NotFound(f"no contract {contract_id}")
    return found


def contract_for_bank(session: Session, bank_id: str, contract_id: str) -> Contract:
    found = session.get(Contract, contract_id)
    if found is None or institution(session, found.institution_id).bank_id != bank_id:
        raise NotFound(f"no contract {contract_id}")
    return found


def institution_for_bank(session: Session, bank_id: str, institution_id: str) -> Institution:
    found = session.get(Institution, institution_id)
    if found is None or found.bank_id != bank_id:
        raise NotFound(f"no institution {institution_id}")
    return found


def regulator(session: Session, regulator_id: str) -> Regulator:
    found = session.get(Regulator, regulator_id)
    if found is None:
        raise NotFound(f"no regulator {regulator_id}")
    return found


def supervises(regulator: Regulator, institution: Institution) -> bool:
    return regulator.jurisdiction in (ALL_DISTRICTS, institution.district)


def institution_for_regulator(
    session: Session, regulator_id: str, institution_id: str
) -> Institution:
    found = session.get(Institution, institution_id)
    if found is None or not supervises(regulator(session, regulator_id), found):
        raise NotFound(f"no institution {institution_id}")
    return found


def lesson_of_parent(session: Session, parent_id: str, lesson_id: str) -> tuple[Lesson, Contract]:
    found = session.get(Lesson, lesson_id)
    if found is None:
        raise NotFound(f"no lesson {lesson_id}")
    contract = session.get(Contract, found.contract_id)
    if contract is None or contract.parent_id != parent_id:
        raise NotFound(f"no lesson {lesson_id}")
    return found, contract


def lesson_of_institution(session: Session, institution_id: str, lesson_id: str) -> Lesson:
    found = session.get(Lesson, lesson_id)
    if found is None or found.institution_id != institution_id:
        raise NotFound(f"no lesson {lesson_id}")
    return found


def refund_of_institution(session: Session, institution_id: str, refund_id: str) -> Refund:
    found = session.get(Refund, refund_id)
    if found is None or found.institution_id != institution_id:
        raise NotFound(f"no refund {refund_id}")
    return found


def refund_for_bank(session: Session, bank_id: str, refund_id: str) -> Refund:
    found = session.get(Refund, refund_id)
    if found is None or institution(session, found.institution_id).bank_id != bank_id:
        raise NotFound(f"no refund {refund_id}")
    return found
