"""Escrow tests run against a world of parties, with the invariants checked after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.config import Settings
from ledger.policy import POLICY_DIR
from ledger.runtime import Ledger
from tests.escrow.world import World

ADVANCE_BASIS_POINTS = 750  # 7.5%: does not divide most prices evenly, on purpose


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A deployment profile folder with an ``advance`` profile: national rules, 7.5% advance."""
    folder = tmp_path / "policies"
    folder.mkdir()
    text = (POLICY_DIR / "national.toml").read_text()
    text = text.replace('name = "national"', 'name = "advance"', 1)
    text = text.replace("basis_points = 0 ", f"basis_points = {ADVANCE_BASIS_POINTS} ", 1)
    assert f"basis_points = {ADVANCE_BASIS_POINTS}" in text
    (folder / "advance.toml").write_text(text)
    return folder


@pytest.fixture
def settings(settings: Settings, policy_dir: Path) -> Settings:
    return settings.model_copy(update={"policy_dir": policy_dir})


@pytest.fixture
def world(ledger: Ledger) -> Iterator[World]:
    built = World(ledger)
    yield built
    built.check()
