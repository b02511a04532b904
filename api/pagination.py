"""Cursor pagination that stays stable while the log grows.

Every listed resource carries the seq of the log entry that created it, and seqs only grow. A page
is ordered by (seq, id) and the cursor is the last (seq, id) seen, so an append during paging lands
after the cursor and is met on a later page: no item is skipped and none is shown twice. Several
resources may share a seq (a batch report creates many lessons in one entry); the id breaks the tie.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from ledger.errors import InvalidRequest
from ledger.escrow.inputs import CODE
from ledger.money import JSON_SAFE_MAX

T = TypeVar("T")
DEFAULT_LIMIT = 100
IDENT = CODE
"""The shape of every id this service issues; a cursor naming anything else is refused."""
MAX_LIMIT = 500


class Page(BaseModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` back as ``cursor`` for the next one."""

    items: list[T]
    next_cursor: str | None = Field(
        description="Opaque; null when this is the last page (for now: later appends extend it)"
    )


Cursor = Annotated[
    str | None,
    Query(max_length=200, description="The next_cursor of the previous page; omit for the first"),
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")]


def encode(seq: int, ident: str) -> str:
    raw = json.dumps([seq, ident], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        seq, ident = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as error:
        raise InvalidRequest("the cursor is not one this service issued", field="cursor") from error
    if (
        not isinstance(seq, int)
        or isinstance(seq, bool)
        or not -1 <= seq <= JSON_SAFE_MAX
        or not isinstance(ident, str)
        or not IDENT.fullmatch(ident)
    ):
        raise InvalidRequest("the cursor is not one this service issued", field="cursor")
    return seq, ident


def paginate(
    session: Session,
    query: Select[Any],
    seq: InstrumentedAttribute[int] | ColumnElement[int],
    ident: InstrumentedAttribute[Any] | ColumnElement[Any],
    cursor: str | None,
    limit: int,
    convert: Callable[[Any], T],
) -> Page[T]:
    """The page after ``cursor`` of ``query`` (which selects one entity), ordered by (seq, id)."""
    if cursor is not None:
        last_seq, last_id = decode(cursor)
        query = query.where(or_(seq > last_seq, and_(seq == last_seq, ident > last_id)))
    rows: Sequence[Any] = session.scalars(query.order_by(seq, ident).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        last = rows[-1]
        next_cursor = encode(_value(last, seq), str(_value(last, ident)))
    return Page[Any](items=[convert(row) for row in rows], next_cursor=next_cursor)


def _value(row: Any, column: Any) -> Any:
    return getattr(row, column.key)
