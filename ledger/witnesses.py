"""Witness keys and cosignatures: the log side of witnessing (the witness itself is ``ledger.witness``).

Banks and regulators register the key and URL of the witness they run (``escrow witness serve``);
registration and revocation are log entries (``witness_key.registered`` / ``witness_key.revoked``
/ ``witness_key.moved``), so who could cosign, and when, is itself part of the verified history.
After each checkpoint the log submits it to every active witness (``collect``) with a consistency
proof from the size that witness last cosigned, checks each returned cosignature against the
registered key and stores it. ``served_note`` is the checkpoint as it is handed out: the log's
signature and every stored, valid cosignature. A checkpoint is *witnessed* when cosignatures of at
least ``ESCROW_WITNESS_QUORUM`` distinct holders are stored; each holder has one active key at a
time, so counting keys (as an offline verifier does) and counting holders agree.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from ledger import verifier
from ledger.checkpoints import SignedCheckpoint
from ledger.config import Settings
from ledger.entities import ID, Bank, Regulator, string_enum
from ledger.errors import InvalidRequest, InvalidState, NotFound
from ledger.escrow import inputs
from ledger.escrow.context import Context
from ledger.escrow.parties import new_id
from ledger.merkle_store import StoredTree
from ledger.models import Base, BigIntPK, LogEntry, UTCDateTime
from ledger.witness import SIZE_MEDIA_TYPE, AddCheckpoint, signature_line

if TYPE_CHECKING:
    from ledger.runtime import Ledger

log = logging.getLogger("ledger.witnesses")

MAX_URL = 512
MAX_NAME = 128
MAX_RESPONSE = 64 * 1024
HTTP_TIMEOUT_SECONDS = 10.0


class HolderRole(StrEnum):
    """Who may run a witness: the parties that must not have to trust the operator."""

    BANK = "bank"
    REGULATOR = "regulator"


_HOLDER = {HolderRole.BANK: Bank, HolderRole.REGULATOR: Regulator}


class WitnessKey(Base):
    """A witness's cosigner key (C2SP, algorithm 0x04) and where it listens; active while
    ``revoked_seq`` is null."""

    __tablename__ = "witness_keys"
    __table_args__ = (Index("ix_witness_keys_holder", "holder_role", "holder_id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    holder_role: Mapped[HolderRole] = mapped_column(
        string_enum(HolderRole, "witness_holder_role", length=16)
    )
    holder_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(MAX_NAME))
    """The key name the witness chose; its cosignature lines carry it."""
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    key_id: Mapped[bytes] = mapped_column(LargeBinary(4))
    """SHA-256(name || 0x0A || 0x04 || public key)[:4], as C2SP cosigner keys."""
    url: Mapped[str] = mapped_column(String(MAX_URL))
    """Base URL of the witness; the log posts to ``<url>/add-checkpoint``."""
    registered_seq: Mapped[int] = mapped_column(BigInteger)
    revoked_seq: Mapped[int | None] = mapped_column(BigInteger)

    @property
    def active(self) -> bool:
        return self.revoked_seq is None

    @property
    def holder(self) -> str:
        """``bank:<id>`` or ``regulator:<id>``, as the export's keys.json names holders."""
        return f"{self.holder_role.value}:{self.holder_id}"

    @property
    def verifier_key(self) -> verifier.VerifierKey:
        return verifier.VerifierKey(self.name, verifier.ALG_COSIGNATURE_V1, self.public_key)


class Cosignature(Base):
    """A witness's cosignature of one checkpoint, checked against its registered key on receipt."""

    __tablename__ = "cosignatures"
    __table_args__ = (UniqueConstraint("checkpoint_id", "witness_key_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id"), index=True)
    witness_key_id: Mapped[str] = mapped_column(ForeignKey("witness_keys.id"), index=True)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    """The witness's time of cosigning (Unix seconds), from the signed line."""
    line: Mapped[str] = mapped_column(Text)
    """The signature line as the witness sent it, without its newline."""
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


# --- registering keys ----------------------------------------------------------------------------


def _holder(session: Session, role: object, holder_id: object) -> tuple[HolderRole, str]:
    checked = inputs.choice(role, HolderRole, "witness holder role")
    holder = inputs.code(holder_id, f"{checked.value} id")
    if session.get(_HOLDER[checked], holder) is None:
        raise NotFound(f"no {checked.value} {holder}")
    return checked, holder


def check_url(url: object) -> str:
    """An http(s) base URL without credentials, query or fragment."""
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL:
        raise InvalidRequest(f"a witness URL is 1-{MAX_URL} characters")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("a witness URL is http:// or https:// with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidRequest("a witness URL carries no credentials, query or fragment")
    return url.rstrip("/")


def parse_key(text: object) -> verifier.VerifierKey:
    """A C2SP cosigner verifier key (``name+keyid+base64(0x04 || key)``) of a valid Ed25519 key."""
    if not isinstance(text, str) or len(text) > MAX_NAME + 64:
        raise InvalidRequest("verifier_key must be a C2SP verifier key")
    try:
        key = verifier.VerifierKey.parse(text)
        Ed25519PublicKey.from_public_bytes(key.public_key)
    except ValueError as error:
        raise InvalidRequest(str(error)) from error
    if key.algorithm != verifier.ALG_COSIGNATURE_V1:
        raise InvalidRequest(
            "a witness key is a cosigner key (algorithm 0x04, `escrow witness init` prints it)"
        )
    if len(key.name) > MAX_NAME or not key.name.isprintable() or " " in key.name:
        raise InvalidRequest(f"a witness key name is 1-{MAX_NAME} printable characters")
    return key


def _facts(key: WitnessKey) -> dict[str, Any]:
    return {
        "key": key.id,
        "holder": key.holder,
        "name": key.name,
        "verifier_key": key.verifier_key.encode(),
        "url": key.url,
    }


def active_key_of(session: Session, role: HolderRole, holder_id: str) -> WitnessKey | None:
    return session.scalars(
        select(WitnessKey).where(
            WitnessKey.holder_role == role,
            WitnessKey.holder_id == holder_id,
            WitnessKey.revoked_seq.is_(None),
        )
    ).first()


@dataclass(frozen=True, slots=True)
class Registered:
    key: WitnessKey
    replaced: WitnessKey | None
    created: bool
    """False when the key was already the holder's active key (a retry, or a new URL)."""


def register_key(
    session: Session,
    ctx: Context,
    *,
    holder_role: str,
    holder_id: str,
    verifier_key: str,
    url: str,
    actor: str,
) -> Registered:
    """Register the holder's witness; it replaces (revokes) the holder's previous witness key.

    One active key per holder keeps the quorum honest: a bank cannot count twice. The same key
    again is a no-op, or records the new URL (``witness_key.moved``). A key revoked once, a key
    another holder uses, a name another holder's active witness uses, and the log's own name are
    refused.
    """
    ctx.lock(session)
    role, holder = _holder(session, holder_role, holder_id)
    key = parse_key(verifier_key)
    base_url = check_url(url)
    genesis_origin = _origin(session)
    if genesis_origin is not None and key.name == genesis_origin:
        raise InvalidRequest("a witness cannot use the log's own name")
    current = active_key_of(session, role, holder)
    if current is not None and current.public_key == key.public_key and current.name == key.name:
        if current.url != base_url:
            current.url = base_url
            ctx.record(session, "witness_key.moved", actor, _facts(current))
            session.flush()
        return Registered(current, None, created=False)
    if session.scalars(
        select(WitnessKey.id).where(WitnessKey.public_key == key.public_key)
    ).first():
        raise InvalidState("this witness key was registered before; generate a new key")
    if session.scalars(
        select(WitnessKey.id).where(
            WitnessKey.name == key.name,
            WitnessKey.revoked_seq.is_(None),
            (WitnessKey.holder_role != role) | (WitnessKey.holder_id != holder),
        )
    ).first():
        raise InvalidState(f"another holder's active witness is named {key.name!r}")
    if current is not None:
        _revoke(session, ctx, current, actor, "replaced")
    row = WitnessKey(
        id=new_id("wit"),
        holder_role=role,
        holder_id=holder,
        name=key.name,
        public_key=key.public_key,
        key_id=key.key_id,
        url=base_url,
        registered_seq=-1,
    )
    row.registered_seq = ctx.record(session, "witness_key.registered", actor, _facts(row)).seq
    session.add(row)
    session.flush()
    return Registered(row, current, created=True)


def _origin(session: Session) -> str | None:
    from ledger.runtime import genesis_key

    found = genesis_key(session)
    return None if found is None else found[0]


def _revoke(session: Session, ctx: Context, key: WitnessKey, actor: str, reason: str) -> None:
    key.revoked_seq = ctx.record(
        session, "witness_key.revoked", actor, {**_facts(key), "reason": reason}
    ).seq


def revoke_key(
    session: Session, ctx: Context, *, witness_id: str, holder_role: str, holder_id: str, actor: str
) -> WitnessKey:
    """Revoke one of the holder's witness keys; another holder's key is as missing as none."""
    ctx.lock(session)
    role, holder = _holder(session, holder_role, holder_id)
    key = session.get(WitnessKey, inputs.code(witness_id, "witness id"))
    if key is None or key.holder_role != role or key.holder_id != holder:
        raise NotFound(f"no witness key {witness_id}")
    if not key.active:
        raise InvalidState(f"witness key {key.id} is already revoked")
    _revoke(session, ctx, key, actor, "revoked")
    session.flush()
    return key


# --- keys and quorum for verifiers -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyPeriod:
    """A witness key and when it was valid: from its registration entry to its revocation entry."""

    id: str
    holder: str
    verifier_key: verifier.VerifierKey
    url: str
    valid_from: datetime
    valid_until: datetime | None


def witness_keys(session: Session, *, active_only: bool = False) -> list[KeyPeriod]:
    """Every witness key ever registered (or only the active ones), in registration order."""
    query = select(WitnessKey).order_by(WitnessKey.registered_seq)
    if active_only:
        query = query.where(WitnessKey.revoked_seq.is_(None))
    rows = list(session.scalars(query))
    times = _entry_times(
        session, {r.registered_seq for r in rows} | {r.revoked_seq for r in rows if r.revoked_seq}
    )
    return [
        KeyPeriod(
            r.id,
            r.holder,
            r.verifier_key,
            r.url,
            times[r.registered_seq],
            None if r.revoked_seq is None else times[r.revoked_seq],
        )
        for r in rows
    ]


def active_keys(session: Session) -> list[KeyPeriod]:
    """The witness keys valid now (``valid_until`` None)."""
    return witness_keys(session, active_only=True)


def quorum(settings: Settings) -> int:
    """How many distinct witnesses must cosign a checkpoint for it to count as witnessed."""
    return settings.witness_quorum


def _entry_times(session: Session, seqs: set[int]) -> dict[int, datetime]:
    if not seqs:
        return {}
    rows = session.execute(select(LogEntry.seq, LogEntry.time).where(LogEntry.seq.in_(seqs)))
    return {seq: when for seq, when in rows}


# --- cosignatures of a checkpoint ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ValidCosignature:
    key: WitnessKey
    signature: verifier.NoteSignature
    timestamp: int


def valid_cosignatures(session: Session, checkpoint: SignedCheckpoint) -> list[ValidCosignature]:
    """Stored cosignatures that verify over the checkpoint with a key active when received."""
    rows = list(
        session.execute(
            select(Cosignature, WitnessKey)
            .join(WitnessKey, WitnessKey.id == Cosignature.witness_key_id)
            .where(Cosignature.checkpoint_id == checkpoint.id)
            .order_by(WitnessKey.registered_seq)
        )
    )
    seqs = {k.registered_seq for _, k in rows} | {k.revoked_seq for _, k in rows if k.revoked_seq}
    times = _entry_times(session, seqs)
    body = checkpoint.body
    valid = []
    for cosignature, key in rows:
        if times[key.registered_seq] > cosignature.received_at:
            continue
        if key.revoked_seq is not None and times[key.revoked_seq] <= cosignature.received_at:
            continue
        found = _verified(body, cosignature.line + "\n", key.verifier_key)
        if found is not None:
            valid.append(ValidCosignature(key, found[0], found[1]))
    return valid


def served_note(session: Session, checkpoint: SignedCheckpoint) -> str:
    """The checkpoint's signed note as served: the log's signature line(s), then each valid
    cosignature (in witness registration order)."""
    note = verifier.Note.parse(checkpoint.note)
    cosigned = tuple(v.signature for v in valid_cosignatures(session, checkpoint))
    return verifier.Note(note.body, note.signatures + cosigned).text()


def witnessed(session: Session, checkpoint: SignedCheckpoint, required: int) -> bool:
    """Whether cosignatures of at least ``required`` distinct holders are stored and valid."""
    holders = {v.key.holder for v in valid_cosignatures(session, checkpoint)}
    return len(holders) >= required


def _verified(
    body: str, lines: str, key: verifier.VerifierKey
) -> tuple[verifier.NoteSignature, int] | None:
    """The first of ``lines`` that is a valid cosignature of ``body`` by ``key``, and its time."""
    try:
        note = verifier.Note.parse(f"{body}\n{lines}")
    except ValueError:
        return None
    for line in note.signatures:
        timestamp = verifier.Note(body, (line,)).cosigned_by(key)
        if timestamp is not None:
            return line, timestamp
    return None


# --- collecting cosignatures -------------------------------------------------------------------


class HttpResponse(Protocol):
    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def text(self) -> str: ...


class HttpClient(Protocol):
    """What ``collect`` needs of an HTTP client: an httpx (or Starlette test) client fits."""

    def post(self, url: str, *, content: bytes, headers: dict[str, str]) -> HttpResponse: ...


@dataclass(frozen=True, slots=True)
class _Answer:
    status_code: int
    headers: Mapping[str, str]
    text: str


class UrllibClient:
    """A standard-library HTTP client for the worker (the service needs no HTTP library)."""

    def __init__(self, timeout: float = HTTP_TIMEOUT_SECONDS) -> None:
        self.timeout = timeout

    def post(self, url: str, *, content: bytes, headers: dict[str, str]) -> HttpResponse:
        request = urllib.request.Request(url, data=content, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return _Answer(
                    response.status,
                    {k.lower(): v for k, v in response.headers.items()},
                    response.read(MAX_RESPONSE).decode("utf-8", "replace"),
                )
        except urllib.error.HTTPError as error:
            return _Answer(
                error.code,
                {k.lower(): v for k, v in error.headers.items()},
                error.read(MAX_RESPONSE).decode("utf-8", "replace"),
            )


@dataclass
class Outcome:
    """What happened with one witness for one checkpoint."""

    witness: str
    name: str
    result: str
    """``cosigned``, ``already`` (stored before), ``ahead`` (the witness has cosigned a larger
    tree), ``refused`` (a 4xx answer) or ``failed`` (network error, bad answer)."""
    detail: str = ""
    row: Cosignature | None = field(default=None, repr=False)
    """The cosignature to store, for ``cosigned``."""


@dataclass
class Collected:
    checkpoint_id: int
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def cosigned(self) -> int:
        return sum(o.result in ("cosigned", "already") for o in self.outcomes)


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return ""


def _last_cosigned_size(session: Session, key_id: str) -> int:
    size = session.scalar(
        select(func.max(SignedCheckpoint.size))
        .join(Cosignature, Cosignature.checkpoint_id == SignedCheckpoint.id)
        .where(Cosignature.witness_key_id == key_id)
    )
    return 0 if size is None else int(size)


def collect(
    session_factory: sessionmaker[Session],
    ledger: Ledger,
    checkpoint: SignedCheckpoint,
    http_client: HttpClient,
) -> Collected:
    """Submit ``checkpoint`` to every active witness and store the cosignatures that verify.

    No database transaction is held across a network call. Each witness gets a consistency proof
    from the size it last cosigned for this log (0 at first); a 409 that names another size is
    retried once with a proof from that size. A witness that refuses, or answers a signature that
    does not verify under its registered key, is reported and nothing is stored for it.
    """
    done = Collected(checkpoint.id)
    with ledger.readers() as session:
        keys = list(session.scalars(select(WitnessKey).where(WitnessKey.revoked_seq.is_(None))))
        stored = set(
            session.scalars(
                select(Cosignature.witness_key_id).where(Cosignature.checkpoint_id == checkpoint.id)
            )
        )
        olds = {k.id: _last_cosigned_size(session, k.id) for k in keys}
        for key in keys:
            session.expunge(key)
    body = verifier.Note.parse(checkpoint.note).body
    for key in keys:
        if key.id in stored:
            done.outcomes.append(Outcome(key.id, key.name, "already"))
            continue
        outcome = _submit(ledger, checkpoint, body, key, olds[key.id], http_client)
        if outcome.result != "cosigned":
            log.warning(
                "witness %s (%s) on checkpoint %d: %s %s",
                key.name,
                key.id,
                checkpoint.id,
                outcome.result,
                outcome.detail,
            )
        done.outcomes.append(outcome)
    rows = [o.row for o in done.outcomes if o.row is not None]
    if rows:
        with session_factory.begin() as session:
            session.add_all(rows)
    return done


def _proof(ledger: Ledger, old: int, size: int) -> list[bytes]:
    if old in (0, size):
        return []
    with ledger.readers() as session:
        return StoredTree(session).consistency_proof(old, size)


def _submit(
    ledger: Ledger,
    checkpoint: SignedCheckpoint,
    body: str,
    key: WitnessKey,
    old: int,
    client: HttpClient,
) -> Outcome:
    url = f"{key.url}/add-checkpoint"
    for attempt in range(2):
        if old > checkpoint.size:
            return Outcome(key.id, key.name, "ahead", f"the witness holds size {old}")
        try:
            proof = _proof(ledger, old, checkpoint.size)
        except (LookupError, ValueError) as error:
            return Outcome(key.id, key.name, "failed", f"no consistency proof: {error}")
        request = AddCheckpoint(old, tuple(proof), checkpoint.note)
        try:
            answer = client.post(
                url, content=request.encode(), headers={"Content-Type": "text/plain"}
            )
            status, text = answer.status_code, answer.text
            media = _header(answer.headers, "content-type").split(";")[0].strip()
        except Exception as error:  # noqa: BLE001 - any client failure is this witness's failure
            return Outcome(key.id, key.name, "failed", f"{type(error).__name__}: {error}")
        if status == 200:
            found = _verified(body, text if text.endswith("\n") else text + "\n", key.verifier_key)
            if found is None:
                return Outcome(
                    key.id, key.name, "failed", "no cosignature that verifies with its key"
                )
            line, timestamp = found
            row = Cosignature(
                checkpoint_id=checkpoint.id,
                witness_key_id=key.id,
                timestamp=timestamp,
                line=signature_line(line).rstrip("\n"),
                received_at=ledger.clock.now(),
            )
            return Outcome(key.id, key.name, "cosigned", f"time {timestamp}", row)
        if status == 409 and media == SIZE_MEDIA_TYPE and attempt == 0:
            size_text = text.strip()
            if size_text.isdigit() and int(size_text) != old:
                old = int(size_text)
                continue
        detail = text.strip()[:200]
        return Outcome(
            key.id,
            key.name,
            "refused" if 400 <= status < 500 else "failed",
            f"HTTP {status}: {detail}",
        )
    return Outcome(key.id, key.name, "refused", "the witness disagreed on its size twice")


def collect_quietly(
    ledger: Ledger, checkpoint: SignedCheckpoint, http_client: HttpClient | None = None
) -> Collected | None:
    """``collect`` for the worker: any failure is logged, never raised (a witness that is down
    must not stop settlement or checkpoint signing)."""
    try:
        with ledger.readers() as session:
            if (
                session.scalar(
                    select(WitnessKey.id).where(WitnessKey.revoked_seq.is_(None)).limit(1)
                )
                is None
            ):
                return None
        return collect(ledger.sessions, ledger, checkpoint, http_client or UrllibClient())
    except Exception:
        log.exception("collecting cosignatures of checkpoint %d failed", checkpoint.id)
        return None
