"""Exact integer allocation of money across lessons.

A contract's value (and its cost advance) is cut into per-lesson shares that add up to the total to
the fen, whatever the order of deliveries, voids and refunds. The state is always "what remains"
and "how many lessons remain"; every operation takes an integer portion of it:

- a delivered lesson takes ``next_share(remaining, lessons)`` = ceil(remaining / lessons);
- a refund of k lessons takes ``portion(remaining, k, lessons)`` = floor(remaining * k / lessons);
- a voided lesson gives its share back.

Taking the ceiling lesson by lesson hands out exactly the largest-remainder allocation (``allocate``)
with ties going to the earliest lessons, and the last lesson takes whatever is left, so nothing is
ever lost or created by rounding.
"""

from __future__ import annotations


def next_share(remaining: int, lessons: int) -> int:
    """The exact share of the next lesson when ``lessons`` lessons share ``remaining``."""
    if lessons <= 0:
        raise ValueError("no lessons remain to take a share")
    if remaining < 0:
        raise ValueError("remaining must not be negative")
    return -(-remaining // lessons)


def portion(remaining: int, k: int, lessons: int) -> int:
    """The exact share of ``k`` of ``lessons`` lessons taken together (rounded down, pro rata)."""
    if not 0 < k <= lessons:
        raise ValueError(f"cannot take {k} of {lessons} lessons")
    if remaining < 0:
        raise ValueError("remaining must not be negative")
    return remaining * k // lessons


def allocate(total: int, parts: int) -> list[int]:
    """Largest-remainder split of ``total`` into ``parts`` equal-weight shares, ties to the first."""
    if parts <= 0:
        raise ValueError("parts must be positive")
    base, extra = divmod(total, parts)
    return [base + 1 if index < extra else base for index in range(parts)]


def advance_for(total: int, basis_points: int) -> int:
    """The cost advance on a prepayment, rounded down (in the parent's favour)."""
    if not 0 <= basis_points <= 10_000:
        raise ValueError("basis points must be within 0..10000")
    return total * basis_points // 10_000
