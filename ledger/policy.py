"""Regional policy profiles: the regulation's numbers as data, not code.

Limits, price caps, windows and alert thresholds differ by region and change when a regulator
publishes a new notice, so they live in ``ledger/policies/<name>.toml`` where each value names its
source. Loading validates every key strictly (unknown keys, wrong types, booleans posing as numbers,
inconsistent limits) because a typo in a policy file would otherwise silently change what parents
are allowed to be charged.
"""

from __future__ import annotations

import difflib
import re
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.money import JSON_SAFE_MAX

POLICY_DIR = Path(__file__).with_name("policies")
"""Where the shipped profiles live (package data)."""

_PROFILE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_UNITS = {"working": True, "calendar": False}
_MAX_DAYS = 366  # a window longer than a year is a typo, not a policy
_MAX_LESSON_MINUTES = 24 * 60


@dataclass(frozen=True, slots=True)
class Window:
    """A period counted in working days (State Council calendar) or in calendar days."""

    days: int
    working: bool

    def __post_init__(self) -> None:
        if type(self.days) is not int or self.days < 0:
            raise ValueError(f"Window.days must be a non-negative int, got {self.days!r}")
        if type(self.working) is not bool:
            raise TypeError(f"Window.working must be a bool, got {self.working!r}")

    def __str__(self) -> str:
        unit = "working" if self.working else "calendar"
        return f"{self.days} {unit} day{'' if self.days == 1 else 's'}"


@dataclass(frozen=True, slots=True)
class PriceCapTier:
    """The price cap for classes of up to ``max_class_size`` pupils (None: any larger class)."""

    max_class_size: int | None
    cap_fen: int


@dataclass(frozen=True, slots=True)
class Policy:
    """One region's rules. Amounts are integer fen; see the profile files for each value's source."""

    name: str
    description: str
    max_months: int
    max_lessons: int
    max_amount_fen: int
    balance_max_months: int
    balance_max_lessons: int
    balance_max_amount_fen: int
    earliest_collection_months_before_start: int | None
    earliest_collection_max_remaining_lessons: int | None
    price_cap_tiers: tuple[PriceCapTier, ...]
    price_cap_tolerance_percent: int
    price_cap_lesson_minutes: int
    confirmation_window: Window
    refund_answer_window: Window
    refund_payout_before_start: Window
    refund_payout_after_start: Window
    settlement_lag: Window
    transfer_decline_window: Window
    advance_bp: int
    alert_min_balance_fen: int
    alert_min_balance_new_fen: int
    alert_max_daily_outflow_fen: int
    risk: RiskPolicy
    """Risk grading (``ledger.risk``): the rules' thresholds and points, and the grade boundaries."""


@dataclass(frozen=True, slots=True)
class RiskRule:
    """One risk rule: it fires when its signal reaches ``threshold`` and then adds ``points``."""

    threshold: int
    points: int


RISK_RULES: dict[str, tuple[int, int]] = {
    # rule -> bounds of its threshold; units and comparisons are documented in ledger/risk.py
    "liability_large": (1, JSON_SAFE_MAX),  # fen of undelivered lessons, fires at or above
    "coverage_short": (1, 1_000),  # percent, fires below
    "refund_share": (1, 100),  # percent of liability, fires at or above
    "refund_surge": (1, 100),  # percent of liability, fires at or above
    "refunds_overdue": (1, 1_000_000),  # refunds, fires at or above
    "disputes_open": (1, 1_000_000),  # lessons, fires at or above
    "lessons_drop": (0, 99),  # percent of the usual week, fires at or below
    "lessons_stopped": (0, 99),  # percent of the usual week, fires at or below
    "outflow_daily": (1, JSON_SAFE_MAX),  # fen out of escrow in the day, fires at or above
    "outflow_share": (1, 1_000),  # percent of liability, fires at or above
    "payouts_failed": (1, 1_000_000),  # failed payouts in the look-back, fires at or above
    "breaks_open": (1, 1_000_000),  # open reconciliation breaks, fires at or above
}
_MAX_RISK_POINTS = 10_000


@dataclass(frozen=True, slots=True)
class RiskPolicy:
    """Thresholds of the daily risk grade: points of each rule that fires add up to a score.

    The score (times ``academic_weight_percent`` / 100 for an academic institution) reaches
    ``grade_b_points`` for B, ``grade_c_points`` for C and ``grade_d_points`` for D.
    """

    grade_b_points: int
    grade_c_points: int
    grade_d_points: int
    academic_weight_percent: int
    lookback_days: int
    baseline_min_lessons: int
    frozen_points: int
    winding_down_points: int
    rules: tuple[tuple[str, RiskRule], ...]

    def rule(self, name: str) -> RiskRule:
        return dict(self.rules)[name]


class PolicyError(ValueError):
    """A profile cannot be used: missing, unreadable, or a key is absent, unknown or out of range.

    The message starts with the profile file and names the exact key, so that whoever edits the
    file can fix it without reading this module.
    """

    def __init__(self, message: str, *, profile: str, key: str | None = None) -> None:
        super().__init__(message)
        self.profile = profile
        self.key = key


def available_profiles(directory: Path | None = None) -> list[str]:
    """Sorted names of the profiles in ``directory`` (default: the shipped ``ledger/policies``)."""
    folder = POLICY_DIR if directory is None else directory
    return sorted(p.stem for p in folder.glob("*.toml") if _PROFILE_NAME.match(p.stem))


def load_profile(name: str, directory: Path | None = None) -> Policy:
    """Read and validate one profile; any problem is a PolicyError naming the file and the key."""
    folder = POLICY_DIR if directory is None else directory
    if not isinstance(name, str) or not _PROFILE_NAME.match(name):
        raise PolicyError(f"{name!r} is not a policy profile name", profile=str(name))
    path = folder / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(available_profiles(folder)) or "none"
        raise PolicyError(
            f"{name}.toml: no such policy profile in {folder}; available: {known}", profile=name
        )
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{name}.toml: not valid TOML: {exc}", profile=name) from None
    return _parse(name, document)


class PolicyBook:
    """The loaded profiles of one deployment, each read once; the default is checked at start-up."""

    def __init__(
        self, default: str, directory: Path | None = None, *, extra: Path | None = None
    ) -> None:
        self._directory = directory
        # A deployment's own profiles (ESCROW_POLICY_DIR) are searched first, so a region can add
        # its profile, or set a value the shipped one leaves open, without editing the package.
        self._extra = extra
        self._lock = threading.Lock()
        self._cache: dict[str, Policy] = {}
        self._default_name = default
        # Eager, so that a broken profile (the default or any other an institution may use) stops
        # the service before it takes money, not at the first contract that needs it.
        self._default = self.get(default)
        for name in available_profiles(directory):
            self.get(name)
        if extra is not None:
            for name in available_profiles(extra):
                self.get(name)

    def get(self, name: str | None = None) -> Policy:
        """The named profile, or the default for None; an unknown name lists the available ones."""
        key = self._default_name if name is None else name
        with self._lock:
            cached = self._cache.get(key)
            if cached is None:
                local = self._extra is not None and (self._extra / f"{key}.toml").is_file()
                cached = load_profile(key, self._extra if local else self._directory)
                self._cache[key] = cached
            return cached

    @property
    def default(self) -> Policy:
        """The deployment's default profile (``ESCROW_POLICY_PROFILE``)."""
        return self._default


# --- parsing -----------------------------------------------------------------------------------


def _show(value: object) -> str:
    """A value as it was written in TOML, so that error messages quote the file."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return f'"{value}" (a string)'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, float):
        return f"{value} (a float)"
    return repr(value)


class _Table:
    """One TOML table being read: knows its dotted path, refuses keys it was not told about."""

    def __init__(self, profile: str, path: str, data: object, allowed: set[str]) -> None:
        self.profile = profile
        self.path = path
        if not isinstance(data, dict):
            raise self.error(path, f"must be a table, got {_show(data)}")
        self.data: dict[str, Any] = data
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                expected = ", ".join(sorted(allowed))
                raise self.error(
                    self.key(key), f"is not a known key{hint}; this table takes: {expected}"
                )

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, key: str, problem: str) -> PolicyError:
        return PolicyError(f"{self.profile}.toml: {key} {problem}", profile=self.profile, key=key)

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str) -> object:
        if name not in self.data:
            raise self.error(self.key(name), "is missing")
        return self.data[name]

    def table(self, name: str, allowed: set[str]) -> _Table:
        return _Table(self.profile, self.key(name), self.raw(name), allowed)

    def string(self, name: str) -> str:
        value = self.raw(name)
        if not isinstance(value, str) or not value.strip():
            raise self.error(self.key(name), f"must be a non-empty string, got {_show(value)}")
        return value

    def boolean(self, name: str) -> bool:
        value = self.raw(name)
        if not isinstance(value, bool):
            raise self.error(self.key(name), f"must be true or false, got {_show(value)}")
        return value

    def integer(self, name: str, low: int, high: int = JSON_SAFE_MAX) -> int:
        value = self.raw(name)
        # bool is a subclass of int in Python: `max_lessons = true` must not read as 1.
        if type(value) is not int or not low <= value <= high:
            if low == 1 and high == JSON_SAFE_MAX:
                wanted = "a positive integer"
            elif low == 0 and high == JSON_SAFE_MAX:
                wanted = "a non-negative integer"
            else:
                wanted = f"an integer from {low} to {high}"
            raise self.error(self.key(name), f"must be {wanted}, got {_show(value)}")
        return value

    def window(self, name: str, *, minimum_days: int) -> Window:
        spec = self.table(name, {"days", "unit"})
        days = spec.integer("days", minimum_days, _MAX_DAYS)
        unit = spec.raw("unit")
        if not isinstance(unit, str) or unit not in _UNITS:
            raise self.error(
                spec.key("unit"), f'must be "working" or "calendar", got {_show(unit)}'
            )
        return Window(days, _UNITS[unit])


_TOP = {
    "name",
    "description",
    "limits",
    "balance_limits",
    "collection",
    "price_caps",
    "windows",
    "advance",
    "alerts",
    "risk",
}
_LIMITS = {"max_months", "max_lessons", "max_amount_fen"}
_WINDOWS = {
    "confirmation",
    "refund_answer",
    "refund_payout_before_start",
    "refund_payout_after_start",
    "settlement_lag",
    "transfer_decline",
}


def _parse(profile: str, document: Mapping[str, Any]) -> Policy:
    top = _Table(profile, "", dict(document), _TOP)
    name = top.string("name")
    if name != profile:
        raise top.error("name", f'must equal the file name "{profile}", got "{name}"')
    description = top.string("description")

    limits = top.table("limits", _LIMITS)
    max_months = limits.integer("max_months", 1)
    max_lessons = limits.integer("max_lessons", 1)
    max_amount = limits.integer("max_amount_fen", 1)

    balance = top.table("balance_limits", _LIMITS)
    balance_values: dict[str, int] = {}
    for key, per_charge in (
        ("max_months", max_months),
        ("max_lessons", max_lessons),
        ("max_amount_fen", max_amount),
    ):
        value = balance.integer(key, 1)
        if value < per_charge:
            # A balance limit below the per-charge limit would refuse a first, allowed charge.
            raise balance.error(
                balance.key(key),
                f"must be at least limits.{key} ({per_charge}), got {value}",
            )
        balance_values[key] = value

    months_before, max_remaining = _collection(top)
    tiers, tolerance, lesson_minutes = _price_caps(top)

    windows = top.table("windows", _WINDOWS)
    advance = top.table("advance", {"basis_points"})
    alerts = top.table(
        "alerts", {"min_balance_fen", "min_balance_new_institution_fen", "max_daily_outflow_fen"}
    )
    return Policy(
        name=name,
        description=description,
        max_months=max_months,
        max_lessons=max_lessons,
        max_amount_fen=max_amount,
        balance_max_months=balance_values["max_months"],
        balance_max_lessons=balance_values["max_lessons"],
        balance_max_amount_fen=balance_values["max_amount_fen"],
        earliest_collection_months_before_start=months_before,
        earliest_collection_max_remaining_lessons=max_remaining,
        price_cap_tiers=tiers,
        price_cap_tolerance_percent=tolerance,
        price_cap_lesson_minutes=lesson_minutes,
        # Silence counts as consent after these; a zero-day window would take the right away.
        confirmation_window=windows.window("confirmation", minimum_days=1),
        refund_answer_window=windows.window("refund_answer", minimum_days=1),
        refund_payout_before_start=windows.window("refund_payout_before_start", minimum_days=0),
        refund_payout_after_start=windows.window("refund_payout_after_start", minimum_days=0),
        # Nothing can be settled before its business date has ended: the lag is at least a day.
        settlement_lag=windows.window("settlement_lag", minimum_days=1),
        # Each parent may decline a transfer; a zero-day window would make that right empty.
        transfer_decline_window=windows.window("transfer_decline", minimum_days=1),
        advance_bp=advance.integer("basis_points", 0, 10_000),
        alert_min_balance_fen=alerts.integer("min_balance_fen", 1),
        alert_min_balance_new_fen=alerts.integer("min_balance_new_institution_fen", 1),
        alert_max_daily_outflow_fen=alerts.integer("max_daily_outflow_fen", 1),
        risk=_risk(top),
    )


def _risk(top: _Table) -> RiskPolicy:
    """The [risk] table: grade boundaries in ascending order, then one { threshold, points } per rule."""
    scalars = {
        "grade_b_points",
        "grade_c_points",
        "grade_d_points",
        "academic_weight_percent",
        "lookback_days",
        "baseline_min_lessons",
        "frozen_points",
        "winding_down_points",
    }
    risk = top.table("risk", scalars | set(RISK_RULES))
    b = risk.integer("grade_b_points", 1, _MAX_RISK_POINTS)
    c = risk.integer("grade_c_points", 1, _MAX_RISK_POINTS)
    d = risk.integer("grade_d_points", 1, _MAX_RISK_POINTS)
    if not b < c < d:
        raise risk.error(
            risk.key("grade_c_points"),
            f"must lie strictly between grade_b_points ({b}) and grade_d_points ({d}), got {c}",
        )
    rules = []
    for name, (low, high) in RISK_RULES.items():
        spec = risk.table(name, {"threshold", "points"})
        rules.append(
            (
                name,
                RiskRule(spec.integer("threshold", low, high), spec.integer("points", 0, d)),
            )
        )
    return RiskPolicy(
        grade_b_points=b,
        grade_c_points=c,
        grade_d_points=d,
        # An academic licence weighs at least as much as any other (DOMAIN.md, Zhenhai grading).
        academic_weight_percent=risk.integer("academic_weight_percent", 100, 1_000),
        lookback_days=risk.integer("lookback_days", 1, _MAX_DAYS),
        baseline_min_lessons=risk.integer("baseline_min_lessons", 1),
        frozen_points=risk.integer("frozen_points", 0, d),
        winding_down_points=risk.integer("winding_down_points", 0, d),
        rules=tuple(rules),
    )


def _collection(top: _Table) -> tuple[int | None, int | None]:
    """The earliest-collection rule: both numbers when enabled, neither when not."""
    pair = ("months_before_start", "max_remaining_lessons")
    collection = top.table("collection", {"enabled", *pair})
    enabled = collection.boolean("enabled")
    present = [key for key in pair if collection.has(key)]
    if not enabled:
        if present:
            raise collection.error(
                collection.key(present[0]),
                "is set but collection.enabled is false; "
                "set enabled = true or remove both months_before_start and max_remaining_lessons",
            )
        return None, None
    for key in pair:
        if not collection.has(key):
            raise collection.error(
                collection.key(key),
                "is missing: the earliest-collection rule needs both "
                "months_before_start and max_remaining_lessons",
            )
    return (
        collection.integer("months_before_start", 0),
        collection.integer("max_remaining_lessons", 1),
    )


def _price_caps(top: _Table) -> tuple[tuple[PriceCapTier, ...], int, int]:
    """Tiers by ascending class size; only the last is unbounded, so every class size has a cap."""
    caps = top.table("price_caps", {"tiers", "tolerance_percent", "lesson_minutes"})
    tolerance = caps.integer("tolerance_percent", 0, 100)
    lesson_minutes = caps.integer("lesson_minutes", 1, _MAX_LESSON_MINUTES)
    raw_tiers = caps.raw("tiers")
    if not isinstance(raw_tiers, list):
        raise caps.error(caps.key("tiers"), f"must be an array of tables, got {_show(raw_tiers)}")
    tiers: list[PriceCapTier] = []
    previous: int | None = None
    for index, raw in enumerate(raw_tiers):
        tier = _Table(
            top.profile, f"{caps.key('tiers')}[{index}]", raw, {"max_class_size", "cap_fen"}
        )
        last = index == len(raw_tiers) - 1
        cap = tier.integer("cap_fen", 1)
        if not tier.has("max_class_size"):
            if not last:
                raise tier.error(
                    tier.key("max_class_size"), "is missing: only the last tier may be unbounded"
                )
            tiers.append(PriceCapTier(None, cap))
            continue
        if last:
            raise tier.error(
                tier.key("max_class_size"),
                "must be omitted: the last tier is unbounded, "
                "otherwise larger classes would have no cap",
            )
        size = tier.integer("max_class_size", 1)
        if previous is not None and size <= previous:
            raise tier.error(
                tier.key("max_class_size"),
                f"must be greater than the previous tier's {previous}: "
                "tiers go by ascending class size",
            )
        previous = size
        tiers.append(PriceCapTier(size, cap))
    return tuple(tiers), tolerance, lesson_minutes
