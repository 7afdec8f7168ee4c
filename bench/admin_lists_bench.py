"""Benchmark of the admin lists at 10^4 and at 10^6 payments: does each stay within 2x?

Run from the repository root:

    .venv/bin/python bench/admin_lists_bench.py [--sizes 10000 1000000] [--repeat 7]

It creates a throwaway PostgreSQL database (`cc_bench_<random>` on BENCH_DATABASE_URL, by
default the local server), migrates it, and drops it at the end, also after an error. For each
size it fills the tables with `INSERT ... SELECT generate_series` (one order and one payment
per row, a stored notification per payment, a job per ten), runs ANALYZE, and then times each
list the console and the admin API serve, through the same repository functions: the first
page (50 rows), and the second page where the list is long enough. Each time is the median of
`--repeat` runs after one warm-up. The table at the end gives each query's time at both sizes
and their ratio (target: within 2x).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptocheckout.admin import repository
from cryptocheckout.kit.db import create_engine, create_sessionmaker, read_only
from cryptocheckout.kit.jobs_models import JobStatus
from cryptocheckout.kit.migrate import upgrade
from cryptocheckout.orders.models import OrderStatus
from cryptocheckout.payments.models import PaymentStatus
from cryptocheckout.webhooks.models import WebhookLogStatus

SERVER = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PAGE = 50
PAYMENT_STATUSES = ["waiting", "finished", "expired", "finished", "underpaid", "finished"]
ORDER_FOR_PAYMENT = {
    "waiting": "waiting",
    "finished": "fulfilled",
    "expired": "expired",
    "underpaid": "underpaid",
}


def _fill_sql(start: int, stop: int) -> list[str]:
    """Rows start..stop-1; row i is deterministic, so a larger size extends a smaller one.

    Row i: order and payment created i seconds after 2025-01-01 (newest last), e-mail
    buyer<i/10>@example.com (each customer has ten orders), NOWPayments id 5000000000+i, a status
    cycling through PAYMENT_STATUSES, every 997th payment held for review; refunded payments
    are rare (every 101st: 1 %, yet a full page at both sizes), the hard case for a status filter.
    """
    statuses = ", ".join(f"'{s}'" for s in PAYMENT_STATUSES)
    orders = ", ".join(f"'{ORDER_FOR_PAYMENT[s]}'" for s in PAYMENT_STATUSES)
    series = f"generate_series({start}, {stop - 1}) AS i"
    when = "TIMESTAMPTZ '2025-01-01 00:00:00+00' + i * INTERVAL '1 second'"
    status = f"CASE WHEN i % 101 = 0 THEN 'refunded' ELSE (ARRAY[{statuses}])[i % 6 + 1] END"
    order_status = f"CASE WHEN i % 101 = 0 THEN 'refunded' ELSE (ARRAY[{orders}])[i % 6 + 1] END"
    order_id = "md5('order' || i)::uuid"
    # Only integers and fixed words of this script go into the SQL text.
    return [
        f"""INSERT INTO orders (id, email, status, total, currency, access_token,
                   created_at, updated_at)
            SELECT {order_id}, 'buyer' || (i / 10) || '@example.com', {order_status},
                   12.5, 'USD', md5('token' || i), {when}, {when}
            FROM {series}""",  # noqa: S608
        f"""INSERT INTO payments (id, order_id, provider, kind, external_id, status,
                   provider_status, price_amount, price_currency, pay_amount, pay_currency,
                   actually_paid,
                   confirmations, needs_review, review_reason, created_at, updated_at)
            SELECT md5('payment' || i)::uuid, {order_id}, 'nowpayments', 'payment',
                   (5000000000 + i)::text, {status}, 'finished', 12.5, 'USD', 0.00045, 'btc',
                   0.00045, 1, i % 997 = 0,
                   CASE WHEN i % 997 = 0 THEN 'overpaid' END, {when}, {when}
            FROM {series}""",  # noqa: S608
        f"""INSERT INTO webhook_logs (id, provider, external_id, provider_status, status,
                   fingerprint, raw_body, raw_payload, deliveries, attempts, created_at)
            SELECT md5('log' || i)::uuid, 'nowpayments', (5000000000 + i)::text, 'finished',
                   CASE WHEN i % 5003 = 0 THEN 'failed' ELSE 'processed' END,
                   md5('fingerprint' || i) || md5('fp' || i), '{{}}', '{{}}', 1, 1, {when}
            FROM {series}""",  # noqa: S608
        f"""INSERT INTO jobs (id, kind, payload, subject_id, status, attempts, max_attempts,
                   run_at, created_at, updated_at)
            SELECT md5('job' || i)::uuid, 'fulfil_order', '{{}}', {order_id},
                   CASE WHEN i % 20011 = 0 THEN 'dead' ELSE 'succeeded' END, 1, 10,
                   {when}, {when}, {when}
            FROM {series} WHERE i % 10 = 0""",  # noqa: S608
    ]


async def _fill(engine: AsyncEngine, start: int, stop: int) -> float:
    began = time.perf_counter()
    async with engine.begin() as conn:
        for statement in _fill_sql(start, stop):
            await conn.execute(text(statement))
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE"))
    return time.perf_counter() - began


Query = Callable[[Any, str | None], Awaitable[tuple[list[Any], str | None]]]


def _queries(size: int) -> dict[str, Query]:
    """Each list with each filter. The filter values exist at both sizes."""
    some = size // 2  # a row in the middle
    order_id = uuid.UUID(__import__("hashlib").md5(f"order{some}".encode()).hexdigest())

    def payments(**kw: Any) -> Query:
        defaults = {"status": None, "order_id": None, "external_id": None, "email": None}
        return lambda s, c: repository.list_payments(s, **{**defaults, **kw}, limit=PAGE, cursor=c)

    def orders(**kw: Any) -> Query:
        return lambda s, c: repository.list_orders(
            s, **{"status": None, "email": None, **kw}, limit=PAGE, cursor=c
        )

    def logs(**kw: Any) -> Query:
        return lambda s, c: repository.list_webhook_logs(
            s, **{"provider": None, "status": None, "external_id": None, **kw}, limit=PAGE, cursor=c
        )

    return {
        "payments": payments(),
        "payments status=finished": payments(status=PaymentStatus.FINISHED),
        "payments status=refunded (rare)": payments(status=PaymentStatus.REFUNDED),
        "payments email": payments(email="Buyer7@example.com"),
        "payments external_id": payments(external_id=str(5000000000 + some)),
        "payments order_id": payments(order_id=order_id),
        "orders": orders(),
        "orders status=underpaid": orders(status=OrderStatus.UNDERPAID),
        "orders email": orders(email="buyer7@example.com"),
        "notifications": logs(),
        "notifications status=failed": logs(status=WebhookLogStatus.FAILED),
        "notifications external_id": logs(external_id=str(5000000000 + some)),
        "jobs": lambda s, c: repository.list_jobs(s, status=None, kind=None, limit=PAGE, cursor=c),
        "jobs status=dead": lambda s, c: repository.list_jobs(
            s, status=JobStatus.DEAD, kind=None, limit=PAGE, cursor=c
        ),
    }


async def _time(engine: AsyncEngine, query: Query, repeat: int) -> tuple[float, float | None]:
    """Median milliseconds of the first page, and of the second page if there is one."""
    sessionmaker = create_sessionmaker(engine)

    async def once(cursor: str | None) -> tuple[float, str | None]:
        async with read_only(sessionmaker) as session:
            began = time.perf_counter()
            _rows, next_cursor = await query(session, cursor)
            return (time.perf_counter() - began) * 1000, next_cursor

    _, cursor = await once(None)  # warm-up
    first = statistics.median([(await once(None))[0] for _ in range(repeat)])
    second = None
    if cursor is not None:
        await once(cursor)
        second = statistics.median([(await once(cursor))[0] for _ in range(repeat)])
    return first, second


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    sizes = sorted(args.sizes)

    server = create_engine(SERVER, isolation_level="AUTOCOMMIT")
    name = f"cc_bench_{uuid.uuid4().hex[:10]}"
    async with server.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(SERVER).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    results: dict[int, dict[str, tuple[float, float | None]]] = {}
    try:
        await asyncio.to_thread(upgrade, url)
        filled = 0
        for size in sizes:
            seconds = await _fill(engine, filled, size)
            filled = size
            print(f"filled {size:>9,} payments in {seconds:.1f} s", file=sys.stderr)
            results[size] = {
                label: await _time(engine, query, args.repeat)
                for label, query in _queries(sizes[0]).items()
            }
    finally:
        await engine.dispose()
        async with server.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await server.dispose()

    small, large = sizes[0], sizes[-1]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    def ratio(a: float | None, b: float | None) -> str:
        return "-" if a is None or b is None else f"{b / a:.2f}x"

    print(
        f"| list and filter | page 1 at {small:,} (ms) | at {large:,} | ratio "
        f"| page 2 at {small:,} | at {large:,} | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for label in results[small]:
        (a1, a2), (b1, b2) = results[small][label], results[large][label]
        worst = max(worst, b1 / a1, (b2 / a2) if a2 and b2 else 0)
        print(
            f"| {label} | {ms(a1)} | {ms(b1)} | {ratio(a1, b1)} "
            f"| {ms(a2)} | {ms(b2)} | {ratio(a2, b2)} |"
        )
    print(f"\nworst ratio: {worst:.2f}x (target 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
