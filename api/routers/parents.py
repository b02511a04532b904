"""Parents: their students, contracts, lessons, refunds and receipts."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1/parent", tags=["parents"])
