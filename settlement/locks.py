"""One job at a time across processes.

On PostgreSQL a job holds a session-level advisory lock while it runs; a second worker that wants
the same job finds it taken and skips this round. On SQLite (one machine, usually one process) no
lock is needed: writers already queue on the database lock, and every job is idempotent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, func, select


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a job name."""
    return int.from_bytes(
        hashlib.sha256(f"escrow-job:{name}".encode()).digest()[:8], "big", signed=True
    )


@contextmanager
def exclusive(engine: Engine, name: str) -> Iterator[bool]:
    """Yield True if this process may run job ``name`` now (and hold it until the block ends)."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = lock_key(name)
    with engine.connect() as conn:
        got = bool(conn.execute(select(func.pg_try_advisory_lock(key))).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(select(func.pg_advisory_unlock(key)))
                conn.commit()
