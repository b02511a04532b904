"""Personal data stays out of the log: ids and salted commitments in, erasure keeps proofs valid."""

import hashlib
import json

import pytest
from sqlalchemy import select

from ledger import privacy
from ledger.log import Event
from ledger.models import LogEntry, PersonalData
from ledger.runtime import Ledger
from ledger.verify import verify_database


def _register(ledger: Ledger, subject: str, name: str, phone: str) -> dict[str, str]:
    """What a service registering a parent does: store the person, log only id and commitments."""
    with ledger.sessions.begin() as session:
        data = privacy.record(session, ledger.clock, subject, name=name, phone=phone)
        committed = privacy.commitments(data)
        ledger.log.append(
            session, Event("test.registered", "system", {"subject": subject, **committed})
        )
        return committed


def test_the_log_holds_the_id_and_commitments_never_the_name_or_phone(ledger: Ledger) -> None:
    committed = _register(ledger, "par-1", "王小明", "13800138000")
    with ledger.readers() as session:
        body = session.scalars(select(LogEntry.body).where(LogEntry.seq == 1)).one()
        salt = session.get(PersonalData, "par-1").salt  # type: ignore[union-attr]
    assert "王小明".encode() not in body
    assert b"13800138000" not in body
    assert json.loads(body)["payload"] == {"subject": "par-1", **committed}
    assert salt is not None
    assert committed["name"] == hashlib.sha256(salt + b"name\x00" + "王小明".encode()).hexdigest()
    assert privacy.opens(salt, "phone", "13800138000", committed["phone"])
    assert not privacy.opens(salt, "phone", "13800138001", committed["phone"])


def test_two_people_with_the_same_name_get_different_commitments(ledger: Ledger) -> None:
    first = _register(ledger, "par-1", "李娜", "1")
    second = _register(ledger, "par-2", "李娜", "2")
    assert first["name"] != second["name"]


def test_erasure_clears_data_and_salt_logs_the_fact_and_keeps_the_log_valid(
    ledger: Ledger,
) -> None:
    _register(ledger, "par-1", "王小明", "13800138000")
    with ledger.sessions.begin() as session:
        erased = privacy.erase(session, ledger.log, "par-1", actor="regulator:edu-1")
    with ledger.readers() as session:
        data = session.get(PersonalData, "par-1")
        entry = session.get(LogEntry, erased.seq)
    assert data is not None
    assert (data.name, data.phone, data.salt) == (None, None, None)
    assert data.erased_at == erased.time
    assert entry is not None
    assert json.loads(entry.body)["payload"] == {"subject": "par-1"}
    assert json.loads(entry.body)["type"] == privacy.ERASED_TYPE
    assert verify_database(ledger.engine).ok


def test_erasure_happens_once_and_only_for_known_people(ledger: Ledger) -> None:
    _register(ledger, "par-1", "王小明", "1")
    with ledger.sessions.begin() as session:
        privacy.erase(session, ledger.log, "par-1", actor="system")
    with pytest.raises(privacy.AlreadyErased), ledger.sessions.begin() as session:
        privacy.erase(session, ledger.log, "par-1", actor="system")
    with pytest.raises(privacy.SubjectNotFound), ledger.sessions.begin() as session:
        privacy.erase(session, ledger.log, "par-9", actor="system")


def test_an_erased_person_can_no_longer_be_committed_to(ledger: Ledger) -> None:
    _register(ledger, "par-1", "王小明", "1")
    with ledger.sessions.begin() as session:
        privacy.erase(session, ledger.log, "par-1", actor="system")
    with ledger.readers() as session:
        data = session.get(PersonalData, "par-1")
        assert data is not None
        with pytest.raises(privacy.AlreadyErased):
            privacy.commitments(data)


def test_subject_ids_must_be_opaque_and_unique(ledger: Ledger) -> None:
    with pytest.raises(privacy.InvalidSubject), ledger.sessions.begin() as session:
        privacy.record(session, ledger.clock, "王 小明", name="x", phone=None)
    _register(ledger, "par-1", "a", "1")
    with pytest.raises(privacy.SubjectExists), ledger.sessions.begin() as session:
        privacy.record(session, ledger.clock, "par-1", name="b", phone=None)
