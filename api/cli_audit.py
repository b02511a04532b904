"""``escrow export`` and the offline modes of ``escrow verify`` (``--export DIR``, ``--proof FILE``).

The offline modes open no database and no network connection: they read files and check them
with ``ledger.verifier`` alone, against the keys given on the command line (``--log-key``,
``--witness-key``), so a regulator or a bank trusts its own copy of the keys rather than the
export's. Without them the file's own keys are used, and the output says so plainly.

Exit codes: 0 verified, 1 a problem was found, 2 the input could not be read at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from api.cli_common import DatabaseUrl, err, masked, out, settings_for
from ledger import schema, verifier
from ledger.db import make_engine
from ledger.export import export as export_log

MAX_BUNDLE_BYTES = 4 << 20


def register(app: typer.Typer) -> None:
    """Add ``escrow export`` to the command line (``escrow verify`` dispatches here itself)."""
    app.command("export")(export_command)


def export_command(
    out_dir: Annotated[
        Path, typer.Option("--out", help="A new (or empty) directory to write the export into")
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Export the log (entries, signed checkpoints, public keys) for offline verification.

    Hand the directory to a bank or regulator: `escrow verify --export DIR --log-key VKEY` checks
    it on any machine, with no database and no network.
    """
    settings = settings_for(database_url)
    engine = make_engine(settings.database_url)
    try:
        if not schema.is_current(engine):
            err.print(
                f"[red]the database schema is not at {schema.head_revision()}; "
                "run `escrow migrate` first[/red]"
            )
            raise typer.Exit(2)
        quorum = int(getattr(settings, "witness_quorum", 0))
        with Progress(
            TextColumn("exporting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=not err.is_terminal,
            transient=True,
        ) as bar:
            task = bar.add_task("export", total=None)
            try:
                done = export_log(
                    engine,
                    out_dir,
                    lambda n, total: bar.update(task, completed=n, total=total),
                    witness_quorum=quorum,
                )
            except FileExistsError as error:
                err.print(f"[red]{error}[/red]")
                raise typer.Exit(2) from None
    finally:
        engine.dispose()
    err.print(
        f"exported {done.entries:,} entries, {done.checkpoints:,} checkpoints, "
        f"{done.log_keys} log key(s) and {done.witness_keys} witness key(s) from "
        f"{masked(settings.database_url)} to {done.directory}"
    )
    if not done.witness_keys:
        err.print("no witness keys are registered: keys.json lists none, with quorum 0")


def verify_offline(
    export_dir: Path | None,
    proof: Path | None,
    log_keys: list[str],
    witness_keys: list[str],
    quorum: int | None,
    as_json: bool,
) -> None:
    """``escrow verify --export DIR`` or ``--proof FILE``; always ends with ``typer.Exit``."""
    if export_dir is not None and proof is not None:
        err.print("[red]give either --export or --proof, not both[/red]")
        raise typer.Exit(2)
    if export_dir is not None:
        _verify_export(export_dir, log_keys, witness_keys, quorum, as_json)
    assert proof is not None
    _verify_proof(proof, log_keys, witness_keys, quorum, as_json)


def _verify_export(
    directory: Path, log_keys: list[str], witness_keys: list[str], quorum: int | None, as_json: bool
) -> None:
    entries = directory / verifier.EXPORT_ENTRIES
    if not entries.is_file():
        err.print(f"[red]{directory} is not an export: it has no {verifier.EXPORT_ENTRIES}[/red]")
        raise typer.Exit(2)
    with Progress(
        TextColumn("verifying"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[entries]:,} entries"),
        TimeRemainingColumn(),
        console=err,
        disable=as_json or not err.is_terminal,
        transient=True,
    ) as bar:
        task = bar.add_task("verify", total=entries.stat().st_size, entries=0)
        report = verifier.verify_export(
            directory,
            log_keys=log_keys or None,
            witness_keys=witness_keys or None,
            quorum=quorum,
            progress=lambda n, read: bar.update(task, completed=read, entries=n),
        )
    if as_json:
        out.print_json(json.dumps(report.to_json()))
        raise typer.Exit(0 if report.ok else 1)
    summary = (
        f"{report.entries:,} entries, {report.checkpoints:,} checkpoints "
        f"({report.witnessed:,} witnessed)"
    )
    if report.ok:
        out.print(
            f"[green]OK[/green]: {summary}; every hash, link, posting, party signature and "
            "checkpoint holds"
        )
    else:
        out.print(f"[red]FAILED[/red]: {report.problems_total} problem(s) in {summary}")
        table = Table("where", "problem")
        for problem in report.problems:
            table.add_row(problem.where, problem.reason)
        out.print(table)
        if report.problems_total > len(report.problems):
            out.print(f"… and {report.problems_total - len(report.problems)} more")
    for warning in report.warnings:
        out.print(f"[yellow]warning[/yellow]: {warning}")
    raise typer.Exit(0 if report.ok else 1)


def _verify_proof(
    path: Path, log_keys: list[str], witness_keys: list[str], quorum: int | None, as_json: bool
) -> None:
    try:
        if path.stat().st_size > MAX_BUNDLE_BYTES:
            raise ValueError("larger than any proof bundle")
        bundle = json.loads(path.read_bytes())
        if not isinstance(bundle, dict):
            raise TypeError("not a JSON object")
    except (OSError, TypeError, ValueError) as error:
        err.print(f"[red]{path}: not a readable proof bundle: {error}[/red]")
        raise typer.Exit(2) from None
    warnings = []
    if not log_keys:
        warnings.append(
            "no --log-key given: using the log keys written in the bundle itself, which proves "
            "only that the bundle is self-consistent; give the operator's published key"
        )
    if not witness_keys and bundle.get("witness_keys"):
        warnings.append("no --witness-key given: counting cosignatures by the bundle's own keys")
    problems = verifier.verify_proof_bundle(bundle, log_keys or None, witness_keys or None, quorum)
    entry = bundle.get("entry")
    seq = entry.get("seq") if isinstance(entry, dict) else None
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "ok": not problems,
                    "seq": seq,
                    "tree_size": bundle.get("tree_size"),
                    "problems": problems,
                    "warnings": warnings,
                }
            )
        )
    elif problems:
        out.print(f"[red]FAILED[/red]: the bundle does not prove entry {seq}")
        for problem in problems:
            out.print(f"  - {problem}")
    else:
        out.print(
            f"[green]OK[/green]: entry {seq} is in the log at tree size "
            f"{bundle.get('tree_size')}, under a checkpoint signed by the log key"
        )
    if not as_json:
        for warning in warnings:
            out.print(f"[yellow]warning[/yellow]: {warning}")
    raise typer.Exit(1 if problems else 0)
