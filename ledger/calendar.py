"""Working days by the State Council calendar, and deadlines that end at local midnight.

Confirmation and refund-answer windows are counted in working days, and in China a working day is
decided by the published statutory holidays and their make-up working days (调休), not by the weekday
alone. The holiday data comes from the ``chinesecalendar`` package. A year it does not cover yet
(the State Council publishes each year's schedule late in the year before) falls back to Monday to
Friday and is reported once per year in the log, as DOMAIN.md asks; a deadline is never refused for
want of data.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar

from ledger.policy import Window

log = logging.getLogger("ledger.calendar")

_ONE_DAY = timedelta(days=1)


def _covered_years() -> tuple[int, int]:
    """First and last year of the package's data, read from the data as its own range check does."""
    years = [day.year for day in chinese_calendar.holidays]
    return min(years), max(years)


def _business_date(day: date) -> date:
    # datetime is a subclass of date; a time of day here would be silently dropped or compared wrongly.
    if type(day) is not date:
        raise TypeError(f"expected a date, got {type(day).__name__}; use deadline() for instants")
    return day


class WorkingCalendar:
    """Working days by the State Council calendar, falling back to weekdays outside the data."""

    def __init__(self) -> None:
        self.first_year, self.last_year = _covered_years()
        self._lock = threading.Lock()
        self._warned: set[int] = set()
        # The answer for a day never changes while the process runs, and chinesecalendar validates
        # its argument on every call: this cache turned a 1,000-lesson report from 35% calendar
        # lookups into none (issue 8). Bounded by the days actually asked about.
        self._days: dict[date, bool] = {}

    def covered(self, year: int) -> bool:
        """Whether the holiday data covers ``year`` (otherwise weekdays are used)."""
        return self.first_year <= year <= self.last_year

    def is_working_day(self, day: date) -> bool:
        """Whether ``day`` is a working day, make-up working Saturdays and Sundays included."""
        day = _business_date(day)
        known = self._days.get(day)
        if known is not None:
            return known
        if self.covered(day.year):
            working = bool(chinese_calendar.is_workday(day))
        else:
            self._warn_uncovered(day.year)
            working = day.weekday() < 5  # Monday to Friday
        self._days[day] = working
        return working

    def add_working_days(self, day: date, n: int) -> date:
        """The n-th working day strictly after ``day``; ``day`` itself when n is 0."""
        day = _business_date(day)
        if type(n) is not int or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        remaining = n
        while remaining:
            day += _ONE_DAY
            if self.is_working_day(day):
                remaining -= 1
        return day

    def add(self, day: date, window: Window) -> date:
        """The last day of ``window`` counted from the day after ``day``."""
        day = _business_date(day)
        if window.working:
            return self.add_working_days(day, window.days)
        return day + timedelta(days=window.days)

    def deadline(self, start: datetime, window: Window, zone: ZoneInfo) -> datetime:
        """The instant (aware, UTC) a window opened at ``start`` closes: local midnight after its last day.

        The window is counted from ``start``'s local date in ``zone``, so a lesson reported late on a
        Friday evening in Shanghai counts from that Friday even though it is already Friday in UTC.
        """
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError("deadline() needs an aware start time")
        last = self.add(start.astimezone(zone).date(), window)
        closes = datetime.combine(last + _ONE_DAY, time(0), tzinfo=zone)
        return closes.astimezone(UTC)

    def _warn_uncovered(self, year: int) -> None:
        with self._lock:
            if year in self._warned:
                return
            self._warned.add(year)
        log.warning(
            "no State Council holiday data for %d (chinesecalendar %s covers %d-%d); "
            "counting Monday to Friday as working days",
            year,
            chinese_calendar.__version__,
            self.first_year,
            self.last_year,
        )
