"""Reconciliation: ask NOWPayments about open payments whose notifications stopped coming.

A notification can be lost for good: a wrong callback URL, an outage longer than
NOWPayments' resends. So the worker periodically enqueues a `poll_payment` job for each open
payment not updated for a while; the job reads the payment's state from the API and applies
it through the same state machine as a notification (the audit trail says `poll`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.kit import jobs
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.nowpayments.client import NowPaymentsClient
from cryptocheckout.nowpayments.errors import NowPaymentsApiError
from cryptocheckout.nowpayments.models import PaymentInfo
from cryptocheckout.orders import repository as orders
from cryptocheckout.payments import repository
from cryptocheckout.payments.models import ChangeCause, Payment, PaymentKind, PaymentStatus
from cryptocheckout.payments.notifications import (
    ADOPT_PAYMENT_JOB,
    Result,
    apply_provider_state,
)
from cryptocheckout.payments.service import ABANDON_AFTER

logger = logging.getLogger("cryptocheckout.payments")

POLL_PAYMENT_JOB = "poll_payment"
# Payments that still expect money; `created` ones have no provider id yet.
POLLED_STATUSES = (PaymentStatus.WAITING, PaymentStatus.CONFIRMING, PaymentStatus.CONFIRMED)
MAX_POLLS_PER_ROUND = 500


async def enqueue_stale_polls(session: AsyncSession, *, quiet_for: timedelta) -> int:
    """One poll job per open payment not updated for `quiet_for` (at most one per period).

    The quietest first; a poll touches the payment (`polled_at`), so with more quiet
    payments than one round takes, the rounds go through all of them in turn.
    """
    now = utcnow()
    stale = await repository.quiet_since(
        session, POLLED_STATUSES, now - quiet_for, limit=MAX_POLLS_PER_ROUND
    )
    period = int(now.timestamp() // max(quiet_for.total_seconds(), 1))
    added = 0
    for payment_id in stale:
        added += await jobs.enqueue(
            session,
            POLL_PAYMENT_JOB,
            {"payment_id": str(payment_id)},
            subject_id=payment_id,
            dedupe_key=f"{POLL_PAYMENT_JOB}:{payment_id}:{period}",
            max_attempts=5,
        )
    return added


def job_handlers(client: NowPaymentsClient, tolerance_percent: Decimal) -> dict[str, jobs.Handler]:
    """The jobs this module handles, for the worker to run; they call NOWPayments."""

    async def poll_payment(session: AsyncSession, payload: Mapping[str, Any]) -> None:
        payment_id = uuid.UUID(str(payload["payment_id"]))
        payment = await session.get(Payment, payment_id)
        if payment is None or payment.external_id is None or payment.status not in POLLED_STATUSES:
            return
        external_id = payment.external_id
        # End the read before the HTTP call: no transaction (on SQLite, no write lock) is
        # held while NOWPayments answers.
        await session.commit()
        info = await client.get_payment(external_id)
        applied = await apply_provider_state(
            session,
            info,
            tolerance_percent=tolerance_percent,
            cause=ChangeCause.POLL,
            ref=f"poll:{external_id}",
            raw_payload=info.model_dump(mode="json", by_alias=True),
        )
        if applied.result is not Result.PROCESSED:
            logger.warning("poll of payment %s: %s", external_id, applied.detail)
        polled = await session.get(Payment, payment_id)
        if polled is not None:
            # Also moves updated_at, so the next scan takes other quiet payments first.
            polled.polled_at = utcnow()

    async def adopt_payment(session: AsyncSession, payload: Mapping[str, Any]) -> None:
        """A signed notification named an unknown payment for one of our orders: confirm it
        with NOWPayments, then give its id to the payment we recorded but never heard back
        about. Its notification, retrying meanwhile, then applies as usual."""
        external_id = str(payload["external_id"])
        order_id = uuid.UUID(str(payload["order_id"]))
        if await repository.by_external_id(session, external_id) is not None:
            return
        await session.commit()  # no transaction held while NOWPayments answers
        try:
            info = await client.get_payment(external_id)
        except NowPaymentsApiError as exc:
            if exc.status_code != 404:
                raise  # asked again with backoff
            logger.warning("payment %s is unknown to NOWPayments: not adopted", external_id)
            return
        if info.order_id != str(order_id):
            logger.warning(
                "payment %s is not order %s's at NOWPayments: not adopted", external_id, order_id
            )
            return
        if await orders.lock(session, order_id) is None:
            return
        if await repository.by_external_id(session, external_id) is not None:
            return
        # A create younger than that may still get its own answer.
        found = await repository.unanswered_create(
            session, order_id, before=utcnow() - ABANDON_AFTER
        )
        if found is None or not _same_quote(found, info):
            logger.warning(
                "payment %s of order %s matches no payment we asked for: not adopted",
                external_id,
                order_id,
            )
            return
        payment = await repository.lock_payment(session, found.id)
        payment.external_id = info.payment_id
        payment.invoice_id = payment.invoice_id or info.invoice_id
        payment.pay_address = payment.pay_address or (info.pay_address or "")[:256] or None
        payment.payin_extra_id = payment.payin_extra_id or info.payin_extra_id
        await apply_provider_state(
            session,
            info,
            tolerance_percent=tolerance_percent,
            cause=ChangeCause.POLL,
            ref=f"adopt:{external_id}",
            raw_payload=info.model_dump(mode="json", by_alias=True),
        )

    return {POLL_PAYMENT_JOB: poll_payment, ADOPT_PAYMENT_JOB: adopt_payment}


def _same_quote(payment: Payment, info: PaymentInfo) -> bool:
    """The provider's payment is the one we asked for: our price and currency, and our coin
    where we chose one (an invoice lets the customer choose on NOWPayments' page)."""
    return (
        info.price_amount == payment.price_amount
        and (info.price_currency or "").lower() == payment.price_currency.lower()
        and (
            payment.kind is PaymentKind.INVOICE
            or (info.pay_currency or "").lower() == (payment.pay_currency or "").lower()
        )
    )
