"""The settlement commands of ``escrow``: settle, sweep, worker, payouts."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import func, select

from api.cli_common import DatabaseUrl, err, masked, open_current, out, parse_date, settings_for
from ledger.entities import Institution
from ledger.money import Money
from settlement.engine import SettlementReport, preview
from settlement.engine import settle as run_settle
from settlement.payouts import export_csv, export_json
from settlement.sweeps import run_sweeps
from settlement.worker import Worker


def _print_settlement(report: SettlementReport, *, dry_run: bool) -> None:
    table = Table(
        "institution",
        "date",
        "lessons",
        "released",
        "advance netted",
        "payable",
        "payout",
        title="Settlement (dry run: nothing written)" if dry_run else "Settlement",
    )
    first_payout = {p.batch_id: p.id for p in reversed(report.payouts) if not p.retry_of}
    for batch in report.created:
        table.add_row(
            batch.institution_id,
            batch.business_date.isoformat(),
            str(batch.lessons),
            str(Money(batch.gross_fen)),
            str(Money(batch.netted_fen)),
            str(Money(batch.payable_fen)),
            first_payout.get(getattr(batch, "id", ""), ""),
        )
    table.add_row(
        "total",
        "",
        str(report.lessons),
        str(Money(report.gross_fen)),
        "",
        str(Money(report.payable_fen)),
        f"{len(report.payouts)} instructions",
    )
    out.print(table)
    if not report.created:
        out.print("nothing was due")
    for batch in report.existing:
        out.print(
            f"already settled: {batch.institution_id} {batch.business_date} "
            f"({batch.lessons} lessons, {Money(batch.payable_fen)} payable)"
        )
    for retry in (p for p in report.payouts if p.retry_of):
        out.print(
            f"failed payout {retry.retry_of} instructed again as {retry.id} "
            f"({Money(retry.amount_fen)})"
        )
    if report.held:
        out.print(f"held (frozen or winding down; money stays in escrow): {', '.join(report.held)}")
    if report.not_due:
        out.print(f"lag not yet passed: {', '.join(report.not_due)}")
    for institution, problem in report.failed.items():
        out.print(f"[red]failed[/red] {institution}: {problem}")


def settle(
    on: Annotated[
        str | None,
        typer.Option(
            "--date", help="Settle up to this business date (YYYY-MM-DD); default: all due"
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be settled, write nothing")
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Settle releasable money into payouts, date by date, for every institution."""
    through = parse_date(on)
    ledger = open_current(settings_for(database_url))
    try:
        if dry_run:
            _print_settlement(preview(ledger.readers, ledger.escrow, through=through), dry_run=True)
            return
        with ledger.readers() as session:
            total = int(session.scalar(select(func.count()).select_from(Institution)) or 0)
        with Progress(
            TextColumn("settling"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=not err.is_terminal,
        ) as bar:
            task = bar.add_task("settle", total=total)
            report = run_settle(
                ledger.sessions,
                ledger.escrow,
                through=through,
                between_institutions=lambda _i: bar.advance(task),
            )
        _print_settlement(report, dry_run=False)
    finally:
        ledger.close()
    if report.failed:
        raise typer.Exit(1)


def sweep(database_url: DatabaseUrl = None) -> None:
    """Run the deadline sweeps now: silence confirms, silence approves, refunds fall overdue."""
    ledger = open_current(settings_for(database_url))
    try:
        report = run_sweeps(ledger.sessions, ledger.escrow)
    finally:
        ledger.close()
    out.print(
        f"{report.confirmed} lessons confirmed by silence, {report.approved} refunds approved by "
        f"silence, {report.overdue} refunds newly overdue"
    )


def worker(database_url: DatabaseUrl = None) -> None:
    """Run only the scheduled jobs (settlement, sweeps), for deployments that split them off."""
    from apscheduler.schedulers.blocking import BlockingScheduler

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = settings_for(database_url)
    ledger = open_current(settings)
    runner = Worker(ledger, BlockingScheduler(timezone=settings.zone))
    try:
        # Process managers stop services with SIGTERM: shut the scheduler down as for Ctrl-C.
        signal.signal(signal.SIGTERM, lambda *_: runner.scheduler.shutdown(wait=False))
        err.print(
            f"escrow worker on {masked(settings.database_url)}: settlement daily at "
            f"{settings.settlement_time:%H:%M} {settings.timezone}, sweeps every "
            f"{settings.sweep_minutes} min; catching up first"
        )
        runner.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        runner.shutdown()
        ledger.close()


def payouts(
    bank: Annotated[str, typer.Option("--bank", help="Custody bank id")],
    on: Annotated[
        str | None, typer.Option("--date", help="Instruction date (YYYY-MM-DD): that run's file")
    ] = None,
    open_only: Annotated[
        bool, typer.Option("--open", help="Every instruction the bank has not answered yet")
    ] = False,
    fmt: Annotated[str, typer.Option("--format", help="csv or json")] = "csv",
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write here instead of standard output")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Export a bank's payout instructions: one instruction date's file, or all still open."""
    day = parse_date(on)
    if day is None and not open_only:
        raise typer.BadParameter("give --date D, --open, or both")
    if fmt not in ("csv", "json"):
        raise typer.BadParameter("--format is csv or json")
    ledger = open_current(settings_for(database_url))
    try:
        with ledger.readers() as session:
            export = export_csv if fmt == "csv" else export_json
            text = export(session, bank, on=day, open_only=open_only)
    finally:
        ledger.close()
    if out_file is None:
        sys.stdout.write(text)
    else:
        out_file.write_text(text)
        err.print(f"payout instructions of {bank} written to {out_file}")


def register(app: typer.Typer) -> None:
    for command in (settle, sweep, worker, payouts):
        app.command()(command)
