"""Money as integer fen.

A frozen value type that refuses floats (and bools, which are ints in Python), mixed currencies and
amounts that would not fit a signed 64-bit column, so that no rounding or overflow can ever enter the
ledger silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Self

from ledger.errors import AmountOutOfRange, CurrencyMismatch

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
# RFC 8785 / I-JSON numbers are IEEE 754 doubles: integers are exact only up to 2**53 - 1.
# Amounts written into the event log must stay inside this range.
JSON_SAFE_MAX = 2**53 - 1

DEFAULT_CURRENCY = "CNY"
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_MINOR_UNITS_PER_MAJOR = 100  # fen per yuan; every currency the ledger accepts has two decimals
_SYMBOLS = {"CNY": "¥"}


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in minor units (fen for CNY) with its ISO 4217 currency."""

    amount: int
    currency: str = DEFAULT_CURRENCY

    def __post_init__(self) -> None:
        if type(self.amount) is not int:
            raise TypeError(
                f"Money takes an int number of minor units, not {type(self.amount).__name__}"
            )
        if not INT64_MIN <= self.amount <= INT64_MAX:
            raise AmountOutOfRange(
                f"{self.amount} does not fit a signed 64-bit amount",
                value=self.amount,
                limit=INT64_MAX,
            )
        if not isinstance(self.currency, str) or not _CURRENCY.match(self.currency):
            raise ValueError(
                f"currency must be a three-letter ISO 4217 code, got {self.currency!r}"
            )

    @classmethod
    def zero(cls, currency: str = DEFAULT_CURRENCY) -> Self:
        """The neutral element, so that sums can start somewhere typed."""
        return cls(0, currency)

    @classmethod
    def parse(cls, text: str, currency: str = DEFAULT_CURRENCY) -> Self:
        """Read a decimal major-unit amount such as ``"12.34"`` exactly; sub-fen digits are refused."""
        try:
            major = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"not a decimal amount: {text!r}") from None
        minor = major * _MINOR_UNITS_PER_MAJOR
        if not minor.is_finite() or minor != minor.to_integral_value():
            raise ValueError(f"{text!r} is not a whole number of minor units")
        return cls(int(minor), currency)

    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatch(
                f"cannot combine {self.currency} and {other.currency}",
                left=self.currency,
                right=other.currency,
            )

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __mul__(self, factor: int) -> Money:
        if type(factor) is not int:
            raise TypeError(f"Money can only be multiplied by an int, not {type(factor).__name__}")
        return Money(self.amount * factor, self.currency)

    __rmul__ = __mul__

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __abs__(self) -> Money:
        return Money(abs(self.amount), self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.amount >= other.amount

    def __bool__(self) -> bool:
        return self.amount != 0

    def __str__(self) -> str:
        sign = "-" if self.amount < 0 else ""
        major, minor = divmod(abs(self.amount), _MINOR_UNITS_PER_MAJOR)
        symbol = _SYMBOLS.get(self.currency)
        prefix = symbol if symbol else f"{self.currency} "
        return f"{sign}{prefix}{major:,}.{minor:02d}"
