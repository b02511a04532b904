"""Every POST: one transaction holding the effect, its log entries and its idempotency record.

The request runs under the log lock. The lock is taken before the ``Idempotency-Key`` is looked
up, so two concurrent requests with one key are serialised: the second finds the first's record
and replays its response (status and body) without a second effect. The same key with another body
(or another endpoint) is refused with 409. A refused request stores nothing, so it may be retried
with the same key once it is fixed.

Money-moving responses carry a **receipt**: the seq and hash of the last log entry the request
wrote, signed with the log's Ed25519 key over ``receipt_message``, so a client can prove later
what the service acknowledged, with nothing but the published public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
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
        head = self.ctx.log.head(self.session)
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


@dataclass
class Writer:
    """Runs one POST idempotently; obtained per request as a dependency."""

    ledger: Ledger
    key: str
    method: str
    path: str
    lock: AbstractContextManager[Any]
    """The application's write lock: one write transaction of this process at a time."""

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
        ledger = self.ledger
        # The database's lock still orders writers across processes; this one makes the
        # process's own writers queue here, woken as soon as it is free. Left to SQLite, they
        # all waited in its busy handler, which sleeps up to 100 ms between tries: at 200
        # reports/s the queue never drained (issue 8: 100 reports/s, p99 10 s, before).
        with self.lock, ledger.sessions.begin() as session:
            head = ledger.log.lock(session)
            session.expire_all()
            # Core statements on the record's table: the ORM's identity lookup and unit of work
            # cost more than the row (issue 8).
            stored = session.execute(
                select(_RECORDS.c.request_hash, _RECORDS.c.status, _RECORDS.c.body).where(
                    _RECORDS.c.principal == principal.actor, _RECORDS.c.key == self.key
                )
            ).first()
            if stored is not None:
                if stored.request_hash != digest:
                    raise IdempotencyKeyReused(
                        f"Idempotency-Key {self.key!r} was first used for another request; "
                        "use a new key for a new request",
                        key=self.key,
                    )
                return JSONResponse(
                    json.loads(stored.body),
                    status_code=stored.status,
                    headers={"Idempotent-Replayed": "true"},
                )
            result = work(Tx(session, ledger.escrow, ledger.key, head.size))
            body: Any = result.model_dump(mode="json")
            kept = body if keep is None else keep(dict(body))
            encoded = json.dumps(kept, ensure_ascii=False, separators=(",", ":")).encode()
            session.execute(
                insert(_RECORDS).values(
                    principal=principal.actor,
                    key=self.key,
                    request_hash=digest,
                    status=status,
                    body=encoded,
                    created_at=ledger.clock.now(),
                )
            )
        if keep is None:  # the bytes JSONResponse would render: no second encoding
            return _Encoded(encoded, status_code=status)
        return JSONResponse(body, status_code=status)


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
        ledger, idempotency_key, request.method, request.url.path, request.app.state.write_lock
    )


WriterDep = Annotated[Writer, Depends(writer)]
