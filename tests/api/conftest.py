"""An HTTP client over the test world, with one token per principal (and one of another tenant)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ledger.access import Role, create_token
from tests.escrow.world import World


@dataclass
class Api:
    """The app under test and tokens by name.

    Names: ``parent`` / ``other_parent``, ``institution`` (world.school, haishu) /
    ``other_institution`` (world.academy, yinzhou), ``bank`` / ``other_bank``, ``regulator``
    (jurisdiction ``*``) / ``district_regulator`` (haishu only), ``admin``.
    """

    client: TestClient
    world: World
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, who: str, role: Role, principal_id: str) -> str:
        _, secret = self.world.do(
            create_token, role=role.value, principal_id=principal_id, actor="admin:tests"
        )
        self.tokens[who] = secret
        return secret

    def headers(self, who: str | None, key: str | None = None) -> dict[str, str]:
        headers = {} if who is None else {"Authorization": f"Bearer {self.tokens[who]}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers

    def get(self, who: str | None, path: str, **params: Any) -> httpx.Response:
        return self.client.get(path, headers=self.headers(who), params=params)

    def post(
        self, who: str | None, path: str, body: Any = None, *, key: str | None = None
    ) -> httpx.Response:
        """POST with a fresh Idempotency-Key unless one is given."""
        return self.client.post(
            path, headers=self.headers(who, key or str(uuid.uuid4())), json=body
        )


@pytest.fixture
def api(world: World) -> Iterator[Api]:
    with TestClient(create_app(world.ledger), raise_server_exceptions=False) as client:
        built = Api(client, world)
        built.token("parent", Role.PARENT, world.parent)
        built.token("other_parent", Role.PARENT, world.other_parent)
        built.token("institution", Role.INSTITUTION, world.school)
        built.token("other_institution", Role.INSTITUTION, world.academy)
        built.token("bank", Role.BANK, world.bank)
        built.token("other_bank", Role.BANK, world.other_bank)
        built.token("regulator", Role.REGULATOR, world.regulator)
        built.token("district_regulator", Role.REGULATOR, world.district_regulator)
        built.token("admin", Role.ADMIN, "ops")
        yield built
