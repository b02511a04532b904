"""The ``escrow`` command line: serve, migrate, verify, and the log key."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import make_url

from api import (
    cli_audit,
    cli_bench,
    cli_keys,
    cli_reconcile,
    cli_settlement,
    cli_tokens,
    cli_witness,
)
from api.cli_common import DatabaseUrl, err, masked, out, settings_for
from api.cli_risk import register as register_risk
from api.demo import DemoSummary, build_demo, demo_start
from ledger import keys, rotation, schema
from ledger.clock import ManualClock
from ledger.config import Settings
from ledger.db import is_sqlite, make_engine, session_factory
from ledger.errors import LogKeyMismatch
from ledger.models import LogEntry
from ledger.money import Money
from ledger.runtime import Ledger, check_key
from ledger.verify import Report, count_entries, verify_database
from settlement.worker import Worker

app = typer.Typer(
    help="tuition-escrow: supervised escrow for prepaid tuition.",
    no_args_is_help=True,
    add_completion=False,
)
key_app = typer.Typer(help="The log's Ed25519 signing key.", no_args_is_help=True)
app.add_typer(key_app, name="key")

PROGRESS_THRESHOLD = 50_000  # entries; shorter verifications finish before a bar is useful


def _log_size(settings: Settings) -> int:
    """Entries in the configured database, without creating anything (0 if there is no log yet)."""
    url = make_url(settings.database_url)
    if is_sqlite(url) and not Path(url.database or "").exists():
        return 0
    engine = make_engine(url)
    try:
        if not inspect(engine).has_table("log_entries"):
            return 0
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(LogEntry)).scalar_one())
    finally:
        engine.dispose()


def _run_demo(settings: Settings) -> DemoSummary:
    clock = ManualClock(demo_start(datetime.now(UTC), settings.zone))
    err.print(
        f"building the demo month ({clock.now():%Y-%m-%d} onwards) in "
        f"{masked(settings.database_url)} ..."
    )
    ledger = Ledger.open(settings, clock=clock)
    try:
        summary = build_demo(ledger, clock)
    finally:
        ledger.close()
    _print_demo(summary)
    return summary


def _print_demo(summary: DemoSummary) -> None:
    table = Table(
        "institution",
        "status",
        "contracts",
        "lessons",
        "confirmed",
        "paid out",
        "refunds",
        "refunded",
        "escrow",
        "liability",
        "risk grades by day",
        title="The demo month",
    )
    for row in summary.institutions:
        table.add_row(
            row.name,
            row.status,
            str(row.contracts),
            str(row.lessons),
            str(row.confirmed),
            str(Money(row.paid_out_fen)),
            str(row.refunds),
            str(Money(row.refunded_fen)),
            str(Money(row.escrow_fen)),
            str(Money(row.liability_fen)),
            row.grades,
        )
    out.print(table)
    for refused in summary.refused:
        out.print(f"refused at signing: {refused}")
    out.print(f"lender payments marked for return: {summary.returned_receipts}")
    out.print(f"payouts bounced by a bank and retried: {summary.failed_payouts}")
    if summary.report is not None:
        _print_report(summary.report)
    for problem in summary.invariant_problems:
        out.print(f"[red]invariant broken[/red]: {problem}")


@app.command()
def demo(database_url: DatabaseUrl = None) -> None:
    """Build a realistic month (3 institutions, 30 families) in an empty database, then verify it."""
    settings = settings_for(database_url)
    size = _log_size(settings)
    if size:
        err.print(
            f"[red]{masked(settings.database_url)} already holds {size} log entries; the demo "
            "builds a fresh database: give --database-url of an empty one "
            "(e.g. sqlite:///./var/demo.db)[/red]"
        )
        raise typer.Exit(2)
    summary = _run_demo(settings)
    raise typer.Exit(0 if summary.ok else 1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    database_url: DatabaseUrl = None,
    migrate: Annotated[bool, typer.Option(help="Apply pending migrations first")] = True,
    with_demo: Annotated[
        bool, typer.Option("--demo", help="Seed an empty database with the demo month first")
    ] = False,
    scheduler: Annotated[
        bool,
        typer.Option(help="Run settlement and sweeps in this process (off if a worker runs them)"),
    ] = True,
    log_level: Annotated[
        str, typer.Option(help="uvicorn's log level; warning drops the per-request access log")
    ] = "info",
) -> None:
    """Start the HTTP service (migrating the database and creating the log key on first start)."""
    import uvicorn

    from api.app import create_app

    settings = settings_for(database_url)
    seeded = False
    if with_demo:
        if _log_size(settings):
            err.print("--demo: the database is not empty; serving it as it is, without demo data")
        else:
            seeded = _run_demo(settings).ok
    ledger = Ledger.open(settings, migrate=migrate)
    if seeded:
        _print_demo_tokens(ledger, host, port)
    worker = Worker(ledger) if scheduler and settings.scheduler else None
    err.print(
        f"tuition-escrow listening on http://{host}:{port}  (API docs: http://{host}:{port}/docs)\n"
        f"  database: {masked(settings.database_url)}\n"
        f"  log: {ledger.key.name}, key id {ledger.key.key_id.hex()}"
    )
    if worker is not None:
        worker.start()
        err.print(
            f"  scheduler: settlement daily at {settings.settlement_time:%H:%M} {settings.timezone}, "
            f"sweeps every {settings.sweep_minutes} min"
        )
    try:
        uvicorn.run(create_app(ledger), host=host, port=port, log_level=log_level)
    finally:
        if worker is not None:
            worker.shutdown()
        ledger.close()


def _print_demo_tokens(ledger: Ledger, host: str, port: int) -> None:
    """One token per role for the demo data, as shell variables for docs/api.md's examples."""
    issued = cli_tokens.demo_tokens(ledger)
    err.print(
        "demo tokens (shown once; paste these lines into a shell to use docs/api.md's examples):"
    )
    out.print(f"export ESCROW_API=http://{host}:{port}")
    for role, (principal, secret) in issued.items():
        name = role.value.upper()
        out.print(f"export {name}_TOKEN={secret}  {name}_ID={principal}")


@app.command()
def migrate(database_url: DatabaseUrl = None) -> None:
    """Bring the database schema up to date."""
    settings = settings_for(database_url)
    engine = make_engine(settings.database_url)
    try:
        schema.upgrade(engine)
        err.print(f"schema at {schema.head_revision()} on {masked(settings.database_url)}")
    finally:
        engine.dispose()


@app.command()
def verify(
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
    export_dir: Annotated[
        Path | None, typer.Option("--export", help="Verify an export directory offline (no DB)")
    ] = None,
    proof: Annotated[
        Path | None, typer.Option("--proof", help="Verify an inclusion proof bundle offline")
    ] = None,
    log_key: Annotated[
        list[str] | None, typer.Option("--log-key", help="A trusted log verifier key")
    ] = None,
    witness_key: Annotated[
        list[str] | None, typer.Option("--witness-key", help="A trusted witness verifier key")
    ] = None,
    quorum: Annotated[
        int | None, typer.Option("--quorum", min=0, help="Witness cosignatures to require")
    ] = None,
) -> None:
    """Replay the whole log and check every hash, link, posting and balance. Exit 1 on any problem.

    With --export DIR or --proof FILE, verify those files instead, offline: no database is opened.
    """
    if export_dir is not None or proof is not None:
        cli_audit.verify_offline(
            export_dir, proof, log_key or [], witness_key or [], quorum, as_json
        )
    settings = settings_for(database_url)
    engine = make_engine(settings.database_url)
    try:
        if not schema.is_current(engine):
            err.print(
                f"[red]the database schema is not at {schema.head_revision()}; "
                "run `escrow migrate` first[/red]"
            )
            raise typer.Exit(2)
        total = count_entries(engine)
        if total >= PROGRESS_THRESHOLD and err.is_terminal and not as_json:
            with Progress(
                TextColumn("verifying"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err,
            ) as bar:
                task = bar.add_task("verify", total=total)
                report = verify_database(engine, progress=lambda n: bar.update(task, completed=n))
        else:
            report = verify_database(engine)
    finally:
        engine.dispose()
    if as_json:
        out.print_json(json.dumps(report.to_json()))
    else:
        _print_report(report)
    raise typer.Exit(0 if report.ok else 1)


def _print_report(report: Report) -> None:
    summary = (
        f"{report.entries:,} entries, {report.postings:,} postings, {report.accounts:,} accounts "
        f"in {report.seconds:.2f} s"
    )
    if report.ok:
        out.print(f"[green]OK[/green]: {summary}; every hash, link, posting and balance holds")
        return
    first = report.first
    assert first is not None
    where = f"seq {first.seq}" if first.seq is not None else f"account {first.account}"
    out.print(
        f"[red]FAILED[/red]: {report.problems_total} problem(s) in {summary}\n"
        f"first bad {where}: {first.kind.value}: {first.detail}"
    )
    table = Table("seq", "problem", "account", "detail")
    for item in report.problems:
        table.add_row(
            "" if item.seq is None else str(item.seq),
            item.kind.value,
            item.account or "",
            item.detail,
        )
    out.print(table)
    if report.problems_total > len(report.problems):
        out.print(f"… and {report.problems_total - len(report.problems)} more")


def _log_key(database_url: str | None) -> keys.LogKey:
    """The existing log key, checked against the key the configured log was opened with."""
    settings = settings_for(database_url)
    try:
        key = keys.load(settings.key_dir, settings.log_name)
    except (OSError, TypeError, ValueError) as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    url = make_url(settings.database_url)
    if is_sqlite(url) and not Path(url.database or "").exists():
        return key  # no database yet: nothing to compare with, and nothing to create
    engine = make_engine(url)
    try:
        if inspect(engine).has_table("log_entries"):
            with session_factory(engine, read_only=True)() as session:
                key = rotation.active_key(session, settings.key_dir, key)  # after a rotation
                check_key(session, key)
    except LogKeyMismatch as error:
        err.print(f"[red]{error.detail}[/red]")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    return key


@key_app.command("show")
def key_show(database_url: DatabaseUrl = None) -> None:
    """Print the log's origin, key id and C2SP verifier key."""
    key = _log_key(database_url)
    out.print(f"origin:       {key.name}")
    out.print(f"key id:       {key.key_id.hex()}")
    out.print(f"verifier key: {key.verifier_key}")


@key_app.command("export")
def key_export(
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write here instead of standard output")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Export the public key (C2SP verifier key line, then PEM) for banks and regulators.

    The key is read, never created, and must be the key the log's genesis entry names.
    """
    key = _log_key(database_url)
    text = f"{key.verifier_key}\n{key.public_pem()}\n"
    if out_file is None:
        sys.stdout.write(text)
    else:
        out_file.write_text(text)
        err.print(f"public key of {key.name} written to {out_file}")


cli_settlement.register(app)
cli_tokens.register(app)
cli_audit.register(app)
cli_witness.register(app)
register_risk(app)
cli_reconcile.register(app)
cli_bench.register(app)
cli_keys.register(key_app)


def main() -> None:
    """Console-script entry point."""
    app()
