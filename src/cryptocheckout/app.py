"""The FastAPI application: routers, error handling, the database and (optionally) a worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptocheckout import __version__, health
from cryptocheckout.admin.router import router as admin_router
from cryptocheckout.catalogue.router import router as catalogue_router
from cryptocheckout.config import Settings
from cryptocheckout.kit.db import create_engine, create_sessionmaker
from cryptocheckout.kit.limits import BodySizeLimit
from cryptocheckout.kit.problems import install_problem_handlers
from cryptocheckout.orders.router import router as orders_router


def create_app(settings: Settings, *, engine: AsyncEngine | None = None) -> FastAPI:
    """The shop's API. Given an `engine`, the app uses it and leaves disposing it to the caller."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None
        active = engine or create_engine(settings.database_url)
        app.state.engine = active
        app.state.sessionmaker = create_sessionmaker(active)
        try:
            yield
        finally:
            if own_engine:
                await active.dispose()

    app = FastAPI(
        title="cryptocheckout",
        version=__version__,
        summary="Crypto checkout for digital goods, on NOWPayments",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_problem_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.include_router(health.router)
    app.include_router(catalogue_router)
    app.include_router(orders_router)
    app.include_router(admin_router)
    return app
