"""Export and offline verification: an honest export verifies, and every kind of tampering with
the files (the tamper matrix of issue 6) is found and named."""

from __future__ import annotations

import base64
import json
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from ledger import checkpoints, verifier
from ledger.escrow import lessons
from ledger.escrow.lessons import LessonReport
from ledger.export import export
from ledger.keys import LogKey
from ledger.keys import key_id as c2sp_key_id
from ledger.log import Event, format_time
from ledger.merkle import MemoryTree
from ledger.merkle_store import StoredTree
from ledger.models import LogEntry
from ledger.party_keys import SignatureIn, lesson_message, register_key
from ledger.runtime import Ledger
from tests.escrow.world import World
from tests.ledger.entries import append, receipt

LESSON = 15_000


def _raw(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _issue(ledger: Ledger, *, force: bool = False) -> int:
    with ledger.sessions.begin() as session:
        return checkpoints.issue(
            session, ledger.log, ledger.key, reason="request" if force else "schedule", force=force
        ).id


def _lines(directory: Path) -> list[bytes]:
    return (directory / verifier.EXPORT_ENTRIES).read_bytes().splitlines(keepends=True)


def _write_lines(directory: Path, lines: list[bytes]) -> None:
    (directory / verifier.EXPORT_ENTRIES).write_bytes(b"".join(lines))


def _checkpoint_files(directory: Path) -> list[Path]:
    return sorted((directory / verifier.EXPORT_CHECKPOINTS).iterdir())


def _log_size(ledger: Ledger) -> int:
    with ledger.readers() as session:
        return len(session.scalars(select(LogEntry.seq)).all())


class History:
    """A small escrow history: a signing institution, a signed lesson, checkpoints along the way."""

    def __init__(self, world: World, folder: Path) -> None:
        self.world = world
        self.ledger = world.ledger
        self.private = Ed25519PrivateKey.generate()
        contract = world.paid_contract()
        _issue(self.ledger)
        world.do(
            register_key,
            kind="institution",
            party_id=world.school,
            public_key=_raw(self.private),
            actor=f"institution:{world.school}",
        )
        when = world.now() - timedelta(hours=1)
        message = lesson_message(
            institution=world.school, contract=contract, ref="S-1", delivered_at=when, teacher="t-1"
        )
        signature = SignatureIn(
            c2sp_key_id(world.school, _raw(self.private)).hex(),
            base64.b64encode(self.private.sign(message)).decode(),
        )
        [self.lesson] = world.do(
            lessons.report_lessons,
            institution_id=world.school,
            reports=[LessonReport(contract, "S-1", when, "t-1", signature)],
        )
        self.middle = _issue(self.ledger)
        world.report(world.paid_contract(world.beijing), 2)  # beijing signs nothing
        self.last = _issue(self.ledger)
        self.directory = folder / "export"
        self.exported = export(self.ledger, self.directory)

    @property
    def log_key(self) -> str:
        return self.ledger.key.verifier_key

    def verify(self, **kwargs: Any) -> verifier.ExportReport:
        kwargs.setdefault("log_keys", [self.log_key])
        return verifier.verify_export(self.directory, **kwargs)


@pytest.fixture
def history(world: World, tmp_path: Path) -> History:
    return History(world, tmp_path)


def _reasons(report: verifier.ExportReport) -> str:
    return "\n".join(str(p) for p in report.problems)


# --- the honest export ---------------------------------------------------------------------------


def test_an_honest_export_verifies_with_the_published_key(history: History) -> None:
    report = history.verify()
    assert report.ok, _reasons(report)
    assert report.entries == _log_size(history.ledger) == history.exported.entries
    assert report.checkpoints == history.exported.checkpoints == 3
    assert report.witnessed == 0
    assert any("no witness quorum" in w.reason for w in report.warnings)
    # Nothing was trusted from the export but the structure: the key came from the caller.
    assert not any("no log key given" in w.reason for w in report.warnings)


def test_the_export_format_byte_by_byte(history: History) -> None:
    directory = history.directory
    lines = _lines(directory)
    with history.ledger.readers() as session:
        rows = session.execute(select(LogEntry.body, LogEntry.hash).order_by(LogEntry.seq)).all()
    assert lines == [
        b'{"hash":"' + bytes(h).hex().encode() + b'","entry":' + bytes(b) + b"}\n" for b, h in rows
    ]
    decoded = json.loads(lines[0])
    assert decoded["entry"]["type"] == "log.opened"
    assert decoded["entry"]["prev_hash"] == "0" * 64
    keys = json.loads((directory / "keys.json").read_text())
    assert keys == {
        "origin": history.ledger.key.name,
        "log_keys": [
            {
                "verifier_key": history.log_key,
                "valid_from": decoded["entry"]["time"],
                "valid_until": None,
            }
        ],
        "witness_keys": [],
        "witness_quorum": 0,
    }
    assert (directory / "keys.txt").read_text() == f"{history.log_key}\n"
    files = _checkpoint_files(directory)
    assert [f.name for f in files] == [f"{n:010d}.txt" for n in (1, 2, 3)]
    note = verifier.Note.parse(files[-1].read_text())
    assert verifier.Checkpoint.parse(note.body).size == len(lines)
    assert not list(directory.glob(".*partial"))


def test_exporting_into_a_directory_with_files_is_refused(history: History) -> None:
    with pytest.raises(FileExistsError):
        export(history.ledger, history.directory)


def test_without_a_log_key_the_export_is_only_self_consistent_and_says_so(
    history: History,
) -> None:
    report = verifier.verify_export(history.directory)
    assert report.ok
    assert any("no log key given" in w.reason for w in report.warnings)


# --- the tamper matrix ---------------------------------------------------------------------------


def _edit_byte(h: History) -> None:
    lines = _lines(h.directory)
    seq = h.lesson.reported_seq
    lines[seq] = lines[seq].replace(b'"teacher":"t-1"', b'"teacher":"t-2"')
    _write_lines(h.directory, lines)


def _edit_and_rehash(h: History) -> None:
    lines = _lines(h.directory)
    seq = 3
    body = lines[seq][verifier._BODY_START : -2].replace(b'"seq":3', b'"seq":3 ', 1)
    lines[seq] = verifier.export_line(verifier.leaf_hash(body).hex(), body)
    _write_lines(h.directory, lines)


def _drop(h: History) -> None:
    lines = _lines(h.directory)
    del lines[4]
    _write_lines(h.directory, lines)


def _insert(h: History) -> None:
    lines = _lines(h.directory)
    lines.insert(5, lines[2])
    _write_lines(h.directory, lines)


def _swap(h: History) -> None:
    lines = _lines(h.directory)
    lines[5], lines[6] = lines[6], lines[5]
    _write_lines(h.directory, lines)


def _truncate(h: History) -> None:
    size = verifier.Checkpoint.parse(
        verifier.Note.parse(_checkpoint_files(h.directory)[1].read_text()).body
    ).size
    _write_lines(h.directory, _lines(h.directory)[: size + 1])


def _forge(h: History) -> None:
    impostor = LogKey(h.ledger.key.name, Ed25519PrivateKey.generate())
    path = _checkpoint_files(h.directory)[-1]
    body = verifier.Checkpoint.parse(verifier.Note.parse(path.read_text()).body)
    path.write_text(checkpoints.sign(impostor, body.size, body.root))


def _fork(h: History) -> None:
    path = _checkpoint_files(h.directory)[1]
    body = verifier.Checkpoint.parse(verifier.Note.parse(path.read_text()).body)
    forked = checkpoints.sign(h.ledger.key, body.size, verifier.leaf_hash(b"another history"))
    (h.directory / "checkpoints" / "0000000009.txt").write_text(forked)


def _keys_of_another_log(h: History) -> None:
    path = h.directory / "keys.json"
    keys = json.loads(path.read_text())
    other = LogKey(h.ledger.key.name, Ed25519PrivateKey.generate())
    keys["log_keys"][0]["verifier_key"] = other.verifier_key
    path.write_text(json.dumps(keys))


TAMPERING: dict[str, tuple[Callable[[History], None], list[str]]] = {
    "edit an entry byte": (
        _edit_byte,
        [
            "the entry's bytes do not hash to the hash on its line",
            "signs a root that is not the root of the export's first",
        ],
    ),
    "edit an entry and recompute its line hash": (
        _edit_and_rehash,
        ["seq 4: prev_hash is not the hash of the entry before it", "signs a root that is not"],
    ),
    "drop an entry": (_drop, ["seq 4: line 5 holds seq 5 where seq 4 belongs"]),
    "insert an entry": (_insert, ["seq 5: line 6 holds seq 2 where seq 5 belongs"]),
    "swap two entries": (
        _swap,
        ["seq 5: line 6 holds seq 6 where seq 5 belongs", "seq 6: line 7 holds seq 5"],
    ),
    "truncate after a checkpoint": (
        _truncate,
        ["export truncated: checkpoint 3 is beyond the last entry"],
    ),
    "forge a checkpoint with another key": (
        _forge,
        ["checkpoint 3 (size", "is not signed by any log key"],
    ),
    "fork: the operator signs another root for a signed size": (
        _fork,
        ["fork: checkpoints 2 and 9 both sign tree size", "checkpoint 9 (size"],
    ),
    "keys.json of another log": (
        _keys_of_another_log,
        ["seq 0: the log was opened with key", "none of the given log keys is a key of this log"],
    ),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampering_with_an_export_is_detected_with_a_clear_reason(
    history: History, case: str
) -> None:
    tamper, expected = TAMPERING[case]
    assert history.verify().ok
    tamper(history)
    report = history.verify()
    assert not report.ok
    reasons = _reasons(report)
    for text in expected:
        assert text in reasons, f"{case}: {text!r} not in\n{reasons}"


def test_the_fork_is_found_even_when_the_forked_checkpoint_is_all_there_is(
    history: History,
) -> None:
    """A root that is not the export's is a failure by itself, without a second checkpoint."""
    path = _checkpoint_files(history.directory)[1]
    body = verifier.Checkpoint.parse(verifier.Note.parse(path.read_text()).body)
    path.write_text(checkpoints.sign(history.ledger.key, body.size, bytes(32)))
    report = history.verify()
    assert [p.checkpoint for p in report.problems] == [2]
    assert "signs a root that is not the root" in report.problems[0].reason


# --- party signatures ----------------------------------------------------------------------------


def _append_lesson_entry(world: World, payload: dict[str, Any]) -> int:
    """A ``lesson.reported`` entry written as the operator pleases (the chain stays intact)."""
    [appended] = append(
        world.ledger, Event("lesson.reported", f"institution:{world.school}", payload)
    )
    return appended.seq


def test_party_signatures_are_checked_against_the_keys_registered_in_the_log(
    history: History, tmp_path: Path
) -> None:
    world = history.world
    with world.read() as session:
        body = session.get_one(LogEntry, history.lesson.reported_seq).body
    genuine = json.loads(body)["payload"]
    # The operator claims a lesson the institution never signed: same signature, other teacher.
    forged_seq = _append_lesson_entry(world, {**genuine, "ref": "S-9", "teacher": "t-9"})
    # ... and one with no signature at all, though the institution has a key.
    unsigned = {k: v for k, v in genuine.items() if k != "signature"}
    unsigned_seq = _append_lesson_entry(world, {**unsigned, "ref": "S-10"})
    _issue(world.ledger)
    directory = tmp_path / "again"
    export(world.ledger, directory)
    report = verifier.verify_export(directory, log_keys=[history.log_key])
    assert [p.seq for p in report.problems] == [forged_seq, unsigned_seq]
    assert "signature does not verify" in report.problems[0].reason
    assert "unsigned, though institution" in report.problems[1].reason


@given(
    st.dictionaries(
        st.sampled_from(["institution", "contract", "ref", "delivered_at", "teacher", "bank"]),
        st.one_of(st.text(), st.integers(-(2**53) + 1, 2**53 - 1)),
    )
)
def test_the_verifiers_canonical_json_is_rfc8785_for_signed_messages(
    fields: dict[str, Any],
) -> None:
    assert verifier.canonical_json(fields) == rfc8785.dumps(fields)


# --- synthetic logs: memory, rotation, witnesses ---------------------------------------------------


class Synthetic:
    """An export written directly, without a database: large logs, key rotations, witnesses."""

    def __init__(self, directory: Path, key: LogKey) -> None:
        self.directory = directory
        self.key = key
        self.origin = key.name
        self.time = datetime(2026, 9, 1, tzinfo=UTC)
        self.prev = "0" * 64
        self.tree = MemoryTree()
        self.lines = (directory / "entries.jsonl").open("wb")
        (directory / "checkpoints").mkdir()
        self.checkpoint_id = 0
        self.log_keys: list[dict[str, Any]] = []
        self.witness_keys: list[dict[str, Any]] = []
        self.entry(
            "log.opened", {"origin": key.name, "algorithm": "Ed25519", "key": key.verifier_key}
        )
        self.log_keys.append(
            {"verifier_key": key.verifier_key, "valid_from": self.previous(), "valid_until": None}
        )

    def stamp(self) -> str:
        return format_time(self.time)

    def entry(self, kind: str, payload: dict[str, Any]) -> int:
        seq = self.tree.size
        body = rfc8785.dumps(
            {
                "seq": seq,
                "time": self.stamp(),
                "type": kind,
                "actor": "system",
                "payload": payload,
                "postings": [
                    {"account": "escrow:i-1", "amount": 100, "currency": "CNY"},
                    {"account": "contract:c-1", "amount": -100, "currency": "CNY"},
                ]
                if kind == "test.move"
                else [],
                "prev_hash": self.prev,
            }
        )
        leaf = verifier.leaf_hash(body)
        self.lines.write(verifier.export_line(leaf.hex(), body))
        self.tree.append(leaf)
        self.prev = leaf.hex()
        self.time += timedelta(seconds=1)
        return seq

    def checkpoint(self, *signers: LogKey, cosigners: tuple[Ed25519PrivateKey, ...] = ()) -> None:
        size = self.tree.size
        body = verifier.Checkpoint(self.origin, size, self.tree.root()).body()
        lines = [verifier.NoteSignature(k.name, k.key_id, k.sign(body.encode())) for k in signers]
        stamp = int(self.time.timestamp())
        for private in cosigners:
            key = _witness_key(private)
            signature = private.sign(verifier.cosigned_message(body, stamp))
            lines.append(
                verifier.NoteSignature(key.name, key.key_id, stamp.to_bytes(8, "big") + signature)
            )
        self.checkpoint_id += 1
        path = self.directory / "checkpoints" / f"{self.checkpoint_id:010d}.txt"
        path.write_text(verifier.Note(body, tuple(lines)).text())

    def rotate(self, old: LogKey, new: LogKey, overlap: timedelta) -> None:
        until = format_time(self.time + overlap)
        message = verifier.key_rotation_message(old.verifier_key, new.verifier_key, until)
        self.entry(
            "log.key_rotated",
            {
                "old_key": old.verifier_key,
                "new_key": new.verifier_key,
                "overlap_until": until,
                "announcement": base64.b64encode(old.sign(message)).decode(),
            },
        )
        self.log_keys[-1]["valid_until"] = until
        self.log_keys.append(
            {
                "verifier_key": new.verifier_key,
                "valid_from": self.previous(),
                "valid_until": None,
            }
        )

    def previous(self) -> str:
        return format_time(self.time - timedelta(seconds=1))

    def register_witness(self, private: Ed25519PrivateKey, holder: str) -> None:
        text = _witness_key(private).encode()
        self.entry("witness_key.registered", {"holder": holder, "verifier_key": text})
        self.witness_keys.append(
            {
                "holder": holder,
                "verifier_key": text,
                "valid_from": self.previous(),
                "valid_until": None,
            }
        )

    def close(self, quorum: int = 0) -> Path:
        self.lines.close()
        keys = {
            "origin": self.origin,
            "log_keys": self.log_keys,
            "witness_keys": self.witness_keys,
            "witness_quorum": quorum,
        }
        (self.directory / "keys.json").write_text(json.dumps(keys, indent=2))
        return self.directory


def _witness_key(private: Ed25519PrivateKey) -> verifier.VerifierKey:
    return verifier.VerifierKey(
        "bank-1.example/witness", verifier.ALG_COSIGNATURE_V1, _raw(private)
    )


def _synthetic(tmp_path: Path) -> Synthetic:
    folder = tmp_path / "synthetic"
    folder.mkdir()
    return Synthetic(folder, LogKey("synthetic.example/log", Ed25519PrivateKey.generate()))


def test_verification_streams_a_large_export_in_constant_memory(tmp_path: Path) -> None:
    log = _synthetic(tmp_path)
    for n in range(20_000):
        log.entry("test.move", {"n": n})
        if n % 5_000 == 4_999:
            log.checkpoint(log.key)
    directory = log.close()
    seen: list[int] = []
    tracemalloc.start()
    try:
        report = verifier.verify_export(
            directory, log_keys=[log.key.verifier_key], progress=lambda n, _: seen.append(n)
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok, _reasons(report)
    assert (report.entries, report.checkpoints) == (20_001, 4)
    assert peak < 2_000_000, f"peak {peak:,} bytes"
    assert seen[-1] == 20_001
    assert len(seen) > 3


def test_a_key_rotation_verifies_end_to_end_and_a_retired_key_cannot_sign_new_history(
    tmp_path: Path,
) -> None:
    log = _synthetic(tmp_path)
    old, new = log.key, LogKey(log.origin, Ed25519PrivateKey.generate())
    log.entry("test.move", {"n": 1})
    log.checkpoint(old)
    log.rotate(old, new, timedelta(seconds=3))
    log.checkpoint(old, new)  # during the overlap: both sign
    log.entry("test.move", {"n": 2})
    log.checkpoint(new)
    for n in range(5):
        log.entry("test.move", {"n": n})
    log.checkpoint(old)  # the retired key signs history written after its overlap ended
    directory = log.close()
    report = verifier.verify_export(directory, log_keys=[new.verifier_key])
    assert [p.checkpoint for p in report.problems] == [4, 4], _reasons(report)
    assert "not valid for it (retired before its last entry" in _reasons(report)
    assert "latest checkpoint is not signed by any of the given log keys" in _reasons(report)
    (directory / "checkpoints" / "0000000004.txt").unlink()
    assert verifier.verify_export(directory, log_keys=[new.verifier_key]).ok
    assert verifier.verify_export(directory, log_keys=[old.verifier_key]).ok is False


def test_a_rotation_not_announced_by_the_old_key_is_refused(tmp_path: Path) -> None:
    log = _synthetic(tmp_path)
    thief = LogKey(log.origin, Ed25519PrivateKey.generate())
    log.rotate(thief, thief, timedelta(0))  # "announced" by a key that is not the log's
    log.checkpoint(log.key)
    report = verifier.verify_export(log.close(), log_keys=[log.key.verifier_key])
    assert "key rotation refused: it retires" in _reasons(report)


def test_witness_cosignatures_count_against_the_quorum(tmp_path: Path) -> None:
    log = _synthetic(tmp_path)
    witness = Ed25519PrivateKey.generate()
    log.register_witness(witness, "bank:bank-1")
    log.checkpoint(log.key, cosigners=(witness,))
    log.entry("test.move", {"n": 1})
    log.checkpoint(log.key)  # nobody cosigned this one
    directory = log.close(quorum=1)
    report = verifier.verify_export(directory, log_keys=[log.key.verifier_key])
    assert report.ok, _reasons(report)
    assert report.witnessed == 1
    assert [w.checkpoint for w in report.warnings if "not witnessed" in w.reason] == [2]
    demanded = verifier.verify_export(
        directory,
        log_keys=[log.key.verifier_key],
        witness_keys=[_witness_key(witness).encode()],
        quorum=1,
    )
    assert [p.checkpoint for p in demanded.problems] == [2]
    assert "not witnessed: 0 of the 1 witness cosignatures required" in demanded.problems[0].reason
    stranger = _witness_key(Ed25519PrivateKey.generate()).encode()
    assert not verifier.verify_export(
        directory, log_keys=[log.key.verifier_key], witness_keys=[stranger], quorum=1
    ).ok


# --- inclusion proof bundles ---------------------------------------------------------------------


def proof_bundle(ledger: Ledger, seq: int) -> dict[str, Any]:
    """An inclusion proof bundle of the fixed format, from the stored tree and latest checkpoint."""
    with ledger.readers() as session:
        signed = checkpoints.latest(session)
        assert signed is not None
        entry = session.get_one(LogEntry, seq)
        path = StoredTree(session).inclusion_proof(seq, signed.size)
        return {
            "format": verifier.PROOF_FORMAT,
            "entry": {"seq": seq, "body": entry.body.decode(), "hash": entry.hash.hex()},
            "tree_size": signed.size,
            "audit_path": [base64.b64encode(p).decode() for p in path],
            "checkpoint": signed.note,
            "log_keys": [ledger.key.verifier_key],
            "witness_keys": [],
            "witness_quorum": 0,
        }


def test_a_proof_bundle_verifies_offline_and_its_tampering_is_named(ledger: Ledger) -> None:
    for n in range(6):
        append(ledger, receipt("inst-1", f"ctr-{n}", LESSON))
    _issue(ledger)
    bundle = proof_bundle(ledger, 4)
    key = [ledger.key.verifier_key]
    assert verifier.verify_proof_bundle(bundle, key, [], 0) == []
    assert verifier.verify_proof_bundle(bundle, None, None, None) == []

    edited = json.loads(json.dumps(bundle))
    edited["entry"]["body"] = edited["entry"]["body"].replace("ctr-3", "ctr-9")
    problems = verifier.verify_proof_bundle(edited, key, [], 0)
    assert any("entry.hash is not the hash of entry.body" in p for p in problems)
    edited["entry"]["hash"] = verifier.leaf_hash(edited["entry"]["body"].encode()).hex()
    assert any(
        "audit path does not place the entry" in p
        for p in (verifier.verify_proof_bundle(edited, key, [], 0))
    )

    other = LogKey(ledger.key.name, Ed25519PrivateKey.generate()).verifier_key
    assert "not signed by any of the log keys" in " ".join(
        verifier.verify_proof_bundle(bundle, [other], [], 0)
    )
    moved = {**bundle, "entry": {**bundle["entry"], "seq": 3}}
    assert verifier.verify_proof_bundle(moved, key, [], 0)
    assert "not witnessed: 0 of the 1" in " ".join(verifier.verify_proof_bundle(bundle, key, [], 1))
    assert verifier.verify_proof_bundle({"format": "x"}, key, [], 0)
