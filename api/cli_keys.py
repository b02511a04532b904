"""``escrow key rotate``: replace the log's signing key, announced in the log by the old key.

The new key is written beside the old one (``log-ed25519-<key id>.pem``, 0600); the old file is
kept, because checkpoints during the overlap carry both signatures and because history signed by
it stays valid. The ``log.key_rotated`` entry and a checkpoint covering it (signed by both keys) are
written in one transaction; if it is refused, the new key file is removed again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from api.cli_common import DatabaseUrl, err, open_current, out, settings_for
from ledger import checkpoints, keys, rotation
from ledger.errors import LedgerError
from ledger.log import format_time

MAX_OVERLAP_DAYS = 365


def rotate(
    overlap_days: Annotated[
        float,
        typer.Option(
            "--overlap-days",
            min=0,
            max=MAX_OVERLAP_DAYS,
            help="How long checkpoints carry the old key's signature too (0 for a compromised "
            "key: retire it at once)",
        ),
    ] = 7,
    actor: Annotated[
        str, typer.Option("--actor", help="Who is acting, for the log (admin:<name>)")
    ] = "admin:cli",
    database_url: DatabaseUrl = None,
) -> None:
    """Create a new log key and announce it in the log, signed by the current key.

    Restart the service and the worker within the overlap so that they sign with the new key;
    give banks and regulators the new verifier key (printed here, and by `escrow key show`).
    """
    settings = settings_for(database_url)
    try:
        ledger = open_current(settings)
    except LedgerError as error:
        err.print(f"[red]{error.detail}[/red]")
        raise typer.Exit(1) from None
    try:
        old = ledger.key
        new = keys.create_rotated(settings.key_dir, old.name)
        path = settings.key_dir / keys.rotated_key_file(new)
        until = ledger.clock.now() + timedelta(days=overlap_days)
        try:
            with ledger.sessions.begin() as session:
                entry = rotation.rotate(session, ledger.log, old, new, until, actor=actor)
                new.retiring = ((old, until), *old.retiring)
                signed = checkpoints.issue(session, ledger.log, new, reason="request", force=True)
                checkpoint_id, checkpoint_size = signed.id, signed.size
        except (LedgerError, ValueError) as error:
            path.unlink(missing_ok=True)
            detail = error.detail if isinstance(error, LedgerError) else str(error)
            err.print(f"[red]{detail}[/red]")
            raise typer.Exit(1) from None
    finally:
        ledger.close()
    err.print(
        f"rotated at seq {entry.seq}; checkpoint {checkpoint_id} (size {checkpoint_size}) "
        f"carries both signatures; overlap until {format_time(until)}\n"
        f"  old key: {old.verifier_key}\n"
        f"  new key file: {path}\n"
        "restart the service and the worker within the overlap, and send the new verifier key "
        "to every bank and regulator:"
    )
    out.print(new.verifier_key, soft_wrap=True)


def register(key_app: typer.Typer) -> None:
    """Add ``rotate`` to the ``escrow key`` group."""
    key_app.command("rotate")(rotate)
