"""``escrow bench``: issue 8's performance figures, as one table (and optionally JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from api import bench
from api.cli_common import err, masked, out


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "skipped"
    if unit == "ratio":
        return f"{value:.2f}"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def _print(figures: bench.Figures) -> None:
    f = figures
    table = Table(
        "figure",
        "measured",
        "target",
        "met",
        title=f"escrow bench on {f.database}: {f.scale:,} lessons, {f.institutions:,} institutions",
    )
    for row in f.results():
        met = {True: "[green]yes[/green]", False: "[red]NO[/red]", None: "-"}[row["met"]]
        target = f"{row['target']} {row['unit']}"
        if row["stated_for_scale"] and row["stated_for_scale"] > f.scale:
            target += f" (at {row['stated_for_scale']:,})"
        table.add_row(
            row["label"], f"{_number(row['value'], row['unit'])} {row['unit']}", target, met
        )
    out.print(table)
    details = Table("detail", "value", title="details")
    details.add_row("setup (parties, contracts, receipts)", f"{f.setup_seconds:.1f} s")
    details.add_row(
        "ingest",
        f"{f.ingest_lessons:,} lessons in {f.ingest_seconds:.1f} s; batch p50 "
        f"{f.ingest_batch_p50_ms:.0f} ms, p99 {f.ingest_batch_p99_ms:.0f} ms",
    )
    details.add_row(
        "confirmation by silence", f"{f.confirm_lessons:,} lessons in {f.confirm_seconds:.1f} s"
    )
    details.add_row(
        "settle",
        f"{f.settle_lessons:,} lessons, {f.settle_batches:,} batches in {f.settle_seconds:.1f} s",
    )
    details.add_row(
        "verify",
        f"{'OK' if f.verify_ok else 'PROBLEMS'}: {f.verify_entries:,} entries in "
        f"{f.verify_seconds:.1f} s; SHA-256 floor {f.floor_entries_per_s:,.0f} entries/s; "
        f"peak PSS {f.verify_peak_mb:.0f} MB (RSS of its processes added: {f.verify_peak_rss_mb:.0f} MB)",
    )
    details.add_row(
        "proofs",
        f"{f.proof_samples:,} at size {f.proof_tree_size:,}: p50 {f.proof_p50_ms:.3f} ms, "
        f"verify p50 {f.proof_verify_p50_ms:.3f} ms, {f.proofs_per_s:,.0f} generated+verified/s",
    )
    if f.http is not None:
        h = f.http
        details.add_row(
            "HTTP reports",
            f"{h['report_ok']:,} ok / {h['report_sent']:,} sent at {h['report_rate_target']:g}/s: "
            f"{h['report_rps']:,.0f} req/s, p50 {h['report_p50_ms']:.1f} ms, p99 {h['report_p99_ms']:.1f} ms",
        )
        details.add_row(
            "HTTP balance reads",
            f"{h['balance_ok']:,} ok with {h['balance_concurrency']} connections: "
            f"{h['balance_rps']:,.0f} req/s, p50 {h['balance_p50_ms']:.1f} ms, p99 {h['balance_p99_ms']:.1f} ms",
        )
    m = f.machine
    details.add_row(
        "machine", f"{m['cores']} cores, {m['cpu']}, {m['memory_gb']} GB, Python {m['python']}"
    )
    out.print(details)


def bench_command(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="An EMPTY scratch database to fill (default: a temporary SQLite file). "
            "ESCROW_DATABASE_URL is never used.",
        ),
    ] = None,
    scale: Annotated[
        int, typer.Option("--scale", min=1, help="Lessons to report")
    ] = bench.DEFAULT_SCALE,
    as_json: Annotated[bool, typer.Option("--json", help="Also print the figures as JSON")] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Write the JSON to a file")
    ] = None,
    http_seconds: Annotated[
        float, typer.Option("--http-seconds", min=0.5, help="Duration of each HTTP load")
    ] = 10.0,
    http: Annotated[
        bool, typer.Option(help="Run the HTTP phase (real uvicorn on loopback)")
    ] = True,
) -> None:
    """Measure ingest, HTTP, settle, verify and proofs on a scratch database (issue 8's targets)."""
    if database_url is not None:
        err.print(f"bench database: {masked(database_url)}")
    try:
        figures = bench.run(
            database_url,
            scale,
            http_seconds=http_seconds if http else None,
            progress=lambda message: err.print(f"[dim]{message}[/dim]"),
        )
    except ValueError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    _print(figures)
    document = json.dumps(figures.to_json(), indent=2)
    if as_json:
        out.print_json(document)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(document + "\n")
    raise typer.Exit(0 if figures.verify_ok else 1)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)
