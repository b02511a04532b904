"""Policy profiles: the shipped numbers, and the typos and contradictions loading refuses."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ledger.policy import (
    POLICY_DIR,
    Policy,
    PolicyBook,
    PolicyError,
    PriceCapTier,
    Window,
    available_profiles,
    load_profile,
)

NO_CAPS: tuple[PriceCapTier, ...] = ()


def _national_limits_and_alerts(policy: Policy) -> None:
    """What every shipped profile shares with the national baseline."""
    assert (policy.max_months, policy.max_lessons, policy.max_amount_fen) == (3, 60, 500_000)
    assert (
        policy.balance_max_months,
        policy.balance_max_lessons,
        policy.balance_max_amount_fen,
    ) == (3, 60, 500_000)
    assert policy.confirmation_window == Window(7, working=True)
    assert policy.refund_answer_window == Window(5, working=True)
    assert policy.settlement_lag == Window(1, working=False)
    assert policy.transfer_decline_window == Window(15, working=False)
    assert policy.advance_bp == 0
    assert policy.alert_min_balance_fen == 30_000_000
    assert policy.alert_min_balance_new_fen == 10_000_000
    assert policy.alert_max_daily_outflow_fen == 100_000_000


def test_the_shipped_profiles_are_national_ningbo_and_beijing() -> None:
    assert available_profiles() == ["beijing", "national", "ningbo"]


def test_national_profile_is_the_baseline_without_regional_rules() -> None:
    policy = load_profile("national")
    assert policy.name == "national"
    _national_limits_and_alerts(policy)
    assert policy.earliest_collection_months_before_start is None
    assert policy.earliest_collection_max_remaining_lessons is None
    assert policy.price_cap_tiers == NO_CAPS
    assert policy.refund_payout_before_start == Window(15, working=False)
    assert policy.refund_payout_after_start == Window(15, working=False)


def test_ningbo_profile_caps_academic_prices_by_class_size() -> None:
    policy = load_profile("ningbo")
    assert policy.name == "ningbo"
    _national_limits_and_alerts(policy)
    assert policy.price_cap_tiers == (
        PriceCapTier(max_class_size=9, cap_fen=6000),
        PriceCapTier(max_class_size=35, cap_fen=5000),
        PriceCapTier(max_class_size=None, cap_fen=4000),
    )
    assert policy.price_cap_tolerance_percent == 10
    assert policy.price_cap_lesson_minutes == 45
    assert policy.earliest_collection_months_before_start is None
    assert policy.earliest_collection_max_remaining_lessons is None
    assert policy.refund_payout_before_start == Window(15, working=False)
    assert policy.refund_payout_after_start == Window(15, working=False)


def test_beijing_profile_limits_early_collection_and_pays_refunds_sooner() -> None:
    policy = load_profile("beijing")
    assert policy.name == "beijing"
    _national_limits_and_alerts(policy)
    assert policy.earliest_collection_months_before_start == 1
    assert policy.earliest_collection_max_remaining_lessons == 20
    assert policy.price_cap_tiers == NO_CAPS
    assert policy.refund_payout_before_start == Window(5, working=False)
    assert policy.refund_payout_after_start == Window(15, working=False)


@pytest.mark.parametrize("path", sorted(POLICY_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_every_parameter_line_names_its_source(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    parameters = [line for line in lines if re.match(r"^\s*(\w+ = |\{ )", line)]
    assert parameters
    for line in parameters:
        if line.startswith(("name = ", "description = ")):
            continue
        comment = line.partition("#")[2]
        assert re.search(r"DOMAIN\.md|assumption", comment), line


@pytest.mark.parametrize(
    ("window", "text"),
    [
        (Window(7, working=True), "7 working days"),
        (Window(1, working=False), "1 calendar day"),
        (Window(0, working=False), "0 calendar days"),
    ],
)
def test_a_window_reads_as_a_period(window: Window, text: str) -> None:
    assert str(window) == text


def test_a_window_cannot_be_negative() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        Window(-1, working=False)


# --- broken profiles ---------------------------------------------------------------------------


def _national() -> dict[str, Any]:
    with (POLICY_DIR / "national.toml").open("rb") as handle:
        return tomllib.load(handle)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    assert isinstance(value, dict)
    return "{ " + ", ".join(f"{key} = {_value(item)}" for key, item in value.items()) + " }"


def _write(directory: Path, filename: str, document: dict[str, Any]) -> None:
    """Write a profile: top-level values first, then one [table] per section."""
    lines = [f"{k} = {_value(v)}" for k, v in document.items() if not isinstance(v, dict)]
    for section, table in document.items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {_value(v)}" for k, v in table.items())
    (directory / filename).write_text("\n".join(lines) + "\n", encoding="utf-8")


Edit = Callable[[dict[str, Any]], None]


def _set(section: str, key: str, value: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        doc[section][key] = value

    return edit


def _drop(section: str, key: str) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        del doc[section][key]

    return edit


def _ningbo_tiers(tiers: list[dict[str, int]]) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        doc["price_caps"] = {"tiers": tiers, "tolerance_percent": 10, "lesson_minutes": 45}

    return edit


BROKEN: list[tuple[str, Edit, str, str]] = [
    ("missing key", _drop("limits", "max_lessons"), "limits.max_lessons", "is missing"),
    ("missing table", lambda doc: doc.pop("alerts"), "alerts", "is missing"),
    (
        "unknown key",
        _set("limits", "max_lesson", 60),
        "limits.max_lesson",
        "is not a known key (did you mean max_lessons?)",
    ),
    (
        "unknown table",
        lambda doc: doc.update(refunds={"days": 5}),
        "refunds",
        "is not a known key",
    ),
    (
        "wrong type",
        _set("limits", "max_amount_fen", "500000"),
        "limits.max_amount_fen",
        'must be a positive integer, got "500000" (a string)',
    ),
    (
        "float for int",
        _set("limits", "max_months", 3.0),
        "limits.max_months",
        "must be a positive integer, got 3.0 (a float)",
    ),
    (
        "bool for int",
        _set("limits", "max_lessons", True),
        "limits.max_lessons",
        "must be a positive integer, got true (a boolean)",
    ),
    (
        "negative",
        _set("limits", "max_lessons", -3),
        "limits.max_lessons",
        "must be a positive integer, got -3",
    ),
    (
        "zero limit",
        _set("limits", "max_months", 0),
        "limits.max_months",
        "must be a positive integer, got 0",
    ),
    (
        "advance_bp 10001",
        _set("advance", "basis_points", 10_001),
        "advance.basis_points",
        "must be an integer from 0 to 10000, got 10001",
    ),
    (
        "tolerance 101",
        _set("price_caps", "tolerance_percent", 101),
        "price_caps.tolerance_percent",
        "must be an integer from 0 to 100, got 101",
    ),
    (
        "tiers unsorted",
        _ningbo_tiers(
            [
                {"max_class_size": 35, "cap_fen": 5000},
                {"max_class_size": 9, "cap_fen": 6000},
                {"cap_fen": 4000},
            ]
        ),
        "price_caps.tiers[1].max_class_size",
        "must be greater than the previous tier's 35",
    ),
    (
        "unbounded tier before the last",
        _ningbo_tiers([{"cap_fen": 6000}, {"cap_fen": 4000}]),
        "price_caps.tiers[0].max_class_size",
        "is missing: only the last tier may be unbounded",
    ),
    (
        "bounded last tier",
        _ningbo_tiers([{"max_class_size": 9, "cap_fen": 6000}]),
        "price_caps.tiers[0].max_class_size",
        "must be omitted",
    ),
    (
        "zero cap",
        _ningbo_tiers([{"cap_fen": 0}]),
        "price_caps.tiers[0].cap_fen",
        "must be a positive integer, got 0",
    ),
    (
        "balance limit below per-charge limit",
        _set("balance_limits", "max_amount_fen", 400_000),
        "balance_limits.max_amount_fen",
        "must be at least limits.max_amount_fen (500000), got 400000",
    ),
    (
        "half of the earliest-collection pair",
        lambda doc: doc.update(collection={"enabled": True, "months_before_start": 1}),
        "collection.max_remaining_lessons",
        "is missing: the earliest-collection rule needs both",
    ),
    (
        "collection numbers while disabled",
        lambda doc: doc.update(collection={"enabled": False, "max_remaining_lessons": 20}),
        "collection.max_remaining_lessons",
        "is set but collection.enabled is false",
    ),
    (
        "zero-day confirmation window",
        _set("windows", "confirmation", {"days": 0, "unit": "working"}),
        "windows.confirmation.days",
        "must be an integer from 1 to 366, got 0",
    ),
    (
        "negative payout window",
        _set("windows", "refund_payout_after_start", {"days": -1, "unit": "calendar"}),
        "windows.refund_payout_after_start.days",
        "must be an integer from 0 to 366, got -1",
    ),
    (
        "unknown window unit",
        _set("windows", "settlement_lag", {"days": 1, "unit": "weeks"}),
        "windows.settlement_lag.unit",
        'must be "working" or "calendar", got "weeks"',
    ),
    (
        "window as a bare number",
        _set("windows", "refund_answer", 5),
        "windows.refund_answer",
        "must be a table, got 5",
    ),
    (
        "name mismatch",
        lambda doc: doc.update(name="beijing"),
        "name",
        'must equal the file name "national", got "beijing"',
    ),
]


@pytest.mark.parametrize(
    ("edit", "key", "problem"),
    [pytest.param(edit, key, problem, id=case) for case, edit, key, problem in BROKEN],
)
def test_a_broken_profile_is_refused_naming_the_key(
    tmp_path: Path, edit: Edit, key: str, problem: str
) -> None:
    document = copy.deepcopy(_national())
    edit(document)
    _write(tmp_path, "national.toml", document)
    with pytest.raises(PolicyError) as caught:
        load_profile("national", tmp_path)
    assert str(caught.value).startswith(f"national.toml: {key} {problem}")
    assert caught.value.key == key
    assert caught.value.profile == "national"


def test_the_writer_used_above_round_trips_the_national_profile(tmp_path: Path) -> None:
    _write(tmp_path, "national.toml", _national())
    assert load_profile("national", tmp_path) == load_profile("national")


def test_a_file_that_is_not_toml_is_refused_naming_the_profile(tmp_path: Path) -> None:
    (tmp_path / "ningbo.toml").write_text("name = ningbo\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"^ningbo\.toml: not valid TOML"):
        load_profile("ningbo", tmp_path)


@pytest.mark.parametrize("name", ["../national", "National", ""])
def test_a_profile_name_cannot_leave_the_policy_directory(name: str) -> None:
    with pytest.raises(PolicyError, match="is not a policy profile name"):
        load_profile(name)


# --- the book ----------------------------------------------------------------------------------


def test_the_book_answers_none_with_the_default_and_caches_profiles() -> None:
    book = PolicyBook("national")
    assert book.default.name == "national"
    assert book.get() is book.default
    assert book.get("ningbo") is book.get("ningbo")
    assert book.get("ningbo").price_cap_tolerance_percent == 10


def test_the_book_names_the_available_profiles_for_an_unknown_one() -> None:
    book = PolicyBook("national")
    with pytest.raises(
        PolicyError, match=r"^shanghai\.toml: .*available: beijing, national, ningbo$"
    ):
        book.get("shanghai")


def test_the_book_refuses_a_broken_default_at_once(tmp_path: Path) -> None:
    document = _national()
    document["limits"]["max_lessons"] = -3
    _write(tmp_path, "national.toml", document)
    with pytest.raises(PolicyError, match=r"^national\.toml: limits\.max_lessons must be"):
        PolicyBook("national", tmp_path)


def test_the_book_loads_other_profiles_from_its_directory(tmp_path: Path) -> None:
    document = _national()
    document["name"] = "xiamen"
    document["windows"]["settlement_lag"] = {"days": 7, "unit": "calendar"}
    _write(tmp_path, "national.toml", _national())
    _write(tmp_path, "xiamen.toml", document)
    book = PolicyBook("national", tmp_path)
    assert available_profiles(tmp_path) == ["national", "xiamen"]
    assert book.get("xiamen").settlement_lag == Window(7, working=False)
    assert str(book.get("xiamen").settlement_lag) == "7 calendar days"
