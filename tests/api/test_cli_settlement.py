"""escrow settle, sweep and payouts from the command line."""

from __future__ import annotations

import json

from sqlalchemy import func, select
from typer.testing import CliRunner

from api.cli import app
from ledger.accounts import AccountKind
from ledger.entities import Payout
from ledger.models import LogEntry
from tests.escrow.world import LESSON, World

runner = CliRunner()


def _env(world: World) -> dict[str, str]:
    settings = world.ledger.settings
    return {
        "ESCROW_DATABASE_URL": world.ledger.engine.url.render_as_string(hide_password=False),
        "ESCROW_KEY_DIR": str(settings.key_dir),
        "ESCROW_LOG_NAME": settings.log_name,
        "ESCROW_POLICY_DIR": str(settings.policy_dir),
    }


def _size(world: World) -> int:
    with world.read() as session:
        return int(session.scalar(select(func.count()).select_from(LogEntry)) or 0)


def test_settle_dry_run_then_settle_then_nothing_more(world: World) -> None:
    contract = world.paid_contract(lessons=10, unit=LESSON)
    for lesson in world.report(contract, 2):
        world.confirm(lesson.id)
    size = _size(world)
    dry = runner.invoke(app, ["settle", "--dry-run"], env=_env(world))
    assert dry.exit_code == 0, dry.output
    assert "dry run: nothing written" in dry.output
    assert "¥300.00" in dry.output
    assert _size(world) == size
    real = runner.invoke(app, ["settle", "--date", "2026-09-01"], env=_env(world))
    assert real.exit_code == 0, real.output
    assert world.acct(AccountKind.PAYABLE) == 2 * LESSON
    again = runner.invoke(app, ["settle", "--date", "2026-09-01"], env=_env(world))
    assert "already settled" in again.output
    assert world.acct(AccountKind.PAYABLE) == 2 * LESSON


def test_payouts_exports_a_banks_instructions(world: World) -> None:
    contract = world.paid_contract(lessons=10, unit=LESSON)
    for lesson in world.report(contract, 1):
        world.confirm(lesson.id)
    runner.invoke(app, ["settle", "--date", "2026-09-01"], env=_env(world))
    result = runner.invoke(
        app, ["payouts", "--bank", world.bank, "--open", "--format", "json"], env=_env(world)
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    with world.read() as session:
        [payout] = session.scalars(select(Payout))
    assert [p["end_to_end_id"] for p in document["payouts"]] == [payout.id]
    assert document["total_fen"] == LESSON
    # the command line runs on the real clock: the run's file is dated the day it ran
    day = payout.instructed_on.isoformat()
    csv_out = runner.invoke(app, ["payouts", "--bank", world.bank, "--date", day], env=_env(world))
    assert csv_out.exit_code == 0, csv_out.output
    lines = csv_out.output.splitlines()
    assert lines[0].startswith("end_to_end_id,instructed_on,")
    assert len(lines) == 2
    assert lines[1].startswith(f"{payout.id},{day},")
    none = runner.invoke(app, ["payouts", "--bank", world.bank], env=_env(world))
    assert none.exit_code == 2  # either a date or --open
    bad = runner.invoke(app, ["payouts", "--bank", world.bank, "--date", "1 Sept"], env=_env(world))
    assert bad.exit_code == 2


def test_sweep_reports_what_it_did(world: World) -> None:
    world.report(world.paid_contract(lessons=10, unit=LESSON), 2)
    result = runner.invoke(app, ["sweep"], env=_env(world))  # the real clock is months later
    assert result.exit_code == 0, result.output
    assert "2 lessons confirmed by silence" in result.output
    assert world.acct(AccountKind.RELEASABLE) == 2 * LESSON
