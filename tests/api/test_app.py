"""The HTTP service: health, readiness, the public key and the API documentation."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi.testclient import TestClient

from api.app import create_app
from ledger import keys
from ledger.clock import SystemClock
from ledger.config import Settings
from ledger.db import make_engine
from ledger.policy import PolicyBook
from ledger.runtime import Ledger


@pytest.fixture
def client(ledger: Ledger) -> Iterator[TestClient]:
    with TestClient(create_app(ledger)) as test_client:
        yield test_client


def test_healthz_says_the_process_is_up(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_the_schema_and_log_size(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["log_size"] == 1


def test_readyz_is_a_503_problem_when_the_schema_is_behind(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}", key_dir=tmp_path / "k")
    key = keys.load_or_create(settings.key_dir, settings.log_name)
    unmigrated = Ledger(
        settings, make_engine(settings.database_url), key, SystemClock(), PolicyBook("national")
    )
    try:
        with TestClient(create_app(unmigrated)) as client:
            response = client.get("/readyz")
    finally:
        unmigrated.close()
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/problems/schema-not-current")
    assert "escrow migrate" in problem["detail"]


def test_the_public_key_is_served_in_every_form_and_verifies_signatures(
    client: TestClient, ledger: Ledger
) -> None:
    body = client.get("/v1/audit/public-key").json()
    raw = base64.b64decode(body["public_key"])
    assert raw == ledger.key.public_bytes
    assert body["origin"] == ledger.key.name
    assert body["key_id"] == keys.key_id(ledger.key.name, raw).hex()
    assert body["verifier_key"] == keys.verifier_key(ledger.key.name, raw)
    assert body["pem"] == ledger.key.public_pem()
    Ed25519PublicKey.from_public_bytes(raw).verify(ledger.key.sign(b"checkpoint"), b"checkpoint")


def test_the_api_documentation_is_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/healthz", "/readyz", "/v1/audit/public-key"} <= set(spec["paths"])
