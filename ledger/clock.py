"""The injected clock.

Every "now" in the ledger comes from a ``Clock`` so that tests move time forward by calling a method
instead of sleeping, and so that a replay can be run with the times it originally saw.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the current time as an aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to; for tests, the demo and replays."""

    def __init__(self, start: datetime) -> None:
        self._now = _aware_utc(start)

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        """Jump to an instant (forwards or backwards)."""
        self._now = _aware_utc(when)

    def advance(self, delta: timedelta | None = None, /, **kwargs: float) -> datetime:
        """Move forward by a timedelta or by ``timedelta`` keyword arguments; returns the new now."""
        step = delta if delta is not None else timedelta(**kwargs)
        if step < timedelta(0):
            raise ValueError("ManualClock.advance only moves forward; use set() to go back")
        self._now += step
        return self._now


def _aware_utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError("clock times must be timezone-aware")
    return when.astimezone(UTC)
