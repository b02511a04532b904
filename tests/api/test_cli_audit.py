"""``escrow export`` and ``escrow verify --export / --proof``: offline, exit codes, no database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from ledger import checkpoints
from ledger.runtime import Ledger
from tests.ledger.entries import append, lesson, receipt
from tests.ledger.test_export import proof_bundle

runner = CliRunner()


@pytest.fixture
def signed(ledger: Ledger) -> Ledger:
    append(ledger, receipt("inst-1", "ctr-1", 30_000))
    append(ledger, lesson("inst-1", "ctr-1", 15_000))
    with ledger.sessions.begin() as session:
        checkpoints.issue(session, ledger.log, ledger.key, reason="request")
    return ledger


def _export(ledger: Ledger, directory: Path) -> None:
    url = ledger.engine.url.render_as_string(hide_password=False)
    result = runner.invoke(app, ["export", "--out", str(directory), "--database-url", url])
    assert result.exit_code == 0, result.output
    assert "exported 3 entries, 1 checkpoints" in result.output


@pytest.fixture
def no_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the configured database at a file that does not exist: offline modes must not
    create (or open) it."""
    missing = tmp_path / "nowhere" / "escrow.db"
    monkeypatch.setenv("ESCROW_DATABASE_URL", f"sqlite:///{missing}")
    return missing


def test_export_then_verify_offline_with_the_published_key(
    signed: Ledger, tmp_path: Path, no_database: Path
) -> None:
    directory = tmp_path / "export"
    _export(signed, directory)
    result = runner.invoke(
        app, ["verify", "--export", str(directory), "--log-key", signed.key.verifier_key]
    )
    assert result.exit_code == 0, result.output
    assert "OK: 3 entries, 1 checkpoints (0 witnessed)" in result.output
    assert "no witness quorum" in result.output
    assert not no_database.parent.exists()


def test_verify_export_json_and_exit_1_on_tampering(
    signed: Ledger, tmp_path: Path, no_database: Path
) -> None:
    directory = tmp_path / "export"
    _export(signed, directory)
    entries = directory / "entries.jsonl"
    entries.write_bytes(entries.read_bytes().replace(b'"amount":30000', b'"amount":30001', 1))
    result = runner.invoke(
        app,
        ["verify", "--export", str(directory), "--json", "--log-key", signed.key.verifier_key],
    )
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["ok"] is False
    assert report["problems"][0]["seq"] == 1
    assert "do not hash to the hash on its line" in report["problems"][0]["reason"]
    assert not no_database.exists()


def test_verify_export_without_a_key_warns_and_demanded_quorum_fails(
    signed: Ledger, tmp_path: Path, no_database: Path
) -> None:
    directory = tmp_path / "export"
    _export(signed, directory)
    result = runner.invoke(app, ["verify", "--export", str(directory)])
    assert result.exit_code == 0, result.output
    assert "no log key given" in result.output
    result = runner.invoke(app, ["verify", "--export", str(directory), "--quorum", "1"])
    assert result.exit_code == 1
    assert "not witnessed: 0 of the 1" in result.output
    assert runner.invoke(app, ["verify", "--export", str(tmp_path / "none")]).exit_code == 2
    assert not no_database.exists()


def test_verify_proof_offline(signed: Ledger, tmp_path: Path, no_database: Path) -> None:
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(proof_bundle(signed, 1)))
    trusted = ["verify", "--proof", str(path), "--log-key", signed.key.verifier_key]
    result = runner.invoke(app, trusted)
    assert result.exit_code == 0, result.output
    assert "OK: entry 1 is in the log at tree size 3" in result.output
    assert "warning" not in result.output

    fallback = runner.invoke(app, ["verify", "--proof", str(path), "--json"])
    assert fallback.exit_code == 0, fallback.output
    answer = json.loads(fallback.output)
    assert answer["ok"] is True
    assert "using the log keys written in the bundle itself" in answer["warnings"][0]

    bundle = json.loads(path.read_text())
    bundle["entry"]["body"] = bundle["entry"]["body"].replace("ctr-1", "ctr-2")
    path.write_text(json.dumps(bundle))
    result = runner.invoke(app, trusted)
    assert result.exit_code == 1
    assert "entry.hash is not the hash of entry.body" in result.output
    path.write_text("not json")
    assert runner.invoke(app, trusted).exit_code == 2
    assert not no_database.exists()
