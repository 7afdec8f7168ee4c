"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from sqlalchemy import text

from cryptocheckout.kit.http import SessionMaker
from cryptocheckout.kit.problems import Problem

router = APIRouter(tags=["health"])

READINESS_TIMEOUT_SECONDS = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "The database does not answer."}})
async def readyz(sessionmaker: SessionMaker) -> dict[str, str]:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS), sessionmaker() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to reach the database means not ready
        raise Problem(503, "The database does not answer.", type_="not-ready") from exc
    return {"status": "ready"}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics() -> PlainTextResponse:
    from cryptocheckout.kit.metrics import REGISTRY

    return PlainTextResponse(REGISTRY.render(), media_type="text/plain; version=0.0.4")
