"""Regulators: institutions of their jurisdiction, supervision actions, the event log."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1/regulator", tags=["regulators"])
