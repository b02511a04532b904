"""The scheduled worker: its jobs, its catch-up at start, and one job at a time across workers."""

from __future__ import annotations

import threading
from datetime import date, time

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import func, select, text

from ledger.accounts import AccountKind
from ledger.entities import SettlementBatch
from settlement import worker as worker_module
from settlement.locks import exclusive
from settlement.worker import SETTLEMENT_JOB, SWEEP_JOB, Worker
from tests.escrow.world import LESSON, World, shanghai


def test_the_jobs_are_kept_in_the_services_own_database(world: World) -> None:
    runner = Worker(world.ledger, BackgroundScheduler(timezone=world.ledger.settings.zone))
    runner.start(catch_up=False)
    try:
        settlement = runner.scheduler.get_job(SETTLEMENT_JOB)
        sweeps = runner.scheduler.get_job(SWEEP_JOB)
        assert str(settlement.trigger.timezone) == "Asia/Shanghai"
        fields = {f.name: str(f) for f in settlement.trigger.fields}
        assert (fields["hour"], fields["minute"]) == ("2", "0")
        assert sweeps.trigger.interval.total_seconds() == 15 * 60
        assert settlement.coalesce
        assert sweeps.coalesce
        with world.ledger.engine.connect() as conn:
            stored = set(conn.execute(text("SELECT id FROM apscheduler_jobs")).scalars())
        assert {SETTLEMENT_JOB, SWEEP_JOB} <= stored
    finally:
        runner.shutdown()
    assert worker_module._worker is None


def test_the_settlement_time_is_configurable(world: World) -> None:
    settings = world.ledger.settings.model_copy(update={"settlement_time": time(3, 30)})
    world.ledger.settings = settings
    runner = Worker(world.ledger, BackgroundScheduler(timezone=settings.zone))
    runner.start(catch_up=False, persistent=False)
    try:
        fields = {f.name: str(f) for f in runner.scheduler.get_job(SETTLEMENT_JOB).trigger.fields}
        assert (fields["hour"], fields["minute"]) == ("3", "30")
    finally:
        runner.shutdown()


def test_a_start_after_downtime_confirms_by_silence_then_settles_what_fell_due(
    world: World,
) -> None:
    contract = world.paid_contract(lessons=20, unit=LESSON)
    world.report(contract, 3)  # never answered by the parent
    world.set_clock(shanghai(2026, 9, 25, 9))  # the service was down for three weeks
    caught = Worker(world.ledger).catch_up()
    assert caught.sweeps is not None
    assert caught.settlement is not None
    assert caught.sweeps.confirmed == 3
    # silence confirmed them today; T+1 settles them tomorrow, not now
    assert world.acct(AccountKind.RELEASABLE) == 3 * LESSON
    world.set_clock(shanghai(2026, 9, 26, 2))
    Worker(world.ledger).settle_due()
    assert world.acct(AccountKind.PAYABLE) == 3 * LESSON


@pytest.mark.postgresql
def test_two_workers_never_settle_anything_twice(world: World) -> None:
    for subject in ("art", "music", "chess"):
        contract = world.paid_contract(lessons=5, unit=LESSON, subject=subject)
        for lesson in world.report(contract, 2):
            world.confirm(lesson.id)
    world.set_clock(shanghai(2026, 9, 5, 2))
    first, second = Worker(world.ledger), Worker(world.ledger)
    barrier = threading.Barrier(2)
    results = []

    def run(runner: Worker) -> None:
        barrier.wait()
        results.append(runner.settle_due())

    threads = [threading.Thread(target=run, args=(w,)) for w in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with world.read() as session:
        counts = session.execute(
            select(
                SettlementBatch.institution_id, SettlementBatch.business_date, func.count()
            ).group_by(SettlementBatch.institution_id, SettlementBatch.business_date)
        ).all()
    assert {c for *_, c in counts} == {1}
    assert world.acct(AccountKind.PAYABLE) == 6 * LESSON
    assert len(results) == 2


@pytest.mark.postgresql
def test_a_job_held_by_one_worker_is_skipped_by_another(world: World) -> None:
    with exclusive(world.ledger.engine, SETTLEMENT_JOB) as mine:
        assert mine
        assert Worker(world.ledger).settle_due() is None
    assert Worker(world.ledger).settle_due() is not None


def test_settlement_days_are_business_dates_in_shanghai(world: World) -> None:
    contract = world.paid_contract(lessons=20, unit=LESSON)
    world.set_clock(shanghai(2026, 9, 1, 23, 30))  # 15:30 UTC, still 1 September in Shanghai
    [lesson] = world.report(contract)
    world.confirm(lesson.id)
    world.set_clock(shanghai(2026, 9, 2, 0, 30))  # 16:30 UTC on 1 September, but 2 September here
    [late] = world.report(contract)
    world.confirm(late.id)
    world.set_clock(shanghai(2026, 9, 2, 2))
    report = world.settle(institutions=[world.school])
    [batch] = [b for b in report.created if b.gross_fen]
    assert (batch.business_date, batch.lessons) == (date(2026, 9, 1), 1)
