"""Checking what callers hand to the escrow operations.

The API validates shapes first, but the services are the last line: any value that is not what an
operation needs becomes an ``InvalidRequest`` naming the field, never a TypeError deep inside, a
database error on PostgreSQL that SQLite would have swallowed, or a date that overflows.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime
from enum import StrEnum
from typing import TypeVar

from ledger.errors import InvalidRequest
from ledger.money import JSON_SAFE_MAX

E = TypeVar("E", bound=StrEnum)

CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
# Business dates are bounded so that date arithmetic (months ahead, windows) cannot overflow.
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2099, 12, 31)


def text(value: object, what: str, *, limit: int = 200, required: bool = True) -> str | None:
    """Trimmed printable text of at most ``limit`` characters; None/blank only if not required."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidRequest(f"{what} is required")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be text")
    value = value.strip()
    if len(value) > limit:
        raise InvalidRequest(f"{what} has at most {limit} characters, got {len(value)}")
    if any(unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\t\n" for ch in value):
        raise InvalidRequest(f"{what} contains control characters")
    return value


def required_text(value: object, what: str, *, limit: int = 200) -> str:
    checked = text(value, what, limit=limit)
    assert checked is not None
    return checked


def subject(value: object) -> str:
    """A subject, normalised so that "Math", "math " and "ＭＡＴＨ" are one subject for the limits."""
    raw = required_text(value, "subject", limit=64)
    return " ".join(unicodedata.normalize("NFKC", raw).casefold().split())


def code(value: object, what: str) -> str:
    """An identifier chosen by a party (lesson id, teacher id, account number, bank reference)."""
    if not isinstance(value, str) or not CODE.match(value):
        raise InvalidRequest(f"{what} must be 1-64 letters, digits or _.:- (got {value!r:.80})")
    return value


def integer(value: object, what: str, *, low: int = 1, high: int = JSON_SAFE_MAX) -> int:
    """An int (not a bool, not a float) within bounds."""
    if type(value) is not int:
        raise InvalidRequest(f"{what} must be a whole number")
    if not low <= value <= high:
        raise InvalidRequest(f"{what} must be within {low}..{high}, got {value}")
    return value


def choice(value: object, enum: type[E], what: str) -> E:
    """A member of ``enum`` given as the member or its value."""
    try:
        return enum(value)  # type: ignore[arg-type]  # any value; a wrong one is refused below
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise InvalidRequest(f"{what} must be one of {allowed}, got {value!r:.40}") from None


def day(value: object, what: str) -> date:
    """A calendar date within the years the ledger handles."""
    if not isinstance(value, date) or isinstance(value, datetime):
        raise InvalidRequest(f"{what} must be a date")
    if not FIRST_DAY <= value <= LAST_DAY:
        raise InvalidRequest(f"{what} must be within {FIRST_DAY}..{LAST_DAY}, got {value}")
    return value


def instant(value: object, what: str) -> datetime:
    """A timezone-aware moment within the years the ledger handles."""
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidRequest(f"{what} must be a date and time with a time zone")
    day(value.date(), what)
    return value
