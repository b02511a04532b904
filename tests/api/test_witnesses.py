"""Witnesses end to end: registering over HTTP, collecting cosignatures from in-process witness
apps, the served note, the quorum, and a forked checkpoint refused with nothing stored."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select
from typer.testing import CliRunner

from api.cli import app as cli
from api.witness_app import witness_app
from ledger import checkpoints, verifier, witness, witnesses
from ledger.checkpoints import SignedCheckpoint
from ledger.config import Settings
from ledger.models import LogEntry
from ledger.runtime import Ledger
from ledger.witness import Witness
from ledger.witnesses import Cosignature
from settlement.worker import Worker
from tests.api.conftest import Api

NOW = 1_790_000_000


class Running:
    """A witness as a bank runs it: key and state files, and its app behind a test client."""

    def __init__(self, folder: Path, name: str, ledger: Ledger) -> None:
        folder.mkdir()
        self.key_file, self.state_file = folder / "key", folder / "state"
        self.name = name
        key = witness.create_key_file(self.key_file, name)
        witness.create_state_file(self.state_file)
        self.witness = Witness(
            key,
            [verifier.VerifierKey.parse(ledger.key.verifier_key)],
            self.state_file,
            clock=lambda: NOW,
        )
        self.verifier_key = key.verifier_key.encode()
        self.url = f"http://{name.split('/')[0]}"
        self.client = TestClient(witness_app(self.witness))


@pytest.fixture
def bank_witness(api: Api, tmp_path: Path) -> Running:
    return Running(tmp_path / "bank", "witness.bank.example/w1", api.world.ledger)


@pytest.fixture
def regulator_witness(api: Api, tmp_path: Path) -> Running:
    return Running(tmp_path / "regulator", "witness.regulator.example/w1", api.world.ledger)


def _register(api: Api, who: str, running: Running) -> dict[str, Any]:
    response = api.post(
        who, "/v1/witnesses", {"verifier_key": running.verifier_key, "url": running.url}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _grow(api: Api) -> None:
    world = api.world
    world.paid_contract(
        world.school,
        lessons=10,
        unit=4_000,
        class_size=20,
        parent=world.parent,
        student=world.student,
    )


def _checkpoint(ledger: Ledger) -> SignedCheckpoint:
    with ledger.sessions.begin() as session:
        signed = checkpoints.issue(session, ledger.log, ledger.key, reason="request", force=True)
        session.expunge(signed)
    return signed


def _stored(ledger: Ledger, checkpoint_id: int | None = None) -> list[Cosignature]:
    with ledger.readers() as session:
        query = select(Cosignature)
        if checkpoint_id is not None:
            query = query.where(Cosignature.checkpoint_id == checkpoint_id)
        return list(session.scalars(query))


def test_banks_and_regulators_register_their_witness_and_everyone_audit_sees_it(
    api: Api, bank_witness: Running, regulator_witness: Running
) -> None:
    body = _register(api, "bank", bank_witness)
    key = body["key"]
    assert key["holder"] == f"bank:{api.world.bank}"
    assert key["verifier_key"] == bank_witness.verifier_key
    assert key["name"] == "witness.bank.example/w1"
    assert key["active"] is True
    assert body["created"] is True
    assert body["receipt"]["seq"] == key["registered_seq"]
    with api.world.read() as session:
        entry = session.get(LogEntry, key["registered_seq"])
        assert entry is not None
        assert entry.type == "witness_key.registered"
        payload = json.loads(entry.body)["payload"]
    assert payload["holder"] == f"bank:{api.world.bank}"
    assert payload["verifier_key"] == bank_witness.verifier_key
    assert payload["url"] == bank_witness.url
    assert payload["name"] == bank_witness.name
    # The same key again is a no-op; the regulator registers its own.
    assert _register(api, "bank", bank_witness)["created"] is False
    _register(api, "district_regulator", regulator_witness)
    for who in ("bank", "other_bank", "regulator", "admin"):
        listed = api.get(who, "/v1/witnesses")
        assert listed.status_code == 200
        assert [k["name"] for k in listed.json()["items"]] == [
            bank_witness.name,
            regulator_witness.name,
        ]
    assert api.get("parent", "/v1/witnesses").status_code == 403
    assert (
        api.post(
            "admin",
            "/v1/witnesses",
            {"verifier_key": bank_witness.verifier_key, "url": bank_witness.url},
        ).status_code
        == 403
    )
    # Another bank cannot take the key or the name, nor revoke it.
    taken = api.post(
        "other_bank",
        "/v1/witnesses",
        {"verifier_key": bank_witness.verifier_key, "url": "http://x.example"},
    )
    assert taken.status_code == 409
    assert api.post("other_bank", f"/v1/witnesses/{key['id']}/revoke").status_code == 404
    revoked = api.post("bank", f"/v1/witnesses/{key['id']}/revoke")
    assert revoked.status_code == 200
    assert revoked.json()["key"]["active"] is False
    assert api.post("bank", f"/v1/witnesses/{key['id']}/revoke").status_code == 409
    # A revoked key never comes back.
    again = api.post(
        "bank",
        "/v1/witnesses",
        {"verifier_key": bank_witness.verifier_key, "url": bank_witness.url},
    )
    assert again.status_code == 409


def test_a_log_note_key_is_not_a_witness_key(api: Api) -> None:
    note_key = api.get(None, "/v1/audit/public-key").json()["verifier_key"]
    response = api.post(
        "bank", "/v1/witnesses", {"verifier_key": note_key, "url": "http://w.example"}
    )
    assert response.status_code == 422


def test_collected_cosignatures_verify_and_are_served_with_the_checkpoint(
    api: Api, bank_witness: Running
) -> None:
    ledger = api.world.ledger
    registered = _register(api, "bank", bank_witness)["key"]
    _grow(api)
    first = _checkpoint(ledger)
    done = witnesses.collect(ledger.sessions, ledger, first, bank_witness.client)
    assert [o.result for o in done.outcomes] == ["cosigned"], done.outcomes
    [stored] = _stored(ledger, first.id)
    assert stored.timestamp == NOW
    key = verifier.VerifierKey.parse(registered["verifier_key"])
    body = verifier.Note.parse(first.note).body
    assert verifier.Note.parse(f"{body}\n{stored.line}\n").cosigned_by(key) == NOW
    with ledger.readers() as session:
        served = witnesses.served_note(session, first)
    note = verifier.Note.parse(served)
    assert note.signed_by(verifier.VerifierKey.parse(ledger.key.verifier_key))
    assert note.cosigned_by(key) == NOW
    assert served.startswith(first.note)
    assert served.endswith(stored.line + "\n")
    # The log grew: the next checkpoint goes with a proof from the size the witness holds.
    _grow(api)
    second = _checkpoint(ledger)
    assert witnesses.collect(ledger.sessions, ledger, second, bank_witness.client).cosigned == 1
    assert bank_witness.witness.state().size == second.size
    # Collecting again asks nothing and stores nothing twice.
    again = witnesses.collect(ledger.sessions, ledger, second, bank_witness.client)
    assert [o.result for o in again.outcomes] == ["already"]
    assert len(_stored(ledger)) == 2


def test_a_witness_ahead_of_what_the_log_stored_answers_409_and_the_retry_succeeds(
    api: Api, bank_witness: Running
) -> None:
    ledger = api.world.ledger
    _register(api, "bank", bank_witness)
    _grow(api)
    first = _checkpoint(ledger)
    # The witness cosigned `first`, but the log never stored it (say it crashed meanwhile).
    bank_witness.witness.add_checkpoint(witness.AddCheckpoint(0, (), first.note))
    _grow(api)
    second = _checkpoint(ledger)
    done = witnesses.collect(ledger.sessions, ledger, second, bank_witness.client)
    assert [o.result for o in done.outcomes] == ["cosigned"], done.outcomes
    assert bank_witness.witness.state().size == second.size


def test_quorum_makes_a_checkpoint_witnessed(
    api: Api, bank_witness: Running, regulator_witness: Running
) -> None:
    ledger = api.world.ledger
    assert Settings().witness_quorum == 0
    assert witnesses.quorum(Settings(witness_quorum=2)) == 2
    _register(api, "bank", bank_witness)
    _register(api, "regulator", regulator_witness)
    _grow(api)
    signed = _checkpoint(ledger)
    witnesses.collect(ledger.sessions, ledger, signed, bank_witness.client)
    with ledger.readers() as session:
        assert witnesses.witnessed(session, signed, 1)
        assert not witnesses.witnessed(session, signed, 2)
        assert witnesses.witnessed(session, signed, witnesses.quorum(ledger.settings))
    # The regulator's witness is reached through its own client (one in-process app per URL).
    done = witnesses.collect(ledger.sessions, ledger, signed, regulator_witness.client)
    assert sorted(o.result for o in done.outcomes) == ["already", "cosigned"]
    with ledger.readers() as session:
        assert witnesses.witnessed(session, signed, 2)
        note = verifier.Note.parse(witnesses.served_note(session, signed))
        active = [k.verifier_key for k in witnesses.active_keys(session)]
    assert len(note.signatures) == 3
    assert all(note.cosigned_by(k) == NOW for k in active)


def test_a_forked_checkpoint_is_refused_with_409_and_nothing_is_stored(
    api: Api, bank_witness: Running
) -> None:
    ledger = api.world.ledger
    _register(api, "bank", bank_witness)
    _grow(api)
    honest = _checkpoint(ledger)
    assert witnesses.collect(ledger.sessions, ledger, honest, bank_witness.client).cosigned == 1
    _grow(api)
    # Someone with the log key signs another history of the same log, and of a larger size.
    with ledger.readers() as session:
        head = ledger.log.head(session).size
    assert head > honest.size
    forgeries = []
    for size in (honest.size, head):
        root = verifier.leaf_hash(b"another history %d" % size)
        with ledger.sessions.begin() as session:
            forged = SignedCheckpoint(
                size=size,
                root=root,
                note=checkpoints.sign(ledger.key, size, root),
                reason="request",
                issued_at=ledger.clock.now(),
            )
            session.add(forged)
            session.flush()
            session.expunge(forged)
        forgeries.append(forged.id)
        request = witness.AddCheckpoint(
            honest.size, tuple(_consistency(ledger, honest.size, size)), forged.note
        )
        answer = bank_witness.client.post("/add-checkpoint", content=request.encode())
        assert answer.status_code == 409
        assert "fork" in answer.text
        done = witnesses.collect(ledger.sessions, ledger, forged, bank_witness.client)
        assert [o.result for o in done.outcomes] == ["refused"], done.outcomes
        assert "fork" in done.outcomes[0].detail
        assert _stored(ledger, forged.id) == []
    assert bank_witness.witness.state().size == honest.size
    with ledger.readers() as session:
        assert session.scalar(select(func.count()).select_from(Cosignature)) == 1
    # `escrow verify` would flag the forgeries (the world checks it at teardown): remove them.
    with ledger.sessions.begin() as session:
        session.execute(delete(SignedCheckpoint).where(SignedCheckpoint.id.in_(forgeries)))


def _consistency(ledger: Ledger, old: int, size: int) -> list[bytes]:
    from ledger.merkle_store import StoredTree

    if old == size:
        return []
    with ledger.readers() as session:
        return StoredTree(session).consistency_proof(old, size)


def test_a_cosignature_that_does_not_verify_is_not_stored(api: Api, bank_witness: Running) -> None:
    ledger = api.world.ledger
    _register(api, "bank", bank_witness)
    _grow(api)
    signed = _checkpoint(ledger)

    class Liar:
        """Answers a well-formed line signed by another key under the registered name."""

        def post(self, url: str, *, content: bytes, headers: dict[str, str]) -> Any:
            other = witness.WitnessKey(bank_witness.name, Ed25519PrivateKey.generate())
            body = verifier.Note.parse(signed.note).body
            line = witness.signature_line(other.cosign(body, NOW))
            return type("R", (), {"status_code": 200, "headers": {}, "text": line})()

    done = witnesses.collect(ledger.sessions, ledger, signed, Liar())
    assert [o.result for o in done.outcomes] == ["failed"]
    assert _stored(ledger) == []


def test_the_worker_collects_after_each_checkpoint_and_survives_a_dead_witness(
    api: Api, bank_witness: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = api.world.ledger
    registered = _register(api, "bank", bank_witness)["key"]
    worker = Worker(ledger)
    monkeypatch.setattr(witnesses, "UrllibClient", lambda: bank_witness.client)
    _grow(api)
    signed = worker.checkpoint("schedule")
    assert len(_stored(ledger, signed.id)) == 1
    # A witness that does not answer: the checkpoint is still signed, nothing is stored.
    monkeypatch.undo()
    api.post("bank", f"/v1/witnesses/{registered['id']}/revoke")
    dead = Running(bank_witness.key_file.parent.parent / "dead", "dead.example/w", ledger)
    dead.url = "http://127.0.0.1:9"
    _register(api, "other_bank", dead)
    _grow(api)
    later = worker.checkpoint("schedule")
    assert later.size > signed.size
    assert _stored(ledger, later.id) == []


def test_escrow_witness_init_and_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ledger: Ledger
) -> None:
    runner = CliRunner()
    key_file, state_file = tmp_path / "w.key", tmp_path / "w.state"
    args = ["witness", "init", "--name", "witness.bank.example/w9"]
    result = runner.invoke(
        cli, [*args, "--key-file", str(key_file), "--state-file", str(state_file)]
    )
    assert result.exit_code == 0, result.output
    printed = verifier.VerifierKey.parse(result.stdout.strip().splitlines()[-1])
    assert printed.algorithm == 0x04
    assert printed.name == "witness.bank.example/w9"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = runner.invoke(
        cli, [*args, "--key-file", str(key_file), "--state-file", str(state_file)]
    )
    assert again.exit_code == 2
    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    result = runner.invoke(
        cli,
        [
            "witness",
            "serve",
            "--key-file",
            str(key_file),
            "--state-file",
            str(state_file),
            "--log-key",
            ledger.key.verifier_key,
            "--port",
            "9099",
        ],
    )
    assert result.exit_code == 0, result.output
    assert served["port"] == 9099
    with TestClient(served["app"]) as client:
        status = client.get("/").json()
        assert status["verifier_key"] == printed.encode()
        assert status["origin"] == ledger.key.name
        assert status["size"] == 0
        signed = _checkpoint(ledger)
        answer = client.post(
            "/add-checkpoint", content=witness.AddCheckpoint(0, (), signed.note).encode()
        )
        assert answer.status_code == 200
        note = verifier.Note.parse(f"{verifier.Note.parse(signed.note).body}\n{answer.text}")
        assert note.cosigned_by(printed) is not None
        stale = client.post(
            "/add-checkpoint", content=witness.AddCheckpoint(0, (), signed.note).encode()
        )
        assert stale.status_code == 409
        assert stale.headers["content-type"].startswith("text/x.tlog.size")
        assert stale.text == f"{signed.size}\n"
    assert base64.b64decode(json.loads(state_file.read_text())["root"]) == signed.root
