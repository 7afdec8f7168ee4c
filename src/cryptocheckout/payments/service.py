"""Creating a payment for an order.

The payment is recorded (`created`) and committed before NOWPayments is called, so a crash
or a provider failure never leaves a payment we do not know about; the provider's answer is
recorded in a second transaction (`waiting`), or the payment ends `failed` with the
provider's code. An order has at most one open payment, enforced by a partial unique index:
asking again, even concurrently, returns the open one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.catalogue import repository as catalogue
from cryptocheckout.config import Settings
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.db import unit_of_work
from cryptocheckout.kit.errors import NotFound, OrderClosed, ProviderRefused
from cryptocheckout.kit.money import truncate_money
from cryptocheckout.kit.security import tokens_match
from cryptocheckout.nowpayments.client import NowPaymentsClient
from cryptocheckout.nowpayments.errors import NowPaymentsApiError, NowPaymentsError
from cryptocheckout.nowpayments.models import CreatedPayment
from cryptocheckout.orders import repository as orders
from cryptocheckout.orders.models import OrderStatus
from cryptocheckout.payments import repository
from cryptocheckout.payments.models import ChangeCause, Payment, PaymentKind, PaymentStatus
from cryptocheckout.payments.state_machine import ORDER_RANK, move_order, move_payment

logger = logging.getLogger("cryptocheckout.payments")


@dataclass(frozen=True)
class Created:
    payment: Payment
    new: bool


async def _open_or_record(
    sessionmaker: async_sessionmaker[AsyncSession],
    order_id: str,
    token: str | None,
    pay_currency: str | None,
) -> Created:
    try:
        parsed = uuid.UUID(order_id)
    except ValueError:
        raise NotFound("order") from None
    async with sessionmaker() as session:
        order = await orders.lock(session, parsed)
        if order is None or not tokens_match(token, order.access_token):
            raise NotFound("order")
        existing = await repository.open_for_order(session, order.id)
        if existing is not None and _abandoned(existing):
            await move_payment(
                session,
                existing,
                PaymentStatus.FAILED,
                cause=ChangeCause.API,
                note="abandoned: NOWPayments' answer was never recorded",
            )
            # Like a timed-out create, NOWPayments may have it: its notifications adopt it.
            existing.error_code = repository.OUTCOME_UNKNOWN
            await session.flush()
            existing = None
        if existing is not None:
            return Created(existing, new=False)
        if ORDER_RANK[order.status] >= ORDER_RANK[OrderStatus.PAID]:
            raise OrderClosed(f"The order is {order.status.value}: it needs no payment.")
        # An order with credits is asked for what is due only, linked where NOWPayments
        # allows to the purchase that was partly paid (`purchase_id` on POST /v1/payment).
        credits, _ = await repository.credited(session, order.id)
        due = order.total - credits
        if due <= 0:  # pragma: no cover - credits reaching the total made the order paid
            raise OrderClosed("The order is paid: it needs no payment.")
        payment = Payment(
            order_id=order.id,
            kind=PaymentKind.PAYMENT if pay_currency else PaymentKind.INVOICE,
            status=PaymentStatus.CREATED,
            price_amount=due,
            price_currency=order.currency,
            pay_currency=pay_currency,
            purchase_id=await repository.purchase_of(session, order.id) if credits > 0 else None,
        )
        session.add(payment)
        try:
            await session.commit()
        except IntegrityError:
            # Another request opened a payment for this order between our check and insert.
            await session.rollback()
            existing = await repository.open_for_order(session, order.id)
            if existing is None:
                raise
            return Created(existing, new=False)
        return Created(payment, new=True)


async def abandon_unpaid(
    sessionmaker: async_sessionmaker[AsyncSession], *, order_id: uuid.UUID, token: str | None
) -> bool:
    """The customer chose another coin (or the hosted invoice) before anything arrived.

    Their open payment ends `failed`, noted as abandoned, so that another may open. Nothing is
    lost if money still arrives on it: its notifications move it forward as usual (failed <
    confirming < finished), paying the order if unpaid, else flagging it for staff. False when
    there is no open payment, or something has been seen on it already (it stays).
    """
    async with unit_of_work(sessionmaker) as session:
        order = await orders.lock(session, order_id)
        if order is None or not tokens_match(token, order.access_token):
            raise NotFound("order")
        existing = await repository.open_for_order(session, order.id)
        untouched = (PaymentStatus.CREATED, PaymentStatus.WAITING)
        if existing is None or existing.status not in untouched or existing.actually_paid:
            return False
        await move_payment(
            session,
            existing,
            PaymentStatus.FAILED,
            cause=ChangeCause.API,
            note="abandoned: the customer chose another way to pay",
        )
        return True


# The longest a create call to NOWPayments may take, retries included; after it, its outcome
# is unknown (NOWPayments may or may not have created the payment).
PROVIDER_CALL_DEADLINE = timedelta(seconds=20)
# A payment still `created` this long after it was recorded lost its provider answer (a
# crash or a database error between the call and the commit): no call for it can still be
# running, so the next request replaces it, and its notifications, if NOWPayments made it,
# adopt it back (`payments/notifications.py`).
ABANDON_AFTER = PROVIDER_CALL_DEADLINE + timedelta(seconds=10)


def _abandoned(payment: Payment) -> bool:
    return (
        payment.status is PaymentStatus.CREATED
        and payment.external_id is None
        and payment.invoice_id is None
        and payment.created_at < utcnow() - ABANDON_AFTER
    )


async def create_payment(
    sessionmaker: async_sessionmaker[AsyncSession],
    client: NowPaymentsClient,
    settings: Settings,
    *,
    order_id: str,
    token: str | None,
    pay_currency: str | None,
) -> Created:
    created = await _open_or_record(sessionmaker, order_id, token, pay_currency)
    if not created.new:
        return created
    payment = created.payment
    description = f"Order {payment.order_id}"
    try:
        if payment.kind is PaymentKind.PAYMENT:
            assert pay_currency is not None  # noqa: S101 - kind is PAYMENT only with a currency
            answer = await asyncio.wait_for(
                _create_direct(client, settings, payment, pay_currency, description),
                PROVIDER_CALL_DEADLINE.total_seconds(),
            )
            provider_fields = {
                "external_id": answer.payment_id,
                "invoice_id": answer.invoice_id,
                "pay_amount": None
                if answer.pay_amount is None
                else truncate_money(answer.pay_amount),
                "pay_currency": answer.pay_currency or pay_currency,
                "pay_address": answer.pay_address,
                "payin_extra_id": answer.payin_extra_id,
                "expires_at": answer.expiration_estimate_date or answer.valid_until,
                "provider_status": str(answer.payment_status),
                "purchase_id": None if answer.purchase_id is None else str(answer.purchase_id),
            }
        else:
            # NOWPayments' page sends the customer back to the order page. Its URL never
            # carries the order's token: the customer's browser holds it in a cookie.
            order_page = f"{settings.public_base_url}/orders/{payment.order_id}"
            invoice = await asyncio.wait_for(
                client.create_invoice(
                    payment.price_amount,
                    payment.price_currency.lower(),
                    ipn_callback_url=settings.nowpayments_callback_url,
                    order_id=str(payment.order_id),
                    order_description=description,
                    success_url=order_page,
                    cancel_url=order_page,
                ),
                PROVIDER_CALL_DEADLINE.total_seconds(),
            )
            provider_fields = {"invoice_id": invoice.id, "payment_url": invoice.invoice_url}
    except NowPaymentsError as exc:
        if exc.outcome_unknown:
            # NOWPayments may have created it. It is marked failed so the customer can try
            # again, and its notifications, if any come, adopt it back (see notifications.py).
            code = repository.OUTCOME_UNKNOWN
        elif isinstance(exc, NowPaymentsApiError):
            code = exc.code
        else:
            code = "PROVIDER_UNAVAILABLE"
        await _record_failure(sessionmaker, payment.id, code, str(exc))
        raise ProviderRefused(code) from exc
    except TimeoutError as exc:
        code = repository.OUTCOME_UNKNOWN
        await _record_failure(
            sessionmaker, payment.id, code, f"no answer within {PROVIDER_CALL_DEADLINE}"
        )
        raise ProviderRefused(code) from exc
    return Created(
        await _record_opened(sessionmaker, settings, payment.id, provider_fields), new=True
    )


async def _create_direct(
    client: NowPaymentsClient,
    settings: Settings,
    payment: Payment,
    pay_currency: str,
    description: str,
) -> CreatedPayment:
    """POST /v1/payment, for the rest of a partly paid purchase when there is one.

    NOWPayments documents `purchase_id` only as "adds a payment to a partially paid
    purchase"; should it refuse the link as an invalid parameter (a 400: nothing was
    created), the payment is asked for again on its own. Our credits do not depend on the
    link either way.
    """

    async def create(purchase_id: str | None) -> CreatedPayment:
        return await client.create_payment(
            payment.price_amount,
            payment.price_currency.lower(),
            pay_currency,
            ipn_callback_url=settings.nowpayments_callback_url,
            order_id=str(payment.order_id),
            order_description=description,
            purchase_id=purchase_id,
        )

    if payment.purchase_id is None:
        return await create(None)
    try:
        return await create(payment.purchase_id)
    except NowPaymentsApiError as exc:
        if exc.status_code != 400 or exc.code != "INVALID_REQUEST_PARAMS":
            raise
        logger.warning(
            "NOWPayments refused purchase_id %s (%s): creating the payment without it",
            payment.purchase_id,
            exc.code,
        )
        return await create(None)


async def _record_opened(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    payment_id: uuid.UUID,
    fields: Mapping[str, object],
) -> Payment:
    async with unit_of_work(sessionmaker) as session:
        payment = await session.get(Payment, payment_id)
        if payment is None:  # pragma: no cover - the order was deleted meanwhile
            raise NotFound("payment")
        order = await orders.lock(session, payment.order_id)
        payment = await repository.lock_payment(session, payment_id)
        for name, value in fields.items():
            if value is not None and getattr(payment, name) is None:
                setattr(payment, name, value)
        await move_payment(session, payment, PaymentStatus.WAITING, cause=ChangeCause.API)
        if order is not None:
            await move_order(session, order, OrderStatus.WAITING, cause=ChangeCause.API)
            # The order's keys stay held while this payment may be paid, plus the grace.
            grace = timedelta(minutes=settings.stock_hold_grace_minutes)
            until = (
                payment.expires_at + grace
                if payment.expires_at is not None
                else settings.stock_hold_until()
            )
            await catalogue.extend_holds(session, order.id, until)
        return payment


async def _record_failure(
    sessionmaker: async_sessionmaker[AsyncSession], payment_id: uuid.UUID, code: str, message: str
) -> None:
    async with unit_of_work(sessionmaker) as session:
        payment = await session.get(Payment, payment_id)
        if payment is None:  # pragma: no cover
            return
        await orders.lock(session, payment.order_id)
        payment = await repository.lock_payment(session, payment_id)
        payment.error_code = code[:64]
        payment.error_message = message[:2000]
        await move_payment(
            session, payment, PaymentStatus.FAILED, cause=ChangeCause.API, note=f"provider: {code}"
        )
