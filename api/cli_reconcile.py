"""``escrow reconcile``: import a custody bank's daily statement and print the reconciliation."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from api.cli_common import DatabaseUrl, err, open_current, out, settings_for
from ledger.errors import LedgerError
from ledger.money import Money
from settlement import reconcile
from settlement.reconcile import StatementReport
from settlement.statements import MAX_STATEMENT_BYTES, Format


def _money(fen: int | None) -> str:
    if fen is None:
        return ""
    return f"-{Money(-fen)}" if fen < 0 else str(Money(fen))


def report_json(report: StatementReport, *, created: bool) -> dict[str, Any]:
    """The report as JSON, with the same fields as the API's."""
    statement = report.statement
    return {
        "id": statement.id,
        "created": created,
        "bank_id": statement.bank_id,
        "institution_id": statement.institution_id,
        "account": statement.account,
        "business_date": statement.business_date.isoformat(),
        "format": statement.format,
        "file_sha256": statement.file_sha256,
        "opening_fen": statement.opening_fen,
        "closing_fen": statement.closing_fen,
        "ledger_closing_fen": statement.ledger_closing_fen,
        "difference_fen": statement.closing_fen - statement.ledger_closing_fen,
        "imported_seq": statement.imported_seq,
        "lines": [
            {
                "line_no": row.line_no,
                "direction": row.direction,
                "amount_fen": row.amount_fen,
                "bank_reference": row.bank_reference,
                "end_to_end_id": row.end_to_end_id,
                "result": row.result.value,
                "counterpart_kind": None
                if row.counterpart_kind is None
                else row.counterpart_kind.value,
                "counterpart_id": row.counterpart_id,
                "ledger_amount_fen": row.ledger_amount_fen,
                "reason": row.reason,
            }
            for row in report.lines
        ],
        "breaks": [
            {
                "id": view.found.id,
                "kind": view.found.kind.value,
                "line_no": view.found.line_no,
                "counterpart_id": view.found.counterpart_id,
                "amount_fen": view.found.amount_fen,
                "reason": view.found.reason,
                "status": "open" if view.resolution is None else "resolved",
                "note": None if view.resolution is None else view.resolution.note,
            }
            for view in report.breaks
        ],
    }


def print_report(report: StatementReport, *, created: bool) -> None:
    statement = report.statement
    out.print(
        f"statement {statement.id} of {statement.account} ({statement.institution_id}) "
        f"for {statement.business_date}, {statement.format}"
        + ("" if created else " - imported before; nothing stored")
    )
    lines = Table(
        "#", "dir", "amount", "bank reference", "end-to-end id", "result", "ledger item", "reason"
    )
    for row in report.lines:
        lines.add_row(
            str(row.line_no),
            row.direction,
            _money(row.amount_fen),
            row.bank_reference,
            row.end_to_end_id,
            row.result.value,
            row.counterpart_id or "",
            row.reason,
        )
    out.print(lines)
    balances = Table("", "statement", "ledger", "difference", title="Closing balance")
    balances.add_row(
        str(statement.business_date),
        _money(statement.closing_fen),
        _money(statement.ledger_closing_fen),
        _money(statement.closing_fen - statement.ledger_closing_fen),
    )
    out.print(balances)
    if not report.breaks:
        out.print("no breaks: the statement matches the ledger")
        return
    breaks = Table("break", "kind", "line", "amount", "status", "reason", title="Breaks")
    for view in report.breaks:
        found = view.found
        breaks.add_row(
            found.id,
            found.kind.value,
            "" if found.line_no is None else str(found.line_no),
            _money(found.amount_fen),
            "open" if view.resolution is None else "resolved",
            found.reason,
        )
    out.print(breaks)


def reconcile_command(
    file: Annotated[Path, typer.Argument(help="The statement: camt.053 XML or the CSV format")],
    bank: Annotated[str, typer.Option("--bank", help="The custody bank whose statement it is")],
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="camt.053 or csv; default: guessed from the content"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
    actor: Annotated[
        str, typer.Option("--actor", help="Who is importing, for the log (admin:<name>)")
    ] = "admin:cli",
    database_url: DatabaseUrl = None,
) -> None:
    """Import a bank's daily statement of one escrow account, match it with the ledger and print
    every line's result and every break (docs/reconciliation.md). The same file again prints the
    stored report and stores nothing. Exit status 2 when the file is refused."""
    if fmt not in (None, "camt.053", "csv"):
        raise typer.BadParameter("--format is camt.053 or csv")
    checked: Format | None = "camt.053" if fmt == "camt.053" else "csv" if fmt == "csv" else None
    if not file.is_file():
        raise typer.BadParameter(f"{file} is not a file")
    if file.stat().st_size > MAX_STATEMENT_BYTES:
        err.print(f"[red]refused[/red]: {file} is over {MAX_STATEMENT_BYTES} bytes")
        raise typer.Exit(2)
    data = file.read_bytes()
    ledger = open_current(settings_for(database_url))
    try:
        with ledger.sessions.begin() as session:
            outcome = reconcile.import_statement(
                session, ledger.escrow, bank_id=bank, data=data, fmt=checked, actor=actor
            )
            report = reconcile.report(session, outcome.statement)
            document = report_json(report, created=outcome.created)
            if not as_json:
                print_report(report, created=outcome.created)
    except LedgerError as error:
        err.print(f"[red]refused ({error.code})[/red]: {error.detail}")
        raise typer.Exit(2) from None
    finally:
        ledger.close()
    if as_json:
        sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")


def register(app: typer.Typer) -> None:
    app.command("reconcile")(reconcile_command)
