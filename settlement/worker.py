"""The clock-driven worker: APScheduler 3 with a SQLAlchemy job store in the service's own database.

Jobs: the daily settlement (``ESCROW_SETTLEMENT_TIME``, 02:00 Asia/Shanghai by default), the
deadline sweeps (every ``ESCROW_SWEEP_MINUTES``) and checkpoint signing (every
``ESCROW_CHECKPOINT_MINUTES``, and at the end of each settlement run). Missed runs are coalesced
into one, and every start catches up at once: sweeps first (silence may have confirmed lessons
while the service was down), then settlement of every due date. ``Worker.add_periodic`` is where
further jobs join.

Each process that runs a worker has its own scheduler; on PostgreSQL an advisory lock per job lets
exactly one of them execute a job at a time, and settlement is idempotent besides, so two workers
never settle anything twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from ledger import checkpoints, witnesses
from ledger.checkpoints import SignedCheckpoint
from ledger.risk import RiskReport, grade_all
from ledger.runtime import Ledger
from settlement.engine import SettlementReport, settle
from settlement.locks import exclusive
from settlement.sweeps import SweepReport, run_sweeps

log = logging.getLogger("settlement.worker")

SETTLEMENT_JOB = "escrow.settlement"
SWEEP_JOB = "escrow.sweeps"
CHECKPOINT_JOB = "escrow.checkpoints"

# The job store persists jobs as references to module-level functions; they reach the worker of
# this process through this variable.
_worker: Worker | None = None


def run_settlement_job() -> None:
    """Scheduled entry point: settle every due date (skipped if another process is at it)."""
    if _worker is not None:
        _worker.settle_due()


def run_checkpoint_job() -> None:
    """Scheduled entry point: sign a checkpoint of the log as it is now."""
    if _worker is not None:
        _worker.checkpoint("schedule")


def run_sweep_job() -> None:
    """Scheduled entry point: run the deadline sweeps."""
    if _worker is not None:
        _worker.sweep()


@dataclass
class CatchUp:
    sweeps: SweepReport | None
    settlement: SettlementReport | None


class Worker:
    """Runs the settlement and sweep jobs for one ledger, on a schedule or on demand."""

    def __init__(self, ledger: Ledger, scheduler: BaseScheduler | None = None) -> None:
        self.ledger = ledger
        self.scheduler = scheduler or BackgroundScheduler(timezone=ledger.settings.zone)

    # --- the jobs, callable directly (tests, the command line) --------------------------------

    def settle_due(self) -> SettlementReport | None:
        """Settle every institution up to its latest due date; None if another worker is at it."""
        with exclusive(self.ledger.engine, SETTLEMENT_JOB) as mine:
            if not mine:
                log.info("settlement is running in another process; skipped")
                return None
            report = settle(self.ledger.sessions, self.ledger.escrow)
            self.grade_risk()
        # Bank files and balances of this run are covered by a signed checkpoint at once.
        self.checkpoint("settlement")
        log.info(
            "settled %d batches, %d lessons, %d fen payable; %d institutions held",
            len(report.created),
            report.lessons,
            report.payable_fen,
            len(report.held),
        )
        return report

    def grade_risk(self) -> RiskReport | None:
        """Grade every institution for the business date that just ended (after its settlement).

        A failure is logged and never stops settlement; the next run, or ``escrow risk``, grades
        what is missing (grading a date is idempotent).
        """
        try:
            report = grade_all(self.ledger.sessions, self.ledger.escrow)
        except Exception:
            log.exception("risk grading failed")
            return None
        if report.alerts or report.failed:
            log.warning(
                "risk grades of %s: %d alerts raised, %d institutions failed",
                report.business_date,
                len(report.alerts),
                len(report.failed),
            )
        return report

    def sweep(self) -> SweepReport | None:
        """Run the deadline sweeps; None if another worker is at it."""
        with exclusive(self.ledger.engine, SWEEP_JOB) as mine:
            if not mine:
                return None
            report = run_sweeps(self.ledger.sessions, self.ledger.escrow)
        if report.confirmed or report.approved or report.overdue:
            log.info(
                "sweeps: %d lessons confirmed by silence, %d refunds approved by silence, "
                "%d refunds overdue",
                report.confirmed,
                report.approved,
                report.overdue,
            )
        return report

    def checkpoint(self, reason: str) -> SignedCheckpoint:
        """Sign the log as it is now (a size already signed is not signed again)."""
        with self.ledger.sessions.begin() as session:
            signed = checkpoints.issue(session, self.ledger.log, self.ledger.key, reason=reason)
            session.expunge(signed)
        # Cosignatures from the registered witnesses; a witness that is down is logged, no more.
        witnesses.collect_quietly(self.ledger, signed)
        return signed

    def catch_up(self) -> CatchUp:
        """What a start does: sweeps first, then settle everything that fell due meanwhile."""
        sweeps = self.sweep()
        return CatchUp(sweeps, self.settle_due())

    # --- scheduling ------------------------------------------------------------------------------

    def add_periodic(self, job_id: str, function: Callable[[], None], minutes: int) -> None:
        """Add another recurring job (a module-level function), e.g. checkpoint signing."""
        self.scheduler.add_job(
            function,
            IntervalTrigger(minutes=minutes),
            id=job_id,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )

    def start(self, *, catch_up: bool = True, persistent: bool = True) -> None:
        """Register the jobs and start the scheduler; catch up first (in the scheduler's thread)."""
        global _worker
        _worker = self
        settings = self.ledger.settings
        # Deferred transactions: reading the job store must not take SQLite's write lock.
        jobs_engine = self.ledger.engine.execution_options(escrow_read_only=True)
        store = SQLAlchemyJobStore(engine=jobs_engine) if persistent else MemoryJobStore()
        self.scheduler.add_jobstore(store, alias="default")
        self.scheduler.add_jobstore(MemoryJobStore(), alias="once")
        self.scheduler.add_job(
            run_settlement_job,
            CronTrigger(
                hour=settings.settlement_time.hour,
                minute=settings.settlement_time.minute,
                timezone=settings.zone,
            ),
            id=SETTLEMENT_JOB,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )
        self.add_periodic(SWEEP_JOB, run_sweep_job, settings.sweep_minutes)
        self.add_periodic(CHECKPOINT_JOB, run_checkpoint_job, settings.checkpoint_minutes)
        if catch_up:
            self.scheduler.add_job(self.catch_up, jobstore="once", id="escrow.catch_up")
        self.scheduler.start()

    def shutdown(self) -> None:
        global _worker
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if _worker is self:
            _worker = None
