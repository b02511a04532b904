"""Fixtures: one database per test, built from a template that the migrations made.

``--db=sqlite`` (default) copies a migrated SQLite file per test; ``--db=postgresql`` clones a migrated
template database per test on the server named by ESCROW_TEST_POSTGRES_URL, or on a temporary cluster
started for the session. Tests that use a database fixture are marked ``db`` automatically, which is
how the PostgreSQL pass selects them.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from ledger import schema
from ledger.clock import ManualClock
from ledger.config import Environment, Settings
from ledger.db import make_engine
from ledger.policy import POLICY_DIR
from ledger.runtime import Ledger
from tests import pgcluster
from tests.escrow.world import World, WorldFactory

DB_FIXTURES = {"database_url", "engine", "ledger", "settings", "world", "worlds"}
TEST_LOG_NAME = "test.tuition-escrow.example/log"
START = datetime(2026, 9, 1, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai on a Tuesday


def pytest_configure(config: pytest.Config) -> None:
    # Test modules that size themselves by database read this (xdist workers have no argv).
    os.environ["ESCROW_TEST_DB"] = str(config.getoption("--db"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="database the db-marked tests run on",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    database = config.getoption("--db")
    needs_pg = pytest.mark.skip(reason="needs PostgreSQL; runs in the PostgreSQL pass")
    needs_sqlite = pytest.mark.skip(reason="about SQLite only; runs in the SQLite pass")
    for item in items:
        if DB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)
        if item.get_closest_marker("postgresql") and database != "postgresql":
            item.add_marker(needs_pg)
        if item.get_closest_marker("sqlite") and database != "sqlite":
            item.add_marker(needs_sqlite)


@pytest.fixture(scope="session")
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--db"))


@pytest.fixture(scope="session")
def server_url(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLite: a folder for database files. PostgreSQL: a superuser URL to a running server."""
    if db_kind == "sqlite":
        yield str(tmp_path_factory.mktemp("sqlite"))
        return
    url = os.environ.get(pgcluster.ENV_URL)
    if url:
        yield url
        return
    if not pgcluster.available():
        pytest.exit("--db=postgresql but PostgreSQL is not installed", returncode=1)
    with pgcluster.TempCluster() as cluster:
        yield cluster.url


def _admin(url: str) -> Engine:
    return create_engine(url, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def template_url(db_kind: str, server_url: str) -> Iterator[str]:
    """A database migrated to head once per session; every test starts from a copy of it."""
    if db_kind == "sqlite":
        url = f"sqlite:///{Path(server_url) / 'template.db'}"
        engine = make_engine(url)
        schema.upgrade(engine)
        engine.dispose()
        # Fold the WAL into the main file so that copying that one file copies the database.
        raw = sqlite3.connect(make_url(url).database or "", isolation_level=None)
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw.close()
        yield url
        return
    name = f"escrow_template_{os.getpid()}"
    admin = _admin(server_url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    schema.upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


_counter = itertools.count()


@contextmanager
def _fresh_database(
    db_kind: str, server_url: str, template_url: str, folder: Path
) -> Iterator[str]:
    """A new, migrated, empty database copied from the template; dropped again on PostgreSQL."""
    if db_kind == "sqlite":
        target = folder / f"escrow-{next(_counter)}.db"
        shutil.copyfile(make_url(template_url).database or "", target)
        yield f"sqlite:///{target}"
        return
    template = make_url(template_url).database
    name = f"escrow_test_{os.getpid()}_{next(_counter)}"
    admin = _admin(server_url)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def database_url(db_kind: str, server_url: str, template_url: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated, empty database for this test."""
    with _fresh_database(db_kind, server_url, template_url, tmp_path) as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


ADVANCE_BASIS_POINTS = 750  # 7.5%: does not divide most prices evenly, on purpose


def _derived_profile(folder: Path, name: str, replacements: dict[str, str]) -> None:
    """A test profile: the national one with some values replaced (each must be found)."""
    text = (
        (POLICY_DIR / "national.toml")
        .read_text()
        .replace('name = "national"', f'name = "{name}"', 1)
    )
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    (folder / f"{name}.toml").write_text(text)


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """Deployment profiles for tests: ``advance`` (national rules, 7.5% cost advance) and
    ``working-t1`` (national rules, settlement one working day after release)."""
    folder = tmp_path / "policies"
    folder.mkdir()
    _derived_profile(
        folder, "advance", {"basis_points = 0 ": f"basis_points = {ADVANCE_BASIS_POINTS} "}
    )
    _derived_profile(
        folder,
        "working-t1",
        {
            'settlement_lag = { days = 1, unit = "calendar" }': (
                'settlement_lag = { days = 1, unit = "working" }'
            )
        },
    )
    return folder


def _settings(database_url: str, folder: Path, policy_dir: Path) -> Settings:
    return Settings(
        environment=Environment.TEST,
        database_url=database_url,
        key_dir=folder / "keys",
        log_name=TEST_LOG_NAME,
        policy_dir=policy_dir,
    )


@pytest.fixture
def settings(database_url: str, tmp_path: Path, policy_dir: Path) -> Settings:
    return _settings(database_url, tmp_path, policy_dir)


@pytest.fixture
def ledger(settings: Settings, clock: ManualClock) -> Iterator[Ledger]:
    """An open ledger on a fresh database: schema at head, key created, genesis written (seq 0)."""
    opened = Ledger.open(settings, clock=clock, migrate=False)
    yield opened
    opened.close()


@pytest.fixture
def world(ledger: Ledger) -> Iterator[World]:
    """Parties under every profile; every invariant is checked again when the test ends."""
    built = World(ledger)
    yield built
    built.check()


@pytest.fixture
def worlds(
    db_kind: str, server_url: str, template_url: str, tmp_path: Path, policy_dir: Path
) -> WorldFactory:
    """Each call opens a new world on its own fresh database, at the same start time.

    For property tests: every example starts from nothing, so examples neither slow down as the
    database grows nor depend on one another, and a failure replays exactly. The caller checks the
    invariants (the machines do after every step).
    """

    @contextmanager
    def open_world() -> Iterator[World]:
        with _fresh_database(db_kind, server_url, template_url, tmp_path) as url:
            opened = Ledger.open(
                _settings(url, tmp_path, policy_dir), clock=ManualClock(START), migrate=False
            )
            try:
                yield World(opened)
            finally:
                opened.close()

    return open_world
