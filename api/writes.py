"""Every POST: one transaction holding the effect, its log entries and its idempotency record.

The request runs under the log lock. The lock is taken before the ``Idempotency-Key`` is looked
up, so two concurrent requests with one key are serialised: the second finds the first's record
and replays its response (status and body) without a second effect. The same key with another body
(or another endpoint) is refused with 409. A refused request stores nothing, so it may be retried
with the same key once it is fixed.

Writes are committed in groups (``GroupCommit``): the requests that queue while one transaction is
being written share the next one, each in its own savepoint, so a burst pays one commit per group
instead of one per request, and a request that fails still fails alone.

Money-moving responses carry a **receipt**: the seq and hash of the last log entry the request
wrote, signed with the log's Ed25519 key over ``receipt_message``, so a client can prove later
what the service acknowledged, with nothing but the published public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from api.deps import LedgerDep
from ledger import canonical
from ledger.access import IdempotencyRecord, Principal
from ledger.errors import InvalidState
from ledger.escrow.context import Context
from ledger.keys import LogKey
from ledger.models import LogEntry, table
from ledger.runtime import Ledger
from ledger.verifier import RECEIPT_DOMAIN, receipt_message

__all__ = [
    "RECEIPT_DOMAIN",
    "Receipt",
    "Tx",
    "Writer",
    "WriterDep",
    "receipt_message",
    "sign_receipt",
]

M = TypeVar("M", bound=BaseModel)


class IdempotencyKeyReused(InvalidState):
    """An Idempotency-Key came back with a different request."""

    code = "idempotency-key-reused"
    title = "Idempotency-Key reused for another request"


class Receipt(BaseModel):
    """Proof of what the service acknowledged: a log position and hash, signed by the log key."""

    seq: int = Field(description="Position of the entry in the log (its Merkle leaf index)")
    hash: str = Field(description="The entry's hash (SHA-256 leaf hash), hex")
    origin: str = Field(description="The log's name")
    key_id: str = Field(description="C2SP key id of the signing key, hex")
    signature: str = Field(
        description="Ed25519 over receipt_message(origin, seq, hash), base64 (see docs/api.md)"
    )


def sign_receipt(key: LogKey, seq: int, entry_hash: bytes) -> Receipt:
    message = receipt_message(key.name, seq, entry_hash.hex())
    return Receipt(
        seq=seq,
        hash=entry_hash.hex(),
        origin=key.name,
        key_id=key.key_id.hex(),
        signature=base64.b64encode(key.sign(message)).decode(),
    )


@dataclass
class Tx:
    """What a write handler gets: its session (under the log lock) and a way to sign a receipt."""

    session: Session
    ctx: Context
    key: LogKey
    size_before: int

    def receipt(self, fallback_seq: int | None = None) -> Receipt | None:
        """A receipt for the last entry this request wrote; else for ``fallback_seq`` (the entry
        that recorded the effect the first time, when a domain-idempotent repeat wrote nothing)."""
        head = self.ctx.log.current(self.session)  # no query: this transaction holds the lock
        seq = head.size - 1 if head.size > self.size_before else fallback_seq
        if seq is None:
            return None
        if seq == head.size - 1:
            return sign_receipt(self.key, seq, head.hash)
        entry_hash = self.session.get(LogEntry, seq)
        assert entry_hash is not None
        return sign_receipt(self.key, seq, entry_hash.hash)


def request_hash(method: str, path: str, payload: BaseModel | None) -> bytes:
    body = b"null" if payload is None else canonical.dumps(payload.model_dump(mode="json"))
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).digest()


@dataclass(eq=False)
class _Job:
    """One POST waiting for a group commit: what to run, and (once done) what to answer."""

    principal: Principal
    key: str
    digest: bytes
    work: Callable[[Tx], BaseModel]
    status: int
    keep: Callable[[dict[str, Any]], dict[str, Any]] | None
    done: threading.Event = field(default_factory=threading.Event)
    response: JSONResponse | None = None
    error: BaseException | None = None


class GroupCommit:
    """The process's writes, committed in groups: one transaction, one commit, one fsync for all
    the requests that queued while the previous group was being written.

    Each request still runs alone in a savepoint of the group's transaction, under the log lock,
    with its idempotency record: a request that fails rolls back to its savepoint and answers its
    own error, while the others are committed. A request answers only once the group's commit
    succeeded; if the commit fails, every request of the group answers that error and nothing of
    the group is stored. Issue 8: a single-lesson report spent 30% of its time committing (the
    WAL's fsync on SQLite, the WAL flush on PostgreSQL), and writers queued behind one another's
    commits.

    Leader and followers: each request queues its job and takes the process's write lock in turn;
    whoever holds it writes every job queued so far, so a request that finds its job already done
    returns at once. Across processes the log lock still orders the groups.
    """

    MAX_GROUP = 64

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._leader = threading.Lock()
        self._guard = threading.Lock()
        self._queue: deque[_Job] = deque()

    def submit(self, job: _Job) -> JSONResponse:
        with self._guard:
            self._queue.append(job)
        while not job.done.is_set():
            with self._leader:
                if not job.done.is_set():
                    self._lead()
        if job.error is not None:
            raise job.error
        assert job.response is not None
        return job.response

    def _lead(self) -> None:
        with self._guard:
            group = [self._queue.popleft() for _ in range(min(len(self._queue), self.MAX_GROUP))]
        try:
            with self.ledger.sessions.begin() as session:
                self.ledger.log.lock(session)
                for job in group:
                    try:
                        with session.begin_nested():
                            job.response = self._run(session, job)
                    except Exception as error:  # noqa: BLE001 - answered to its own request
                        job.error = error
                        # its savepoint was rolled back, and with it any entries it appended
                        self.ledger.log.forget_head(session)
        except BaseException as error:  # the commit failed: nothing of the group is stored
            for job in group:
                if job.error is None:
                    job.response, job.error = None, error
            if not isinstance(error, Exception):
                raise
        finally:
            for job in group:
                job.done.set()

    def _run(self, session: Session, job: _Job) -> JSONResponse:
        ledger = self.ledger
        head = ledger.log.lock(session)
        session.expire_all()
        # Core statements on the record's table: the ORM's identity lookup and unit of work
        # cost more than the row (issue 8).
        stored = session.execute(
            select(_RECORDS.c.request_hash, _RECORDS.c.status, _RECORDS.c.body).where(
                _RECORDS.c.principal == job.principal.actor, _RECORDS.c.key == job.key
            )
        ).first()
        if stored is not None:
            if stored.request_hash != job.digest:
                raise IdempotencyKeyReused(
                    f"Idempotency-Key {job.key!r} was first used for another request; "
                    "use a new key for a new request",
                    key=job.key,
                )
            return JSONResponse(
                json.loads(stored.body),
                status_code=stored.status,
                headers={"Idempotent-Replayed": "true"},
            )
        result = job.work(Tx(session, ledger.escrow, ledger.key, head.size))
        body: Any = result.model_dump(mode="json")
        kept = body if job.keep is None else job.keep(dict(body))
        encoded = json.dumps(kept, ensure_ascii=False, separators=(",", ":")).encode()
        session.execute(
            insert(_RECORDS).values(
                principal=job.principal.actor,
                key=job.key,
                request_hash=job.digest,
                status=job.status,
                body=encoded,
                created_at=ledger.clock.now(),
            )
        )
        if job.keep is None:  # the bytes JSONResponse would render: no second encoding
            return _Encoded(encoded, status_code=job.status)
        return JSONResponse(body, status_code=job.status)


@dataclass
class Writer:
    """Runs one POST idempotently; obtained per request as a dependency."""

    ledger: Ledger
    key: str
    method: str
    path: str
    group: GroupCommit
    """The application's group commit: one write transaction of this process at a time."""

    def run(
        self,
        principal: Principal,
        payload: BaseModel | None,
        work: Callable[[Tx], M],
        *,
        status: int = 200,
        keep: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> JSONResponse:
        """Run ``work`` once per Idempotency-Key; ``keep`` redacts what the record keeps (a
        secret shown once is not kept, and a replay does not show it again)."""
        digest = request_hash(self.method, self.path, payload)
        return self.group.submit(_Job(principal, self.key, digest, work, status, keep))


class _Encoded(JSONResponse):
    """A JSON response whose body is already encoded exactly as ``JSONResponse`` renders it."""

    def render(self, content: Any) -> bytes:
        assert isinstance(content, bytes)
        return content


_RECORDS = table(IdempotencyRecord)


async def writer(
    request: Request,
    ledger: LedgerDep,
    idempotency_key: Annotated[
        str,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            pattern=r"^[!-~]+$",
            description="A unique key per intended effect (a UUID, say); a retry with the same "
            "key and body returns the first response without a second effect",
            examples=["5f0c9a1e-8d1b-4f9e-9a57-2d6c3f1b7e20"],
        ),
    ],
) -> Writer:
    # async: no I/O here, so no threadpool hop (issue 8)
    return Writer(
        ledger, idempotency_key, request.method, request.url.path, request.app.state.group_commit
    )


WriterDep = Annotated[Writer, Depends(writer)]
