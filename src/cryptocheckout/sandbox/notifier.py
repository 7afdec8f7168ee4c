"""Delivery of signed IPNs to each payment's ``ipn_callback_url``, from background tasks.

Like the real service it resends a notification until the receiver answers 2xx or the
resends run out, and records every attempt. On request it disturbs delivery the ways a
real integration meets: exact duplicates, delays, and a later status overtaking an earlier
one. Without chaos the first attempts of one payment go out in the order the statuses
changed, so a test can expect the real sequence; resends never hold later statuses back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Iterable
from typing import Any

import httpx

from cryptocheckout.nowpayments.signature import SIGNATURE_HEADER, canonical_ipn_body, sign_ipn
from cryptocheckout.sandbox.state import (
    Attempt,
    Chaos,
    DeliveryState,
    Notification,
    Payment,
    Store,
    utcnow,
)
from cryptocheckout.sandbox.views import ipn_payload

logger = logging.getLogger("cryptocheckout.sandbox")

# Enough of a receiver's answer to tell what went wrong without keeping whole pages.
MAX_RECORDED_RESPONSE = 4096


class Notifier:
    def __init__(self, store: Store, ipn_secret: str) -> None:
        self._store = store
        self._secret = ipn_secret
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: dict[int, Notification] = {}
        self._order_locks: dict[int, asyncio.Lock] = {}

    async def aclose(self) -> None:
        self.cancel_all()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        with self._store.lock:
            for notification in self._store.notifications:
                if not notification.state.settled:
                    notification.state = DeliveryState.CANCELLED
        self._held.clear()
        self._order_locks.clear()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        # Keep a reference: the loop holds tasks only weakly.
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        return self._client

    # -- emitting ---------------------------------------------------------------------------

    def emit(self, payment: Payment) -> Notification | None:
        """Record and schedule the IPN for the payment's current state.

        Call it right after the status changed; the body is built now, so later
        changes never leak into it.
        """
        url = payment.ipn_callback_url or self._store.config.default_ipn_callback_url
        if not url:
            return None
        with self._store.lock:
            payload = ipn_payload(
                payment, amounts_as_strings=self._store.settings.amounts_as_strings
            )
            notification = Notification(
                id=self._store.serial(),
                payment_id=payment.id,
                invoice_id=payment.invoice_id,
                payment_status=payment.status,
                url=url,
                body=canonical_ipn_body(payload),
                signature=sign_ipn(payload, self._secret),
                created_at=utcnow(),
                reason="status",
            )
            self._store.add_notification(notification)
            chaos = self._store.effective_chaos(payment)
            self._schedule(notification, chaos)
        return notification

    def resend(self, original: Notification) -> Notification:
        """Send the exact same body again, as a merchant can from the dashboard."""
        copy = self._store.copy_notification(original, reason="resend")
        self.spawn(self._dispatch([copy], Chaos()))
        return copy

    def _schedule(self, notification: Notification, chaos: Chaos) -> None:
        if not chaos.reorder:
            self.spawn(self._dispatch([notification], chaos))
            return
        # Hold each notification until the next one of the payment exists, then send the
        # newer first: every pair arrives swapped. A last one alone goes out after a while.
        held = self._held.pop(notification.payment_id, None)
        if held is None:
            notification.state = DeliveryState.HELD
            self._held[notification.payment_id] = notification
            self.spawn(self._release_later(notification, chaos))
        else:
            self.spawn(self._dispatch([notification, held], chaos))

    async def _release_later(self, notification: Notification, chaos: Chaos) -> None:
        await asyncio.sleep(max(3 * self._store.settings.step_delay, 0.1))
        if self._held.get(notification.payment_id) is notification:
            del self._held[notification.payment_id]
            await self._dispatch([notification], chaos)

    # -- delivering -------------------------------------------------------------------------

    async def _dispatch(self, notifications: Iterable[Notification], chaos: Chaos) -> None:
        batch = list(notifications)
        for notification in batch:
            notification.state = DeliveryState.SCHEDULED
        self._store.touch()
        if chaos.delay > 0:
            await asyncio.sleep(chaos.delay)
        order = self._order_locks.setdefault(batch[0].payment_id, asyncio.Lock())
        for notification in batch:
            copies = [notification]
            copies += [
                self._store.copy_notification(notification, reason="duplicate")
                for _ in range(chaos.duplicates)
            ]
            for item in copies:
                async with order:
                    delivered = await self._attempt(item)
                if not delivered:
                    self.spawn(self._resend_until_delivered(item))

    async def _resend_until_delivered(self, notification: Notification) -> None:
        while len(notification.attempts) <= self._store.settings.resend_attempts:
            await asyncio.sleep(self._store.settings.resend_interval)
            if await self._attempt(notification):
                return

    async def _attempt(self, notification: Notification) -> bool:
        number = len(notification.attempts) + 1
        started = time.monotonic()
        status_code: int | None = None
        response_body = ""
        error: str | None = None
        try:
            response = await self._http().post(
                notification.url,
                content=notification.body,
                headers={
                    "content-type": "application/json",
                    SIGNATURE_HEADER: notification.signature,
                    "user-agent": "NOWPayments-Sandbox/1.0",
                },
                timeout=self._store.settings.ipn_timeout,
            )
            status_code = response.status_code
            response_body = response.text[:MAX_RECORDED_RESPONSE]
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:MAX_RECORDED_RESPONSE]
        delivered = status_code is not None and 200 <= status_code < 300
        with self._store.lock:
            notification.attempts.append(
                Attempt(
                    number=number,
                    at=utcnow(),
                    status_code=status_code,
                    response_body=response_body,
                    error=error,
                    duration_ms=int((time.monotonic() - started) * 1000),
                )
            )
            if delivered:
                notification.state = DeliveryState.DELIVERED
            elif number > self._store.settings.resend_attempts:
                notification.state = DeliveryState.FAILED
            else:
                notification.state = DeliveryState.RETRYING
            self._store.touch()
        logger.info(
            "IPN %s for payment %s (%s) attempt %d: %s",
            notification.id,
            notification.payment_id,
            notification.payment_status,
            number,
            status_code if status_code is not None else error,
        )
        return delivered
