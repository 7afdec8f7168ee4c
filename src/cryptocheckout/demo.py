"""`cryptocheckout demo`: the offline sandbox, the shop and a worker in one process.

Runs on its own SQLite file (./var/demo.db) with generated secrets, seeds a few products with
licence keys, and prints the URLs to open. Nothing to configure, nothing to sign up for.
"""

from __future__ import annotations

import asyncio
import secrets
from decimal import Decimal

import uvicorn

from cryptocheckout.app import create_app
from cryptocheckout.catalogue import repository as catalogue
from cryptocheckout.catalogue.models import Product
from cryptocheckout.config import Mode, Settings
from cryptocheckout.kit.db import create_engine, create_sessionmaker
from cryptocheckout.kit.migrate import upgrade
from cryptocheckout.sandbox import SandboxConfig, create_sandbox_app

DEMO_DATABASE_URL = "sqlite:///./var/demo.db"
DEMO_PRODUCTS = [
    ("STARFALL-STD", "Starfall Odyssey - Standard Edition", "19.99"),
    ("STARFALL-DLX", "Starfall Odyssey - Deluxe Edition", "34.50"),
    ("PIXELFORGE-PRO", "PixelForge Pro - 1 year licence", "49.00"),
]


async def seed(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            for sku, name, price in DEMO_PRODUCTS:
                product = await catalogue.get_by_sku(session, sku)
                if product is None:
                    product = Product(sku=sku, name=name, price=Decimal(price), currency="USD")
                    session.add(product)
                    await session.flush()
                stock = (await catalogue.stock(session, [product.id]))[product.id]
                if stock < 5:
                    await catalogue.add_keys(
                        session,
                        product.id,
                        [f"{sku}-{secrets.token_hex(4).upper()}" for _ in range(20)],
                    )
            await session.commit()
    finally:
        await engine.dispose()


async def run_demo(*, host: str, port: int, sandbox_port: int) -> None:
    shop_url = f"http://{host}:{port}"
    sandbox_url = f"http://{host}:{sandbox_port}"
    settings = Settings(
        _env_file=None,
        mode=Mode.DEMO,
        database_url=DEMO_DATABASE_URL,
        nowpayments_api_key=f"demo-{secrets.token_hex(8)}",
        nowpayments_ipn_secret=secrets.token_hex(16),
        nowpayments_base=sandbox_url,
        nowpayments_callback_url=f"{shop_url}/api/webhooks/nowpayments",
        public_base_url=shop_url,
        admin_token=secrets.token_urlsafe(18),
        webhooks_allow_private=True,
    )
    await asyncio.to_thread(upgrade, settings.database_url)
    await seed(settings)
    sandbox = SandboxConfig(
        api_key=settings.nowpayments_api_key.get_secret_value(),
        ipn_secret=settings.nowpayments_ipn_secret.get_secret_value(),
        public_url=sandbox_url,
        step_delay=1.0,
    )
    servers = [
        uvicorn.Server(
            uvicorn.Config(
                create_sandbox_app(sandbox), host=host, port=sandbox_port, log_level="warning"
            )
        ),
        uvicorn.Server(
            uvicorn.Config(
                create_app(settings, run_worker=True),
                host=host,
                port=port,
                log_level="info",
                access_log=False,
            )
        ),
    ]
    print(
        "\ncryptocheckout demo (SQLite ./var/demo.db, offline NOWPayments sandbox)\n"
        f"  shop API and docs:   {shop_url}/docs\n"
        f"  products:            {shop_url}/api/products\n"
        f"  sandbox:             {sandbox_url}/\n"
        f"  admin token:         {settings.admin_token.get_secret_value()}\n"
        "  Create an order (POST /api/orders), then a payment (POST /api/payments) without\n"
        "  pay_currency, and open its payment_url: the sandbox's page lets you pay.\n",
        flush=True,
    )
    await asyncio.gather(*(server.serve() for server in servers))
