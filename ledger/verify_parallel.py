"""The replay of ``escrow verify`` on two cores: a worker process takes the first half of the log.

Issue 8: one Python process replays at most ~60,000 entries/s, whatever is left to optimise. The
log splits at a seq: a forked worker replays the part before it while this process replays the
rest, both in the same snapshot, and the two are joined: the second part's first ``prev_hash``
and time against the first part's last entry, each account's lowest balance in the second part
against its balance at the end of the first, the Merkle nodes that straddle the split against the
first part's pending nodes, and then every account row against the joined accounts.

The parallel run only decides that the log is intact. If either part or the join finds anything
at all, the exact replay (``Replay.run``) runs again on this connection, in the same snapshot, and
reports precisely what it always did; a damaged log costs a second pass, an intact one half.

The same snapshot: on PostgreSQL the worker imports this transaction's exported snapshot; on
SQLite, whose readers cannot share one, both readers start while a third connection holds the
write lock (for the few milliseconds a fork takes), so no commit can fall between them. When
neither is possible (an in-memory database, a read-only file, a busy writer, a process with
other threads, which must not fork) the replay runs in this process alone.
"""

from __future__ import annotations

import multiprocessing
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from ledger.db import READ_ONLY, make_engine
from ledger.escrow.invariants import check_all
from ledger.verify_findings import Findings, Report
from ledger.verify_merkle import NodeStream, all_nodes_hold
from ledger.verify_replay import Rebuilt, Replay

PARALLEL_MIN_ENTRIES = 50_000
"""Below this a worker process costs more than it saves."""
# The worker's share of the log: it also checks the invariants, while this process joins.
_WORKER_SHARE = 0.45
_SPLIT_ALIGN = 1 << 12  # a split on a multiple of 4096 leaves few Merkle nodes straddling it
_WRITE_LOCK_TIMEOUT_S = 1.0
_READY_TIMEOUT_S = 30.0
_DONE_TIMEOUT_S = 60.0
_SNAPSHOT_ID = re.compile(r"^[0-9A-Fa-f-]+$")


@dataclass
class Part:
    """What joining needs of a replayed part: its counts, its ends, its accounts and nodes."""

    entries: int
    postings: int
    problems: int
    next_seq: int
    last_hash: bytes
    last_time: str
    first_link: str | None
    first_time: str
    rebuilt: dict[str, Rebuilt]
    tree: NodeStream
    invariants: list[str] | None = None
    """What ``check_all`` found, if the worker ran it (it does, after its part, to even the load)."""

    @classmethod
    def of(cls, replay: Replay) -> Part:
        return cls(
            replay.report.entries,
            replay.report.postings,
            replay.found.total,
            replay.next_seq,
            replay.last_hash,
            replay.last_time,
            replay.first_link,
            replay.first_time,
            replay.rebuilt,
            replay.tree,
        )


@dataclass
class Outcome:
    """The replay's answer: do the stored Merkle nodes all hold, and the escrow invariants'
    problems if the worker checked them (in the same snapshot), else None."""

    nodes_hold: bool
    invariants: list[str] | None = None


def replay(
    engine: Engine,
    conn: Connection,
    report: Report,
    found: Findings,
    progress: Callable[[int], None] | None,
    *,
    invariants: bool,
) -> Outcome:
    """Replay the log in ``conn``'s transaction (not yet used): in two processes if it can, else
    in this one; with ``invariants`` the worker also runs ``check_all`` after its part."""
    worker = _start(engine, conn, invariants)
    if worker is not None:
        process, pipe, split = worker
        try:
            outcome = _parallel(conn, pipe, split, report, progress)
            if outcome is not None:
                return outcome
        finally:
            pipe.close()
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
    return Outcome(Replay(conn, report, found, progress).run())


def _can_fork() -> bool:
    """Fork only from the main thread (the CLI, the bench), never from a server's request thread.

    A fork copies locks other threads may hold; the worker takes none of them (it opens its own
    engine and writes nothing but its pipe), and a worker that hangs anyway is given up on.
    """
    return (
        threading.current_thread() is threading.main_thread()
        and "fork" in multiprocessing.get_all_start_methods()
    )


def _start(engine: Engine, conn: Connection, invariants: bool) -> tuple[Any, Pipe, int] | None:
    """Fork the worker on the same snapshot as ``conn``; None if the log is small or cannot."""
    if not _can_fork():
        return None
    if conn.dialect.name == "postgresql":
        snapshot, last = conn.exec_driver_sql(
            "SELECT pg_export_snapshot(), (SELECT max(seq) FROM log_entries)"
        ).one()
        split = _split(last)
        if split is None or not _SNAPSHOT_ID.match(str(snapshot)):
            return None
        return _fork(engine, str(snapshot), split, last, invariants)
    database = engine.url.database
    if conn.dialect.name != "sqlite" or not database or database.startswith((":memory:", "file:")):
        return None
    try:
        lock = sqlite3.connect(database, timeout=_WRITE_LOCK_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        try:
            if _split(lock.execute("SELECT max(seq) FROM log_entries").fetchone()[0]) is None:
                return None  # a small log: no need to hold writers back
            lock.execute("BEGIN IMMEDIATE")  # no commit can happen until both readers have begun
        except sqlite3.Error:
            return None
        last = conn.exec_driver_sql("SELECT max(seq) FROM log_entries").scalar()
        split = _split(last)
        return None if split is None else _fork(engine, None, split, last, invariants)
    finally:
        lock.close()  # rolls back: writers go on


def _split(last: object) -> int | None:
    if type(last) is not int or last + 1 < PARALLEL_MIN_ENTRIES:
        return None
    return int((last + 1) * _WORKER_SHARE) // _SPLIT_ALIGN * _SPLIT_ALIGN


def _fork(
    engine: Engine, snapshot: str | None, split: int, last: object, invariants: bool
) -> tuple[Any, Pipe, int] | None:
    """Start the worker and wait until its transaction sees what ours does."""
    here, there = multiprocessing.get_context("fork").Pipe()
    process = multiprocessing.get_context("fork").Process(
        target=_work,
        args=(engine.url.render_as_string(hide_password=False), snapshot, split, invariants, there),
        daemon=True,
    )
    process.start()
    there.close()
    try:
        message = here.recv() if here.poll(_READY_TIMEOUT_S) else None
    except EOFError:
        message = None
    if message != ("ready", last):
        here.close()
        process.kill()
        process.join()
        return None
    return process, here, split


def _work(url: str, snapshot: str | None, split: int, invariants: bool, pipe: Pipe) -> None:
    """The worker: replay seqs below ``split`` in the given snapshot, then check the escrow
    invariants there if asked, and send back the part."""
    try:
        engine = make_engine(url)
        options: dict[str, Any] = {READ_ONLY: True}
        if snapshot is not None:
            options["isolation_level"] = "REPEATABLE READ"
        with engine.connect().execution_options(**options) as conn, conn.begin():
            if snapshot is not None:
                conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            last = conn.exec_driver_sql("SELECT max(seq) FROM log_entries").scalar()
            pipe.send(("ready", last))
            part = Replay(conn, Report(), Findings(0), hi=split)
            try:
                part.replay()
            finally:
                part.close()
            result = Part.of(part)
            if invariants:
                with Session(bind=conn) as session:
                    try:
                        result.invariants = check_all(session)
                    except Exception:  # noqa: BLE001 - this process runs it again, and reports
                        result.invariants = None
            pipe.send(("done", result))
        engine.dispose()
    except BaseException as error:  # noqa: BLE001 - any failure only means: replay it all here
        pipe.send(("failed", repr(error)))
    finally:
        pipe.close()


def _parallel(
    conn: Connection,
    pipe: Pipe,
    split: int,
    report: Report,
    progress: Callable[[int], None] | None,
) -> Outcome | None:
    """Replay from ``split`` here and join the worker's part. None unless the log is intact (the
    exact replay then says what is wrong); if it is, whether the stored Merkle nodes all hold."""
    scaled = None
    if progress is not None:
        callback = progress
        scaled = lambda done: callback(2 * done)
    main = Replay(conn, Report(), Findings(0), scaled, lo=split)
    started = time.monotonic()
    try:
        try:
            main.replay()
        finally:
            main.close()
        stored = main.cursors.scalar("SELECT count(*) FROM merkle_nodes WHERE level >= 1")
    except Exception:  # noqa: BLE001 - the exact replay reports what it was
        return None
    # The worker's part is a little smaller; if it is far slower, something is wrong with it.
    patience = max(_DONE_TIMEOUT_S, 4 * (time.monotonic() - started))
    try:
        kind, first = pipe.recv() if pipe.poll(patience) else (None, None)
    except EOFError:
        return None
    if kind != "done" or not isinstance(first, Part):
        return None
    second = Part.of(main)
    if first.problems or second.problems or first.next_seq != split:
        return None
    if second.entries and (
        second.first_link != first.last_hash.hex() or second.first_time < first.last_time
    ):
        return None
    joined = _join_accounts(first.rebuilt, second.rebuilt)
    if joined is None:
        return None
    main.rebuilt = joined
    accounts = Findings(0)
    main.found = accounts
    main.check_accounts()
    if accounts.total:
        return None
    report.entries = first.entries + second.entries
    report.postings = first.postings + second.postings
    report.accounts = main.report.accounts
    if progress is not None:
        progress(report.entries)
    return Outcome(all_nodes_hold(int(stored), first.tree, second.tree), first.invariants)


def _join_accounts(
    first: dict[str, Rebuilt], second: dict[str, Rebuilt]
) -> dict[str, Rebuilt] | None:
    """The accounts after both parts; None if one that may not go negative did in the second."""
    joined = dict(first)
    for code, later in second.items():
        before = first.get(code)
        if before is None:
            if later.non_negative and later.low < 0:
                return None
            joined[code] = later
            continue
        if before.non_negative and before.balance + later.low < 0:
            return None
        joined[code] = Rebuilt(
            before.sign,
            before.non_negative,
            before.currency,
            before.opened_seq,
            later.last_seq,
            before.balance + later.balance,
            min(before.low, before.balance + later.low),
        )
    return joined
