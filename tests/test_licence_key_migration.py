"""Migration 0005: licence keys stored in plain text by older versions get encrypted."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from cryptocheckout.kit.db import create_engine
from cryptocheckout.kit.encryption import KeyRing, KeyRingError, generate_key
from cryptocheckout.kit.migrate import downgrade, upgrade
from tests.conftest import fresh_database

BEFORE = "0003"


async def _execute(url: str, statement: str, **params: Any) -> list[Any]:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


def _now(url: str) -> Any:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    return moment if "postgresql" in url else moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sqlite_files(url: str) -> bytes:
    path = Path(str(make_url(url).database))
    return b"".join(p.read_bytes() for p in path.parent.glob(f"{path.name}*"))


async def _seed_plain_keys(url: str, keys: list[str]) -> uuid.UUID:
    product_id = uuid.uuid4()
    await _execute(
        url,
        "INSERT INTO products (id, sku, name, price, currency, active, created_at, updated_at) "
        "VALUES (:id, 'OLD-1', 'Old game', '10.00', 'USD', true, :now, :now)",
        id=product_id if "postgresql" in url else product_id.hex,
        now=_now(url),
    )
    for key in keys:
        row_id = uuid.uuid4()
        await _execute(
            url,
            "INSERT INTO licence_keys (id, product_id, secret, created_at) "
            "VALUES (:id, :product_id, :secret, :now)",
            id=row_id if "postgresql" in url else row_id.hex,
            product_id=product_id if "postgresql" in url else product_id.hex,
            secret=key,
            now=_now(url),
        )
    return product_id


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
async def test_existing_plain_keys_are_encrypted_and_come_back_on_downgrade(
    dialect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEYS_ENCRYPTION_KEY")
    setting = generate_key()
    ring = KeyRing.parse(setting)
    keys = [f"LEGACY-{uuid.uuid4().hex}" for _ in range(3)]
    async with fresh_database(dialect, tmp_path) as url:
        await asyncio.to_thread(upgrade, url, BEFORE)
        product_id = await _seed_plain_keys(url, keys)
        if dialect == "sqlite":  # the check below can fail: the plain keys are on disk now
            assert all(key.encode() in _sqlite_files(url) for key in keys)

        # Without the key the migration stops, naming the variable, and changes nothing.
        with pytest.raises(KeyRingError, match="KEYS_ENCRYPTION_KEY"):
            await asyncio.to_thread(upgrade, url)
        await asyncio.to_thread(lambda: upgrade(url, keys_encryption_key=setting))

        rows = await _execute(url, "SELECT * FROM licence_keys")
        assert len(rows) == 3
        assert not any(key in repr(rows) for key in keys)
        opened = await _execute(
            url, "SELECT id, product_id, ciphertext, key_id, key_hash FROM licence_keys"
        )
        plain = set()
        for row_id, _product, ciphertext, key_id, key_hash in opened:
            row_uuid = row_id if isinstance(row_id, uuid.UUID) else uuid.UUID(str(row_id))
            assert key_id == ring.current.key_id
            secret = ring.open(ciphertext, row_id=row_uuid.bytes)
            assert key_hash == ring.hash(product_id.bytes, secret)
            plain.add(secret)
        assert plain == set(keys)
        if dialect == "sqlite":
            assert not any(key.encode() in _sqlite_files(url) for key in keys)

        await asyncio.to_thread(lambda: downgrade(url, BEFORE, keys_encryption_key=setting))
        back = await _execute(url, "SELECT secret FROM licence_keys")
        assert {row[0] for row in back} == set(keys)
