"""The witness's own logic (``ledger.witness``), without HTTP: what it cosigns and what it refuses."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger import merkle, verifier, witness
from ledger.checkpoints import sign
from ledger.keys import LogKey
from ledger.merkle import MemoryTree
from ledger.witness import AddCheckpoint, Refused, State, Witness

ORIGIN = "tuition-escrow.test/log"
NOW = 1_790_000_000


def _leaves(n: int, salt: bytes = b"") -> list[bytes]:
    return [verifier.leaf_hash(salt + i.to_bytes(8, "big")) for i in range(n)]


class Log:
    """A log in memory that signs checkpoints with its key."""

    def __init__(self, key: LogKey, leaves: list[bytes]) -> None:
        self.key = key
        self.tree = MemoryTree(leaves)

    def note(self, size: int) -> str:
        return sign(self.key, size, self.tree.root(size))

    def request(self, old: int, size: int) -> AddCheckpoint:
        proof = () if old in (0, size) else tuple(merkle.consistency_proof(self.tree, old, size))
        return AddCheckpoint(old, proof, self.note(size))


@pytest.fixture
def log_key() -> LogKey:
    return LogKey(ORIGIN, Ed25519PrivateKey.generate())


@pytest.fixture
def log(log_key: LogKey) -> Log:
    return Log(log_key, _leaves(40))


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    key_file, state_file = tmp_path / "witness.key", tmp_path / "witness.state"
    witness.create_key_file(key_file, "witness.bank.example/w1")
    witness.create_state_file(state_file)
    return key_file, state_file


def _witness(files: tuple[Path, Path], log_key: LogKey, clock: int = NOW) -> Witness:
    key_file, state_file = files
    return Witness(
        witness.load_key_file(key_file),
        [verifier.VerifierKey.parse(log_key.verifier_key)],
        state_file,
        clock=lambda: clock,
    )


def _cosigned(w: Witness, note: str, line: str) -> int | None:
    body = verifier.Note.parse(note).body
    return verifier.Note.parse(f"{body}\n{line}").cosigned_by(w.key.verifier_key)


def test_the_key_file_is_private_and_its_verifier_key_is_a_cosigner_key(
    files: tuple[Path, Path],
) -> None:
    key_file, _ = files
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = witness.load_key_file(key_file)
    parsed = verifier.VerifierKey.parse(key.verifier_key.encode())
    assert parsed.algorithm == verifier.ALG_COSIGNATURE_V1 == 0x04
    assert parsed.name == "witness.bank.example/w1"
    with pytest.raises(FileExistsError):
        witness.create_key_file(key_file, "again")
    key_file.chmod(0o644)
    with pytest.raises(PermissionError):
        witness.load_key_file(key_file)


def test_the_first_checkpoint_is_cosigned_from_size_zero(
    files: tuple[Path, Path], log_key: LogKey, log: Log
) -> None:
    w = _witness(files, log_key)
    request = log.request(0, 10)
    line = w.add_checkpoint(request)
    assert line.startswith("\u2014 witness.bank.example/w1 ")
    assert line.endswith("\n")
    assert _cosigned(w, request.note, line) == NOW
    assert w.state() == State(ORIGIN, 10, log.tree.root(10))


def test_the_cosignature_signs_the_c2sp_message_bytes(
    files: tuple[Path, Path], log_key: LogKey, log: Log
) -> None:
    w = _witness(files, log_key)
    request = log.request(0, 5)
    line = w.add_checkpoint(request)
    raw = verifier.Note.parse(f"{verifier.Note.parse(request.note).body}\n{line}").signatures[0]
    assert raw.key_id == w.key.verifier_key.key_id
    assert int.from_bytes(raw.signature[:8], "big") == NOW
    body = verifier.Note.parse(request.note).body
    message = f"cosignature/v1\ntime {NOW}\n{body}".encode()
    assert message == verifier.cosigned_message(body, NOW)
    public = w.key.verifier_key.public_key
    Ed25519PublicKey.from_public_bytes(public).verify(raw.signature[8:], message)


def test_consistent_growth_is_cosigned_each_time(
    files: tuple[Path, Path], log_key: LogKey, log: Log
) -> None:
    w = _witness(files, log_key)
    previous = 0
    for size in (1, 2, 7, 8, 13, 32, 40, 40):
        request = log.request(previous, size)
        assert _cosigned(w, request.note, w.add_checkpoint(request)) == NOW
        previous = size
    assert w.state().size == 40


def test_a_wrong_old_size_is_answered_with_the_witness_size(
    files: tuple[Path, Path], log_key: LogKey, log: Log
) -> None:
    w = _witness(files, log_key)
    w.add_checkpoint(log.request(0, 12))
    with pytest.raises(Refused) as refused:
        w.add_checkpoint(log.request(0, 20))
    assert (refused.value.status, refused.value.size) == (409, 12)
    assert w.state().size == 12


def test_a_rollback_is_refused(files: tuple[Path, Path], log_key: LogKey, log: Log) -> None:
    w = _witness(files, log_key)
    w.add_checkpoint(log.request(0, 30))
    request = AddCheckpoint(30, (), log.note(20))
    with pytest.raises(Refused) as refused:
        w.add_checkpoint(request)
    assert refused.value.status == 409
    assert refused.value.size is None
    assert "rollback" in refused.value.detail
    assert w.state() == State(ORIGIN, 30, log.tree.root(30))


def test_a_fork_at_the_same_size_is_refused(
    files: tuple[Path, Path], log_key: LogKey, log: Log
) -> None:
    w = _witness(files, log_key)
    w.add_checkpoint(log.request(0, 25))
    other = Log(log_key, _leaves(25, salt=b"other history"))
    with pytest.raises(Refused) as refused:
        w.add_checkpoint(other.request(25, 25))
    assert refused.value.status == 409
    assert "fork" in refused.value.detail
    assert w.state().root == log.tree.root(25)


def test_a_fork_whose_proof_does_not_verify_is_refused(
    files: tuple[Path, Path], log_key: LogKey, log: Log
) -> None:
    w = _witness(files, log_key)
    w.add_checkpoint(log.request(0, 10))
    # Another history sharing nothing with the cosigned one: its own proof from 10 cannot match.
    forked = Log(log_key, _leaves(10, salt=b"x") + _leaves(20))
    with pytest.raises(Refused) as refused:
        w.add_checkpoint(forked.request(10, 30))
    assert refused.value.status == 409
    assert "fork" in refused.value.detail
    # The honest proof with a tampered hash fails too.
    honest = log.request(10, 30)
    bad = (hashlib.sha256(b"tampered").digest(), *honest.proof[1:])
    with pytest.raises(Refused):
        w.add_checkpoint(AddCheckpoint(10, bad, honest.note))
    assert w.state().size == 10
    assert w.add_checkpoint(honest)


def test_a_checkpoint_not_signed_by_the_log_key_is_refused(
    files: tuple[Path, Path], log_key: LogKey, log: Log
) -> None:
    w = _witness(files, log_key)
    impostor = Log(LogKey(ORIGIN, Ed25519PrivateKey.generate()), _leaves(40))
    with pytest.raises(Refused) as refused:
        w.add_checkpoint(impostor.request(0, 10))
    assert refused.value.status == 403
    elsewhere = Log(LogKey("another.example/log", Ed25519PrivateKey.generate()), _leaves(4))
    with pytest.raises(Refused) as refused:
        w.add_checkpoint(elsewhere.request(0, 4))
    assert refused.value.status == 404
    assert w.state().size == 0


def test_the_state_survives_a_restart(files: tuple[Path, Path], log_key: LogKey, log: Log) -> None:
    w = _witness(files, log_key)
    w.add_checkpoint(log.request(0, 16))
    restarted = _witness(files, log_key, clock=NOW + 60)
    assert restarted.state() == State(ORIGIN, 16, log.tree.root(16))
    with pytest.raises(Refused) as refused:
        restarted.add_checkpoint(log.request(0, 17))
    assert refused.value.size == 16
    line = restarted.add_checkpoint(log.request(16, 17))
    assert _cosigned(restarted, log.note(17), line) == NOW + 60
    # A state of another log is refused at start, and init never overwrites a state.
    with pytest.raises(ValueError, match="another|not"):
        _witness(files, LogKey("another.example/log", Ed25519PrivateKey.generate()))
    with pytest.raises(FileExistsError):
        witness.create_state_file(files[1])
    assert not list(files[1].parent.glob("*.tmp"))


def test_requests_round_trip_and_malformed_ones_are_400(log: Log) -> None:
    request = log.request(8, 30)
    assert AddCheckpoint.parse(request.encode()) == request
    assert request.encode().startswith(b"old 8\n")
    for bad in (
        b"",
        b"old x\n\n",
        b"old 01\n\n",
        b"size 1\n\n",
        b"old 1\nnot-base64!\n\nx",
        b"\xff",
    ):
        with pytest.raises(Refused) as refused:
            AddCheckpoint.parse(bad)
        assert refused.value.status == 400
