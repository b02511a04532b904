"""Raw-SQL tampering, as an attacker with database access would do it (guards switched off first)."""

from __future__ import annotations

import json
from typing import Any

import rfc8785
from sqlalchemy import Connection, Engine, text

from ledger.log import leaf_hash

SQLITE_GUARDS = (
    "log_entries_no_update",
    "log_entries_no_delete",
    "postings_no_update",
    "postings_no_delete",
    "log_entries_balanced",
    "postings_sealed",
)


def disable_guards(engine: Engine) -> None:
    """Switch off the append-only and balance triggers (an attacker with DDL rights could)."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            for trigger in SQLITE_GUARDS:
                conn.exec_driver_sql(f"DROP TRIGGER {trigger}")
        else:
            for table in ("log_entries", "postings"):
                conn.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER USER")


def entry(conn: Connection, seq: int) -> dict[str, Any]:
    row = conn.execute(text("SELECT body FROM log_entries WHERE seq = :s"), {"s": seq}).one()
    parsed: dict[str, Any] = json.loads(row.body)
    return parsed


def rewrite(conn: Connection, seq: int, body: dict[str, Any], *, rehash: bool) -> bytes:
    """Replace an entry's body; with ``rehash`` also its stored hash (a careful attacker)."""
    raw = rfc8785.dumps(body)
    if rehash:
        conn.execute(
            text("UPDATE log_entries SET body = :b, hash = :h WHERE seq = :s"),
            {"b": raw, "h": leaf_hash(raw), "s": seq},
        )
    else:
        conn.execute(text("UPDATE log_entries SET body = :b WHERE seq = :s"), {"b": raw, "s": seq})
    return leaf_hash(raw)


def shift_seqs(conn: Connection, from_seq: int, by: int) -> None:
    """Renumber entries (and their postings) at or after ``from_seq``; unique keys stay unique."""
    offset = 1_000_000
    for table in ("log_entries", "postings"):
        conn.execute(
            text(f"UPDATE {table} SET seq = seq + :o WHERE seq >= :f"), {"o": offset, "f": from_seq}
        )
        conn.execute(
            text(f"UPDATE {table} SET seq = seq - :o + :by WHERE seq >= :o"),
            {"o": offset, "by": by},
        )


def set_head(conn: Connection, size: int, head_hash: bytes) -> None:
    conn.execute(
        text("UPDATE log_head SET size = :n, head_hash = :h WHERE id = 1"),
        {"n": size, "h": head_hash},
    )
