"""Test fixtures: every database test runs on SQLite and on PostgreSQL, migrated for real.

PostgreSQL comes from TEST_DATABASE_URL (a server URL; a throwaway database is created on it)
or, by default, the local server on 127.0.0.1:5432. Tests commit for real; the tables are
emptied after each test, so what a test sees is what the service would see.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cryptocheckout.app import create_app
from cryptocheckout.config import Mode, Settings
from cryptocheckout.kit.db import create_engine, create_sessionmaker
from cryptocheckout.kit.migrate import upgrade
from cryptocheckout.models import Base
from tests.support.pgbouncer import (
    PgBouncerUnavailable,
    pooled_url,
    run_pgbouncer,
)

DEFAULT_PG_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_TOKEN = "test-admin-token"
# The suite's licence-key encryption key, in the environment so that the service processes
# the tests start, and the migrations, read it as they would in production.
TEST_KEYS_ENCRYPTION_KEY = "dGVzdC1rZXlzLWVuY3J5cHRpb24ta2V5LTMyLWJ5dGU="
os.environ["KEYS_ENCRYPTION_KEY"] = TEST_KEYS_ENCRYPTION_KEY
DIALECTS = ("sqlite", "postgresql")


def pg_server_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_PG_SERVER)


async def _admin_execute(server_url: str, *statements: str) -> None:
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@asynccontextmanager
async def fresh_database(dialect: str, tmp_dir: Any) -> AsyncIterator[str]:
    """An empty database of the given dialect; dropped afterwards."""
    if dialect == "sqlite":
        yield f"sqlite:///{tmp_dir}/test-{uuid.uuid4().hex[:8]}.db"
        return
    server = pg_server_url()
    name = f"cc_test_{uuid.uuid4().hex[:12]}"
    await _admin_execute(server, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin_execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
async def database_url(
    dialect: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    async with fresh_database(dialect, tmp_path_factory.mktemp(dialect)) as url:
        await asyncio.to_thread(upgrade, url)
        yield url


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def sessionmaker(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    yield create_sessionmaker(engine)
    async with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(delete(table))


@pytest.fixture
def settings(database_url: str, tmp_path: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        mode=Mode.TEST,
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        nowpayments_api_key="test-api-key",
        nowpayments_ipn_secret="test-ipn-secret",
        keys_encryption_key=TEST_KEYS_ENCRYPTION_KEY,
        mail_dir=tmp_path / "mail",
    )


@pytest.fixture
async def client(
    settings: Settings, engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[httpx.AsyncClient]:
    """The API in-process; tests that need a real socket use tests/support/servers.py."""
    app = create_app(settings, engine=engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as c:
            yield c


@pytest.fixture(scope="session")
def pgbouncer_port() -> Iterator[int]:
    """A PgBouncer in transaction mode in front of the test PostgreSQL server, for the whole
    session. In CI (`CI` set) a PgBouncer that cannot be found or started fails the tests
    that need it; elsewhere they are skipped, saying why."""
    with ExitStack() as stack:
        try:
            port = stack.enter_context(run_pgbouncer(pg_server_url()))
        except PgBouncerUnavailable as exc:
            if os.environ.get("CI"):
                pytest.fail(f"the PgBouncer tier cannot run in CI: {exc}")
            pytest.skip(f"no PgBouncer here ({exc}); .ci/run installs it")
        yield port


@dataclass(frozen=True)
class Route:
    """How the service's processes reach PostgreSQL: directly or through PgBouncer."""

    url: str
    pooled: bool

    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(
            update={"database_url": self.url, "database_pooled": self.pooled}
        )

    def env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.url, "DATABASE_POOLED": "true" if self.pooled else "false"}


@pytest.fixture(params=["direct", "pgbouncer"])
def route(request: pytest.FixtureRequest, database_url: str) -> Route:
    """Parametrises a PostgreSQL test over a direct connection and PgBouncer (transaction
    mode, `DATABASE_POOLED=true`); the test's own observing sessions stay direct."""
    if request.param == "direct":
        return Route(database_url, pooled=False)
    port: int = request.getfixturevalue("pgbouncer_port")
    return Route(pooled_url(database_url, port), pooled=True)


@dataclass
class Admin:
    client: httpx.AsyncClient

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def product(
        self,
        sku: str = "GAME-1",
        price: str = "12.50",
        currency: str = "USD",
        keys: int = 5,
        **extra: Any,
    ) -> dict[str, Any]:
        response = await self.client.post(
            "/api/admin/products",
            json={
                "sku": sku,
                "name": f"Product {sku}",
                "price": price,
                "currency": currency,
                **extra,
            },
            headers=self.headers,
        )
        assert response.status_code == 201, response.text
        product: dict[str, Any] = response.json()
        if keys:
            added = await self.client.post(
                f"/api/admin/products/{product['id']}/keys",
                json={"keys": [f"{sku}-KEY-{i}" for i in range(keys)]},
                headers=self.headers,
            )
            assert added.status_code == 201, added.text
        return product


@pytest.fixture
def admin(client: httpx.AsyncClient) -> Admin:
    return Admin(client)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Keep each database's tests together so each session-scoped database is set up once.
    def key(item: pytest.Item) -> int:
        callspec = getattr(item, "callspec", None)
        if callspec is None or "dialect" not in callspec.params:
            return -1
        return DIALECTS.index(callspec.params["dialect"])

    items.sort(key=key)


_DIALECT_ID = re.compile(r"[\[-](sqlite|postgresql)[-\]]")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print how many tests passed on each database (CI checks that both ran)."""
    counts = dict.fromkeys(DIALECTS, 0)
    for report in terminalreporter.stats.get("passed", []):
        match = _DIALECT_ID.search(report.nodeid)
        if match and report.when == "call":
            counts[match.group(1)] += 1
    terminalreporter.write_line(
        "database tests: " + ", ".join(f"{name} {count} passed" for name, count in counts.items())
    )
    pooled = sum(
        1
        for report in terminalreporter.stats.get("passed", [])
        if report.when == "call" and "[pgbouncer-" in report.nodeid
    )
    terminalreporter.write_line(f"pgbouncer tests: {pooled} passed")
