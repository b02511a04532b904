"""``escrow export``: the log as files that verify offline with ``ledger.verifier`` alone.

The export is what a regulator or a bank takes away: every entry byte for byte, every signed
checkpoint with its witness cosignatures, and the public keys with their validity (docs/audit.md
"Export format"). It is read in one snapshot of the database and written in a single pass,
entries streamed in batches, so exporting millions of entries needs no more memory than
exporting ten. Files are written under temporary names and renamed at the end: a crashed export
never looks complete.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from ledger import rotation, verifier, witnesses
from ledger.checkpoints import SignedCheckpoint
from ledger.db import READ_ONLY
from ledger.log import format_time
from ledger.models import LogEntry
from ledger.runtime import Ledger

BATCH = 5_000
PROGRESS_EVERY = 4_096


@dataclass(frozen=True, slots=True)
class Exported:
    """What was written: the directory, and how many entries, checkpoints and keys."""

    directory: Path
    entries: int
    checkpoints: int
    log_keys: int
    witness_keys: int


def export(
    engine_or_ledger: Engine | Ledger,
    out_dir: str | Path,
    progress: Callable[[int, int], None] | None = None,
    *,
    witness_quorum: int | None = None,
) -> Exported:
    """Write the export of the log into ``out_dir`` (created; it must not hold files already).

    ``progress(done, total)`` is called every few thousand entries. ``witness_quorum`` is the
    policy's number of witness cosignatures (default: the ledger's ``ESCROW_WITNESS_QUORUM``
    when given a Ledger, else 0).
    """
    if isinstance(engine_or_ledger, Ledger):
        engine = engine_or_ledger.engine
        configured = engine_or_ledger.settings.witness_quorum
    else:
        engine, configured = engine_or_ledger, 0
    quorum = configured if witness_quorum is None else witness_quorum
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise FileExistsError(f"{directory} is not empty; export into a new directory")
    options: dict[str, Any] = {READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    with (
        engine.connect().execution_options(**options) as conn,
        conn.begin(),
        Session(bind=conn) as session,
    ):
        size = int(
            session.execute(select(func.coalesce(func.max(LogEntry.seq) + 1, 0))).scalar_one()
        )
        keys = _keys(session, quorum)
        _write_entries(session, directory, size, progress)
        checkpoints = _write_checkpoints(session, directory, size)
    _write_atomically(
        directory / verifier.EXPORT_KEYS,
        (json.dumps(keys, indent=2, ensure_ascii=False) + "\n").encode(),
    )
    lines = [k["verifier_key"] for k in keys["log_keys"]]
    lines += [k["verifier_key"] for k in keys["witness_keys"]]
    _write_atomically(
        directory / verifier.EXPORT_KEYS_TEXT, "".join(f"{k}\n" for k in lines).encode()
    )
    return Exported(directory, size, checkpoints, len(keys["log_keys"]), len(keys["witness_keys"]))


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    partial.replace(path)


def _write_entries(
    session: Session,
    directory: Path,
    size: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """entries.jsonl, one line per entry, built by byte concatenation around the stored body."""
    path = directory / verifier.EXPORT_ENTRIES
    partial = path.with_name(f".{path.name}.partial")
    rows = session.execute(
        select(LogEntry.body, LogEntry.hash)
        .where(LogEntry.seq < size)
        .order_by(LogEntry.seq)
        .execution_options(yield_per=BATCH)
    )
    done = 0
    with partial.open("wb") as handle:
        for body, digest in rows:
            handle.write(verifier.export_line(bytes(digest).hex(), bytes(body)))
            done += 1
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress(done, size)
    if progress is not None:
        progress(done, size)
    partial.replace(path)


def _write_checkpoints(session: Session, directory: Path, size: int) -> int:
    """One signed note per checkpoint of a tree within the exported entries, as served: the
    log's signature line(s), then every valid witness cosignature."""
    folder = directory / verifier.EXPORT_CHECKPOINTS
    folder.mkdir(exist_ok=True)
    ids = session.scalars(
        select(SignedCheckpoint.id)
        .where(SignedCheckpoint.size <= size)
        .order_by(SignedCheckpoint.id)
    ).all()
    for ident in ids:
        checkpoint = session.get_one(SignedCheckpoint, ident)
        note = witnesses.served_note(session, checkpoint)
        _write_atomically(folder / f"{ident:010d}.txt", note.encode())
        session.expunge(checkpoint)
    return len(ids)


def _keys(session: Session, quorum: int) -> dict[str, Any]:
    """keys.json: the log keys (genesis, then each rotation that holds: ``ledger.rotation``) and
    every witness key ever registered, each with its validity, in the log's time format."""
    found = rotation.chain(session)
    periods = [] if found is None else found.periods
    log_keys = [_period(p.key.encode(), p.valid_from, p.valid_until) for p in periods]
    witness_keys = [
        {"holder": w.holder, **_period(w.verifier_key.encode(), w.valid_from, w.valid_until)}
        for w in witnesses.witness_keys(session)
    ]
    return {
        "origin": "" if found is None else found.origin,
        "log_keys": log_keys,
        "witness_keys": witness_keys,
        "witness_quorum": quorum,
    }


def _period(
    verifier_key: str, valid_from: datetime, valid_until: datetime | None
) -> dict[str, Any]:
    return {
        "verifier_key": verifier_key,
        "valid_from": format_time(valid_from),
        "valid_until": None if valid_until is None else format_time(valid_until),
    }
