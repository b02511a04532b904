import pytest

from ledger.accounts import (
    CHART,
    AccountCode,
    AccountKind,
    AccountType,
    NormalSide,
    OwnerKind,
    account_code,
)
from ledger.errors import InvalidAccount


def test_every_kind_of_the_money_flow_is_in_the_chart() -> None:
    assert set(CHART) == set(AccountKind)


def test_assets_grow_on_the_debit_side_and_liabilities_on_the_credit_side() -> None:
    assert AccountType.ASSET.normal_side is NormalSide.DEBIT
    assert AccountType.LIABILITY.normal_side is NormalSide.CREDIT
    assert NormalSide.DEBIT.sign == 1
    assert NormalSide.CREDIT.sign == -1


def test_escrow_cash_and_advances_are_assets_the_rest_liabilities() -> None:
    assets = {kind for kind, cls in CHART.items() if cls.type is AccountType.ASSET}
    assert assets == {AccountKind.ESCROW, AccountKind.ADVANCE, AccountKind.ADVANCE_DUE}


def test_a_contract_account_is_owned_by_a_contract_and_never_negative() -> None:
    cls = CHART[AccountKind.CONTRACT]
    assert cls.owner is OwnerKind.CONTRACT
    assert cls.non_negative


def test_codes_parse_into_kind_and_owner() -> None:
    code = AccountCode.parse("refund_payable:inst-42")
    assert code.kind is AccountKind.REFUND_PAYABLE
    assert code.owner_id == "inst-42"
    assert str(code) == "refund_payable:inst-42"
    assert account_code(AccountKind.ESCROW, "inst-42") == "escrow:inst-42"


@pytest.mark.parametrize(
    "code", ["escrow", "wallet:inst-1", "escrow:", "escrow:has space", "escrow:" + "x" * 65, ":x"]
)
def test_malformed_or_unknown_codes_are_refused(code: str) -> None:
    with pytest.raises(InvalidAccount):
        AccountCode.parse(code)
