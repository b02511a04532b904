"""Working days by the State Council calendar: holidays, make-up working days, deadlines in UTC."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import chinese_calendar  # type: ignore[import-untyped]
import pytest

from ledger.calendar import WorkingCalendar
from ledger.policy import Window

SHANGHAI = ZoneInfo("Asia/Shanghai")
SEVEN_WORKING_DAYS = Window(7, working=True)
OUT_OF_DATA = 2099  # far beyond any published State Council schedule


@pytest.fixture
def calendar() -> WorkingCalendar:
    return WorkingCalendar()


def test_the_package_data_is_what_these_tests_assume() -> None:
    # The dates asserted below are the State Council notices as the package records them.
    assert {date(2025, 9, 28), date(2025, 10, 11), date(2026, 2, 14), date(2026, 2, 28)} <= set(
        chinese_calendar.workdays
    )


def test_coverage_is_read_from_the_package_data(calendar: WorkingCalendar) -> None:
    years = {day.year for day in chinese_calendar.holidays}
    assert (calendar.first_year, calendar.last_year) == (min(years), max(years))
    assert calendar.covered(2025)
    assert calendar.covered(2026)
    assert not calendar.covered(min(years) - 1)
    assert not calendar.covered(OUT_OF_DATA)


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (date(2025, 9, 26), True),  # Friday
        (date(2025, 9, 27), False),  # Saturday
        (date(2025, 9, 28), True),  # Sunday, make-up working day for National Day
        (date(2025, 9, 30), True),
        *((date(2025, 10, d), False) for d in range(1, 9)),  # National Day and Mid-Autumn
        (date(2025, 10, 9), True),
        (date(2025, 10, 10), True),
        (date(2025, 10, 11), True),  # Saturday, make-up working day
        (date(2025, 10, 12), False),  # Sunday
    ],
    ids=str,
)
def test_national_day_week_2025(calendar: WorkingCalendar, day: date, working: bool) -> None:
    assert calendar.is_working_day(day) is working


def test_spring_festival_2026(calendar: WorkingCalendar) -> None:
    off = [d for d in range(13, 29) if not calendar.is_working_day(date(2026, 2, d))]
    # Feb 14 and Feb 28 are make-up Saturdays; Feb 15-23 is the festival; Feb 21-22 fall inside it.
    assert off == [15, 16, 17, 18, 19, 20, 21, 22, 23]


def test_a_make_up_saturday_counts_as_a_working_day(calendar: WorkingCalendar) -> None:
    assert date(2026, 2, 14).weekday() == 5
    assert calendar.is_working_day(date(2026, 2, 14))
    assert calendar.add_working_days(date(2026, 2, 13), 1) == date(2026, 2, 14)
    assert calendar.add_working_days(date(2026, 2, 14), 1) == date(2026, 2, 24)


def test_adding_working_days_skips_the_holiday(calendar: WorkingCalendar) -> None:
    # After Tue 30 Sep: Thu 9, Fri 10, Sat 11 (make-up), Mon 13, Tue 14, Wed 15, Thu 16 October.
    assert calendar.add_working_days(date(2025, 9, 30), 7) == date(2025, 10, 16)
    assert calendar.add_working_days(date(2025, 9, 30), 1) == date(2025, 10, 9)
    # From inside the holiday the count starts on the first working day after it.
    assert calendar.add_working_days(date(2025, 10, 3), 3) == date(2025, 10, 11)
    assert calendar.add_working_days(date(2026, 2, 13), 5) == date(2026, 2, 27)


def test_zero_working_days_is_the_day_itself(calendar: WorkingCalendar) -> None:
    assert calendar.add_working_days(date(2025, 10, 1), 0) == date(2025, 10, 1)


def test_a_negative_count_is_refused(calendar: WorkingCalendar) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        calendar.add_working_days(date(2025, 10, 1), -1)


def test_a_datetime_is_not_a_business_date(calendar: WorkingCalendar) -> None:
    with pytest.raises(TypeError, match="expected a date"):
        calendar.is_working_day(datetime(2025, 10, 1, tzinfo=UTC))


def test_calendar_day_windows_count_holidays(calendar: WorkingCalendar) -> None:
    assert calendar.add(date(2025, 9, 30), Window(1, working=False)) == date(2025, 10, 1)
    assert calendar.add(date(2025, 9, 30), Window(15, working=False)) == date(2025, 10, 15)
    assert calendar.add(date(2025, 9, 30), SEVEN_WORKING_DAYS) == date(2025, 10, 16)


@pytest.mark.parametrize(
    ("start", "closes"),
    [
        # Tue 30 Sep 10:00 in Shanghai: seven working days end with Thu 16 Oct, at 17 Oct 00:00 +08.
        (datetime(2025, 9, 30, 2, 0, tzinfo=UTC), datetime(2025, 10, 16, 16, 0, tzinfo=UTC)),
        # 17:00 UTC on 30 Sep is already 1 Oct in Shanghai, a holiday: the same seven days.
        (datetime(2025, 9, 30, 17, 0, tzinfo=UTC), datetime(2025, 10, 16, 16, 0, tzinfo=UTC)),
        # 23:59 in Shanghai on Mon 29 Sep: Tue 30 Sep is the first of the seven.
        (datetime(2025, 9, 29, 15, 59, tzinfo=UTC), datetime(2025, 10, 15, 16, 0, tzinfo=UTC)),
        # A start given in another zone is first placed on Shanghai's calendar.
        (
            datetime(2025, 9, 29, 18, 30, tzinfo=ZoneInfo("America/New_York")),
            datetime(2025, 10, 16, 16, 0, tzinfo=UTC),
        ),
    ],
)
def test_a_working_day_deadline_crosses_national_day(
    calendar: WorkingCalendar, start: datetime, closes: datetime
) -> None:
    deadline = calendar.deadline(start, SEVEN_WORKING_DAYS, SHANGHAI)
    assert deadline == closes
    assert deadline.tzinfo is UTC


def test_a_calendar_day_deadline_ends_at_local_midnight(calendar: WorkingCalendar) -> None:
    start = datetime(2025, 9, 30, 2, 0, tzinfo=UTC)
    settled_by = calendar.deadline(start, Window(1, working=False), SHANGHAI)
    assert settled_by == datetime(2025, 10, 1, 16, 0, tzinfo=UTC)
    refund_by = calendar.deadline(start, Window(5, working=False), SHANGHAI)
    assert refund_by == datetime(2025, 10, 5, 16, 0, tzinfo=UTC)
    same_day = calendar.deadline(start, Window(0, working=False), SHANGHAI)
    assert same_day == datetime(2025, 9, 30, 16, 0, tzinfo=UTC)


def test_a_spring_festival_refund_answer_waits_for_the_holiday(
    calendar: WorkingCalendar,
) -> None:
    # Asked Fri 13 Feb 2026 at 15:00 in Shanghai; five working days: 14, 24, 25, 26, 27 Feb.
    start = datetime(2026, 2, 13, 7, 0, tzinfo=UTC)
    answer_by = calendar.deadline(start, Window(5, working=True), SHANGHAI)
    assert answer_by == datetime(2026, 2, 27, 16, 0, tzinfo=UTC)


def test_a_naive_start_is_refused(calendar: WorkingCalendar) -> None:
    with pytest.raises(ValueError, match="aware"):
        calendar.deadline(datetime(2025, 9, 30, 10, 0), SEVEN_WORKING_DAYS, SHANGHAI)


def test_a_year_outside_the_data_falls_back_to_weekdays_and_warns_once(
    calendar: WorkingCalendar, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ledger.calendar")
    assert not calendar.covered(OUT_OF_DATA)
    # 1 Jan and 1 Oct 2099 are Thursdays: without data they are plain working days.
    assert calendar.is_working_day(date(2099, 1, 1))
    assert calendar.is_working_day(date(2099, 10, 1))
    assert not calendar.is_working_day(date(2099, 10, 3))  # Saturday
    assert not calendar.is_working_day(date(2099, 10, 4))  # Sunday
    # Thu 1 Oct + 3 working days: Fri 2, Mon 5, Tue 6.
    assert calendar.add_working_days(date(2099, 10, 1), 3) == date(2099, 10, 6)
    assert calendar.deadline(
        datetime(2099, 10, 1, 2, 0, tzinfo=UTC), Window(3, working=True), SHANGHAI
    ) == datetime(2099, 10, 6, 16, 0, tzinfo=UTC)

    records = [r for r in caplog.records if r.name == "ledger.calendar"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert "2099" in records[0].getMessage()


def test_each_uncovered_year_is_reported_once(
    calendar: WorkingCalendar, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ledger.calendar")
    first = calendar.first_year - 1
    for _ in range(3):
        calendar.is_working_day(date(OUT_OF_DATA, 6, 1))
        calendar.is_working_day(date(first, 6, 1))
    calendar.is_working_day(date(2025, 6, 3))  # covered: no report
    reported = sorted(r.getMessage()[:40] for r in caplog.records if r.name == "ledger.calendar")
    assert len(reported) == 2
    assert any(str(first) in message for message in reported)
    assert any(str(OUT_OF_DATA) in message for message in reported)
