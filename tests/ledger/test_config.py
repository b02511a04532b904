from pathlib import Path

import pytest
from pydantic import ValidationError

from ledger.config import DEFAULT_DATABASE_URL, Environment, Settings


def test_defaults_give_an_embedded_sqlite_service(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DATABASE_URL",
        "KEY_DIR",
        "LOG_NAME",
        "TIMEZONE",
        "POLICY_PROFILE",
        "ENVIRONMENT",
    ):
        monkeypatch.delenv(f"ESCROW_{name}", raising=False)
    settings = Settings()
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.key_dir == Path("var/keys")
    assert settings.timezone == "Asia/Shanghai"
    assert settings.policy_profile == "national"
    assert settings.environment is Environment.DEVELOPMENT


def test_every_setting_is_read_from_an_escrow_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESCROW_DATABASE_URL", "postgresql+psycopg://u@db.internal/escrow")
    monkeypatch.setenv("ESCROW_KEY_DIR", "/srv/keys")
    monkeypatch.setenv("ESCROW_LOG_NAME", "escrow.nb.gov.example/log")
    monkeypatch.setenv("ESCROW_TIMEZONE", "UTC")
    monkeypatch.setenv("ESCROW_POLICY_PROFILE", "ningbo")
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://u@db.internal/escrow"
    assert settings.key_dir == Path("/srv/keys")
    assert settings.log_name == "escrow.nb.gov.example/log"
    assert settings.timezone == "UTC"
    assert settings.policy_profile == "ningbo"


@pytest.mark.parametrize("scheme", ["postgresql://", "postgres://"])
def test_plain_postgres_urls_mean_psycopg_3(scheme: str) -> None:
    settings = Settings(database_url=f"{scheme}u@h/db")
    assert settings.database_url == "postgresql+psycopg://u@h/db"


def test_production_refuses_the_development_log_name() -> None:
    with pytest.raises(ValidationError, match="ESCROW_LOG_NAME must be set in production"):
        Settings(environment=Environment.PRODUCTION)
    assert Settings(environment=Environment.PRODUCTION, log_name="escrow.example.gov/log")


@pytest.mark.parametrize("name", ["has space", "a+b", ""])
def test_log_names_that_break_signed_note_keys_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="ESCROW_LOG_NAME"):
        Settings(log_name=name)


def test_an_unknown_time_zone_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="ESCROW_TIMEZONE"):
        Settings(timezone="Mars/Olympus_Mons")
