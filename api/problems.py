"""RFC 9457 problem details: the one shape every error response takes.

Every refusal has a stable ``type`` URI per rule (``.../problems/<code>``), a ``title``, the HTTP
``status`` and a ``detail`` naming the limit and the value. Validation errors add ``errors``, one
per bad field. Anything unexpected still answers a problem document (``internal-error``) and is
logged with its traceback: a 500 is a bug, but the client is never handed a stack trace or HTML.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledger.errors import LedgerError

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://tuition-escrow.example/problems/"
MAX_BODY_BYTES = 1_048_576
"""1 MiB: a batch of 1,000 lesson reports is about 200 KB."""

log = logging.getLogger("api")

_HTTP_CODES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Missing or invalid token"),
    403: ("forbidden", "Not allowed for this role"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("body-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


class FieldError(BaseModel):
    """One bad field of a request."""

    field: str = Field(description="Where: body.lessons[3].delivered_at, query.limit, ...")
    message: str
    type: str = Field(description="The validation rule broken (pydantic's error type)")


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(examples=[PROBLEM_BASE + "rules/max-lessons"])
    title: str = Field(examples=["Too many lessons in one charge"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["72 lessons requested; the limit is 60"])
    errors: list[FieldError] | None = Field(
        default=None, description="Validation errors only: each bad field"
    )

    model_config = {"extra": "allow"}


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """A problem+json response whose ``type`` is stable per rule (``.../problems/<code>``)."""
    body = {"type": PROBLEM_BASE + code, "title": title, "status": status, "detail": detail}
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the problem documents an endpoint may answer."""
    described = {
        400: "The body could not be read as JSON (e.g. nested too deeply)",
        401: "Missing, unknown, expired or revoked token",
        403: "The token's role may not call this endpoint",
        404: "No such resource, or it belongs to another tenant",
        409: "Refused in the current state, or an Idempotency-Key reused with another body",
        413: "Request body too large",
        422: "Invalid input, or a regulation rule refused it",
    }
    return {
        status: {
            "model": Problem,
            "description": described.get(status, "Problem"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def _location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


async def _ledger_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, LedgerError)
    return problem(error.status, error.code, error.title, error.detail, **error.context)


async def _validation_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    errors = [
        {"field": _location(tuple(e.get("loc", ()))), "message": e["msg"], "type": e["type"]}
        for e in error.errors()
    ]
    first = errors[0] if errors else {"field": "request", "message": "invalid"}
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return problem(
        422,
        "validation-error",
        "Invalid request",
        f"{first['field']}: {first['message']}{more}",
        errors=errors,
    )


async def _http_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code, title = _HTTP_CODES.get(error.status_code, ("http-error", "HTTP error"))
    detail = error.detail if isinstance(error.detail, str) else title
    headers = None if error.headers is None else dict(error.headers)
    return problem(error.status_code, code, title, detail, headers=headers)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(
        500,
        "internal-error",
        "Internal error",
        "the service failed unexpectedly; nothing was committed; the error is logged",
    )


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, whether or not Content-Length says so."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # FastAPI passes an HTTPException raised while reading the body through
                    # unchanged (any other exception would become a 400).
                    raise StarletteHTTPException(
                        413, f"the request body is over the limit of {self.limit} bytes"
                    )
            return message

        await self.app(scope, limited, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(
            413,
            "body-too-large",
            "Request body too large",
            f"the request body is over the limit of {self.limit} bytes",
            limit=self.limit,
        )
        await response(scope, receive, send)


REPLAYED = {
    "description": "Present (``true``) when this is the stored first response to the same "
    "Idempotency-Key and request, replayed without a second effect",
    "schema": {"type": "string", "enum": ["true"]},
}


def _document_shared_errors(app: FastAPI) -> None:
    """Add to every operation of the OpenAPI document the problems any request may meet.

    Authentication (401) and role (403) come from the bearer dependency; a body that cannot be
    read is 400, any invalid parameter, header or body (malformed JSON included) 422, an
    oversized body 413. Successful POSTs may be replays, marked by ``Idempotent-Replayed``. Declaring them once here keeps the
    document honest for every endpoint, present and future (the schemathesis test checks it).
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        for path_item in document.get("paths", {}).values():
            for operation in path_item.values():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                wanted: list[int] = []
                if operation.get("security"):
                    wanted += [401, 403]
                if operation.get("parameters") or operation.get("requestBody"):
                    wanted.append(422)
                if operation.get("requestBody") or any(
                    p.get("in") == "header" for p in operation.get("parameters", [])
                ):
                    wanted += [400, 413]
                for status, spec in responses(*wanted).items():
                    entry = {k: v for k, v in spec.items() if k != "model"}
                    if status == 422:  # FastAPI's own 422 schema is not what this API answers
                        operation["responses"]["422"] = entry
                    else:
                        operation["responses"].setdefault(str(status), entry)
                operation["responses"].pop("default", None)
                if any(p.get("name") == "Idempotency-Key" for p in operation.get("parameters", [])):
                    for status, response in operation["responses"].items():
                        if status.startswith("2"):
                            response.setdefault("headers", {})["Idempotent-Replayed"] = REPLAYED
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    """Route every error through ``problem``."""
    app.add_exception_handler(LedgerError, _ledger_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(BodyLimit)
    _document_shared_errors(app)
