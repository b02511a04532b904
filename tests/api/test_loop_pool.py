"""Authentication runs on the event loop, so its connection must never wait for the shared pool."""

from __future__ import annotations

import time

from tests.api.conftest import Api


def test_requests_authenticate_while_every_pooled_connection_is_taken(api: Api) -> None:
    """Endpoint threads may hold every connection of the shared pool, and give them back only
    through the loop; an authentication that waited for one there would stall the process until
    the pool's timeout. It has a pool of its own that never makes a checkout wait."""
    engine = api.world.ledger.engine
    held = [engine.connect() for _ in range(engine.pool.size() + engine.pool._max_overflow)]  # type: ignore[attr-defined]
    try:
        started = time.monotonic()
        response = api.get("parent", "/v1/parent/contracts")
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < 5  # the shared pool would wait 30 s, then fail
        assert api.get(None, "/v1/parent/contracts").status_code == 401
    finally:
        for connection in held:
            connection.close()
