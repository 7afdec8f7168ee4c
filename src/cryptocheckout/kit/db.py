"""Database engine, sessions and the dialect differences between PostgreSQL and SQLite.

The service speaks SQLAlchemy's async API on both databases: asyncpg for PostgreSQL and
aiosqlite for the embedded SQLite default. Plain `postgresql://` and `sqlite:///` URLs are
turned into URLs naming those drivers; a URL that already names a driver is kept.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.util.concurrency import await_, in_greenlet

# Named constraints make migrations reproducible on both databases and let SQLite's batch
# mode find a constraint again when a later migration alters its table.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# The execution option that marks a read-only session (see `read_only`).
READ_ONLY_OPTION = "cryptocheckout_read_only"

# SQLite waits this long for another writer (another process) before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000

# Execution option for transactions that ask for SQLite's write lock every
# SQLITE_LOCK_POLL_SECONDS, for at most this many seconds, instead of waiting on the busy
# timeout (see _on_begin): the notification writer's, which NOWPayments gives 3 s.
SQLITE_EAGER_LOCK_SECONDS = "cryptocheckout_sqlite_eager_lock_seconds"
SQLITE_LOCK_POLL_SECONDS = 0.002


def async_url(url: str | URL) -> URL:
    """The SQLAlchemy URL with this service's async driver for a plain database URL."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        query = dict(parsed.query)
        # asyncpg spells libpq's sslmode as ssl.
        if "sslmode" in query:
            query["ssl"] = query.pop("sslmode")
        return parsed.set(drivername="postgresql+asyncpg", query=query)
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


def asyncpg_connect_args(url: str | URL) -> dict[str, Any]:
    """`asyncpg.connect()` arguments for a PostgreSQL URL, read from the URL `async_url`
    gives the engine: the address, the credentials, `ssl` (libpq's `sslmode` included) and
    SQLAlchemy's `prepared_statement_cache_size` (0 behind pgbouncer). Other URL options are
    SQLAlchemy's own and are left out."""
    target = async_url(url)
    if target.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {target.drivername!r}")
    args: dict[str, Any] = target.translate_connect_args(username="user")
    query = target.query
    if "ssl" in query:
        args["ssl"] = str(query["ssl"])
    if "prepared_statement_cache_size" in query:
        args["statement_cache_size"] = int(str(query["prepared_statement_cache_size"]))
    return args


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


# The engines made with `pooled=True`, so code holding an engine (the IPN writers) can ask.
_POOLED_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def is_pooled(engine: AsyncEngine) -> bool:
    """True for an engine made by `create_engine(..., pooled=True)` (`DATABASE_POOLED`)."""
    return engine.sync_engine in _POOLED_ENGINES


def unique_statement_name() -> str:
    """A prepared statement's name no other statement on any server connection shares.

    Behind a transaction-pooling proxy one client connection reaches different server
    connections, so asyncpg's per-connection counter (`__asyncpg_stmt_1__`) collides with a
    statement another client left there; SQLAlchemy's documentation for PgBouncer names them
    from a uuid instead.
    """
    return f"__asyncpg_{uuid.uuid4()}__"


def asyncpg_connect_kwargs(
    url: str | URL,
    *,
    pooled: bool,
    server_settings: dict[str, str] | None = None,
    command_timeout: float | None = None,
    connect_timeout: float | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `asyncpg.connect` for code that keeps its own asyncpg connection
    (the IPN writers), right for a direct connection and for a transaction-pooling proxy.

    The address, credentials and ssl come from `asyncpg_connect_args` (the one translation
    of the URL).

    Direct (`pooled=False`): `server_settings` are sent as startup parameters, the statement
    cache stays on.

    Pooled (`pooled=True`, `DATABASE_POOLED`): no startup parameters (PgBouncer refuses
    them: "unsupported startup parameter"), so `server_settings` are NOT sent: the caller
    must set each of them with `SET LOCAL name = value` as the first statement inside every
    transaction (`pooled_set_local` gives the statements). The statement cache is off
    (`statement_cache_size=0`), which makes `conn.fetch(sql, ...)`/`conn.execute(...)` use
    the unnamed statement; the caller must not call `conn.prepare()` for a statement that
    outlives its transaction.
    """
    kwargs = asyncpg_connect_args(url)
    if command_timeout is not None:  # client-side: fine through a pooler
        kwargs["command_timeout"] = command_timeout
    if connect_timeout is not None:
        kwargs["timeout"] = connect_timeout
    if pooled:
        kwargs["statement_cache_size"] = 0
    elif server_settings:
        kwargs["server_settings"] = dict(server_settings)
    return kwargs


def pooled_set_local(server_settings: dict[str, str]) -> list[str]:
    """`SET LOCAL` statements for settings that a pooled connection cannot take at start-up;
    run them first inside each transaction (they end with it)."""
    statements = []
    for name, value in server_settings.items():
        if not name.replace("_", "").isalnum():
            raise ValueError(f"not a setting name: {name!r}")
        quoted = str(value).replace("'", "''")
        statements.append(f"SET LOCAL {name} = '{quoted}'")
    return statements


def create_engine(
    url: str,
    *,
    connect_timeout: float | None = None,
    command_timeout: float | None = None,
    pool_timeout: float | None = None,
    pooled: bool = False,
    **kwargs: Any,
) -> AsyncEngine:
    """An engine for `url`. The timeouts bound how long a database that does not answer
    (refused, hung, pool exhausted) can hold a caller; the service's engines set all three
    (see `Settings.engine_options`), the tools' and tests' engines keep the drivers' defaults.

    `pooled` (`DATABASE_POOLED`): `url` is a transaction-pooling proxy such as PgBouncer.
    asyncpg then keeps no prepared statements across transactions (cache off, a unique name
    for each statement SQLAlchemy prepares) and no startup parameters are sent. The engine
    never sends session `SET`s or `LISTEN` either way; a statement that needs a server-side
    timeout sets it with `SET LOCAL` inside its transaction.
    """
    target = async_url(url)
    # Statement parameters hold e-mails, order tokens and notification bodies: keep them
    # out of the error messages that end up in logs and in webhook_logs.error.
    kwargs.setdefault("hide_parameters", True)
    if pool_timeout is not None:
        kwargs.setdefault("pool_timeout", pool_timeout)
    if target.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
        kwargs.setdefault("pool_pre_ping", True)
        connect_args = dict(kwargs.pop("connect_args", {}))
        if connect_timeout is not None:
            connect_args.setdefault("timeout", connect_timeout)
        if command_timeout is not None:  # asyncpg's client-side bound on every statement
            connect_args.setdefault("command_timeout", command_timeout)
        if pooled:
            # SQLAlchemy's recipe for PgBouncer (dialect documentation, "Prepared Statement
            # Name with PGBouncer"): no statement cache, and a fresh name for each statement.
            connect_args.setdefault("prepared_statement_cache_size", 0)
            connect_args.setdefault("prepared_statement_name_func", unique_statement_name)
            connect_args.setdefault("statement_cache_size", 0)
            if connect_args.get("server_settings"):
                raise ValueError("a pooled engine cannot send startup parameters (server_settings)")
        engine = create_async_engine(target, connect_args=connect_args, **kwargs)
        if pooled:
            _POOLED_ENGINES.add(engine.sync_engine)
        return engine

    if target.database and target.database != ":memory:":
        Path(target.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(target, **kwargs)
    _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so that BEGIN IMMEDIATE
        # below is the only way a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A deferred transaction that later writes fails at once with "database is locked"
        # when another writer got there first, ignoring busy_timeout. Taking the write lock
        # up front makes writers queue on busy_timeout instead; readers (`read_only`) take none.
        options = connection.get_execution_options()
        eager = options.get(SQLITE_EAGER_LOCK_SECONDS)
        if options.get(READ_ONLY_OPTION):
            connection.exec_driver_sql("BEGIN")
        elif eager and in_greenlet():
            _begin_eagerly(connection.connection.dbapi_connection, float(eager))
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def _begin_eagerly(dbapi_connection: Any, seconds: float) -> None:
    """BEGIN IMMEDIATE, asking again every SQLITE_LOCK_POLL_SECONDS for at most `seconds`.

    SQLite's busy handler is not a queue: a waiter sleeps up to 100 ms between attempts and
    loses to whoever asks at the right moment, so under mixed load a transaction can wait
    for seconds while others go ahead. One that asks every few milliseconds gets the lock
    soon after it is free.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=0")
        deadline = time.monotonic() + seconds
        while True:
            try:
                cursor.execute("BEGIN IMMEDIATE")
                return
            except Exception as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            await_(asyncio.sleep(SQLITE_LOCK_POLL_SECONDS))
    finally:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def unit_of_work(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One transaction for one request or job: commits when the block ends, rolls back when it
    raises. Nothing inside commits on its own (services never commit).

    The objects stay loaded after the commit (`expire_on_commit=False`), so a response can
    still be built from them.
    """
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


@asynccontextmanager
async def read_only(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session for reads: nothing is committed, and on SQLite it takes no write lock.

    (Writers on SQLite start with BEGIN IMMEDIATE to queue instead of failing; a reader has
    no reason to queue behind them: WAL lets it read the last committed state.)
    """
    async with sessionmaker() as session:
        await session.connection(execution_options={READ_ONLY_OPTION: True})
        yield session
