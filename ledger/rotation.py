"""Log key rotation: a new signing key announced inside the log by the key it replaces.

A key that must be replaced (it is old, or a holder of it left) cannot simply be swapped on disk:
every bank and regulator pinned the old verifier key, and history signed by it must stay
verifiable. So a rotation is a log entry, ``log.key_rotated``, whose payload is::

    {"old_key": <old verifier key>, "new_key": <new verifier key>,
     "overlap_until": <UTC time, the log's fixed-width format>,
     "announcement": base64(Ed25519 signature by the OLD key over announcement_message(...))}

and ``announcement_message`` is the four lines
``tuition-escrow/key-rotation/v1\\n<old vkey>\\n<new vkey>\\n<overlap_until>\\n``. Whoever trusts the
old key learns the new one from a statement only the old key's holder could make, and the entry's
place in the hash chain fixes when it was made.

Validity, as ``escrow verify`` and the exports apply it: the genesis key (named by the ``log.opened``
entry) is valid from the log's start until the end of the overlap of the rotation that retires it;
a rotated-in key is valid for checkpoints covering its rotation entry (size > its seq) until the end
of the overlap of the next rotation, if any. During an overlap, checkpoints carry both signatures
(``LogKey.signing_keys``); after it, the new key's alone.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger import keys, verifier
from ledger.errors import InvalidRequest, InvalidState, LogKeyMismatch
from ledger.log import Appended, Event, EventLog, format_time
from ledger.models import LogEntry

ROTATION_TYPE = "log.key_rotated"
ANNOUNCEMENT_DOMAIN = "tuition-escrow/key-rotation/v1"


def announcement_message(old_key: str, new_key: str, overlap_until: str) -> bytes:
    """The exact bytes the old key signs to announce the new one: four lines, each ending in \\n."""
    return f"{ANNOUNCEMENT_DOMAIN}\n{old_key}\n{new_key}\n{overlap_until}\n".encode()


@dataclass(frozen=True, slots=True)
class KeyPeriod:
    """One log key and when it may sign: from its entry (seq and time) until ``valid_until``."""

    key: verifier.VerifierKey
    from_seq: int
    """The entry that introduced it: 0 (genesis) or its rotation entry."""
    valid_from: datetime
    valid_until: datetime | None
    """The end of the overlap of the rotation that retired it; None while it is current."""

    def signs_for(self, size: int, issued_at: datetime) -> bool:
        """Whether a checkpoint of ``size`` issued at ``issued_at`` may be signed by this key."""
        if size <= self.from_seq:
            return False
        return self.valid_until is None or _aware(issued_at) < self.valid_until


@dataclass
class Chain:
    """The log's keys in order, from the genesis key, and the rotation entries that were refused."""

    origin: str
    periods: list[KeyPeriod]
    problems: list[tuple[int, str]] = field(default_factory=list)
    """(seq, reason) of every ``log.key_rotated`` entry that does not hold (ignored in ``periods``)."""

    @property
    def current(self) -> verifier.VerifierKey:
        return self.periods[-1].key


def _aware(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _parse_time(text: object) -> datetime:
    if not isinstance(text, str):
        raise TypeError("not a time")
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return parsed.astimezone(UTC)


def chain(session: Session) -> Chain | None:
    """Replay the genesis entry and every rotation entry; None for an empty log.

    Only the entry bodies are trusted (the hashed bytes), never the query columns' values, so an
    edited column cannot invent a key; the ``type`` column only narrows the scan.
    """
    genesis = session.execute(select(LogEntry.body).where(LogEntry.seq == 0)).scalar_one_or_none()
    if genesis is None:
        return None
    opened = json.loads(genesis)
    payload = opened["payload"]
    origin = str(payload.get("origin"))
    first = verifier.VerifierKey.parse(str(payload.get("key")))
    periods = [KeyPeriod(first, 0, _parse_time(opened["time"]), None)]
    found = Chain(origin, periods)
    rows = session.execute(
        select(LogEntry.seq, LogEntry.body)
        .where(LogEntry.type == ROTATION_TYPE)
        .order_by(LogEntry.seq)
    )
    for seq, body in rows:
        try:
            entry = json.loads(body)
            if entry.get("type") != ROTATION_TYPE:
                continue
            new, until = _check(found, entry["payload"], None)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            found.problems.append((seq, f"key rotation at seq {seq} is refused: {error}"))
            continue
        retiring = periods[-1]
        periods[-1] = KeyPeriod(retiring.key, retiring.from_seq, retiring.valid_from, until)
        periods.append(KeyPeriod(new, seq, _parse_time(entry["time"]), None))
    return found


def _check(
    found: Chain, payload: dict[str, Any], when: datetime | None
) -> tuple[verifier.VerifierKey, datetime]:
    """The new key and the end of the overlap, if the rotation payload holds; else ValueError.

    ``when`` (creation only) refuses an overlap already over. In the log the end is taken as
    signed: it may fall microseconds before the entry's own time (a rotation with no overlap).
    """
    old_text, new_text = payload["old_key"], payload["new_key"]
    until_text, announcement = payload["overlap_until"], payload["announcement"]
    if not all(isinstance(v, str) for v in (old_text, new_text, until_text, announcement)):
        raise ValueError("old_key, new_key, overlap_until and announcement must be strings")
    if old_text != found.current.encode():
        raise ValueError(f"it retires {old_text[:60]!r}, which is not the log's current key")
    new = verifier.VerifierKey.parse(new_text)
    if new.algorithm != verifier.ALG_ED25519 or new.name != found.origin:
        raise ValueError(f"the new key must be an Ed25519 note key named {found.origin!r}")
    if any(p.key == new for p in found.periods):
        raise ValueError("the new key was already a key of this log")
    until = _parse_time(until_text)
    if when is not None and until < when:
        raise ValueError(f"its overlap would end ({until_text}) before now")
    try:
        signature = base64.b64decode(announcement, validate=True)
    except binascii.Error as error:
        raise ValueError("the announcement is not base64") from error
    message = announcement_message(old_text, new_text, until_text)
    try:
        Ed25519PublicKey.from_public_bytes(found.current.public_key).verify(signature, message)
    except (InvalidSignature, ValueError) as error:
        raise ValueError("the announcement is not signed by the old key") from error
    return new, until


def log_keys(session: Session) -> list[tuple[verifier.VerifierKey, datetime, datetime | None]]:
    """Every log key with its validity period (for exports): (key, valid_from, valid_until)."""
    found = chain(session)
    if found is None:
        return []
    return [(p.key, p.valid_from, p.valid_until) for p in found.periods]


def append_rotation(
    session: Session,
    log: EventLog,
    *,
    old_key: str,
    new_key: str,
    overlap_until: str,
    announcement: str,
    actor: str = "system",
    now: datetime | None = None,
) -> Appended:
    """Append a ``log.key_rotated`` entry after checking it exactly as the verifier will.

    A rotation that would not hold (not signed by the current key, a malformed key, an overlap
    ending before now) is refused before anything is written.
    """
    log.lock(session)
    found = chain(session)
    if found is None:
        raise InvalidState("an empty log has no key to rotate")
    payload = {
        "old_key": old_key,
        "new_key": new_key,
        "overlap_until": overlap_until,
        "announcement": announcement,
    }
    try:
        _check(found, payload, _aware(now or log.clock.now()))
    except (ValueError, TypeError, KeyError) as error:
        raise InvalidRequest(f"key rotation refused: {error}") from error
    return log.append(session, Event(ROTATION_TYPE, actor, payload))


def rotate(
    session: Session,
    log: EventLog,
    old: keys.LogKey,
    new: keys.LogKey,
    overlap_until: datetime,
    *,
    actor: str = "system",
) -> Appended:
    """Announce ``new`` as the successor of ``old`` (the current key), signed by ``old``."""
    now = log.clock.now()
    until = format_time(max(overlap_until, now))
    message = announcement_message(old.verifier_key, new.verifier_key, until)
    return append_rotation(
        session,
        log,
        old_key=old.verifier_key,
        new_key=new.verifier_key,
        overlap_until=until,
        announcement=base64.b64encode(old.sign(message)).decode(),
        actor=actor,
        now=now,
    )


def active_key(session: Session, key_dir: Path, first: keys.LogKey) -> keys.LogKey:
    """The key this process must sign with: the chain's current key, carrying the keys it
    retires (whose overlap may not have ended) so checkpoints get both signatures meanwhile.

    ``first`` is the key of ``keys.KEY_FILE``; with no rotation in the log it is returned as is.
    A rotation whose new key is not in ``key_dir`` stops the start: signing with the old key
    after the overlap would produce checkpoints every verifier refuses.
    """
    found = chain(session)
    if found is None or len(found.periods) == 1:
        return first
    available = keys.load_all(key_dir, first.name)
    current = available.get(found.current.encode())
    if current is None:
        raise LogKeyMismatch(
            f"the log's current key is {found.current.encode()!r} (announced by a rotation), "
            f"but {key_dir} does not hold it; restore its log-ed25519-<key id>.pem file"
        )
    current.retiring = tuple(
        (available[p.key.encode()], p.valid_until)
        for p in found.periods[:-1]
        if p.valid_until is not None and p.key.encode() in available
    )
    return current


def signers(
    found: Chain, note: verifier.Note, size: int, issued_at: datetime
) -> tuple[list[verifier.VerifierKey], list[verifier.VerifierKey]]:
    """(keys valid for this checkpoint that signed it, log keys that signed it out of their time)."""
    valid: list[verifier.VerifierKey] = []
    stale: list[verifier.VerifierKey] = []
    for period in found.periods:
        if note.signed_by(period.key):
            (valid if period.signs_for(size, issued_at) else stale).append(period.key)
    return valid, stale
