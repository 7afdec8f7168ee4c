"""The FastAPI application: routers, error handling, the database and (optionally) a worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cryptocheckout import __version__, health
from cryptocheckout.admin.router import router as admin_router
from cryptocheckout.catalogue.router import router as catalogue_router
from cryptocheckout.config import Settings
from cryptocheckout.kit.db import create_engine, create_sessionmaker
from cryptocheckout.kit.limits import BodySizeLimit
from cryptocheckout.kit.problems import install_problem_handlers
from cryptocheckout.orders.router import router as orders_router


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        try:
            yield
        finally:
            await engine.dispose()

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
