"""The log's Ed25519 signing key.

Created on first start in the key directory (file mode 0600, directory 0700) and identified the way
C2SP signed notes identify keys, so that checkpoints signed later verify with any signed-note tool:

- key id    = first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key)   (0x01 = Ed25519)
- verifier  = ``name+<key id, 8 hex digits>+<base64(0x01 || public key)>``
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALG_ED25519 = b"\x01"
KEY_FILE = "log-ed25519.pem"
"""The key the log was opened with. Keys created by a rotation sit beside it as
``log-ed25519-<key id>.pem`` (``rotated_key_file``); old keys are kept, never overwritten."""


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte C2SP signed-note key id of an Ed25519 key under ``name``."""
    return hashlib.sha256(name.encode() + b"\n" + ALG_ED25519 + public_key).digest()[:4]


def verifier_key(name: str, public_key: bytes) -> str:
    """The C2SP verifier-key string ``name+keyid+base64(0x01||key)``."""
    encoded = base64.b64encode(ALG_ED25519 + public_key).decode()
    return f"{name}+{key_id(name, public_key).hex()}+{encoded}"


class LogKey:
    """The log's signing key together with the name (origin) it signs under."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = name
        self._private = private_key
        self.public_bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = key_id(name, self.public_bytes)
        self.retiring: tuple[tuple[LogKey, datetime], ...] = ()
        """Keys this one replaced whose announced overlap has not necessarily ended, each with
        the end of its overlap; set by ``ledger.rotation.active_key``."""

    @property
    def verifier_key(self) -> str:
        """The public key in C2SP verifier-key form."""
        return verifier_key(self.name, self.public_bytes)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._private.public_key()

    def public_pem(self) -> str:
        """The public key as SubjectPublicKeyInfo PEM, for tools that want X.509-style keys."""
        return (
            self.public_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
            .strip()
        )

    def sign(self, message: bytes) -> bytes:
        """An Ed25519 signature over ``message``."""
        return self._private.sign(message)

    def signing_keys(self, now: datetime) -> Sequence[LogKey]:
        """The keys a checkpoint issued at ``now`` carries: this one, then every retiring key
        still inside its overlap (verifiers that only know the old key keep working meanwhile)."""
        return [self, *(old for old, until in self.retiring if now < until)]


def rotated_key_file(key: LogKey) -> str:
    """The file name of a key created by a rotation: ``log-ed25519-<key id hex>.pem``."""
    return f"log-ed25519-{key.key_id.hex()}.pem"


def load_or_create(key_dir: Path, name: str) -> LogKey:
    """Load the log key from ``key_dir``, creating it (0600) on first use.

    The new key is written to a temporary file and linked into place, so a crash or a second process
    starting at the same moment can never leave an empty or half-written key behind.
    """
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = key_dir / KEY_FILE
    if path.exists():
        return load(key_dir, name)
    private = Ed25519PrivateKey.generate()
    if not _write_new(path, private):
        return load(key_dir, name)
    return LogKey(name, private)


def create_rotated(key_dir: Path, name: str) -> LogKey:
    """A fresh key for a rotation, written (0600) beside the others as ``rotated_key_file``."""
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = LogKey(name, Ed25519PrivateKey.generate())
    if not _write_new(key_dir / rotated_key_file(key), key._private):
        raise FileExistsError(f"{key_dir / rotated_key_file(key)} already exists")
    return key


def _write_new(path: Path, private: Ed25519PrivateKey) -> bool:
    """Write a private key to a new file, atomically; False if the file already exists."""
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".log-key-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # atomic, and fails if another process won the race
        except FileExistsError:
            return False
    finally:
        os.unlink(temporary)
    return True


def load(key_dir: Path, name: str) -> LogKey:
    """Load an existing log key; never creates one.

    A key file that others can read is refused: whoever reads it can sign checkpoints as this log.
    """
    path = key_dir / KEY_FILE
    if not path.exists():
        raise FileNotFoundError(f"no log key at {path}; the service creates it on first start")
    return _load_file(path, name)


def load_all(key_dir: Path, name: str) -> dict[str, LogKey]:
    """Every log key in ``key_dir`` (the first one and those of rotations), by verifier key."""
    found: dict[str, LogKey] = {}
    for path in sorted(key_dir.glob("log-ed25519*.pem")):
        key = _load_file(path, name)
        found[key.verifier_key] = key
    return found


def _load_file(path: Path, name: str) -> LogKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(
            f"{path} is readable by others (mode {mode:04o}); run: chmod 600 {path}"
        )
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise TypeError(f"{path} does not hold an Ed25519 private key")
    return LogKey(name, private)
