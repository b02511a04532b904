"""A short run of the HTTP bench against a real ``escrow serve`` on SQLite (issue 8)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from api.bench_http import WARMUP_REPORTS, HttpFigures, measure_http
from ledger.config import Environment, Settings
from ledger.entities import Lesson
from ledger.runtime import Ledger


def test_http_bench_reports_and_reads_through_a_real_server(tmp_path: Path) -> None:
    settings = Settings(
        environment=Environment.TEST,
        database_url=f"sqlite:///{tmp_path / 'bench.db'}",
        key_dir=tmp_path / "keys",
        log_name="bench.test/log",
    )
    Ledger.open(settings).close()  # a migrated database with its log, as the bench hands over

    figures = measure_http(settings, seconds=1.0, rate=20.0, concurrency=2)

    assert isinstance(figures, HttpFigures)
    assert figures.first_error is None, figures.first_error
    assert figures.report_sent == 20
    assert figures.report_ok == 20
    assert figures.report_errors == 0
    assert 0 < figures.report_p50_ms <= figures.report_p99_ms <= figures.report_max_ms
    assert figures.report_rps > 0
    assert figures.balance_ok > 0
    assert figures.balance_errors == 0
    assert 0 < figures.balance_p50_ms <= figures.balance_p99_ms
    assert figures.balance_rps > 0
    assert figures.to_json()["report_ok"] == 20

    # Every report reached the ledger: the lessons are there, each once.
    ledger = Ledger.open(settings, migrate=False)
    try:
        with ledger.readers() as session:
            lessons = session.scalar(
                select(func.count()).select_from(Lesson).where(Lesson.teacher_id == "T-bench")
            )
    finally:
        ledger.close()
    assert lessons == 20 + WARMUP_REPORTS
