"""`cryptocheckout demo`: the offline sandbox, the shop and a worker in one process.

Runs on its own SQLite file (./var/demo.db) with generated secrets, seeds a few products with
licence keys, and prints the URLs to open. Nothing to configure, nothing to sign up for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from decimal import Decimal
from pathlib import Path

import uvicorn

from cryptocheckout.app import create_app
from cryptocheckout.catalogue import repository as catalogue
from cryptocheckout.catalogue import service as catalogue_service
from cryptocheckout.catalogue.models import Product
from cryptocheckout.config import Mode, Settings
from cryptocheckout.kit.db import create_engine, create_sessionmaker
from cryptocheckout.kit.encryption import generate_key, keyring_of
from cryptocheckout.kit.migrate import upgrade
from cryptocheckout.kit.serving import server_config
from cryptocheckout.sandbox import SandboxConfig, create_sandbox_app

DEMO_DATABASE_URL = "sqlite:///./var/demo.db"
# The demo's licence-key encryption key: generated once, kept so ./var/demo.db stays readable.
DEMO_KEY_FILE = Path("var/demo-keys-encryption-key")
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
                    await catalogue_service.add_keys(
                        session,
                        keyring_of(settings),
                        product.id,
                        [f"{sku}-{secrets.token_hex(4).upper()}" for _ in range(20)],
                    )
            await session.commit()
    finally:
        await engine.dispose()


def demo_encryption_key(path: Path = DEMO_KEY_FILE) -> str:
    """The key in `path`, created (readable by this user only) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(generate_key() + "\n")
    return path.read_text().strip()


async def run_demo(*, host: str, port: int, sandbox_port: int) -> None:
    # The migrations' progress is noise here: the first thing a person reads is the shop's URL.
    logging.getLogger("alembic").setLevel(logging.WARNING)
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
        admin_token=secrets.token_urlsafe(32),
        sandbox_pay_pages=True,
        webhooks_allow_private=True,
        keys_encryption_key=demo_encryption_key(),
        smtp_url="",
        mail_dir=Path("var/mail"),
    )
    await asyncio.to_thread(
        lambda: upgrade(
            settings.database_url,
            keys_encryption_key=settings.keys_encryption_key.get_secret_value(),
        )
    )
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
                create_sandbox_app(sandbox),
                host=host,
                port=sandbox_port,
                log_level="warning",
                server_header=False,
            )
        ),
        uvicorn.Server(server_config(create_app(settings, run_worker=True), host=host, port=port)),
    ]
    print(
        "\ncryptocheckout demo (SQLite ./var/demo.db, offline NOWPayments sandbox)\n"
        f"  the shop:            {shop_url}/   <- open this and buy a key\n"
        f"  shop API and docs:   {shop_url}/docs\n"
        f"  sandbox:             {sandbox_url}/\n"
        f"  admin token:         {settings.admin_token.get_secret_value()}\n"
        f"  mail (.eml files):   {settings.mail_dir.resolve()}\n"
        "  Pick a product, check out, choose a coin: the order page links to the sandbox's\n"
        "  page for the payment, where you pay in full, less, late, or let it expire. The\n"
        "  mail with the link to the keys lands in the folder above.\n",
        flush=True,
    )
    await asyncio.gather(*(server.serve() for server in servers))
