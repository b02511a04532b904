"""What every escrow operation needs besides the session: the log, the policies, the calendar."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from ledger.calendar import WorkingCalendar
from ledger.clock import Clock
from ledger.journal import Posting
from ledger.log import Appended, Event, EventLog
from ledger.policy import Policy, PolicyBook, Window


@dataclass(frozen=True)
class Context:
    """The log (and its clock), the regional policies, the working-day calendar, the business zone."""

    log: EventLog
    policies: PolicyBook
    calendar: WorkingCalendar
    zone: ZoneInfo

    @property
    def clock(self) -> Clock:
        return self.log.clock

    def now(self) -> datetime:
        return self.log.clock.now()

    def local_date(self, instant: datetime) -> date:
        """The business date (Asia/Shanghai by default) of an instant."""
        return instant.astimezone(self.zone).date()

    def today(self) -> date:
        return self.local_date(self.now())

    def policy(self, name: str) -> Policy:
        return self.policies.get(name)

    def deadline(self, start: datetime, window: Window) -> datetime:
        """End of ``window`` counted from ``start``'s business date (see WorkingCalendar.deadline)."""
        return self.calendar.deadline(start, window, self.zone)

    def lock(self, session: Session) -> None:
        """Take the log lock before reading anything a decision depends on.

        Whatever the session had loaded before the lock may be stale, so it is expired: every
        object the operation then reads is read again, under the lock.
        """
        self.log.lock(session)
        session.expire_all()

    def record(
        self,
        session: Session,
        type_: str,
        actor: str,
        payload: Mapping[str, Any],
        postings: Sequence[Posting] = (),
    ) -> Appended:
        """Append one event for one state change."""
        return self.log.append(session, Event(type_, actor, payload, tuple(postings)))
