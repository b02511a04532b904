from decimal import Decimal

import pytest

from ledger.errors import AmountOutOfRange, CurrencyMismatch
from ledger.money import INT64_MAX, INT64_MIN, Money


def test_money_holds_integer_fen_with_cny_by_default() -> None:
    price = Money(15_000)
    assert price.amount == 15_000
    assert price.currency == "CNY"
    assert str(price) == "¥150.00"


@pytest.mark.parametrize("bad", [1.5, 100.0, Decimal(1), True, "100", None])
def test_money_refuses_anything_but_an_int(bad: object) -> None:
    with pytest.raises(TypeError):
        Money(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [INT64_MAX + 1, INT64_MIN - 1, 10**30])
def test_money_refuses_amounts_beyond_a_signed_64_bit_column(amount: int) -> None:
    with pytest.raises(AmountOutOfRange):
        Money(amount)


def test_money_accepts_the_exact_64_bit_limits() -> None:
    assert Money(INT64_MAX).amount == INT64_MAX
    assert Money(INT64_MIN).amount == INT64_MIN


def test_money_arithmetic_overflowing_64_bits_is_refused() -> None:
    with pytest.raises(AmountOutOfRange):
        Money(INT64_MAX) + Money(1)


def test_mixing_currencies_is_refused_for_arithmetic_and_comparison() -> None:
    with pytest.raises(CurrencyMismatch):
        Money(100) + Money(100, "USD")
    with pytest.raises(CurrencyMismatch):
        _ = Money(100) < Money(100, "USD")


@pytest.mark.parametrize("currency", ["cny", "CN", "YUAN", ""])
def test_money_refuses_a_malformed_currency(currency: str) -> None:
    with pytest.raises(ValueError, match="ISO 4217"):
        Money(1, currency)


def test_money_arithmetic_is_exact() -> None:
    lesson = Money(15_000)
    assert lesson * 20 == Money(300_000)
    assert 3 * lesson == Money(45_000)
    assert Money(300_000) - lesson * 3 == Money(255_000)
    assert -lesson == Money(-15_000)
    assert abs(Money(-7)) == Money(7)
    assert sorted([Money(3), Money(1), Money(2)]) == [Money(1), Money(2), Money(3)]
    assert not Money.zero()
    assert Money(1)


def test_money_cannot_be_multiplied_by_a_float() -> None:
    with pytest.raises(TypeError):
        Money(100) * 1.5  # type: ignore[operator]


@pytest.mark.parametrize(
    ("text", "fen"), [("12.34", 1234), ("5000", 500_000), ("0.01", 1), ("-3.5", -350)]
)
def test_parse_reads_yuan_exactly(text: str, fen: int) -> None:
    assert Money.parse(text) == Money(fen)


@pytest.mark.parametrize("text", ["0.001", "1.005", "abc", "NaN", "Infinity"])
def test_parse_refuses_sub_fen_and_non_numbers(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - both malformed and sub-fen are ValueErrors
        Money.parse(text)


def test_str_groups_thousands_and_shows_sign() -> None:
    assert str(Money(123_456_789)) == "¥1,234,567.89"
    assert str(Money(-5)) == "-¥0.05"
    assert str(Money(100, "USD")) == "USD 1.00"
