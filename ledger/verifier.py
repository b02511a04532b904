"""Offline verification of the tuition-escrow log: everything a bank or a regulator needs to check
an export, a proof bundle or a checkpoint, with nothing but this file and public keys.

It imports only the Python standard library and ``cryptography`` (for Ed25519), on purpose: a
regulator can read it end to end, and run it on a machine that has never seen the service. The
service itself uses the same functions, so what it proves is what this module checks.

Formats (see docs/audit.md):

- Merkle tree: RFC 6962 / RFC 9162. leaf = SHA-256(0x00 || entry body), node = SHA-256(0x01 ||
  left || right), empty tree = SHA-256 of nothing. Verifiers per RFC 9162 2.1.3.2 and 2.1.4.2.
- Checkpoints: C2SP tlog-checkpoint, a C2SP signed note whose body is three lines: the origin,
  the tree size in decimal, the base64 root hash.
- Signatures: C2SP signed-note Ed25519 lines ``— <name> base64(key id || signature)``, key id =
  SHA-256(name || 0x0A || 0x01 || public key)[:4]; witness cosignatures per C2SP
  tlog-cosignature (type 0x04, timestamped, over ``cosignature/v1`` and ``time <t>`` lines
  followed by the checkpoint body).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

# --- Merkle tree -------------------------------------------------------------------------------

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()
MAX_SIZE = 1 << 62
"""Tree sizes beyond this are refused: no log gets there, and it bounds every loop."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: does ``proof`` place ``leaf`` at ``index`` in the tree with this root?"""
    if not (isinstance(index, int) and isinstance(size, int)) or not 0 <= index < size:
        return False
    if size > MAX_SIZE or len(proof) > 64 or not is_hash(leaf) or not is_hash(expected_root):
        return False
    if not all(is_hash(p) for p in proof):
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def verify_consistency(
    old: int, size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: is the tree (old, old_root) a prefix of the tree (size, new_root)?"""
    if not (isinstance(old, int) and isinstance(size, int)) or not 0 <= old <= size <= MAX_SIZE:
        return False
    if not is_hash(old_root) or not is_hash(new_root) or len(proof) > 128:
        return False
    if not all(is_hash(p) for p in proof):
        return False
    if old == size:
        return not proof and old_root == new_root
    if old == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old & (old - 1) == 0:  # a power of two: the old root is the first node of the path
        path.insert(0, old_root)
    fn, sn = old - 1, size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


# --- Signed notes and checkpoints ----------------------------------------------------------------

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
SIGNATURE_PREFIX = "\u2014 "  # an em dash and a space start every signature line
MAX_NOTE_BYTES = 1_000_000


def key_id(name: str, algorithm: int, public_key: bytes) -> bytes:
    """The 4-byte C2SP key id: SHA-256(name || 0x0A || algorithm || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([algorithm]) + public_key).digest()[:4]


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A public key as C2SP verifier keys name it: ``name+keyid+base64(algorithm || key)``."""

    name: str
    algorithm: int
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.algorithm, self.public_key)

    def encode(self) -> str:
        material = base64.b64encode(bytes([self.algorithm]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{material}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """Parse ``name+keyid+base64``; the key id must match the key, or it is refused."""
        try:
            name, hex_id, material = text.strip().split("+", 2)
            raw = base64.b64decode(material, validate=True)
        except (ValueError, binascii.Error) as error:
            raise ValueError(f"not a verifier key: {text[:60]!r}") from error
        if not name or len(raw) != 33 or raw[0] not in (ALG_ED25519, ALG_COSIGNATURE_V1):
            raise ValueError(f"not an Ed25519 verifier key: {text[:60]!r}")
        key = cls(name, raw[0], raw[1:])
        if key.key_id.hex() != hex_id.lower():
            raise ValueError(f"verifier key {name}: key id {hex_id} does not match the key")
        return key


@dataclass(frozen=True, slots=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes
    """For a cosignature: the 8-byte big-endian timestamp followed by the Ed25519 signature."""


@dataclass(frozen=True, slots=True)
class Note:
    """A signed note: its text body (ending in a newline) and its signature lines."""

    body: str
    signatures: tuple[NoteSignature, ...]

    @classmethod
    def parse(cls, text: str) -> Note:
        if len(text.encode()) > MAX_NOTE_BYTES or "\n\n" not in text:
            raise ValueError("not a signed note: no blank line between body and signatures")
        split = text.rindex("\n\n")
        body, lines = text[: split + 1], text[split + 2 :]
        if not lines.endswith("\n"):
            raise ValueError("a signed note ends with a newline")
        signatures = []
        for line in lines[:-1].split("\n"):
            if not line.startswith(SIGNATURE_PREFIX):
                raise ValueError(f"not a signature line: {line[:60]!r}")
            try:
                name, encoded = line[len(SIGNATURE_PREFIX) :].split(" ")
                raw = base64.b64decode(encoded, validate=True)
            except (ValueError, binascii.Error) as error:
                raise ValueError(f"malformed signature line: {line[:60]!r}") from error
            if len(raw) < 5:
                raise ValueError(f"signature too short: {line[:60]!r}")
            signatures.append(NoteSignature(name, raw[:4], raw[4:]))
        if not signatures:
            raise ValueError("a signed note has at least one signature")
        return cls(body, tuple(signatures))

    def text(self) -> str:
        lines = "".join(
            f"{SIGNATURE_PREFIX}{s.name} {base64.b64encode(s.key_id + s.signature).decode()}\n"
            for s in self.signatures
        )
        return f"{self.body}\n{lines}"

    def signed_by(self, key: VerifierKey) -> bool:
        """Whether a signature line of ``key`` (an Ed25519 note key) verifies over the body."""
        message = self.body.encode()
        return any(
            line.name == key.name
            and line.key_id == key.key_id
            and _ed25519_ok(key.public_key, line.signature, message)
            for line in self.signatures
        )

    def cosigned_by(self, key: VerifierKey) -> int | None:
        """The timestamp of a valid C2SP cosignature/v1 by ``key``, or None."""
        for line in self.signatures:
            if line.name != key.name or line.key_id != key.key_id or len(line.signature) != 72:
                continue
            timestamp = int.from_bytes(line.signature[:8], "big")
            if timestamp >= 1 << 63:
                continue
            if _ed25519_ok(
                key.public_key, line.signature[8:], cosigned_message(self.body, timestamp)
            ):
                return timestamp
        return None


def cosigned_message(body: str, timestamp: int) -> bytes:
    """What a C2SP cosignature/v1 signs: two header lines, then the whole checkpoint body."""
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


def _ed25519_ok(public_key: bytes, signature: bytes, message: bytes) -> bool:
    if len(signature) != 64 or len(public_key) != 32:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint body: origin, tree size, root hash (extension lines are kept, not interpreted)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        lines = [
            self.origin,
            str(self.size),
            base64.b64encode(self.root).decode(),
            *self.extensions,
        ]
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "" or not lines[0]:
            raise ValueError("a checkpoint body is an origin, a size and a root hash, one per line")
        origin, size_text, root_text, *extensions = lines[:-1]
        if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
            raise ValueError(f"checkpoint size {size_text!r} is not a decimal number")
        try:
            root = base64.b64decode(root_text, validate=True)
        except binascii.Error as error:
            raise ValueError("checkpoint root is not base64") from error
        if len(root) != HASH_SIZE or int(size_text) > MAX_SIZE:
            raise ValueError("checkpoint root is not a 32-byte hash, or its size is out of range")
        return cls(origin, int(size_text), root, tuple(extensions))


# --- Receipts ----------------------------------------------------------------------------------

RECEIPT_DOMAIN = "tuition-escrow/receipt/v1"


def receipt_message(origin: str, seq: int, hash_hex: str) -> bytes:
    """The exact bytes an API receipt signs: four lines, each ending in a newline."""
    return f"{RECEIPT_DOMAIN}\n{origin}\n{seq}\n{hash_hex}\n".encode()


def receipt_ok(
    log_key: VerifierKey, origin: str, seq: int, hash_hex: str, signature: bytes
) -> bool:
    """Whether an API receipt was signed by the log key."""
    return _ed25519_ok(log_key.public_key, signature, receipt_message(origin, seq, hash_hex))


# --- Export verification -----------------------------------------------------------------------
#
# An export directory (``escrow export --out DIR``, see docs/audit.md "Export format"):
#
# - entries.jsonl: one line per entry, in seq order, exactly
#   ``{"hash":"<64 hex>","entry":<canonical entry bytes>}`` followed by a newline, so the hashed
#   bytes are sliced out of the line without re-encoding;
# - checkpoints/<zero-padded id>.txt: each checkpoint's signed note, with every signature line;
# - keys.json: origin, log keys and witness keys with their validity, and the witness quorum;
#   keys.txt: the same keys, one C2SP verifier key per line.
#
# The verifier streams entries.jsonl once, line by line, keeping the Merkle tree's right edge
# (O(log n) hashes) and the small state the log itself defines (the current log key, the parties'
# signing keys, the witness keys), so memory does not grow with the number of entries.

EXPORT_ENTRIES = "entries.jsonl"
EXPORT_CHECKPOINTS = "checkpoints"
EXPORT_KEYS = "keys.json"
EXPORT_KEYS_TEXT = "keys.txt"
LINE_PREFIX = b'{"hash":"'
LINE_MIDDLE = b'","entry":'
LINE_SUFFIX = b"}\n"
_HASH_START = len(LINE_PREFIX)
_BODY_START = _HASH_START + 2 * HASH_SIZE + len(LINE_MIDDLE)
MAX_LINE_BYTES = 8 << 20
"""No entry comes near this; a longer line is reported and skipped, never held in memory."""
MAX_KEYS_BYTES = 10 << 20
ZERO_HASH_HEX = "00" * HASH_SIZE
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

GENESIS_TYPE = "log.opened"
KEY_ROTATED = "log.key_rotated"
WITNESS_KEY_REGISTERED = "witness_key.registered"
WITNESS_KEY_REVOKED = "witness_key.revoked"
PARTY_KEY_REGISTERED = "party_key.registered"
PARTY_KEY_REVOKED = "party_key.revoked"
LESSON_REPORTED = "lesson.reported"
RECEIPT_TYPES = ("receipt.booked", "receipt.returned")
LESSON_REPORT_CONTEXT = b"tuition-escrow/lesson-report/v1\n"
RECEIPT_REPORT_CONTEXT = b"tuition-escrow/receipt-report/v1\n"


KEY_ROTATION_DOMAIN = "tuition-escrow/key-rotation/v1"


def key_rotation_message(old_key: str, new_key: str, overlap_until: str) -> bytes:
    """What the old log key signs to announce its successor (``ledger.rotation``)."""
    return f"{KEY_ROTATION_DOMAIN}\n{old_key}\n{new_key}\n{overlap_until}\n".encode()


def export_line(hash_hex: str, body: bytes) -> bytes:
    """One line of entries.jsonl, by byte concatenation (the body is copied verbatim)."""
    return LINE_PREFIX + hash_hex.encode("ascii") + LINE_MIDDLE + body + LINE_SUFFIX


def canonical_json(value: object) -> bytes:
    """RFC 8785 canonical JSON of an object of strings and integers (what parties sign).

    For such objects with ASCII keys, sorted keys, no whitespace and JSON's minimal escaping are
    exactly RFC 8785; a test compares this with a full RFC 8785 implementation.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def lesson_report_message(payload: dict[str, object]) -> bytes:
    """What an institution signs for a lesson, rebuilt from a ``lesson.reported`` payload."""
    fields = ("institution", "contract", "ref", "delivered_at", "teacher")
    return LESSON_REPORT_CONTEXT + canonical_json({name: payload[name] for name in fields})


def receipt_report_message(bank: str, payload: dict[str, object]) -> bytes:
    """What a bank signs for a payment, rebuilt from a ``receipt.*`` payload and its actor."""
    fields = ("contract", "amount", "bank_reference", "payer")
    return RECEIPT_REPORT_CONTEXT + canonical_json(
        {"bank": bank, **{name: payload[name] for name in fields}}
    )


class Frontier:
    """The right edge of a Merkle tree built leaf by leaf: one complete subtree per set bit of
    the size (largest first), so the root at the current size is always at hand in O(log n)."""

    def __init__(self) -> None:
        self.size = 0
        self._nodes: list[tuple[int, bytes]] = []  # (height, hash)

    def append(self, leaf: bytes) -> None:
        height, value = 0, leaf
        while self._nodes and self._nodes[-1][0] == height:
            value = node_hash(self._nodes.pop()[1], value)
            height += 1
        self._nodes.append((height, value))
        self.size += 1

    def root(self) -> bytes:
        if not self._nodes:
            return EMPTY_ROOT
        value = self._nodes[-1][1]
        for _, left in reversed(self._nodes[:-1]):
            value = node_hash(left, value)
        return value


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem or a warning: where (an entry's seq, a checkpoint's id, or a file) and why."""

    where: str
    reason: str
    seq: int | None = None
    checkpoint: int | None = None

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"

    def to_json(self) -> dict[str, object]:
        return {
            "where": self.where,
            "seq": self.seq,
            "checkpoint": self.checkpoint,
            "reason": self.reason,
        }


@dataclass
class ExportReport:
    """What ``verify_export`` found. ``ok`` means no problem; warnings do not fail it."""

    entries: int = 0
    checkpoints: int = 0
    witnessed: int = 0
    """Checkpoints carrying at least the quorum of valid witness cosignatures (and at least one)."""
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    problems_total: int = 0
    max_problems: int = 1000

    @property
    def ok(self) -> bool:
        return self.problems_total == 0

    def problem(
        self, where: str, reason: str, *, seq: int | None = None, checkpoint: int | None = None
    ) -> None:
        self.problems_total += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(Finding(where, reason, seq, checkpoint))

    def warn(self, where: str, reason: str, *, checkpoint: int | None = None) -> None:
        if len(self.warnings) < self.max_problems:
            self.warnings.append(Finding(where, reason, None, checkpoint))

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "witnessed": self.witnessed,
            "problems_total": self.problems_total,
            "problems": [p.to_json() for p in self.problems],
            "warnings": [w.to_json() for w in self.warnings],
        }


@dataclass(frozen=True, slots=True)
class KeyPeriod:
    """A public key and when it was valid (None: open-ended), as keys.json lists it."""

    key: VerifierKey
    text: str
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    holder: str = ""
    trusted: bool = False
    """Given by the person verifying (``--log-key`` / ``--witness-key``), not read from the export."""


def parse_time(text: object) -> datetime | None:
    """An ISO 8601 time with a zone (as entries and keys.json write it), or None if it is not."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    id: int
    size: int
    root: bytes
    signers: tuple[KeyPeriod, ...]
    cosigners: int


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("an object has the same key twice")
    return value


def _as_keys(keys: Sequence[str | VerifierKey]) -> list[KeyPeriod]:
    periods = []
    for item in keys:
        key = item if isinstance(item, VerifierKey) else VerifierKey.parse(item)
        periods.append(KeyPeriod(key, key.encode(), trusted=True))
    return periods


def _read_keys(path: Path, report: ExportReport) -> dict[str, object]:
    try:
        if path.stat().st_size > MAX_KEYS_BYTES:
            report.problem(EXPORT_KEYS, "the file is too large to be a key list")
            return {}
        data = json.loads(path.read_bytes(), object_pairs_hook=_no_duplicates)
    except FileNotFoundError:
        report.problem(EXPORT_KEYS, "missing: the export has no key list")
        return {}
    except (OSError, ValueError, RecursionError) as error:
        report.problem(EXPORT_KEYS, f"not readable JSON: {error}")
        return {}
    if not isinstance(data, dict):
        report.problem(EXPORT_KEYS, "not a JSON object")
        return {}
    return data


def _key_periods(data: object, what: str, report: ExportReport) -> list[KeyPeriod]:
    if not isinstance(data, list):
        report.problem(EXPORT_KEYS, f"{what} is not a list")
        return []
    periods = []
    for index, item in enumerate(data):
        try:
            if not isinstance(item, dict):
                raise TypeError("not an object")
            key = VerifierKey.parse(str(item["verifier_key"]))
            valid_from = parse_time(item.get("valid_from"))
            until = item.get("valid_until")
            valid_until = None if until is None else parse_time(until)
            if valid_from is None or (until is not None and valid_until is None):
                raise ValueError("validity times are not ISO 8601 times with a zone")
        except (KeyError, TypeError, ValueError) as error:
            report.problem(EXPORT_KEYS, f"{what}[{index}] is unusable: {error}")
            continue
        holder = item.get("holder", "")
        periods.append(
            KeyPeriod(key, key.encode(), valid_from, valid_until, str(holder) if holder else "")
        )
    return periods


def _merge_trusted(
    listed: list[KeyPeriod], given: list[KeyPeriod] | None, *, keep_listed: bool
) -> list[KeyPeriod]:
    """The keys to check signatures with. Without given keys, the export's own. With given keys:
    those (with the export's validity periods when it lists them too, marked trusted), plus,
    if ``keep_listed``, the export's other keys.

    Log keys keep the listed ones: a log key the caller does not hold (an older one, before a
    rotation) is still proven by the log itself (genesis entry, rotation announcements signed by
    the key they retire, checked against keys.json), and the latest checkpoint must carry a given
    key's signature. Witness keys do not: only the witnesses the caller trusts count.
    """
    if given is None:
        return listed
    wanted = {key.text for key in given}
    merged = [
        KeyPeriod(p.key, p.text, p.valid_from, p.valid_until, p.holder, trusted=p.text in wanted)
        for p in listed
        if keep_listed or p.text in wanted
    ]
    known = {p.text for p in listed}
    return merged + [key for key in given if key.text not in known]


class _ExportStream:
    """The state of one pass over entries.jsonl."""

    def __init__(self, report: ExportReport, origin: str, log_periods: list[KeyPeriod]) -> None:
        self.report = report
        self.origin = origin
        self.log_periods = log_periods
        self.frontier = Frontier()
        self.prev = ZERO_HASH_HEX
        self.prev_time = ""
        self.log_keys: list[list[str]] = []  # [verifier key, valid_from, valid_until or ""]
        self.key_seq: dict[str, int] = {}
        """The seq of the entry that introduced each log key: a key signs only trees holding it."""
        self.witness_keys: dict[tuple[str, str], list[str]] = {}
        self.party_keys: dict[tuple[str, str], tuple[str, bytes]] = {}

    def problem(self, seq: int, reason: str) -> None:
        self.report.problem(f"seq {seq}", reason, seq=seq)

    def line(self, line: bytes) -> None:
        seq = self.frontier.size
        if not (
            line.startswith(LINE_PREFIX)
            and line[_BODY_START - len(LINE_MIDDLE) : _BODY_START] == LINE_MIDDLE
            and line.endswith(LINE_SUFFIX)
        ):
            self.problem(seq, f'line {seq + 1} is not {{"hash":"<hex>","entry":<entry>}}')
            leaf = leaf_hash(line)
            self.frontier.append(leaf)
            self.prev = leaf.hex()
            return
        stated = line[_HASH_START : _HASH_START + 2 * HASH_SIZE].decode("ascii", "replace")
        body = line[_BODY_START : -len(LINE_SUFFIX)]
        leaf = leaf_hash(body)
        self.frontier.append(leaf)
        if stated != leaf.hex():
            self.problem(
                seq,
                "the entry's bytes do not hash to the hash on its line: the entry (or its hash) "
                "was edited",
            )
        try:
            entry = json.loads(body, object_pairs_hook=_no_duplicates)
            if not isinstance(entry, dict):
                raise TypeError("not a JSON object")
        except (TypeError, ValueError, RecursionError) as error:
            self.problem(seq, f"the entry is not a JSON object: {error}")
            self.prev = leaf.hex()
            return
        self._entry(seq, entry)
        self.prev = leaf.hex()

    def _entry(self, seq: int, entry: dict[str, object]) -> None:
        found = entry.get("seq")
        if found != seq or isinstance(found, bool):
            self.problem(
                seq,
                f"line {seq + 1} holds seq {found!r} where seq {seq} belongs: an entry was "
                "removed, inserted or moved",
            )
        if entry.get("prev_hash") != self.prev:
            self.problem(
                seq,
                "prev_hash is not the hash of the entry before it: an entry before it was "
                "edited, removed, inserted or moved",
            )
        when = entry.get("time")
        if not isinstance(when, str) or not _TIME.match(when):
            self.problem(seq, f"time {when!r} is not a UTC time as the log writes it")
            when = self.prev_time
        elif when < self.prev_time:
            self.problem(seq, f"time {when} is earlier than the entry before it")
        self.prev_time = when
        self._postings(seq, entry.get("postings"))
        kind, actor, payload = entry.get("type"), entry.get("actor"), entry.get("payload")
        if not isinstance(payload, dict) or not isinstance(kind, str):
            self.problem(seq, "the entry has no type or no payload object")
            return
        try:
            self._event(seq, kind, str(actor), payload, when)
        except (KeyError, TypeError, ValueError, binascii.Error) as error:
            self.problem(seq, f"{kind}: the payload is malformed ({error!r})")

    def _postings(self, seq: int, postings: object) -> None:
        if not isinstance(postings, list):
            self.problem(seq, "postings is not a list")
            return
        if len(postings) == 1:
            self.problem(seq, "a single posting cannot balance")
        totals: dict[str, int] = {}
        for posting in postings:
            amount = posting.get("amount") if isinstance(posting, dict) else None
            currency = posting.get("currency") if isinstance(posting, dict) else None
            account = posting.get("account") if isinstance(posting, dict) else None
            if (
                not isinstance(amount, int)
                or isinstance(amount, bool)
                or amount == 0
                or not isinstance(currency, str)
                or not isinstance(account, str)
            ):
                self.problem(seq, f"malformed posting {posting!r}")
                continue
            totals[currency] = totals.get(currency, 0) + amount
        unbalanced = {currency: total for currency, total in totals.items() if total}
        if unbalanced:
            detail = ", ".join(f"{c} {t:+d}" for c, t in sorted(unbalanced.items()))
            self.problem(seq, f"postings do not sum to zero: {detail}")

    def _event(
        self, seq: int, kind: str, actor: str, payload: dict[str, object], when: str
    ) -> None:
        if seq == 0:
            if kind != GENESIS_TYPE:
                self.problem(seq, f"the first entry is {kind!r}, not the genesis {GENESIS_TYPE}")
                return
            origin, key = payload["origin"], payload["key"]
            if origin != self.origin:
                self.problem(
                    seq, f"the log was opened as {origin!r}, keys.json says {self.origin!r}"
                )
            listed = self.log_periods[0].text if self.log_periods else None
            if key != listed:
                self.problem(
                    seq,
                    f"the log was opened with key {key!r}, keys.json's first log key is {listed!r}",
                )
            self.log_keys.append([str(key), when, ""])
            self.key_seq[str(key)] = 0
        elif kind == GENESIS_TYPE:
            self.problem(seq, "a second genesis entry")
        elif kind == KEY_ROTATED:
            reason = self._rotation(payload, when)
            if reason:
                self.problem(seq, f"key rotation refused: {reason}")
                return
            self.log_keys[-1][2] = str(payload["overlap_until"])
            self.log_keys.append([str(payload["new_key"]), when, ""])
            self.key_seq[str(payload["new_key"])] = seq
        elif kind == WITNESS_KEY_REGISTERED:
            text = VerifierKey.parse(str(payload["verifier_key"])).encode()
            self.witness_keys[(text, str(payload["holder"]))] = [when, ""]
        elif kind == WITNESS_KEY_REVOKED:
            text = VerifierKey.parse(str(payload["verifier_key"])).encode()
            for (registered, _), period in self.witness_keys.items():
                if registered == text and not period[1]:
                    period[1] = when
        elif kind == PARTY_KEY_REGISTERED:
            party = (str(payload["kind"]), str(payload["party"]))
            public = base64.b64decode(str(payload["public_key"]), validate=True)
            expected = key_id(party[1], ALG_ED25519, public).hex()
            if len(public) != 32 or payload["key_id"] != expected:
                self.problem(seq, f"party key {payload['key_id']!r} does not match its public key")
            self.party_keys[party] = (expected, public)
        elif kind == PARTY_KEY_REVOKED:
            party = (str(payload["kind"]), str(payload["party"]))
            if party in self.party_keys and self.party_keys[party][0] == payload["key_id"]:
                del self.party_keys[party]
        elif kind == LESSON_REPORTED:
            party = ("institution", str(payload["institution"]))
            self._signed(seq, party, payload, lambda: lesson_report_message(payload))
        elif kind in RECEIPT_TYPES and actor.startswith("bank:"):
            bank = actor.removeprefix("bank:")
            self._signed(
                seq, ("bank", bank), payload, lambda: receipt_report_message(bank, payload)
            )

    def _rotation(self, payload: dict[str, object], when: str) -> str:
        """Why a ``log.key_rotated`` entry does not hold ("" if it does): the old key must be the
        current one and must have signed the announcement of the new one."""
        old, new, until = payload["old_key"], payload["new_key"], payload["overlap_until"]
        announcement = payload["announcement"]
        if not all(isinstance(v, str) for v in (old, new, until, announcement)):
            return "old_key, new_key, overlap_until and announcement must be strings"
        if not self.log_keys or old != self.log_keys[-1][0]:
            return f"it retires {str(old)[:60]!r}, which is not the log's current key"
        new_key = VerifierKey.parse(str(new))
        if new_key.algorithm != ALG_ED25519 or new_key.name != self.origin:
            return f"the new key must be an Ed25519 note key named {self.origin!r}"
        if str(new) in self.key_seq:
            return "the new key was already a key of this log"
        ends, at = parse_time(until), parse_time(when)
        if ends is None or at is None or ends < at:
            return f"its overlap end {until!r} is not a time after the rotation"
        signature = base64.b64decode(str(announcement), validate=True)
        message = key_rotation_message(str(old), str(new), str(until))
        if not _ed25519_ok(VerifierKey.parse(str(old)).public_key, signature, message):
            return "the announcement is not signed by the old key"
        return ""

    def _signed(
        self,
        seq: int,
        party: tuple[str, str],
        payload: dict[str, object],
        message: Callable[[], bytes],
    ) -> None:
        """A party with a key must have signed; the signature must verify under that key."""
        active = self.party_keys.get(party)
        signature = payload.get("signature")
        who = f"{party[0]} {party[1]}"
        if signature is None:
            if active is not None:
                self.problem(seq, f"unsigned, though {who} had signing key {active[0]}")
            return
        if not isinstance(signature, dict):
            self.problem(seq, "the party signature is malformed")
            return
        if active is None:
            self.problem(seq, f"signed, but {who} had no signing key registered at this point")
            return
        if signature.get("key_id") != active[0]:
            self.problem(
                seq, f"signed with key {signature.get('key_id')!r}, not {who}'s key {active[0]}"
            )
            return
        raw = base64.b64decode(str(signature.get("signature")), validate=True)
        if not _ed25519_ok(active[1], raw, message()):
            self.problem(
                seq,
                f"{who}'s signature does not verify: the entry's facts are not what {who} signed",
            )


def _read_checkpoints(
    folder: Path,
    report: ExportReport,
    origin: str,
    log_keys: list[KeyPeriod],
    witness_keys: list[KeyPeriod],
    quorum: int,
    demanded: bool,
) -> list[_Checkpoint]:
    """Parse every checkpoint note and check its signatures (not yet its root)."""
    found: list[_Checkpoint] = []
    if not folder.is_dir():
        report.warn(EXPORT_CHECKPOINTS, "no checkpoints folder")
        return found
    for path in sorted(folder.iterdir()):
        if path.suffix != ".txt" or not path.stem.isdigit():
            report.problem(f"{EXPORT_CHECKPOINTS}/{path.name}", "not a checkpoint file name")
            continue
        ident = int(path.stem)
        where = f"checkpoint {ident}"
        try:
            if path.stat().st_size > MAX_NOTE_BYTES:
                raise ValueError("too large for a signed note")
            note = Note.parse(path.read_text(encoding="utf-8"))
            body = Checkpoint.parse(note.body)
        except (OSError, ValueError) as error:
            report.problem(where, f"malformed: {error}", checkpoint=ident)
            continue
        report.checkpoints += 1
        where = f"checkpoint {ident} (size {body.size})"
        if body.origin != origin:
            report.problem(
                where, f"names the log {body.origin!r}, not {origin!r}", checkpoint=ident
            )
        signers = tuple(p for p in log_keys if note.signed_by(p.key))
        if not signers:
            report.problem(
                where,
                "is not signed by any log key: forged, or signed with a key this log never had",
                checkpoint=ident,
            )
        cosigners = set()
        for period in witness_keys:
            stamp = note.cosigned_by(period.key)
            if stamp is None:
                continue
            at = datetime.fromtimestamp(stamp, UTC)
            if (period.valid_from is None or period.valid_from <= at + _SLACK) and (
                period.valid_until is None or at <= period.valid_until
            ):
                cosigners.add(period.text)
        count = len(cosigners)
        if count >= max(quorum, 1):
            report.witnessed += 1
        elif quorum > 0:
            reason = f"not witnessed: {count} of the {quorum} witness cosignatures required"
            if demanded:
                report.problem(where, reason, checkpoint=ident)
            else:
                report.warn(where, reason, checkpoint=ident)
        found.append(_Checkpoint(ident, body.size, body.root, signers, count))
    found.sort(key=lambda c: (c.size, c.id))
    first_by_size: dict[int, _Checkpoint] = {}
    for checkpoint in found:
        if not checkpoint.signers:
            continue
        other = first_by_size.setdefault(checkpoint.size, checkpoint)
        if other.root != checkpoint.root:
            report.problem(
                f"checkpoint {checkpoint.id} (size {checkpoint.size})",
                f"fork: checkpoints {other.id} and {checkpoint.id} both sign tree size "
                f"{checkpoint.size}, with different roots",
                checkpoint=checkpoint.id,
            )
    return found


_SLACK = timedelta(minutes=5)  # witness clocks may run a little ahead of the log's


def _check_root(
    checkpoint: _Checkpoint,
    root: bytes,
    last_time: str,
    key_seq: dict[str, int],
    report: ExportReport,
) -> None:
    """At its size in the stream: the signed root must be the recomputed one, and some key that
    signed it must be valid for it: introduced by an entry within the tree (the genesis key, or
    a rotated-in key for trees holding its rotation) and not retired (end of the rotation's
    overlap) before the last entry of the tree was written. A given (trusted) key the export
    does not list is accepted as it is."""
    where = f"checkpoint {checkpoint.id} (size {checkpoint.size})"
    if checkpoint.root != root:
        report.problem(
            where,
            f"signs a root that is not the root of the export's first {checkpoint.size} "
            "entries: the entries differ from what was signed",
            checkpoint=checkpoint.id,
        )
    if not checkpoint.signers or checkpoint.size == 0:
        return
    written = parse_time(last_time)

    def valid(p: KeyPeriod) -> bool:
        if p.text not in key_seq:
            return p.trusted and p.valid_from is None
        if checkpoint.size and key_seq[p.text] >= checkpoint.size:
            return False
        return p.valid_until is None or written is None or p.valid_until >= written

    if not any(valid(p) for p in checkpoint.signers):
        names = ", ".join(p.text for p in checkpoint.signers)
        report.problem(
            where,
            "is signed only by log key(s) not valid for it (retired before its last entry "
            f"{last_time or '(none)'}, or introduced by a later entry): {names}",
            checkpoint=checkpoint.id,
        )


def verify_export(
    directory: str | Path,
    *,
    log_keys: Sequence[str | VerifierKey] | None = None,
    witness_keys: Sequence[str | VerifierKey] | None = None,
    quorum: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_problems: int = 1000,
) -> ExportReport:
    """Verify an export directory offline, streaming entries.jsonl once in constant memory.

    ``log_keys`` / ``witness_keys`` are the keys the person verifying trusts (from the operator's
    published key, or a bank's own witness key); without them the export's keys.json is used and a
    warning says so. ``quorum`` demands that many witness cosignatures on every checkpoint
    (default: the export's own quorum, whose shortfall is only a warning). ``progress`` is called
    with (entries, bytes read) every few thousand entries.
    """
    root = Path(directory)
    report = ExportReport(max_problems=max_problems)
    keys = _read_keys(root / EXPORT_KEYS, report)
    origin = str(keys.get("origin", ""))
    listed_log = _key_periods(keys.get("log_keys", []), "log_keys", report)
    listed_witness = _key_periods(keys.get("witness_keys", []), "witness_keys", report)
    listed_quorum = keys.get("witness_quorum", 0)
    if not isinstance(listed_quorum, int) or isinstance(listed_quorum, bool) or listed_quorum < 0:
        report.problem(EXPORT_KEYS, f"witness_quorum {listed_quorum!r} is not a count")
        listed_quorum = 0
    try:
        given_log = None if not log_keys else _as_keys(log_keys)
        given_witness = None if not witness_keys else _as_keys(witness_keys)
    except ValueError as error:
        report.problem("keys given", str(error))
        return report
    if given_log is None:
        report.warn(
            EXPORT_KEYS,
            "no log key given: checking against the export's own keys.json; compare its log "
            "keys with the key the operator published (GET /v1/audit/public-key)",
        )
    elif not any(p.text in {g.text for g in given_log} for p in listed_log):
        report.problem(
            EXPORT_KEYS, "none of the given log keys is a key of this log: it is another log"
        )
    signing = _merge_trusted(listed_log, given_log, keep_listed=True)
    cosigning = _merge_trusted(listed_witness, given_witness, keep_listed=False)
    effective = listed_quorum if quorum is None else quorum
    if effective == 0:
        report.warn(
            EXPORT_KEYS, "no witness quorum: the checkpoints are signed by the operator alone"
        )
    checkpoints = _read_checkpoints(
        root / EXPORT_CHECKPOINTS,
        report,
        origin,
        signing,
        cosigning,
        effective,
        quorum is not None and quorum > 0,
    )
    signed = [c for c in checkpoints if c.signers]
    if given_log is not None and signed:
        largest = max(c.size for c in signed)
        if not any(p.trusted for c in signed if c.size == largest for p in c.signers):
            last = max(c.id for c in signed if c.size == largest)
            report.problem(
                f"checkpoint {last} (size {largest})",
                "the latest checkpoint is not signed by any of the given log keys",
                checkpoint=last,
            )
    if not signed:
        report.warn(
            EXPORT_CHECKPOINTS,
            "no signed checkpoint: the entries are only checked against one another",
        )

    stream = _ExportStream(report, origin, listed_log)
    pending = iter(checkpoints)
    upcoming = next(pending, None)
    while upcoming is not None and upcoming.size == 0:
        _check_root(upcoming, EMPTY_ROOT, "", stream.key_seq, report)
        upcoming = next(pending, None)
    read = 0
    try:
        handle = (root / EXPORT_ENTRIES).open("rb")
    except OSError as error:
        report.problem(EXPORT_ENTRIES, f"cannot be read: {error}")
        return report
    with handle:
        while line := handle.readline(MAX_LINE_BYTES + 1):
            read += len(line)
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                while rest := handle.readline(1 << 20):
                    read += len(rest)
                    if rest.endswith(b"\n"):
                        break
                line = b"(a line too long to be an entry)"
            stream.line(line)
            size = stream.frontier.size
            while upcoming is not None and upcoming.size == size:
                _check_root(
                    upcoming, stream.frontier.root(), stream.prev_time, stream.key_seq, report
                )
                upcoming = next(pending, None)
            if progress is not None and size % 4096 == 0:
                progress(size, read)
    report.entries = stream.frontier.size
    if progress is not None:
        progress(report.entries, read)
    while upcoming is not None:
        report.problem(
            f"checkpoint {upcoming.id} (size {upcoming.size})",
            f"export truncated: checkpoint {upcoming.id} is beyond the last entry (the export "
            f"has {report.entries} entries, the checkpoint signs {upcoming.size})",
            checkpoint=upcoming.id,
        )
        upcoming = next(pending, None)
    covered = max((c.size for c in signed), default=0)
    if signed and covered < report.entries:
        report.warn(
            EXPORT_ENTRIES,
            f"entries {covered}..{report.entries - 1} are not covered by any checkpoint yet",
        )
    _compare_keys(stream, listed_log, listed_witness, report)
    return report


def _compare_keys(
    stream: _ExportStream,
    listed_log: list[KeyPeriod],
    listed_witness: list[KeyPeriod],
    report: ExportReport,
) -> None:
    """keys.json must say exactly what the log announces (it was used to check signatures)."""

    def period(p: KeyPeriod) -> tuple[str, datetime | None, datetime | None]:
        return (p.text, p.valid_from, p.valid_until)

    announced = [(k, parse_time(f), parse_time(u) if u else None) for k, f, u in stream.log_keys]
    if announced != [period(p) for p in listed_log]:
        report.problem(
            EXPORT_KEYS,
            "the log keys do not match the log's genesis and key-rotation entries: the log "
            f"announces {[k for k, _, _ in announced]}, keys.json lists "
            f"{[p.text for p in listed_log]} (or their validity differs)",
        )
    witnessed = sorted(
        (text, holder, parse_time(f), parse_time(u) if u else None)
        for (text, holder), (f, u) in stream.witness_keys.items()
    )
    listed = sorted((p.text, p.holder, p.valid_from, p.valid_until) for p in listed_witness)
    if witnessed != listed:
        report.problem(
            EXPORT_KEYS,
            "the witness keys do not match the log's witness_key entries: the log registers "
            f"{[w[0] for w in witnessed]}, keys.json lists {[w[0] for w in listed]} "
            "(or their holders or validity differ)",
        )


# --- Inclusion proof bundles -------------------------------------------------------------------

PROOF_FORMAT = "tuition-escrow/inclusion-proof/v1"
MAX_BUNDLE_ENTRY = 1 << 20


def verify_proof_bundle(
    bundle: dict[str, object],
    log_keys: Sequence[str | VerifierKey] | None = None,
    witness_keys: Sequence[str | VerifierKey] | None = None,
    quorum: int | None = None,
) -> list[str]:
    """Check an inclusion proof bundle offline; returns the problems (empty: it proves the entry).

    The keys given here are the ones the person verifying trusts; when ``log_keys`` (or
    ``witness_keys``, ``quorum``) is None the bundle's own are used, which proves only that the
    bundle is self-consistent: the caller should say so.
    """
    problems: list[str] = []
    if not isinstance(bundle, dict) or bundle.get("format") != PROOF_FORMAT:
        return [f"not an inclusion proof bundle (format is not {PROOF_FORMAT!r})"]
    try:
        log = _as_keys(log_keys if log_keys is not None else _str_list(bundle, "log_keys"))
        witnesses = _as_keys(
            witness_keys if witness_keys is not None else _str_list(bundle, "witness_keys")
        )
    except ValueError as error:
        return [f"unusable key: {error}"]
    wanted = bundle.get("witness_quorum", 0) if quorum is None else quorum
    if not isinstance(wanted, int) or isinstance(wanted, bool) or wanted < 0:
        return [f"witness quorum {wanted!r} is not a count"]
    entry = bundle.get("entry")
    size = bundle.get("tree_size")
    if not isinstance(entry, dict):
        return ["the bundle has no entry object"]
    seq, body, stated = entry.get("seq"), entry.get("body"), entry.get("hash")
    if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(size, int):
        return ["entry.seq and tree_size must be integers"]
    if not isinstance(body, str) or len(body) > MAX_BUNDLE_ENTRY or not isinstance(stated, str):
        return ["entry.body and entry.hash must be strings (the body at most 1 MiB)"]
    leaf = leaf_hash(body.encode("utf-8"))
    if stated != leaf.hex():
        problems.append("entry.hash is not the hash of entry.body: the entry was edited")
    try:
        parsed = json.loads(body, object_pairs_hook=_no_duplicates)
        if not isinstance(parsed, dict) or parsed.get("seq") != seq:
            problems.append(f"entry.body is not the entry at seq {seq}")
    except (ValueError, RecursionError):
        problems.append("entry.body is not JSON")
    path_text = bundle.get("audit_path")
    try:
        if not isinstance(path_text, list) or len(path_text) > 64:
            raise ValueError
        path = [base64.b64decode(str(p), validate=True) for p in path_text]
    except (ValueError, binascii.Error):
        return [*problems, "audit_path is not a list of at most 64 base64 hashes"]
    try:
        note_text = bundle.get("checkpoint")
        if not isinstance(note_text, str):
            raise TypeError("no checkpoint text")
        note = Note.parse(note_text)
        checkpoint = Checkpoint.parse(note.body)
    except (TypeError, ValueError) as error:
        return [*problems, f"the checkpoint is malformed: {error}"]
    if checkpoint.size != size:
        problems.append(f"the checkpoint signs size {checkpoint.size}, the proof is for {size}")
    signers = [k for k in log if note.signed_by(k.key)]
    if not signers:
        problems.append("the checkpoint is not signed by any of the log keys")
    elif checkpoint.origin not in {k.key.name for k in signers}:
        problems.append(f"the checkpoint names the log {checkpoint.origin!r}, not its signer's")
    if not verify_inclusion(seq, size, leaf, path, checkpoint.root):
        problems.append(
            f"the audit path does not place the entry at seq {seq} in the checkpoint's tree of "
            f"size {size}: the entry is not in the log the checkpoint signs"
        )
    cosigned = {k.text for k in witnesses if note.cosigned_by(k.key) is not None}
    if len(cosigned) < wanted:
        problems.append(
            f"not witnessed: {len(cosigned)} of the {wanted} witness cosignatures required"
        )
    return problems


def _str_list(bundle: dict[str, object], name: str) -> list[str]:
    value = bundle.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} is not a list of verifier keys")
    return [str(v) for v in value]
