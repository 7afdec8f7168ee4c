"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, Response
from fastapi.responses import PlainTextResponse
from sqlalchemy import text

from cryptocheckout.kit.http import AppSettings, SessionMaker
from cryptocheckout.kit.problems import Problem
from cryptocheckout.kit.security import tokens_match

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


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={401: {"description": "METRICS_TOKEN is set and the bearer token is not it."}},
)
async def metrics(settings: AppSettings, authorization: Annotated[str, Header()] = "") -> Response:
    """Prometheus text; behind `Authorization: Bearer <METRICS_TOKEN>` when that is set."""
    from cryptocheckout.kit.metrics import REGISTRY

    expected = settings.metrics_token.get_secret_value()
    if expected:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not tokens_match(token.strip(), expected):
            raise Problem(
                401,
                "A valid metrics bearer token is required.",
                type_="unauthorized",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return PlainTextResponse(REGISTRY.render(), media_type="text/plain; version=0.0.4")
