"""Replay verification of the database: the check behind ``escrow verify``.

It assumes an attacker who could write to the database directly (triggers dropped, any value in any
column) and so trusts nothing but the stored entry bodies and the chain that links them. It streams
the log in seq order, in one consistent snapshot, and for every entry checks that:

- the seq is the next one (no gap), and the body names the same seq (no reordering);
- SHA-256(0x00 || body) equals the stored hash, and the body's ``prev_hash`` equals the previous
  entry's hash (no edit, insertion or deletion without a broken link);
- its time is not earlier than the previous entry's, and the query columns agree with the body;
- the postings balance per currency, and the posting rows equal the body's postings;
- replaying the postings keeps every non-negative account at or above zero.

At the end it compares every account row (balance, currency, first and last seq) with the account
rebuilt from the log, and checks the escrow invariants 3-5 of DESIGN.md (``ledger.escrow.invariants``):
each contract adds up to its prepayment, each escrow account equals what it owes, and money left
escrow only the lawful ways. Problems are reported in seq order; ``Report.ok`` is true only if there are
none. Data that cannot even be decoded is reported as a problem, never raised.

Where the work is done (issue 8): ``ledger.verify_replay`` streams the rows from the driver and
checks each entry, ``ledger.verify_merkle`` checks the stored nodes beside it, and on a large log
``ledger.verify_parallel`` gives the first part of the log and the invariants to a second process
in the same snapshot, falling back to the single replay for an exact report whenever anything is
wrong.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.orm import Session

from ledger import rotation, verifier, verify_parallel
from ledger.checkpoints import SignedCheckpoint
from ledger.escrow.invariants import check_all
from ledger.log import LEAF_PREFIX
from ledger.merkle_store import StoredTree
from ledger.models import LogEntry
from ledger.verify_findings import ACCOUNT_LEVEL, Findings, Problem, ProblemKind, Report
from ledger.verify_merkle import check_nodes
from ledger.verify_replay import STREAM_BATCH, Cursors

__all__ = [
    "Problem",
    "ProblemKind",
    "Report",
    "count_entries",
    "sha256_floor",
    "verify_database",
]

# What decoding or comparing hostile column values can raise; reported, never propagated.
_DATA_ERRORS = (ValueError, TypeError, LookupError, ArithmeticError, AttributeError)


def verify_database(
    engine: Engine,
    *,
    progress: Callable[[int], None] | None = None,
    max_problems: int = 100,
    invariants: bool = True,
) -> Report:
    """Replay the whole log in one consistent snapshot and report every problem found.

    ``invariants=False`` skips the escrow invariants 3-5, for logs that hold bare journal entries
    rather than escrow operations (the journal's own tests).
    """
    started = time.perf_counter()
    options: dict[str, Any] = {"escrow_read_only": True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    report = Report()
    found = Findings(max_problems)
    with engine.connect().execution_options(**options) as conn, conn.begin():
        try:
            outcome = verify_parallel.replay(
                engine, conn, report, found, progress, invariants=invariants
            )
            if not outcome.nodes_hold:
                # Something in the Merkle tree differs: name every node that does not hold.
                check_nodes(conn, report.entries, found)
            _check_checkpoints(conn, report.entries, found)
            if invariants:
                _check_invariants(conn, found, outcome.invariants)
        except _DATA_ERRORS as error:
            found.add(
                ProblemKind.MALFORMED,
                report.entries,
                f"verification stopped: stored data after seq {report.entries - 1} "
                f"cannot be decoded ({type(error).__name__}: {error})",
            )
    # Entry problems first, by seq: they say where history was altered. Account problems follow;
    # they are usually the consequence (a deleted entry leaves balances that no longer add up).
    found.items.sort(key=lambda p: (p.kind in ACCOUNT_LEVEL, p.seq is None, p.seq or 0))
    report.problems = found.items
    report.problems_total = found.total
    report.seconds = time.perf_counter() - started
    return report


def _check_checkpoints(conn: Connection, entries: int, found: Findings) -> None:
    """Every stored checkpoint is a well-formed note signed by a log key valid when it was issued
    (the genesis key until the overlap of the rotation that retires it ends, a rotated-in key for
    checkpoints covering its rotation entry: ``ledger.rotation``), within the log, with the root
    of the log's first ``size`` entries; and each is consistent with the one before (checked with
    a consistency proof, as a witness would). Rotation entries that do not hold (not announced by
    the old key, say) are reported, and the keys they name are not trusted."""
    with Session(bind=conn) as session:
        try:
            keys = rotation.chain(session)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            found.add(ProblemKind.CHECKPOINT, 0, f"the genesis entry's key is unusable: {error}")
            return
        if keys is None:
            return
        for seq, reason in keys.problems:
            found.add(ProblemKind.CHECKPOINT, seq, reason)
        tree = StoredTree(session)
        previous: tuple[int, bytes] | None = None
        for row in session.scalars(select(SignedCheckpoint).order_by(SignedCheckpoint.id)):
            where = f"checkpoint {row.id} (size {row.size})"
            try:
                note = verifier.Note.parse(row.note)
                body = verifier.Checkpoint.parse(note.body)
            except ValueError as error:
                found.add(ProblemKind.CHECKPOINT, None, f"{where} is malformed: {error}")
                continue
            valid, stale = rotation.signers(keys, note, row.size, row.issued_at)
            if not valid:
                found.add(
                    ProblemKind.CHECKPOINT,
                    None,
                    f"{where} is not signed by the log key"
                    + (
                        f" valid when it was issued (only by {stale[0].encode()}, retired then)"
                        if stale
                        else ""
                    ),
                )
            if (body.origin, body.size, body.root) != (keys.origin, row.size, row.root):
                found.add(ProblemKind.CHECKPOINT, None, f"{where}: its note and its row differ")
            if body.size > entries:
                found.add(
                    ProblemKind.CHECKPOINT, None, f"{where} is beyond the log's {entries} entries"
                )
                continue
            try:
                recomputed = tree.root(body.size)
            except LookupError as error:
                found.add(ProblemKind.CHECKPOINT, None, f"{where}: {error}")
                continue
            if recomputed != body.root:
                found.add(
                    ProblemKind.CHECKPOINT,
                    None,
                    f"{where} signs a root that is not the root of the log's first "
                    f"{body.size} entries",
                )
            elif previous is not None and previous[0] <= body.size:
                proof = tree.consistency_proof(previous[0], body.size)
                if not verifier.verify_consistency(
                    previous[0], body.size, previous[1], body.root, proof
                ):
                    found.add(
                        ProblemKind.CHECKPOINT, None, f"{where} is not consistent with the last"
                    )
            if recomputed == body.root:
                previous = (body.size, body.root)


def _check_invariants(conn: Connection, found: Findings, checked: list[str] | None) -> None:
    """The escrow invariants' problems: as the replay's worker found them, else checked here."""
    if checked is None:
        with Session(bind=conn) as session:
            checked = check_all(session)
    for problem in checked:
        found.add(ProblemKind.INVARIANT, None, problem)


def count_entries(engine: Engine) -> int:
    """Number of stored entries (for a progress bar's total)."""
    with engine.connect().execution_options(escrow_read_only=True) as conn:
        return int(conn.execute(select(func.count()).select_from(LogEntry)).scalar_one())


def sha256_floor(engine: Engine) -> tuple[int, float]:
    """The entries and the seconds SHA-256(0x00 || body) alone takes over every stored body.

    Bodies are streamed as the replay streams them; only the hashing is timed. ``escrow bench``
    sets verify's entries/s beside it: no replay of the same bytes can be faster.
    """
    options: dict[str, Any] = {"escrow_read_only": True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    sha256, entries, seconds = hashlib.sha256, 0, 0.0
    with engine.connect().execution_options(**options) as conn, conn.begin():
        cursors = Cursors(conn)
        try:
            rows = cursors.rows("SELECT body FROM log_entries ORDER BY seq")
            while batch := [body for (body,) in itertools.islice(rows, STREAM_BATCH)]:
                started = time.perf_counter()
                for body in batch:
                    sha256(LEAF_PREFIX + body).digest()
                seconds += time.perf_counter() - started
                entries += len(batch)
        finally:
            cursors.close()
    return entries, seconds
