"""Raw-SQL tampering, as an attacker with database access would do it (guards switched off first)."""

from __future__ import annotations

import json
from typing import Any

import rfc8785
from sqlalchemy import Connection, Engine, text

from ledger.log import leaf_hash


def disable_guards(engine: Engine) -> None:
    """Switch off every trigger on the log and postings (an attacker with DDL rights could)."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            names = conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' "
                "AND tbl_name IN ('log_entries', 'postings', 'merkle_nodes')"
            ).scalars()
            for trigger in list(names):
                conn.exec_driver_sql(f"DROP TRIGGER {trigger}")
        else:
            for table in ("log_entries", "postings", "merkle_nodes"):
                conn.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER USER")


def sqlite_without_foreign_keys(engine: Engine, *statements: str) -> None:
    """Run statements on SQLite with foreign keys off, as any other client may connect."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA foreign_keys=OFF")
        for statement in statements:
            cursor.execute(statement)
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        raw.close()


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
