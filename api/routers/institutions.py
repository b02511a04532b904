"""Institutions: lesson reports, refunds to answer, liability and settlements."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1/institution", tags=["institutions"])
