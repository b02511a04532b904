"""Log key rotation end to end: announced by the old key, both signatures during the overlap,
the new key alone after it, and `escrow verify` holding the history to the keys valid at the time."""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from typer.testing import CliRunner

from api.cli import app
from ledger import checkpoints, keys, rotation, verifier
from ledger.checkpoints import SignedCheckpoint
from ledger.clock import ManualClock
from ledger.config import Settings
from ledger.errors import InvalidRequest, LogKeyMismatch
from ledger.log import Event, format_time
from ledger.runtime import Ledger, check_key
from ledger.verify import ProblemKind, verify_database
from tests.ledger.entries import append, receipt

LESSON = 15_000
OVERLAP = timedelta(days=7)


def _issue(ledger: Ledger, *, key: keys.LogKey | None = None) -> SignedCheckpoint:
    with ledger.sessions.begin() as session:
        signed = checkpoints.issue(
            session, ledger.log, key or ledger.key, reason="request", force=True
        )
        session.expunge(signed)
    return signed


def _vkey(key: keys.LogKey) -> verifier.VerifierKey:
    return verifier.VerifierKey.parse(key.verifier_key)


def _signers(signed: SignedCheckpoint, *candidates: keys.LogKey) -> list[str]:
    """The candidates whose signature line verifies, in the note's line order."""
    note = verifier.Note.parse(signed.note)
    valid = {k.key_id: k.verifier_key for k in candidates if note.signed_by(_vkey(k))}
    return [valid[line.key_id] for line in note.signatures if line.key_id in valid]


def _rotate(ledger: Ledger, settings: Settings) -> tuple[keys.LogKey, keys.LogKey, int]:
    old = ledger.key
    new = keys.create_rotated(settings.key_dir, old.name)
    with ledger.sessions.begin() as session:
        entry = rotation.rotate(session, ledger.log, old, new, ledger.clock.now() + OVERLAP)
    return old, new, entry.seq


def _reopen(ledger: Ledger, settings: Settings, clock: ManualClock) -> Ledger:
    ledger.close()
    return Ledger.open(settings, clock=clock, migrate=False)


def _checkpoint_problems(ledger: Ledger) -> list[str]:
    report = verify_database(ledger.engine, invariants=False)
    return [p.detail for p in report.problems if p.kind is ProblemKind.CHECKPOINT]


def test_a_rotation_verifies_end_to_end(
    ledger: Ledger, settings: Settings, clock: ManualClock
) -> None:
    append(ledger, receipt("inst-1", "ctr-1", LESSON))
    before = _issue(ledger)
    old, new, rotated_at = _rotate(ledger, settings)
    assert (settings.key_dir / keys.KEY_FILE).exists()
    assert (settings.key_dir / keys.rotated_key_file(new)).exists()

    # The entry names both keys; the announcement verifies with the old key only.
    with ledger.readers() as session:
        found = rotation.chain(session)
        assert found is not None
        assert not found.problems
        assert [p.key for p in found.periods] == [_vkey(old), _vkey(new)]
        periods = rotation.log_keys(session)
    assert [(k.encode(), until is None) for k, _, until in periods] == [
        (old.verifier_key, False),
        (new.verifier_key, True),
    ]
    assert periods[0][2] == clock.now() + OVERLAP
    assert periods[1][1] == periods[0][2] - OVERLAP

    # A restart loads the new key as current, with the old one still signing in the overlap.
    ledger = _reopen(ledger, settings, clock)
    try:
        assert ledger.key.verifier_key == new.verifier_key
        with ledger.readers() as session:
            check_key(session, ledger.key)
            with pytest.raises(LogKeyMismatch, match="current key"):
                check_key(session, keys.load(settings.key_dir, settings.log_name))
        append(ledger, receipt("inst-1", "ctr-2", LESSON))
        during = _issue(ledger)
        clock.advance(OVERLAP + timedelta(seconds=1))
        append(ledger, receipt("inst-1", "ctr-3", LESSON))
        after = _issue(ledger)

        assert _signers(before, old, new) == [old.verifier_key]
        assert _signers(during, old, new) == [new.verifier_key, old.verifier_key]
        assert _signers(after, old, new) == [new.verifier_key]
        assert len(verifier.Note.parse(after.note).signatures) == 1
        assert during.size > rotated_at
        report = verify_database(ledger.engine, invariants=False)
        assert report.ok, report.problems

        # The old key alone, after its overlap, is reported.
        # As a service that never restarted would: the genesis file's key only.
        _issue(ledger, key=keys.load(settings.key_dir, settings.log_name))
        problems = _checkpoint_problems(ledger)
        assert len(problems) == 1
        assert "not signed by the log key valid when it was issued" in problems[0]
        assert "retired" in problems[0]
    finally:
        ledger.close()


def test_the_new_key_may_not_sign_history_before_its_rotation(
    ledger: Ledger, settings: Settings
) -> None:
    append(ledger, receipt("inst-1", "ctr-1", LESSON))
    _old, new, rotated_at = _rotate(ledger, settings)
    with ledger.sessions.begin() as session:
        root = checkpoints.StoredTree(session).root(rotated_at)
        session.add(
            SignedCheckpoint(
                size=rotated_at,
                root=root,
                note=checkpoints.sign(new, rotated_at, root),
                reason="request",
                issued_at=ledger.clock.now(),
            )
        )
    problems = _checkpoint_problems(ledger)
    assert len(problems) == 1
    assert "not signed by the log key valid" in problems[0]


def test_a_rotation_not_announced_by_the_old_key_is_refused_and_reported(
    ledger: Ledger, settings: Settings, clock: ManualClock
) -> None:
    old = ledger.key
    impostor = keys.LogKey(old.name, Ed25519PrivateKey.generate())
    new = keys.LogKey(old.name, Ed25519PrivateKey.generate())
    until = format_time(clock.now() + OVERLAP)
    message = rotation.announcement_message(old.verifier_key, new.verifier_key, until)
    forged = {
        "old_key": old.verifier_key,
        "new_key": new.verifier_key,
        "overlap_until": until,
        "announcement": base64.b64encode(impostor.sign(message)).decode(),
    }
    with ledger.sessions.begin() as session, pytest.raises(InvalidRequest, match="old key"):
        rotation.append_rotation(session, ledger.log, **forged)
    # Other refusals at creation: an overlap in the past, a key of another log, not the current.
    honest = base64.b64encode(old.sign(message)).decode()
    bad_cases = [
        dict(forged, announcement=honest, overlap_until=format_time(clock.now() - OVERLAP)),
        dict(forged, announcement=honest, new_key=keys.verifier_key("other/log", new.public_bytes)),
        dict(forged, announcement=honest, old_key=new.verifier_key),
    ]
    for case in bad_cases:
        with ledger.sessions.begin() as session, pytest.raises(InvalidRequest):
            rotation.append_rotation(session, ledger.log, **case)
    with ledger.readers() as session:
        assert (
            session.scalars(
                select(rotation.LogEntry.seq).where(
                    rotation.LogEntry.type == rotation.ROTATION_TYPE
                )
            ).all()
            == []
        )

    # Written behind the service's back, the entry is reported, and its key is not trusted.
    with ledger.sessions.begin() as session:
        seq = ledger.log.append(session, Event(rotation.ROTATION_TYPE, "system", forged)).seq
    checkpoint = _issue(ledger, key=new)
    report = verify_database(ledger.engine, invariants=False)
    found = [(p.seq, p.detail) for p in report.problems if p.kind is ProblemKind.CHECKPOINT]
    assert (
        seq,
        f"key rotation at seq {seq} is refused: the announcement is not signed by the old key",
    ) in found
    assert any(f"checkpoint {checkpoint.id} " in detail for _, detail in found)
    with ledger.readers() as session:
        chain = rotation.chain(session)
        assert chain is not None
        assert chain.current == _vkey(old)


def test_escrow_key_rotate_announces_a_new_key_that_the_service_then_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESCROW_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("ESCROW_LOG_NAME", "escrow.test/rotation")
    url = f"sqlite:///{tmp_path / 'escrow.db'}"
    runner = CliRunner()
    assert runner.invoke(app, ["migrate", "--database-url", url]).exit_code == 0
    rotated = runner.invoke(app, ["key", "rotate", "--overlap-days", "3", "--database-url", url])
    assert rotated.exit_code == 0, rotated.output
    new_key = rotated.stdout.strip().splitlines()[-1]
    assert verifier.VerifierKey.parse(new_key).name == "escrow.test/rotation"
    files = {p.name for p in (tmp_path / "keys").iterdir()}
    fingerprint = verifier.VerifierKey.parse(new_key).key_id.hex()
    assert files == {keys.KEY_FILE, f"log-ed25519-{fingerprint}.pem"}
    shown = runner.invoke(app, ["key", "show", "--database-url", url])
    assert shown.exit_code == 0
    assert new_key in shown.stdout
    checked = runner.invoke(app, ["verify", "--database-url", url])
    assert checked.exit_code == 0, checked.output
    settings = Settings(database_url=url)
    opened = Ledger.open(settings, migrate=False)
    try:
        assert opened.key.verifier_key == new_key
        with opened.readers() as session:
            last = checkpoints.latest(session)
            assert last is not None
            assert len(verifier.Note.parse(last.note).signatures) == 2
    finally:
        opened.close()
    # A second rotation retires the current (new) key; the chain grows by one.
    again = runner.invoke(app, ["key", "rotate", "--overlap-days", "0", "--database-url", url])
    assert again.exit_code == 0, again.output
    assert runner.invoke(app, ["verify", "--database-url", url]).exit_code == 0
