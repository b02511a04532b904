"""Custody banks: receipts, payout instructions and answers, refunds paid, balances."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1/bank", tags=["banks"])
