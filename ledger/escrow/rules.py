"""The regulation rules on a new charge, as pure checks against a policy profile.

Each check raises the ``RuleViolation`` subclass of the rule it enforces, with a detail that names
the limit and the value ("72 lessons requested; the limit is 60"). Which profile value applies, and
where it comes from, is in ``ledger/policies/*.toml``.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from ledger.entities import LicenceType
from ledger.errors import (
    BalanceMaxAmount,
    BalanceMaxLessons,
    BalanceMaxMonths,
    EarliestCollection,
    MaxAmount,
    MaxLessons,
    MaxMonths,
    PriceCap,
)
from ledger.money import Money
from ledger.policy import Policy

_ONE_DAY = timedelta(days=1)


def last_day_within(start: date, months: int) -> date:
    """The last day of a period of ``months`` months starting on ``start``.

    15 Jan + 3 months runs to 14 Apr. A period that starts on the last day of a month runs to
    the last day of the month N months later (31 Jan -> 30 Apr, 30 Nov -> 28 Feb), so that a month
    end is never worth a day less than the first of the next month.
    """
    if (start + _ONE_DAY).day == 1:
        return add_months(start + _ONE_DAY, months) - _ONE_DAY
    return add_months(start, months) - _ONE_DAY


def add_months(day: date, months: int) -> date:
    """The same day ``months`` later, clamped to the month's last day (31 Jan + 1 = 28/29 Feb)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True, slots=True)
class Charge:
    """What a new contract asks for, as far as the rules care."""

    subject: str
    lessons: int
    unit_price_fen: int
    start: date
    end: date
    licence: LicenceType
    class_size: int | None
    lesson_minutes: int

    @property
    def amount_fen(self) -> int:
        return self.lessons * self.unit_price_fen


@dataclass(frozen=True, slots=True)
class OpenPackage:
    """A contract of the same student at the same institution that still holds undelivered lessons."""

    subject: str
    lessons_remaining: int
    value_remaining_fen: int
    start: date
    end: date
    paid: bool


def check_charge(policy: Policy, charge: Charge) -> None:
    """Limits on one charge: lessons, amount, months, and the academic price cap."""
    if charge.lessons > policy.max_lessons:
        raise MaxLessons(
            f"{charge.lessons} lessons requested; the limit is {policy.max_lessons}",
            limit=policy.max_lessons,
            value=charge.lessons,
            profile=policy.name,
        )
    if charge.amount_fen > policy.max_amount_fen:
        raise MaxAmount(
            f"{Money(charge.amount_fen)} requested; the limit is {Money(policy.max_amount_fen)}",
            limit=policy.max_amount_fen,
            value=charge.amount_fen,
            profile=policy.name,
        )
    last_allowed = last_day_within(charge.start, policy.max_months)
    if charge.end > last_allowed:
        raise MaxMonths(
            f"the course runs {charge.start} to {charge.end}; a charge may cover at most "
            f"{policy.max_months} months (until {last_allowed})",
            limit=policy.max_months,
            value=str(charge.end),
            profile=policy.name,
        )
    check_price_cap(policy, charge)


def check_price_cap(policy: Policy, charge: Charge) -> None:
    """Academic courses: unit price within the class-size tier's cap plus the tolerance."""
    if charge.licence is not LicenceType.ACADEMIC or not policy.price_cap_tiers:
        return
    size = charge.class_size if charge.class_size is not None else 0
    tier = next(
        t for t in policy.price_cap_tiers if t.max_class_size is None or size <= t.max_class_size
    )
    # cap scaled to the lesson length, plus tolerance, compared without division:
    # price <= cap * minutes / reference * (100 + tolerance) / 100
    allowed_times = (
        tier.cap_fen * charge.lesson_minutes * (100 + policy.price_cap_tolerance_percent)
    )
    if charge.unit_price_fen * policy.price_cap_lesson_minutes * 100 > allowed_times:
        allowed = allowed_times // (policy.price_cap_lesson_minutes * 100)
        raise PriceCap(
            f"{Money(charge.unit_price_fen)} per {charge.lesson_minutes}-minute lesson for a class "
            f"of {size}; the cap with {policy.price_cap_tolerance_percent}% tolerance is "
            f"{Money(allowed)}",
            limit=allowed,
            value=charge.unit_price_fen,
            profile=policy.name,
        )


def check_balance(
    policy: Policy, charge: Charge, open_packages: Iterable[OpenPackage], today: date
) -> None:
    """The student's undelivered balance at the institution after the charge stays within limits.

    This is what stops one large charge being split into several small ones. The period counts
    from today (or the first start, if later) to the last end: prepaid lessons may reach at most
    that many months ahead.
    """
    packages = list(open_packages)
    amount = charge.amount_fen + sum(p.value_remaining_fen for p in packages)
    if amount > policy.balance_max_amount_fen:
        raise BalanceMaxAmount(
            f"undelivered balance would be {Money(amount)}; the limit is "
            f"{Money(policy.balance_max_amount_fen)}",
            limit=policy.balance_max_amount_fen,
            value=amount,
            profile=policy.name,
        )
    lessons = charge.lessons + sum(
        p.lessons_remaining for p in packages if p.subject == charge.subject
    )
    if lessons > policy.balance_max_lessons:
        raise BalanceMaxLessons(
            f"{lessons} undelivered {charge.subject} lessons; the limit is "
            f"{policy.balance_max_lessons}",
            limit=policy.balance_max_lessons,
            value=lessons,
            profile=policy.name,
        )
    first = max(today, min([charge.start, *(p.start for p in packages)]))
    last = max([charge.end, *(p.end for p in packages)])
    last_allowed = last_day_within(first, policy.balance_max_months)
    if last > last_allowed:
        raise BalanceMaxMonths(
            f"prepaid lessons would run from {first} to {last}; at most "
            f"{policy.balance_max_months} months (until {last_allowed})",
            limit=policy.balance_max_months,
            value=str(last),
            profile=policy.name,
        )


def check_collection(
    policy: Policy, charge: Charge, today: date, open_packages: Iterable[OpenPackage]
) -> None:
    """Earliest collection: close enough to the start, or a renewal when few lessons remain."""
    months = policy.earliest_collection_months_before_start
    if months is None:
        return
    earliest = add_months(charge.start, -months)
    if today >= earliest:
        return
    remaining = [
        p.lessons_remaining for p in open_packages if p.paid and p.subject == charge.subject
    ]
    threshold = policy.earliest_collection_max_remaining_lessons
    if remaining and threshold is not None and sum(remaining) <= threshold:
        return
    raise EarliestCollection(
        f"the course starts {charge.start}; money may be collected from {earliest}"
        + (
            f", or when {threshold} or fewer {charge.subject} lessons remain"
            if threshold is not None
            else ""
        ),
        limit=str(earliest),
        value=str(today),
        profile=policy.name,
    )
