"""One migration history builds the same schema on SQLite and PostgreSQL, both ways."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from cryptocheckout.kit.db import create_engine
from cryptocheckout.kit.migrate import downgrade, upgrade
from cryptocheckout.models import Base
from tests.conftest import fresh_database

EXPECTED_TABLES = {
    "products",
    "licence_keys",
    "orders",
    "order_items",
    "payments",
    "webhook_logs",
    "rejected_webhooks",
    "jobs",
    "idempotency_keys",
    "status_changes",
    "deliveries",
    "admin_sessions",
    "admin_actions",
    "webhook_endpoints",
    "webhook_deliveries",
    "stock_holds",
}


async def _inspect(url: str, fn: Any) -> Any:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
async def test_upgrade_downgrade_upgrade_leaves_no_drift(dialect: str, tmp_path: Any) -> None:
    async with fresh_database(dialect, tmp_path) as url:
        await asyncio.to_thread(upgrade, url)
        assert await _inspect(url, _tables) == EXPECTED_TABLES
        await asyncio.to_thread(downgrade, url)
        assert await _inspect(url, _tables) == set()
        await asyncio.to_thread(upgrade, url)
        assert await _inspect(url, _tables) == EXPECTED_TABLES
        assert await _inspect(url, _drift) == []
        # migrate is idempotent
        await asyncio.to_thread(upgrade, url)


def _seed_indexes(connection: Connection) -> dict[str, set[tuple[str, ...]]]:
    inspector = inspect(connection)
    found: dict[str, set[tuple[str, ...]]] = {}
    for table in ("payments", "webhook_logs"):
        found[table] = {tuple(ix["column_names"]) for ix in inspector.get_indexes(table)}
        found[table] |= {
            tuple(uq["column_names"]) for uq in inspector.get_unique_constraints(table)
        }
    return found


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
async def test_seed_indexes_exist(dialect: str, tmp_path: Any) -> None:
    async with fresh_database(dialect, tmp_path) as url:
        await asyncio.to_thread(upgrade, url)
        indexes = await _inspect(url, _seed_indexes)
    for columns in [
        ("external_id",),
        ("order_id",),
        ("status",),
        ("created_at",),
        ("order_id", "status"),
    ]:
        assert columns in indexes["payments"], columns
    for columns in [
        ("provider",),
        ("status",),
        ("created_at",),
        ("provider", "status"),
        ("fingerprint",),
    ]:
        assert columns in indexes["webhook_logs"], columns
