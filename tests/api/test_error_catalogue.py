"""Every problem type the service can answer is in docs/api.md's error catalogue."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import api
import ledger
import settlement
from ledger.errors import LedgerError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _subclasses(cls: type[LedgerError]) -> Iterator[type[LedgerError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_problem_type_is_documented() -> None:
    for package in (ledger, settlement, api):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if ".migrations" not in module.name and not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    documented = DOCS.read_text()
    codes = {cls.code for cls in _subclasses(LedgerError)} - {"rules/rule"}
    missing = sorted(code for code in codes if f"| `{code}` |" not in documented)
    assert not missing, f"add these problem types to docs/api.md: {missing}"
