"""Deadline sweeps: confirmation by silence, approval by silence, overdue refunds.

Each sweep acts on every deadline that has passed by "now" (the injected clock), in bounded
transactions, and is idempotent: what it changed no longer matches its query. Run after downtime,
they simply find more to do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from ledger.escrow import lessons, refunds
from ledger.escrow.context import Context


@dataclass(frozen=True, slots=True)
class SweepReport:
    confirmed: int
    approved: int
    overdue: int


def _drain(
    sessions: sessionmaker[Session], ctx: Context, sweep: Callable[..., int], chunk: int
) -> int:
    total = 0
    while True:
        with sessions.begin() as session:
            done = sweep(session, ctx, limit=chunk)
        total += done
        if done < chunk:
            return total


def run_sweeps(sessions: sessionmaker[Session], ctx: Context) -> SweepReport:
    """Every deadline sweep, each in bounded transactions of its own."""
    return SweepReport(
        confirmed=_drain(sessions, ctx, lessons.auto_confirm, lessons.AUTO_CONFIRM_CHUNK),
        approved=_drain(sessions, ctx, refunds.auto_approve_refunds, refunds.AUTO_APPROVE_CHUNK),
        overdue=_drain(sessions, ctx, refunds.mark_overdue_refunds, refunds.AUTO_APPROVE_CHUNK),
    )
