import base64
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import keys


def test_the_key_is_created_once_with_owner_only_permissions(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    first = keys.load_or_create(key_dir, "escrow.test/log")
    path = key_dir / keys.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    again = keys.load_or_create(key_dir, "escrow.test/log")
    assert again.public_bytes == first.public_bytes
    assert again.key_id == first.key_id


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    keys.load_or_create(tmp_path, "escrow.test/log")
    (tmp_path / keys.KEY_FILE).chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        keys.load_or_create(tmp_path, "escrow.test/log")


def test_key_id_and_verifier_key_follow_c2sp_signed_note() -> None:
    # The example key of the signed-note specification (golang.org/x/mod/sumdb/note).
    private = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
    seed = base64.b64decode(private.split("+", 4)[4])[1:]
    key = keys.LogKey("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed))
    assert key.key_id.hex() == "c74f20a3"
    assert key.verifier_key == "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"


def test_signatures_verify_with_the_public_key(tmp_path: Path) -> None:
    key = keys.load_or_create(tmp_path, "escrow.test/log")
    signature = key.sign(b"tree head")
    key.public_key.verify(signature, b"tree head")  # raises if invalid
    assert key.public_pem().startswith("-----BEGIN PUBLIC KEY-----")


def test_racing_first_starts_agree_on_one_key_and_leave_no_stray_files(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        loaded = list(pool.map(lambda _: keys.load_or_create(tmp_path, "race/log"), range(16)))
    assert len({key.public_bytes for key in loaded}) == 1
    assert [p.name for p in tmp_path.iterdir()] == [keys.KEY_FILE]


def test_load_never_creates_a_key(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no log key"):
        keys.load(tmp_path, "escrow.test/log")
    assert not any(tmp_path.iterdir())
