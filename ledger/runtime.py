"""Opening a ledger: engine, migrations, signing key, and the genesis entry.

The log's first entry (seq 0, ``log.opened``) names the origin and the public key the log was opened
with, so the key is part of the chained history from the start. Every later start checks that the key
on disk is still that key, rather than silently signing with a different one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from ledger import keys, rotation, schema
from ledger.calendar import WorkingCalendar
from ledger.clock import Clock, SystemClock
from ledger.config import Settings
from ledger.db import make_engine, session_factory, transaction
from ledger.errors import LogKeyMismatch
from ledger.escrow.context import Context
from ledger.log import Appended, Event, EventLog
from ledger.models import LogEntry
from ledger.policy import PolicyBook

GENESIS_TYPE = "log.opened"


def genesis_key(session: Session) -> tuple[str, str] | None:
    """The (origin, verifier key) the log was opened with, or None for an empty log."""
    body = session.execute(select(LogEntry.body).where(LogEntry.seq == 0)).scalar_one_or_none()
    if body is None:
        return None
    opened = json.loads(body)["payload"]
    return str(opened.get("origin")), str(opened.get("key"))


def ensure_genesis(session: Session, log: EventLog, key: keys.LogKey) -> Appended | None:
    """Write the genesis entry into an empty log, or check the key of an existing one.

    Returns the genesis entry when this call wrote it.
    """
    if log.head(session).size == 0 and log.lock(session).size == 0:
        return log.append(
            session,
            Event(
                GENESIS_TYPE,
                "system",
                {"origin": key.name, "algorithm": "Ed25519", "key": key.verifier_key},
            ),
        )
    check_key(session, key)
    return None


def check_key(session: Session, key: keys.LogKey) -> None:
    """Refuse a key (or origin) other than the log's current one: the key the log was opened
    with, or the last key a valid rotation chain from it announced (``ledger.rotation``)."""
    opened = genesis_key(session)
    if opened is None:
        return
    found = rotation.chain(session)
    current = found.current.encode() if found is not None else opened[1]
    if current != key.verifier_key:
        raise LogKeyMismatch(
            f"the log was opened as {opened[0]!r} with key {opened[1]!r} and its current key is "
            f"{current!r}, but the configured origin and key directory give "
            f"{key.verifier_key!r}; restore the original key (and ESCROW_LOG_NAME) instead of "
            "creating a new one",
        )


LOOP_POOL_SIZE = 32
"""Connections kept for event-loop reads: requests in flight at once on one API process."""


@dataclass
class Ledger:
    """Everything a process needs to read and write the ledger."""

    settings: Settings
    engine: Engine
    key: keys.LogKey
    clock: Clock
    policies: PolicyBook
    """Regional policy profiles; the default one is loaded (and validated) at start."""
    sessions: sessionmaker[Session] = field(init=False)
    """Write sessions (SQLite: ``BEGIN IMMEDIATE``)."""
    readers: sessionmaker[Session] = field(init=False)
    """Read-only sessions (SQLite: deferred, never blocking the writer)."""
    log: EventLog = field(init=False)
    escrow: Context = field(init=False)
    """What every escrow operation needs besides its session."""
    _loop_engine: Engine | None = field(init=False, default=None)
    _loop_sessions: sessionmaker[Session] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.sessions = session_factory(self.engine)
        self.readers = session_factory(self.engine, read_only=True)
        self.log = EventLog(self.clock)
        self.escrow = Context(self.log, self.policies, WorkingCalendar(), self.settings.zone)

    @classmethod
    def open(
        cls, settings: Settings, *, clock: Clock | None = None, migrate: bool = True
    ) -> Ledger:
        """Connect, bring the schema to head (unless told not to), load the key, ensure genesis."""
        # A broken default profile stops the start here, before any money is taken.
        policies = PolicyBook(settings.policy_profile, extra=settings.policy_dir)
        engine = make_engine(settings.database_url)
        try:
            if migrate:
                schema.upgrade(engine)
            key = keys.load_or_create(settings.key_dir, settings.log_name)
            ledger = cls(settings, engine, key, clock or SystemClock(), policies)
            with transaction(ledger.sessions) as session:
                # After a rotation the current key is another file of the key directory.
                ledger.key = rotation.active_key(session, settings.key_dir, key)
                ensure_genesis(session, ledger.log, ledger.key)
        except BaseException:
            engine.dispose()
            raise
        return ledger

    def loop_readers(self) -> Session:
        """A read-only session for code running on an asyncio event loop (API authentication).

        Its connections come from an engine of its own whose pool never makes a checkout wait
        (``max_overflow=-1``). With the shared pool, a checkout on the loop could block it while
        every connection was held by endpoint threads that need the loop to give theirs back:
        the whole process would stall until the pool timeout. Surplus connections are closed when
        they return, so the pool stays at its usual size.
        """
        if self._loop_sessions is None:
            url = self.engine.url
            if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
                engine = self.engine  # an in-memory database exists in one engine only
            else:
                # Kept: as many as requests that may hold one at once (new PostgreSQL
                # connections cost milliseconds); beyond that, made and closed as needed.
                # LIFO: the most recently used connection first, so its page cache (SQLite) is
                # warm; with FIFO each request got the coldest of 32 (issue 8: +40% CPU a read).
                engine = make_engine(
                    url, pool_size=LOOP_POOL_SIZE, max_overflow=-1, pool_use_lifo=True
                )
                self._loop_engine = engine
            self._loop_sessions = session_factory(engine, read_only=True)
        return self._loop_sessions()

    def close(self) -> None:
        """Release the connection pools."""
        if self._loop_engine is not None:
            self._loop_engine.dispose()
        self.engine.dispose()
