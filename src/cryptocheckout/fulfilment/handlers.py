"""The `fulfil_order` job: assign the paid order's licence keys, then mark it fulfilled.

Idempotent: keys already assigned to the order count towards it, and an order that is not
`paid` any more (fulfilled, refunded) is left alone, so a job that runs twice (its worker
died after committing, before it could say so) has one effect.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.catalogue import repository as catalogue
from cryptocheckout.kit import jobs
from cryptocheckout.orders import repository as orders
from cryptocheckout.orders.models import OrderStatus
from cryptocheckout.payments.models import ChangeCause
from cryptocheckout.payments.state_machine import FULFIL_ORDER_JOB, move_order


class OutOfStock(jobs.RetryLater):
    """Not enough licence keys: the job waits (backing off) until staff add keys."""


async def fulfil_order(session: AsyncSession, payload: Mapping[str, Any]) -> None:
    order_id = uuid.UUID(str(payload["order_id"]))
    order = await orders.lock(session, order_id)
    if order is None or order.status is not OrderStatus.PAID:
        return
    wanted = await orders.quantities(session, order_id)
    # The keys held for it since checkout first; free keys for what it no longer holds.
    await catalogue.assign_held_keys(session, order_id)
    held = await catalogue.assigned_to(session, order_id)
    for product_id, quantity in wanted.items():
        missing = quantity - held.get(product_id, 0)
        if missing <= 0:
            continue
        free = await catalogue.assign_free_keys(session, product_id, order_id, missing)
        if free < missing:
            raise OutOfStock(f"product {product_id}: {free} of {missing} keys available")
    await move_order(
        session, order, OrderStatus.FULFILLED, cause=ChangeCause.WORKER, note="keys assigned"
    )


async def wake_waiting_orders(session: AsyncSession) -> int:
    """New keys arrived: paid orders waiting for stock try again now, not at their backoff."""
    return await jobs.run_soon(session, FULFIL_ORDER_JOB)


# The jobs this package handles, for the worker to run.
JOB_HANDLERS: dict[str, jobs.Handler] = {FULFIL_ORDER_JOB: fulfil_order}
