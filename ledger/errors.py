"""Typed ledger errors.

One base class carries an HTTP status and a stable ``code``; the API layer turns any of them into an
RFC 9457 problem document whose ``type`` ends in that code. A subclass exists per rule so that callers
and tests can tell the rules apart without parsing messages.
"""

from __future__ import annotations

from typing import Any, ClassVar


class LedgerError(Exception):
    """A refused operation: the caller asked for something a rule forbids. Nothing was changed."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "ledger-error"
    title: ClassVar[str] = "The ledger refused the operation"

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context


class AmountOutOfRange(LedgerError):
    """An amount does not fit the storage or the log (signed 64-bit in columns, I-JSON in the log)."""

    status = 422
    code = "amount-out-of-range"
    title = "Amount out of range"


class CurrencyMismatch(LedgerError):
    """Two amounts of different currencies were combined, or a posting does not match its account."""

    status = 422
    code = "currency-mismatch"
    title = "Currencies do not match"


class InvalidAccount(LedgerError):
    """An account code is malformed or names a kind the chart of accounts does not have."""

    status = 422
    code = "invalid-account"
    title = "Invalid account"


class UnbalancedEntry(LedgerError):
    """An entry's postings do not sum to zero per currency, or it has a single posting."""

    status = 422
    code = "unbalanced-entry"
    title = "Unbalanced entry"


class InsufficientFunds(LedgerError):
    """An entry would take an account that may not go negative below zero."""

    status = 409
    code = "insufficient-funds"
    title = "Account may not go negative"


class InvalidEvent(LedgerError):
    """An event's type, actor or payload cannot be written to the log."""

    status = 422
    code = "invalid-event"
    title = "Invalid event"


class ClockBehindLog(LedgerError):
    """The clock is far behind the log's last entry; entries would carry a wrong time."""

    status = 503
    code = "clock-behind-log"
    title = "Clock behind the log"


class LogKeyMismatch(LedgerError):
    """The signing key on disk is not the key the log was opened with."""

    status = 500
    code = "log-key-mismatch"
    title = "Log signing key does not match the log"
