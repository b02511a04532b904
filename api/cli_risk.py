"""``escrow risk``: grade every institution for a business date (if not yet graded) and print why."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from api.cli_common import DatabaseUrl, open_current, out, parse_date, settings_for
from ledger.entities import Institution
from ledger.risk import RiskGrade, RiskReport, grade_all

COLOURS = {"A": "green", "B": "yellow", "C": "dark_orange", "D": "red"}


def describe(reason: dict[str, Any]) -> str:
    """One fired rule as a regulator reads it, e.g. ``refund_share 27 >= 10 percent (+20)``."""
    if reason["threshold"] is None:
        return f"{reason['rule']} (+{reason['points']})"
    return (
        f"{reason['rule']} {reason['value']} {reason['comparison']} {reason['threshold']} "
        f"{reason['unit']} (+{reason['points']})"
    )


def _row(grade: RiskGrade, institution: Institution | None) -> dict[str, Any]:
    return {
        "institution_id": grade.institution_id,
        "name": None if institution is None else institution.name,
        "district": None if institution is None else institution.district,
        "business_date": grade.business_date.isoformat(),
        "grade": grade.grade.value,
        "score": grade.score,
        "policy": grade.policy,
        "reasons": grade.reasons,
        "signals": grade.signals,
        "seq": grade.seq,
    }


def _print(report: RiskReport, rows: list[dict[str, Any]]) -> None:
    table = Table(
        "institution",
        "name",
        "district",
        "grade",
        "score",
        "rules that fired",
        title=f"Risk grades for {report.business_date.isoformat()}",
    )
    for row in rows:
        colour = COLOURS[row["grade"]]
        table.add_row(
            row["institution_id"],
            row["name"] or "",
            row["district"] or "",
            f"[{colour}]{row['grade']}[/{colour}]",
            str(row["score"]),
            "; ".join(describe(r) for r in row["reasons"]) or "none",
        )
    out.print(table)
    out.print(f"graded now: {len(report.graded)}, already graded: {len(report.existing)}")
    for alert in report.alerts:
        was = alert.from_grade.value if alert.from_grade else "none"
        out.print(f"[red]alert[/red] {alert.id}: {alert.institution_id} {was} -> {alert.to_grade}")
    for institution, problem in report.failed.items():
        out.print(f"[red]failed[/red] {institution}: {problem}")


def risk(
    on: Annotated[
        str | None,
        typer.Option(
            "--date", help="Business date (YYYY-MM-DD); default: the last one that has ended"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Grade every institution for a business date (unless already graded) and print the grades
    A-D with the rules that fired."""
    day = parse_date(on)
    ledger = open_current(settings_for(database_url))
    try:
        report = grade_all(ledger.sessions, ledger.escrow, day)
        with ledger.readers() as session:
            rows = [
                _row(grade, session.get(Institution, grade.institution_id))
                for grade in report.grades
            ]
    finally:
        ledger.close()
    if as_json:
        document = {
            "business_date": report.business_date.isoformat(),
            "grades": rows,
            "alerts": [alert.id for alert in report.alerts],
            "failed": report.failed,
        }
        sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
    else:
        _print(report, rows)
    if report.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(risk)
