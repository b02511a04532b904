"""The witness: a bank's or regulator's own check that the log never forks or rolls back.

A witness remembers the last checkpoint it cosigned (size and root, in a state file it alone
writes). The log submits each new checkpoint with a consistency proof from that size; the witness
cosigns only if the new tree extends the one it remembers. So a log that shows two histories, or
drops entries after a bank saw them, cannot get both versions cosigned by the same witness, and a
checkpoint that carries enough cosignatures cannot be a private fork shown to one party.

The protocol follows C2SP tlog-witness in spirit (``POST <url>/add-checkpoint``):

- request body: ``old <size>\\n``, one base64 consistency-proof hash per line, an empty line, then
  the checkpoint's signed note;
- 200: the cosignature line(s), C2SP tlog-cosignature ``cosignature/v1``:
  ``— <witness name> base64(key id || 8-byte big-endian timestamp || Ed25519 signature)`` over
  ``verifier.cosigned_message(body, timestamp)``;
- 409 ``text/x.tlog.size``: the old size is not the size this witness last cosigned (the body is
  that size, so the log retries with a proof from it); 409 ``text/plain``: a rollback (a smaller
  tree) or a fork (same size and another root, or a proof that does not verify);
- 403: no signature of the configured log key; 404: another origin; 400: a malformed request.

This module is the witness's whole logic, without HTTP (``api.witness_app`` serves it): the
private key file, the state file (replaced atomically, fsync'd before the cosignature leaves), the
request format and the checks.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger import verifier

STATE_FORMAT = "tuition-escrow/witness-state/v1"
KEY_PREFIX = "PRIVATE+KEY+"
SIZE_MEDIA_TYPE = "text/x.tlog.size"
MAX_PROOF_LINES = 64
MAX_REQUEST_BYTES = verifier.MAX_NOTE_BYTES + 8_192


class Refused(Exception):
    """The witness will not cosign; ``status`` is the HTTP status the protocol prescribes."""

    def __init__(self, status: int, detail: str, *, size: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.size = size
        """For a 409 on the old size: the size this witness last cosigned (text/x.tlog.size)."""


# --- the witness key ----------------------------------------------------------------------------


class WitnessKey:
    """A witness's Ed25519 key and the name its cosignatures carry (C2SP cosigner key, 0x04)."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if not name or any(c in name for c in " +\n") or not name.isprintable():
            raise ValueError(f"witness name {name!r}: printable, no spaces or '+'")
        self.name = name
        self._private = private_key
        raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier_key = verifier.VerifierKey(name, verifier.ALG_COSIGNATURE_V1, raw)

    def encode_private(self) -> str:
        """``PRIVATE+KEY+<name>+<key id>+base64(0x04 || seed)``, as signed-note signer keys."""
        seed = self._private.private_bytes_raw()
        material = base64.b64encode(bytes([verifier.ALG_COSIGNATURE_V1]) + seed).decode()
        return f"{KEY_PREFIX}{self.name}+{self.verifier_key.key_id.hex()}+{material}\n"

    @classmethod
    def parse_private(cls, text: str) -> WitnessKey:
        if not text.startswith(KEY_PREFIX):
            raise ValueError("not a witness private key (PRIVATE+KEY+name+keyid+base64)")
        try:
            name, hex_id, material = text[len(KEY_PREFIX) :].strip().split("+", 2)
            raw = base64.b64decode(material, validate=True)
        except (ValueError, binascii.Error) as error:
            raise ValueError("malformed witness private key") from error
        if len(raw) != 33 or raw[0] != verifier.ALG_COSIGNATURE_V1:
            raise ValueError("not an Ed25519 cosigner key (algorithm 0x04)")
        key = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if key.verifier_key.key_id.hex() != hex_id.lower():
            raise ValueError("the key id in the key file does not match the key")
        return key

    def cosign(self, body: str, timestamp: int) -> verifier.NoteSignature:
        """A C2SP cosignature/v1 line over a checkpoint body at ``timestamp`` (Unix seconds)."""
        signature = self._private.sign(verifier.cosigned_message(body, timestamp))
        return verifier.NoteSignature(
            self.name, self.verifier_key.key_id, timestamp.to_bytes(8, "big") + signature
        )


def create_key_file(path: Path, name: str) -> WitnessKey:
    """Generate a witness key into a new 0600 file; an existing file is never overwritten."""
    key = WitnessKey(name, Ed25519PrivateKey.generate())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.encode_private())
        handle.flush()
        os.fsync(handle.fileno())
    return key


def load_key_file(path: Path) -> WitnessKey:
    """Load a witness key; a file others can read is refused (they could cosign as this bank)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {mode:04o}); chmod 600 {path}")
    return WitnessKey.parse_private(path.read_text())


# --- the state file -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class State:
    """The last checkpoint this witness cosigned (origin None and size 0: none yet)."""

    origin: str | None
    size: int
    root: bytes

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "format": STATE_FORMAT,
                    "origin": self.origin,
                    "size": self.size,
                    "root": base64.b64encode(self.root).decode(),
                },
                indent=2,
            )
            + "\n"
        )

    @classmethod
    def parse(cls, text: str) -> State:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise ValueError(f"not a witness state file ({STATE_FORMAT})")
        origin, size = data.get("origin"), data.get("size")
        root = base64.b64decode(str(data.get("root")), validate=True)
        if origin is not None and not isinstance(origin, str):
            raise ValueError("state: origin must be a string")
        if (
            not isinstance(size, int)
            or isinstance(size, bool)
            or not 0 <= size <= verifier.MAX_SIZE
        ):
            raise ValueError("state: size must be a non-negative integer")
        if len(root) != verifier.HASH_SIZE or (size == 0 and root != verifier.EMPTY_ROOT):
            raise ValueError("state: root must be a 32-byte hash (the empty root at size 0)")
        return cls(origin, size, root)


EMPTY = State(None, 0, verifier.EMPTY_ROOT)


def save_state(path: Path, state: State) -> None:
    """Replace the state file atomically: write a temporary file, fsync, rename, fsync the folder."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(state.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def create_state_file(path: Path) -> None:
    """A fresh state (nothing cosigned yet); refuses to replace an existing one."""
    if path.exists():
        raise FileExistsError(f"{path} exists: a witness never forgets what it cosigned")
    save_state(path, EMPTY)


def load_state(path: Path) -> State:
    return State.parse(path.read_text())


# --- the request --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddCheckpoint:
    """One add-checkpoint request: the size the log believes the witness holds, the proof, the note."""

    old: int
    proof: tuple[bytes, ...]
    note: str

    def encode(self) -> bytes:
        proof = "".join(f"{base64.b64encode(h).decode()}\n" for h in self.proof)
        return f"old {self.old}\n{proof}\n{self.note}".encode()

    @classmethod
    def parse(cls, data: bytes) -> AddCheckpoint:
        """Read a request body; anything malformed is a 400."""
        if len(data) > MAX_REQUEST_BYTES:
            raise Refused(413, "request too large")
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise Refused(400, "the request is not UTF-8") from None
        head, separator, note = text.partition("\n\n")
        lines = head.split("\n")
        if not separator or not lines[0].startswith("old "):
            raise Refused(400, "the request starts with 'old <size>', proof lines, a blank line")
        size_text = lines[0][4:]
        if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
            raise Refused(400, f"old size {size_text[:20]!r} is not a decimal number")
        if len(lines) - 1 > MAX_PROOF_LINES:
            raise Refused(400, "too many consistency proof lines")
        proof = []
        for line in lines[1:]:
            try:
                value = base64.b64decode(line, validate=True)
            except binascii.Error:
                raise Refused(400, "a proof line is not base64") from None
            if len(value) != verifier.HASH_SIZE:
                raise Refused(400, "a proof line is not a 32-byte hash")
            proof.append(value)
        return cls(int(size_text), tuple(proof), note)


# --- the witness ----------------------------------------------------------------------------------


class Witness:
    """Checks and cosigns checkpoints of one log, remembering the latest in ``state_file``.

    Safe to call from several threads (one lock) and from several processes on one state file
    (an ``flock`` on a lock file next to it): check, save and sign happen as one step.
    """

    def __init__(
        self,
        key: WitnessKey,
        log_keys: Sequence[verifier.VerifierKey],
        state_file: Path,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not log_keys:
            raise ValueError("a witness needs the log's public key")
        origins = {k.name for k in log_keys}
        if len(origins) != 1 or any(k.algorithm != verifier.ALG_ED25519 for k in log_keys):
            raise ValueError("the log keys must be Ed25519 note keys of one origin")
        self.key = key
        self.log_keys = tuple(log_keys)
        self.origin = origins.pop()
        self.state_file = state_file
        self.clock = clock
        self._lock = threading.Lock()
        state = load_state(state_file)  # fails at start, not at the first request
        if state.origin is not None and state.origin != self.origin:
            raise ValueError(
                f"{state_file} holds the state of log {state.origin!r}, not {self.origin!r}"
            )

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        lock_path = self.state_file.with_name(f".{self.state_file.name}.lock")
        with self._lock:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def state(self) -> State:
        return load_state(self.state_file)

    def add_checkpoint(self, request: AddCheckpoint) -> str:
        """Check the request against the state; cosign, remember and answer the signature line."""
        try:
            note = verifier.Note.parse(request.note)
            checkpoint = verifier.Checkpoint.parse(note.body)
        except ValueError as error:
            raise Refused(400, f"not a checkpoint: {error}") from None
        if checkpoint.origin != self.origin:
            raise Refused(
                404, f"unknown log {checkpoint.origin[:80]!r}; this witness follows {self.origin!r}"
            )
        if not any(note.signed_by(key) for key in self.log_keys):
            raise Refused(403, "the checkpoint is not signed by the log's key")
        with self._exclusive():
            state = self.state()
            if request.old != state.size:
                raise Refused(
                    409,
                    f"this witness last cosigned size {state.size}, not {request.old}",
                    size=state.size,
                )
            check(state, checkpoint, request.proof)
            save_state(self.state_file, State(self.origin, checkpoint.size, checkpoint.root))
            timestamp = int(self.clock())
            line = self.key.cosign(note.body, timestamp)
        return signature_line(line)


def signature_line(signature: verifier.NoteSignature) -> str:
    """One signed-note signature line, newline included."""
    encoded = base64.b64encode(signature.key_id + signature.signature).decode()
    return f"{verifier.SIGNATURE_PREFIX}{signature.name} {encoded}\n"


def check(state: State, checkpoint: verifier.Checkpoint, proof: Sequence[bytes]) -> None:
    """Refuse (409) unless ``checkpoint`` extends the tree in ``state``: no rollback, no fork."""
    if checkpoint.size < state.size:
        raise Refused(
            409, f"rollback: size {checkpoint.size} is smaller than the cosigned {state.size}"
        )
    if checkpoint.size == state.size and checkpoint.root != state.root:
        raise Refused(409, f"fork: another root for the cosigned size {state.size}")
    if not verifier.verify_consistency(
        state.size, checkpoint.size, state.root, checkpoint.root, proof
    ):
        raise Refused(
            409,
            f"fork: size {checkpoint.size} is not consistent with the cosigned size {state.size}",
        )
