"""The escrow command line: verify's exit codes and report, migrate, key export, and serve."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from api.cli import app
from ledger import keys
from ledger.runtime import Ledger
from tests.ledger import tampering
from tests.ledger.entries import append, lesson, receipt

runner = CliRunner()


@pytest.fixture
def booked(ledger: Ledger) -> Ledger:
    append(ledger, receipt("inst-1", "ctr-1", 30_000))
    append(ledger, lesson("inst-1", "ctr-1", 15_000))
    return ledger


def _url(ledger: Ledger) -> str:
    return ledger.engine.url.render_as_string(hide_password=False)


def test_verify_exits_0_and_summarises_a_clean_log(booked: Ledger) -> None:
    result = runner.invoke(app, ["verify", "--database-url", _url(booked)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output
    assert "3 entries, 4 postings, 3 accounts" in result.output


def test_verify_exits_1_and_names_the_first_bad_seq(booked: Ledger) -> None:
    tampering.disable_guards(booked.engine)
    with booked.engine.begin() as conn:
        body = conn.execute(text("SELECT body FROM log_entries WHERE seq = 1")).scalar_one()
        conn.execute(text("UPDATE log_entries SET body = :b WHERE seq = 1"), {"b": body + b" "})
    result = runner.invoke(app, ["verify", "--database-url", _url(booked)])
    assert result.exit_code == 1, result.output
    assert "first bad seq 1: hash_mismatch" in result.output


def test_verify_json_is_machine_readable(booked: Ledger) -> None:
    result = runner.invoke(app, ["verify", "--json", "--database-url", _url(booked)])
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["ok"] is True
    assert (report["entries"], report["postings"], report["accounts"]) == (3, 4, 3)
    assert report["first_problem"] is None


def test_verify_refuses_a_database_whose_schema_is_not_current(tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", "--database-url", f"sqlite:///{tmp_path / 'new.db'}"])
    assert result.exit_code == 2
    assert "escrow migrate" in result.output


def test_migrate_then_verify_an_empty_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert runner.invoke(app, ["migrate", "--database-url", url]).exit_code == 0
    result = runner.invoke(app, ["verify", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert "0 entries" in result.output


def test_key_export_writes_the_log_key_named_by_the_genesis_entry(
    booked: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESCROW_KEY_DIR", str(booked.settings.key_dir))
    monkeypatch.setenv("ESCROW_LOG_NAME", booked.settings.log_name)
    out = tmp_path / "log.pub"
    result = runner.invoke(
        app, ["key", "export", "--out", str(out), "--database-url", _url(booked)]
    )
    assert result.exit_code == 0, result.output
    verifier, pem = out.read_text().split("\n", 1)
    assert verifier == booked.key.verifier_key
    assert pem.strip() == booked.key.public_pem()
    shown = runner.invoke(app, ["key", "show", "--database-url", _url(booked)])
    assert verifier in shown.output


def test_key_export_never_creates_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESCROW_KEY_DIR", str(tmp_path / "keys"))
    result = runner.invoke(
        app, ["key", "export", "--database-url", f"sqlite:///{tmp_path / 'x.db'}"]
    )
    assert result.exit_code == 2
    assert "no log key" in result.output
    assert not (tmp_path / "keys" / "log-ed25519.pem").exists()
    assert not (tmp_path / "x.db").exists()


def test_key_export_refuses_a_key_that_is_not_the_logs(
    booked: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys.load_or_create(tmp_path / "other", booked.settings.log_name)
    monkeypatch.setenv("ESCROW_KEY_DIR", str(tmp_path / "other"))
    monkeypatch.setenv("ESCROW_LOG_NAME", booked.settings.log_name)
    result = runner.invoke(app, ["key", "export", "--database-url", _url(booked)])
    assert result.exit_code == 1
    assert "restore the original key" in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCROW_")}
    return subprocess.Popen(
        [sys.executable, "-m", "api", *args],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(process: subprocess.Popen[str], marker: str) -> list[str]:
    """Read the process's output line by line (blocking, no sleeping) until ``marker`` appears."""
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            return seen
    pytest.fail(f"the process ended before printing {marker!r}:\n{''.join(seen)}")


def test_serve_starts_on_a_fresh_folder_and_answers_health_checks(tmp_path: Path) -> None:
    port = _free_port()
    process = _spawn(tmp_path, "serve", "--port", str(port))
    try:
        seen = _wait_for(process, "Application startup complete")
        response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert response.status_code == 200
        assert response.json()["log_size"] == 1
        assert (tmp_path / "var" / "escrow.db").exists()
        assert (tmp_path / "var" / "keys" / "log-ed25519.pem").exists()
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=15)
    output = "".join(seen) + rest
    assert f"listening on http://127.0.0.1:{port}" in output
    assert "scheduler: settlement daily at 02:00 Asia/Shanghai" in output
    assert process.returncode == 0


def test_worker_runs_the_jobs_alone_and_stops_cleanly(tmp_path: Path) -> None:
    assert (
        runner.invoke(
            app, ["migrate", "--database-url", f"sqlite:///{tmp_path / 'var' / 'escrow.db'}"]
        ).exit_code
        == 0
    )
    process = _spawn(tmp_path, "worker")
    try:
        _wait_for(process, "catching up first")
        _wait_for(process, "settled 0 batches")  # the catch-up ran: sweeps, then settlement
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=15)
    assert process.returncode == 0
