"""A small run of ``escrow bench``: every phase runs and reports figures that add up.

The bench itself (1,000,000 lessons) is ``make bench``; its targets are never asserted here, since
a timed unit test would only measure the machine CI happens to run on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api import bench
from api.cli import app
from ledger.clock import ManualClock
from ledger.config import Settings
from ledger.runtime import Ledger

SCALE = 1_250  # two institutions: one full batch of 1,000 and two partial ones


def test_a_small_bench_measures_every_phase(database_url: str) -> None:
    figures = bench.run(database_url, SCALE, http_seconds=1.0)

    assert figures.institutions == 2
    assert figures.contracts == 2 * 11  # 625 lessons each, 60 per contract
    assert figures.ingest_lessons == SCALE
    assert figures.ingest_lessons_per_s > 0
    assert 0 < figures.ingest_batch_p50_ms <= figures.ingest_batch_p99_ms
    # every lesson is confirmed on one date and settled the next day, one batch per institution
    assert figures.confirm_lessons == SCALE
    assert figures.settle_lessons == SCALE
    assert figures.settle_batches == 2
    assert figures.verify_ok
    # genesis, bank, per institution: itself, a parent, and per contract a student, the
    # contract and its receipt; then one entry per lesson reported and one per confirmation
    setup_entries = 2 + 2 * 2 + 3 * figures.contracts
    assert figures.verify_entries >= setup_entries + 2 * SCALE
    assert figures.verify_peak_rss_mb > 0
    assert 0 < figures.verify_peak_mb <= figures.verify_peak_rss_mb * 1.05
    assert figures.floor_entries_per_s > 0
    assert figures.verify_floor_ratio == pytest.approx(
        figures.verify_entries_per_s / figures.floor_entries_per_s
    )
    assert figures.proof_tree_size >= figures.verify_entries
    assert figures.proof_samples == bench.PROOF_SAMPLES
    assert 0 < figures.proof_p50_ms <= figures.proof_p99_ms
    assert figures.http is not None
    assert figures.http["report_ok"] > 0
    assert figures.http["report_errors"] == 0
    assert figures.http["balance_errors"] == 0
    document = figures.to_json()
    assert json.loads(json.dumps(document))["scale"] == SCALE
    by_key = {row["key"]: row for row in document["targets"]}
    assert set(by_key) == {target.key for target in bench.targets(figures.database)}
    # targets stated for 1,000,000 lessons are not judged at this scale
    assert by_key["settle_seconds"]["met"] is None
    assert by_key["ingest_lessons_per_s"]["met"] in (True, False)


def test_the_bench_refuses_a_database_that_holds_a_log(
    settings: Settings, clock: ManualClock
) -> None:
    Ledger.open(settings, clock=clock).close()  # writes the genesis entry
    with pytest.raises(ValueError, match="already holds 1 log entries"):
        bench.run(settings.database_url, 10, http_seconds=None)


def test_escrow_bench_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app, ["bench", "--scale", "120", "--no-http", "--json-out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "escrow bench on sqlite: 120 lessons" in result.output
    assert "verify / SHA-256 floor" in result.output
    written = json.loads(out.read_text())
    assert written["ingest_lessons"] == 120
    assert written["verify_ok"] is True
