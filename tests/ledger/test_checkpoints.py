"""Signed checkpoints: the C2SP formats, issuing them, and what `escrow verify` checks of them."""

from __future__ import annotations

import ast
import base64
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select, update

from ledger import checkpoints, verifier
from ledger.checkpoints import SignedCheckpoint
from ledger.keys import LogKey
from ledger.merkle import MemoryTree
from ledger.models import LogEntry
from ledger.runtime import Ledger
from ledger.verify import ProblemKind, verify_database
from tests.ledger.entries import append, receipt

LESSON = 15_000


def _issue(ledger: Ledger, reason: str = "schedule", *, force: bool = False) -> SignedCheckpoint:
    with ledger.sessions.begin() as session:
        signed = checkpoints.issue(session, ledger.log, ledger.key, reason=reason, force=force)
        session.expunge(signed)
    return signed


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_a_checkpoint_is_a_c2sp_signed_note_of_the_current_root(ledger: Ledger) -> None:
    append(ledger, receipt("inst-1", "ctr-1", LESSON), receipt("inst-1", "ctr-2", LESSON))
    signed = _issue(ledger)
    lines = signed.note.split("\n")
    assert lines[0] == ledger.key.name
    assert lines[1] == "3"
    assert lines[3] == ""
    assert lines[4].startswith(f"\u2014 {ledger.key.name} ")
    with ledger.readers() as session:
        leaves = [bytes(h) for h in session.scalars(select(LogEntry.hash).order_by(LogEntry.seq))]
    assert base64.b64decode(lines[2]) == MemoryTree(leaves).root() == signed.root
    note = verifier.Note.parse(signed.note)
    assert note.text() == signed.note
    key = verifier.VerifierKey.parse(ledger.key.verifier_key)
    assert note.signed_by(key)
    assert verifier.Checkpoint.parse(note.body).size == 3


def test_a_quiet_log_is_not_signed_twice_unless_a_regulator_asks(ledger: Ledger) -> None:
    first = _issue(ledger)
    assert _issue(ledger, "settlement").id == first.id
    asked = _issue(ledger, "request", force=True)
    assert asked.id != first.id
    assert asked.size == first.size
    append(ledger, receipt("inst-1", "ctr-1", LESSON))
    assert _issue(ledger).size == first.size + 1
    with pytest.raises(ValueError, match="reason"):
        _issue(ledger, "whim")


def test_verify_accepts_honest_checkpoints_and_names_forged_ones(ledger: Ledger) -> None:
    for n in range(3):
        append(ledger, receipt("inst-1", f"ctr-{n}", LESSON))
        _issue(ledger)
    assert verify_database(ledger.engine, invariants=False).ok

    # An operator signs, with the real key, a root that is not the log's.
    forged_root = bytes(32)
    with ledger.sessions.begin() as session:
        session.add(
            SignedCheckpoint(
                size=2,
                root=forged_root,
                note=checkpoints.sign(ledger.key, 2, forged_root),
                reason="request",
                issued_at=ledger.clock.now(),
            )
        )
    report = verify_database(ledger.engine, invariants=False)
    assert [p.kind for p in report.problems] == [ProblemKind.CHECKPOINT]
    assert "not the root of the log's first 2 entries" in report.problems[0].detail


def test_verify_refuses_checkpoints_under_another_key_or_beyond_the_log(ledger: Ledger) -> None:
    append(ledger, receipt("inst-1", "ctr-1", LESSON))
    honest = _issue(ledger)
    impostor = LogKey(ledger.key.name, Ed25519PrivateKey.generate())
    with ledger.sessions.begin() as session:
        session.execute(
            update(SignedCheckpoint)
            .where(SignedCheckpoint.id == honest.id)
            .values(note=checkpoints.sign(impostor, honest.size, honest.root))
        )
        session.add(
            SignedCheckpoint(
                size=99,
                root=honest.root,
                note=checkpoints.sign(ledger.key, 99, honest.root),
                reason="request",
                issued_at=ledger.clock.now(),
            )
        )
    details = [p.detail for p in verify_database(ledger.engine, invariants=False).problems]
    assert any("is not signed by the log key" in d for d in details)
    assert any("beyond the log's 2 entries" in d for d in details)


def test_cosignatures_verify_per_c2sp_tlog_cosignature() -> None:
    witness = Ed25519PrivateKey.generate()
    key = verifier.VerifierKey("bank.example/witness", verifier.ALG_COSIGNATURE_V1, _raw(witness))
    body = verifier.Checkpoint("escrow.example/log", 10, bytes(range(32))).body()
    stamp = 1_790_000_000
    signature = witness.sign(verifier.cosigned_message(body, stamp))
    line = verifier.NoteSignature(key.name, key.key_id, stamp.to_bytes(8, "big") + signature)
    note = verifier.Note(body, (line,))
    parsed = verifier.Note.parse(note.text())
    assert parsed.cosigned_by(key) == stamp
    assert verifier.cosigned_message(body, stamp).startswith(b"cosignature/v1\ntime 1790000000\n")
    other_time = verifier.NoteSignature(
        key.name, key.key_id, (stamp + 1).to_bytes(8, "big") + signature
    )
    assert verifier.Note(body, (other_time,)).cosigned_by(key) is None
    assert verifier.VerifierKey.parse(key.encode()) == key


@pytest.mark.parametrize(
    "text",
    [
        "no blank line\n\u2014 a AAAA\n",
        "body\n\n",
        "body\n\nnot a signature\n",
        "body\n\n\u2014 name !!!!\n",
        "body\n\n\u2014 name AAAA\n",
        "body\n\n\u2014 name AAAAAAAA",
    ],
)
def test_malformed_notes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"signed note|signature"):
        verifier.Note.parse(text)


@pytest.mark.parametrize(
    "body",
    [
        "origin\n10\n",
        "origin\n010\nAAAA\n",
        "origin\nten\nAAAA\n",
        "origin\n10\nnot base64!\n",
        "origin\n10\nAAAA\n",
        "\n10\n" + base64.b64encode(bytes(32)).decode() + "\n",
    ],
)
def test_malformed_checkpoints_are_refused(body: str) -> None:
    with pytest.raises(ValueError, match="checkpoint"):
        verifier.Checkpoint.parse(body)


def test_verifier_keys_must_match_their_key_id() -> None:
    key = verifier.VerifierKey("log.example", verifier.ALG_ED25519, bytes(32))
    name, _, material = key.encode().split("+", 2)
    with pytest.raises(ValueError, match="does not match"):
        verifier.VerifierKey.parse(f"{name}+00000000+{material}")
    with pytest.raises(ValueError, match="not a verifier key"):
        verifier.VerifierKey.parse("no-plus-signs")


def test_the_offline_verifier_imports_only_the_standard_library_and_cryptography() -> None:
    source = Path(verifier.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - {"__future__", "cryptography"} <= set(sys.stdlib_module_names)
