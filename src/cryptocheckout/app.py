"""The FastAPI application: routers, error handling, the database and (optionally) a worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptocheckout import __version__, health
from cryptocheckout.admin.router import router as admin_router
from cryptocheckout.catalogue.router import router as catalogue_router
from cryptocheckout.config import Settings
from cryptocheckout.customer.router import router as customer_router
from cryptocheckout.kit.accesslog import AccessLog
from cryptocheckout.kit.db import create_engine, create_sessionmaker
from cryptocheckout.kit.limits import BodySizeLimit
from cryptocheckout.kit.problems import install_problem_handlers
from cryptocheckout.kit.runtime import freeze_startup_heap
from cryptocheckout.orders.router import router as orders_router
from cryptocheckout.outbound.router import router as outbound_router
from cryptocheckout.payments.router import router as payments_router
from cryptocheckout.webhooks.ingest import NotificationStore
from cryptocheckout.webhooks.router import IpnFastPath
from cryptocheckout.webhooks.router import router as webhooks_router
from cryptocheckout.worker import nowpayments_client, worker_from_settings


def create_app(
    settings: Settings, *, engine: AsyncEngine | None = None, run_worker: bool = False
) -> FastAPI:
    """The shop's API. Given an `engine`, the app uses it and leaves disposing it to the caller.

    With `run_worker`, a job worker runs in the same process (one process is a whole shop).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None
        active = engine or create_engine(settings.database_url)
        sessionmaker = create_sessionmaker(active)
        app.state.engine = active
        app.state.sessionmaker = sessionmaker
        app.state.nowpayments = nowpayments_client(settings)
        worker = worker_from_settings(sessionmaker, settings, app.state.nowpayments)
        store = NotificationStore(active, on_stored=worker.wake if run_worker else None)
        app.state.notification_store = store
        app.state.worker = worker
        await store.start()
        stop = asyncio.Event()
        worker_task = asyncio.create_task(worker.run(stop)) if run_worker else None
        freeze_startup_heap()
        try:
            yield
        finally:
            stop.set()
            if worker_task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(worker_task, timeout=10)
            await store.stop()
            await app.state.nowpayments.aclose()
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
    # Starlette runs the last added middleware first: access log, body limit, IPN fast path.
    app.add_middleware(IpnFastPath)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLog)
    app.include_router(health.router)
    app.include_router(catalogue_router)
    app.include_router(orders_router)
    app.include_router(customer_router)
    app.include_router(payments_router)
    app.include_router(webhooks_router)
    app.include_router(admin_router)
    app.include_router(outbound_router)
    return app
