"""The FastAPI application: routers, error handling, the database and (optionally) a worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptocheckout import __version__, health
from cryptocheckout.admin.console import install_console
from cryptocheckout.admin.router import router as admin_router
from cryptocheckout.catalogue.router import router as catalogue_router
from cryptocheckout.config import Settings
from cryptocheckout.customer.router import router as customer_router
from cryptocheckout.delivery.router import router as delivery_router
from cryptocheckout.kit.accesslog import AccessLog
from cryptocheckout.kit.db import create_engine, create_sessionmaker
from cryptocheckout.kit.encryption import keyring_of
from cryptocheckout.kit.headers import SecurityHeaders
from cryptocheckout.kit.limits import BodySizeLimit
from cryptocheckout.kit.problems import UnhandledErrors, install_problem_handlers
from cryptocheckout.kit.runtime import freeze_startup_heap
from cryptocheckout.kit.serving import BodyDeadline
from cryptocheckout.orders.router import router as orders_router
from cryptocheckout.outbound.router import router as outbound_router
from cryptocheckout.pages.router import router as pages_router
from cryptocheckout.pages.router import static_files as pages_static
from cryptocheckout.pages.status import OrderStatusFastPath
from cryptocheckout.payments.router import router as payments_router
from cryptocheckout.webhooks.ingest import NotificationStore
from cryptocheckout.webhooks.router import IpnFastPath
from cryptocheckout.webhooks.router import router as webhooks_router
from cryptocheckout.worker import nowpayments_client, worker_from_settings

# Answers under these carry an order's access token, a customer's e-mail or licence keys.
NO_STORE_PREFIXES = ("/api/orders", "/api/admin")


def create_app(
    settings: Settings, *, engine: AsyncEngine | None = None, run_worker: bool = False
) -> FastAPI:
    """The shop's API. Given an `engine`, the app uses it and leaves disposing it to the caller.

    With `run_worker`, a job worker runs in the same process (one process is a whole shop).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None
        active = engine or create_engine(settings.database_url, **settings.engine_options())
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

    # /docs and /redoc with Swagger UI's and ReDoc's files from the installed package, not a CDN.
    app = FastAPIOffline(
        title="cryptocheckout",
        version=__version__,
        summary="Crypto checkout for digital goods, on NOWPayments",
        lifespan=lifespan,
    )
    app.state.settings = settings
    # Parsed once, at start-up: a missing or malformed key stops the app, naming the variable.
    app.state.keyring = keyring_of(settings)
    install_problem_handlers(app)
    # Starlette runs the last added middleware first: unhandled errors, access log, headers,
    # body deadline, body limit, IPN fast path, the order pages' status poll.
    app.add_middleware(OrderStatusFastPath)
    app.add_middleware(IpnFastPath)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(BodyDeadline, seconds=settings.request_body_timeout_seconds)
    app.add_middleware(SecurityHeaders, no_store_prefixes=NO_STORE_PREFIXES)
    app.add_middleware(AccessLog)
    app.add_middleware(UnhandledErrors)
    app.include_router(health.router)
    app.include_router(catalogue_router)
    app.include_router(orders_router)
    app.include_router(customer_router)
    app.include_router(payments_router)
    app.include_router(webhooks_router)
    app.include_router(admin_router)
    app.include_router(pages_router)
    app.mount("/static", pages_static, name="static")
    app.include_router(delivery_router)
    install_console(app)
    app.include_router(outbound_router)
    return app
