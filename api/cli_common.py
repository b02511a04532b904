"""What the ``escrow`` commands share: consoles, options, opening a ledger."""

from __future__ import annotations

import sys
from datetime import date
from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy.engine import make_url

from ledger import schema
from ledger.config import Settings
from ledger.db import make_engine
from ledger.runtime import Ledger

# Piped output (CI logs, files) gets a wide fixed width instead of rich's 80-column default.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 160)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", help="SQLAlchemy URL; default ESCROW_DATABASE_URL or ./var/escrow.db"
    ),
]


def settings_for(database_url: str | None) -> Settings:
    return Settings(database_url=database_url) if database_url else Settings()


def masked(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def open_current(settings: Settings) -> Ledger:
    """Open a ledger whose schema is already current (commands never migrate on their own)."""
    engine = make_engine(settings.database_url)
    try:
        current = schema.is_current(engine)
    finally:
        engine.dispose()
    if not current:
        err.print(
            f"[red]the database schema is not at {schema.head_revision()}; "
            "run `escrow migrate`[/red]"
        )
        raise typer.Exit(2)
    return Ledger.open(settings, migrate=False)


def parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None
