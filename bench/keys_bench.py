"""Licence keys at rest: the cost of encryption, of an import, and of a rotation.

    .venv/bin/python bench/keys_bench.py [--keys 2000] [--database sqlite|postgresql|both]

Prints per-key costs of sealing, opening and hashing, then, on a throwaway database (an SQLite
file, and/or a database on BENCH_DATABASE_URL's PostgreSQL server), the time to import
`--keys` keys through the catalogue service in requests of 1000 (the API's maximum), to import
them all again (every one a duplicate), and to rotate them all under a new key.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.engine import make_url

from cryptocheckout.catalogue import service
from cryptocheckout.catalogue.models import Product
from cryptocheckout.catalogue.rotation import rotate_keys
from cryptocheckout.kit.db import create_engine, create_sessionmaker
from cryptocheckout.kit.encryption import KeyRing, generate_key
from cryptocheckout.kit.migrate import upgrade

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def per_key_costs(ring: KeyRing, n: int = 20_000) -> None:
    product, row = uuid.uuid4().bytes, uuid.uuid4().bytes
    started = time.perf_counter()
    sealed = [ring.seal(f"KEY-{i:08d}", product_id=product, row_id=row) for i in range(n)]
    seal = time.perf_counter() - started
    started = time.perf_counter()
    for item in sealed:
        ring.open(item.ciphertext, row_id=row)
    opened = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(n):
        ring.hash(product, f"KEY-{i:08d}")
    hashed = time.perf_counter() - started
    print(
        f"per key: seal {seal / n * 1e6:.1f} us, open {opened / n * 1e6:.1f} us, "
        f"hash {hashed / n * 1e6:.1f} us  ({n} keys)"
    )


@asynccontextmanager
async def database(kind: str) -> AsyncIterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite:///{directory}/bench.db"
        return
    server = os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER_URL)
    name = f"cc_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def run(kind: str, count: int) -> None:
    setting = generate_key()
    ring = KeyRing.parse(setting)
    async with database(kind) as url:
        await asyncio.to_thread(upgrade, url)
        engine = create_engine(url)
        sessions = create_sessionmaker(engine)
        async with sessions() as session:
            product = Product(sku="BENCH", name="Bench", price=Decimal("1"), currency="USD")
            session.add(product)
            await session.commit()
        keys = [f"BENCH-{uuid.uuid4().hex}" for _ in range(count)]

        async def import_all(using: KeyRing) -> tuple[int, int, float]:
            added = duplicates = 0
            started = time.perf_counter()
            for start in range(0, count, 1000):
                async with sessions() as session:
                    a, d = await service.add_keys(
                        session, using, product.id, keys[start : start + 1000]
                    )
                    await session.commit()
                added, duplicates = added + a, duplicates + d
            return added, duplicates, time.perf_counter() - started

        added, _, first = await import_all(ring)
        _, duplicates, again = await import_all(ring)
        rotated_ring = KeyRing.parse(f"{generate_key()},{setting}")
        started = time.perf_counter()
        rotated = await rotate_keys(url, rotated_ring, batch=200)
        rotation = time.perf_counter() - started
        _, after, again_rotated = await import_all(rotated_ring)
        await engine.dispose()
    print(
        f"{kind}: import {added} keys {first:.2f} s ({added / first:.0f}/s); "
        f"again, {duplicates} duplicates {again:.2f} s; "
        f"rotate {rotated} keys (batches of 200) {rotation:.2f} s ({rotated / rotation:.0f}/s); "
        f"import after rotation, {after} duplicates {again_rotated:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    per_key_costs(KeyRing.parse(generate_key()))
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    for kind in kinds:
        asyncio.run(run(kind, args.keys))


if __name__ == "__main__":
    main()
