"""Schemathesis against the app's own OpenAPI document, with a valid token of the right role.

Hypothesis generates requests from the schema, valid and not, for every operation. Whatever it
sends, the service must not answer 5xx, must answer only the statuses and content types the
document declares, and every response body must match its declared schema. The number of
examples is bounded so that the run stays within seconds per database.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.python import asgi

from api.app import create_app
from tests.api.conftest import Api

# The PostgreSQL pass repeats what the SQLite pass explored, for the database's own behaviour
# (text with NUL bytes, integer overflow); fewer examples keep the whole suite within its budget.
EXAMPLES = 5 if os.environ.get("ESCROW_TEST_DB") == "postgresql" else 12

ROLE_BY_PREFIX = {
    "/v1/parent/": "parent",
    "/v1/institution/": "institution",
    "/v1/bank/": "bank",
    "/v1/regulator/": "regulator",
    "/v1/admin/": "admin",
    "/v1/audit/": "regulator",
}


# The document is built without a database (FastAPI's openapi() runs no lifespan); each test
# sends its requests through the test client of its own fresh world.
schema = schemathesis.openapi.from_dict(create_app().openapi())


def _token_for(path: str, api: Api) -> dict[str, str]:
    for prefix, who in ROLE_BY_PREFIX.items():
        if path.startswith(prefix):
            return {"Authorization": f"Bearer {api.tokens[who]}"}
    return {}


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_server_errors_and_responses_match_the_document(case: Any, api: Api) -> None:
    headers = {**(case.headers or {}), **_token_for(case.path, api)}
    # A requests-compatible client that calls this world's app in-process.
    with asgi.get_client(api.client.app) as client:
        case.call_and_validate(
            session=client,
            base_url=f"http://{asgi.HOST}",
            headers=headers,
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_headers_conformance,
                response_schema_conformance,
            ],
        )
