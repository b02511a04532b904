"""Personal data: kept outside the log, referred to there by opaque ids and salted commitments.

A name or phone number never enters a log entry. Where an entry must bind to one (a contract names
its parent), it carries the person's ``subject_id`` and, if needed, ``commitment(salt, field, value)``
= SHA-256(salt || field || 0x00 || value). Anyone shown the value and the salt can check it against
the log; nobody can recover it from the log alone, since the salt is 16 random bytes per person.

Erasure clears the values and the salt, and is itself logged (without any personal data): every
hash and proof in the log stays valid, and the commitment can no longer be tested against guesses.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

from sqlalchemy.orm import Session

from ledger.clock import Clock
from ledger.errors import LedgerError
from ledger.log import Appended, Event, EventLog
from ledger.models import PersonalData

SALT_BYTES = 16
SUBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ERASED_TYPE = "personal_data.erased"


class InvalidSubject(LedgerError):
    """A subject id must be opaque: letters, digits, ``_.-``, at most 64 characters."""

    status = 422
    code = "invalid-subject"
    title = "Invalid subject id"


class SubjectNotFound(LedgerError):
    """No personal data is held under this subject id."""

    status = 404
    code = "subject-not-found"
    title = "No such person"


class SubjectExists(LedgerError):
    """Personal data is already held under this subject id."""

    status = 409
    code = "subject-exists"
    title = "Person already recorded"


class AlreadyErased(LedgerError):
    """The person's data was erased before; erasure happens once."""

    status = 409
    code = "already-erased"
    title = "Personal data already erased"


def commitment(salt: bytes, field: str, value: str) -> str:
    """The hex SHA-256 commitment to ``value`` of ``field`` under a person's salt."""
    return hashlib.sha256(salt + field.encode() + b"\x00" + value.encode("utf-8")).hexdigest()


def opens(salt: bytes, field: str, value: str, committed: str) -> bool:
    """True when ``value`` is what ``committed`` commits to (constant-time comparison)."""
    return hmac.compare_digest(commitment(salt, field, value), committed)


def record(
    session: Session, clock: Clock, subject_id: str, *, name: str | None, phone: str | None
) -> PersonalData:
    """Store a person's data under a fresh salt. The caller logs the event that introduces them."""
    if not SUBJECT_ID.match(subject_id):
        raise InvalidSubject(f"subject id {subject_id!r} is not an opaque id")
    if session.get(PersonalData, subject_id) is not None:
        raise SubjectExists(f"personal data for {subject_id} is already recorded")
    data = PersonalData(
        subject_id=subject_id,
        name=name,
        phone=phone,
        salt=os.urandom(SALT_BYTES),
        created_at=clock.now(),
        erased_at=None,
    )
    session.add(data)
    session.flush()
    return data


def commitments(data: PersonalData) -> dict[str, str]:
    """Commitments to every field a person has, for a log payload."""
    if data.salt is None:
        raise AlreadyErased(f"personal data of {data.subject_id} was erased")
    values = {"name": data.name, "phone": data.phone}
    return {
        field: commitment(data.salt, field, value)
        for field, value in values.items()
        if value is not None
    }


def erase(session: Session, log: EventLog, subject_id: str, *, actor: str) -> Appended:
    """Erase a person's data and salt, and log that it happened (one entry, no personal data)."""
    log.lock(session)
    data = session.get(PersonalData, subject_id, with_for_update=True)
    if data is None:
        raise SubjectNotFound(f"no personal data is held for {subject_id}")
    if data.erased_at is not None:
        raise AlreadyErased(
            f"personal data of {subject_id} was erased on {data.erased_at:%Y-%m-%d}"
        )
    appended = log.append(session, Event(ERASED_TYPE, actor, {"subject": subject_id}))
    data.name = data.phone = None
    data.salt = None
    data.erased_at = appended.time
    session.flush()
    return appended
