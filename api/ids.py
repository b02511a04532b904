"""The shape of ids and codes in requests: the one the services check (``inputs.CODE``).

Every router validates ids with the same pattern, so the OpenAPI document states it and a bad id
is a 422 naming the field before any query runs.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import Field

from ledger.escrow.inputs import CODE

ID_PATTERN = CODE.pattern
"""1-64 letters, digits or ``_.:-``, starting with a letter or digit."""

IdField = Annotated[str, Field(pattern=ID_PATTERN, max_length=64)]
"""An id (or account, or reference) in a request body."""

IdPath = Annotated[str, Path(pattern=ID_PATTERN, max_length=64)]
"""An id in a URL path."""
