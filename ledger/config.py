"""Settings: one pydantic-settings class, every field overridable with an ``ESCROW_`` variable.

Defaults give a zero-set-up development service on an embedded SQLite file. A production deployment
must name its own log origin: the origin is part of every checkpoint a bank or regulator keeps, so two
deployments sharing the development default could be confused with each other.
"""

from __future__ import annotations

import re
from datetime import time
from enum import StrEnum
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./var/escrow.db"
DEFAULT_LOG_NAME = "tuition-escrow.localhost/log"

# C2SP signed-note key names: printable, no spaces or plus signs (they separate fields of a key).
_LOG_NAME = re.compile(r"^[\x21-\x2a\x2c-\x7e]{1,128}$")
_PROFILE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


class Environment(StrEnum):
    """Where the service runs; production refuses development defaults."""

    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Configuration of one tuition-escrow deployment."""

    model_config = SettingsConfigDict(env_prefix="ESCROW_", extra="ignore")

    environment: Environment = Environment.DEVELOPMENT
    database_url: str = DEFAULT_DATABASE_URL
    """SQLAlchemy URL; ``postgresql+psycopg://user@host/db`` switches to PostgreSQL."""
    key_dir: Path = Path("./var/keys")
    """Where the log's Ed25519 signing key lives (created on first start, mode 0600)."""
    log_name: str = DEFAULT_LOG_NAME
    """The log's origin: first line of every checkpoint and the name of its signing key."""
    timezone: str = "Asia/Shanghai"
    """Zone of business dates, settlement cut-offs and working days; stored times are UTC."""
    policy_profile: str = "national"
    """Name of the default regional policy profile (limits, windows, settlement lag)."""
    policy_dir: Path | None = None
    """A folder of the deployment's own ``<name>.toml`` profiles, searched before the shipped ones."""
    settlement_time: time = time(2, 0)
    """Local time (``timezone``) of the daily settlement run."""
    sweep_minutes: int = 15
    checkpoint_minutes: int = 10
    """How often the worker signs a checkpoint (also at the end of every settlement run)."""
    """How often the deadline sweeps run."""
    scheduler: bool = True
    """Run the scheduled jobs inside ``escrow serve``; turn off when a separate worker runs them."""
    witness_quorum: int = 0
    """Cosignatures of distinct witnesses a checkpoint needs to count as witnessed (0: none)."""

    @field_validator("database_url")
    @classmethod
    def _normalise_postgres_scheme(cls, url: str) -> str:
        # psycopg 3 is the only PostgreSQL driver installed; plain postgres URLs mean it.
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @field_validator("log_name")
    @classmethod
    def _check_log_name(cls, name: str) -> str:
        if not _LOG_NAME.match(name):
            raise ValueError(
                "ESCROW_LOG_NAME must be 1-128 printable ASCII characters without spaces or '+'"
            )
        return name

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"ESCROW_TIMEZONE: unknown time zone {zone!r}") from None
        return zone

    @field_validator("policy_profile")
    @classmethod
    def _check_profile_name(cls, name: str) -> str:
        if not _PROFILE.match(name):
            raise ValueError(f"ESCROW_POLICY_PROFILE: {name!r} is not a profile name")
        return name

    @field_validator("sweep_minutes", "checkpoint_minutes")
    @classmethod
    def _check_minutes(cls, minutes: int) -> int:
        if not 1 <= minutes <= 1440:
            raise ValueError("ESCROW_SWEEP_MINUTES and ESCROW_CHECKPOINT_MINUTES: 1..1440")
        return minutes

    @field_validator("witness_quorum")
    @classmethod
    def _check_quorum(cls, quorum: int) -> int:
        if not 0 <= quorum <= 100:
            raise ValueError("ESCROW_WITNESS_QUORUM must be within 0..100")
        return quorum

    @model_validator(mode="after")
    def _refuse_development_defaults_in_production(self) -> Settings:
        if self.environment is Environment.PRODUCTION and self.log_name == DEFAULT_LOG_NAME:
            raise ValueError(
                "ESCROW_LOG_NAME must be set in production: the development default origin "
                f"{DEFAULT_LOG_NAME!r} would make this log indistinguishable from others"
            )
        return self

    @property
    def zone(self) -> ZoneInfo:
        """The business time zone as a tzinfo."""
        return ZoneInfo(self.timezone)
