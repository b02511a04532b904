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


class SignatureRequired(LedgerError):
    """The party registered a signing key, so its reports must be signed; this one was not."""

    status = 422
    code = "signature-required"
    title = "Signature required"


class InvalidSignature(LedgerError):
    """A report's signature is malformed, names a key that is not the party's active key, or does
    not verify over the report's message."""

    status = 422
    code = "invalid-signature"
    title = "Invalid signature"


# --- The escrow domain -------------------------------------------------------------------------


class NotFound(LedgerError):
    """No such resource, or it belongs to another tenant (the two are indistinguishable)."""

    status = 404
    code = "not-found"
    title = "Not found"


class InvalidRequest(LedgerError):
    """The request is malformed for the domain (dates reversed, a missing class size, ...)."""

    status = 422
    code = "invalid-request"
    title = "Invalid request"


class WrongAmount(LedgerError):
    """A receipt whose amount is not the contract's prepayment."""

    status = 422
    code = "wrong-amount"
    title = "Amount does not match the contract"


class LessonInFuture(LedgerError):
    """A lesson reported as delivered at a time that has not come yet."""

    status = 422
    code = "lesson-in-future"
    title = "Lesson in the future"


class LessonBeforeStart(LedgerError):
    """A lesson reported as delivered before the contract's course started."""

    status = 422
    code = "lesson-before-start"
    title = "Lesson before the course started"


class InvalidState(LedgerError):
    """The operation does not fit the current state of what it acts on."""

    status = 409
    code = "invalid-state"
    title = "Not possible in the current state"


class InstitutionNotActive(InvalidState):
    """The institution is frozen, winding down or closed."""

    code = "institution-not-active"
    title = "Institution not active"


class ContractNotActive(InvalidState):
    """The contract is unpaid, completed, refunded or cancelled."""

    code = "contract-not-active"
    title = "Contract not active"


class ContractNotAwaitingPayment(InvalidState):
    """A receipt for a contract that is already paid or has ended."""

    code = "contract-not-awaiting-payment"
    title = "Contract not awaiting payment"


class NoLessonsLeft(InvalidState):
    """Every lesson of the contract is delivered, refunded or reserved by a refund request."""

    code = "no-lessons-left"
    title = "No lessons left"


class LessonNotOpen(InvalidState):
    """The lesson is not in a state that allows this (already confirmed, not disputed, ...)."""

    code = "lesson-not-open"
    title = "Lesson not open for this"


class ConfirmationWindowClosed(InvalidState):
    """The confirmation window has passed: silence already confirmed the lesson."""

    code = "confirmation-window-closed"
    title = "Confirmation window closed"


class AnswerWindowClosed(InvalidState):
    """The institution's answer window has passed: silence already approved the refund."""

    code = "answer-window-closed"
    title = "Answer window closed"


class RefundNotOpen(InvalidState):
    """The refund is not in a state that allows this."""

    code = "refund-not-open"
    title = "Refund not open for this"


class DuplicateBankReference(InvalidState):
    """The bank already reported money under this reference."""

    code = "duplicate-bank-reference"
    title = "Duplicate bank reference"


class LessonRefConflict(InvalidState):
    """The institution reused one of its lesson ids for a different lesson."""

    code = "lesson-ref-conflict"
    title = "Lesson id already used for another lesson"


class TransferWindowClosed(InvalidState):
    """The window to decline a transfer has passed, or the contract was not transferred."""

    code = "transfer-window-closed"
    title = "Transfer can no longer be declined"


class RuleViolation(LedgerError):
    """A regulation rule of the policy profile refuses the request.

    ``code`` is ``rules/<rule>`` and the context names the rule, the limit and the value, so that a
    problem document says e.g. "72 lessons requested; the limit is 60".
    """

    status = 422
    code = "rules/rule"
    title = "Refused by a regulation rule"

    def __init__(self, detail: str, *, limit: object, value: object, profile: str) -> None:
        super().__init__(
            detail, rule=self.code.removeprefix("rules/"), limit=limit, value=value, profile=profile
        )


class MaxLessons(RuleViolation):
    """One charge buys at most N lessons."""

    code = "rules/max-lessons"
    title = "Too many lessons in one charge"


class MaxAmount(RuleViolation):
    """One charge is at most a given amount."""

    code = "rules/max-amount"
    title = "Charge above the maximum amount"


class MaxMonths(RuleViolation):
    """One charge covers at most N months of lessons."""

    code = "rules/max-months"
    title = "Charge covers too many months"


class BalanceMaxLessons(RuleViolation):
    """A student's undelivered lessons of one subject at one institution stay within the limit."""

    code = "rules/balance-max-lessons"
    title = "Undelivered lessons above the limit"


class BalanceMaxAmount(RuleViolation):
    """A student's undelivered prepaid balance at one institution stays within the limit."""

    code = "rules/balance-max-amount"
    title = "Undelivered balance above the limit"


class BalanceMaxMonths(RuleViolation):
    """A student's prepaid lessons at one institution reach at most N months ahead."""

    code = "rules/balance-max-months"
    title = "Prepaid period above the limit"


class EarliestCollection(RuleViolation):
    """Money may not be collected too long before the course starts."""

    code = "rules/earliest-collection"
    title = "Collected too early"


class PriceCap(RuleViolation):
    """Academic lesson prices are capped by class size."""

    code = "rules/price-cap"
    title = "Price above the cap"


class LoanFundedTuition(RuleViolation):
    """Tuition for primary and secondary pupils may not be paid by a lender (培训贷)."""

    code = "rules/no-loan-funded-tuition"
    title = "Loan-funded tuition refused"
