"""``escrow token create | revoke | list``: API tokens, managed from the operator's shell.

A token is printed once, on standard output alone, so that ``TOKEN=$(escrow token create ...)``
captures it; everything else goes to standard error. Issuing and revoking are log entries, under
the actor given with ``--actor`` (``admin:cli`` by default).
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import select

from api.cli_common import DatabaseUrl, err, open_current, out, settings_for
from ledger.access import ApiToken, Role, create_token, revoke_token
from ledger.errors import LedgerError
from ledger.runtime import Ledger

token_app = typer.Typer(
    help="API bearer tokens (shown once, stored as hashes).", no_args_is_help=True
)

Actor = Annotated[str, typer.Option("--actor", help="Who is acting, for the log (admin:<name>)")]


def _demo_parties(ledger: Ledger) -> dict[Role, str]:
    """One principal per role in the demo data: the first registered of each kind."""
    from ledger.entities import Bank, Institution, Parent, Regulator

    found: dict[Role, str] = {Role.ADMIN: "demo"}
    with ledger.readers() as session:
        for role, model in (
            (Role.PARENT, Parent),
            (Role.INSTITUTION, Institution),
            (Role.BANK, Bank),
            (Role.REGULATOR, Regulator),
        ):
            first = session.scalars(
                select(model.id).order_by(model.registered_seq).limit(1)
            ).first()
            if first is not None:
                found[role] = first
    return found


def demo_tokens(ledger: Ledger) -> dict[Role, tuple[str, str]]:
    """Issue one token per role for the demo data: role -> (principal id, token)."""
    issued: dict[Role, tuple[str, str]] = {}
    for role, principal in _demo_parties(ledger).items():
        with ledger.sessions.begin() as session:
            _, secret = create_token(
                session,
                ledger.escrow,
                role=role.value,
                principal_id=principal,
                actor="admin:demo",
                label="escrow serve --demo",
            )
        issued[role] = (principal, secret)
    return issued


@token_app.command("create")
def create(
    role: Annotated[
        Role, typer.Option("--role", help="parent, institution, bank, regulator, admin")
    ],
    principal: Annotated[
        str, typer.Option("--for", help="The party id the token acts for (admin: a name)")
    ],
    expires_in_days: Annotated[
        int | None, typer.Option("--expires-in-days", min=1, max=3650, help="Default: never")
    ] = None,
    label: Annotated[str | None, typer.Option("--label", help="A note on what it is for")] = None,
    actor: Actor = "admin:cli",
    database_url: DatabaseUrl = None,
) -> None:
    """Issue a token and print it (once: only its hash is kept)."""
    ledger = open_current(settings_for(database_url))
    try:
        with ledger.sessions.begin() as session:
            token, secret = create_token(
                session,
                ledger.escrow,
                role=role.value,
                principal_id=principal,
                actor=actor,
                expires_in=None if expires_in_days is None else timedelta(days=expires_in_days),
                label=label,
            )
            token_id = token.id
    except LedgerError as error:
        err.print(f"[red]{error.detail}[/red]")
        raise typer.Exit(1) from None
    finally:
        ledger.close()
    err.print(f"token {token_id} for {role.value} {principal}; it is shown once:")
    sys.stdout.write(secret + "\n")


@token_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (tok_…), not its secret")],
    actor: Actor = "admin:cli",
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a token at once."""
    ledger = open_current(settings_for(database_url))
    try:
        with ledger.sessions.begin() as session:
            revoke_token(session, ledger.escrow, token_id=token_id, actor=actor)
    except LedgerError as error:
        err.print(f"[red]{error.detail}[/red]")
        raise typer.Exit(1) from None
    finally:
        ledger.close()
    err.print(f"token {token_id} revoked")


@token_app.command("list")
def list_tokens(database_url: DatabaseUrl = None) -> None:
    """List tokens (ids, roles, principals, state); secrets are never stored."""
    ledger = open_current(settings_for(database_url))
    try:
        with ledger.readers() as session:
            tokens = list(session.scalars(select(ApiToken).order_by(ApiToken.created_seq)))
    finally:
        ledger.close()
    table = Table("id", "role", "for", "label", "created", "expires", "revoked")
    for t in tokens:
        table.add_row(
            t.id,
            t.role,
            t.principal_id,
            t.label or "",
            f"{t.created_at:%Y-%m-%d %H:%M}",
            "" if t.expires_at is None else f"{t.expires_at:%Y-%m-%d %H:%M}",
            "" if t.revoked_at is None else f"{t.revoked_at:%Y-%m-%d %H:%M}",
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
