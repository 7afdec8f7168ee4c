from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field

from cryptocheckout.catalogue.schemas import AdminProductOut
from cryptocheckout.kit.jobs_models import JobStatus
from cryptocheckout.kit.schemas import MoneyOut, RequestModel, ResponseModel
from cryptocheckout.orders.schemas import OrderOut
from cryptocheckout.payments.models import ChangeCause, PaymentKind, PaymentStatus
from cryptocheckout.webhooks.models import WebhookLogStatus


class AdminPayment(ResponseModel):
    id: uuid.UUID
    order_id: uuid.UUID
    provider: str
    kind: PaymentKind
    status: PaymentStatus
    provider_status: str | None
    external_id: str | None
    invoice_id: str | None
    parent_external_id: str | None
    payment_url: str | None
    price_amount: MoneyOut
    price_currency: str
    pay_amount: MoneyOut | None
    pay_currency: str | None
    pay_address: str | None
    payin_extra_id: str | None
    actually_paid: MoneyOut | None
    # What this payment credits its order, in the order's currency (price_currency).
    credit: MoneyOut
    purchase_id: str | None
    expires_at: datetime | None
    error_code: str | None
    error_message: str | None
    needs_review: bool
    review_reason: str | None
    created_at: datetime
    updated_at: datetime


class AdminPaymentList(ResponseModel):
    items: list[AdminPayment]
    next_cursor: str | None


class StatusChangeOut(ResponseModel):
    id: uuid.UUID
    subject: str
    subject_id: uuid.UUID
    from_status: str | None
    to_status: str
    cause: ChangeCause
    cause_ref: str | None
    note: str | None
    created_at: datetime


class JobOut(ResponseModel):
    id: uuid.UUID
    kind: str
    status: JobStatus
    attempts: int
    max_attempts: int
    run_at: datetime
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


class JobList(ResponseModel):
    items: list[JobOut]
    next_cursor: str | None


class WebhookLogOut(ResponseModel):
    id: uuid.UUID
    provider: str
    external_id: str | None
    provider_status: str | None
    status: WebhookLogStatus
    deliveries: int
    attempts: int
    error: str | None
    next_attempt_at: datetime | None
    last_received_at: datetime | None
    processed_at: datetime | None
    created_at: datetime


class WebhookLogDetail(WebhookLogOut):
    fingerprint: str
    raw_body: str
    raw_payload: dict[str, Any]


class WebhookLogList(ResponseModel):
    items: list[WebhookLogOut]
    next_cursor: str | None


class PaymentDetail(AdminPayment):
    order: OrderOut
    timeline: list[StatusChangeOut]
    notifications: list[WebhookLogOut]
    jobs: list[JobOut]


class RejectedWebhookOut(ResponseModel):
    id: uuid.UUID
    provider: str
    reason: str
    remote_addr: str | None
    body_sha256: str | None
    body_size: int
    created_at: datetime


class RejectedWebhookList(ResponseModel):
    items: list[RejectedWebhookOut]
    next_cursor: str | None


class AdminActionOut(ResponseModel):
    id: uuid.UUID
    actor: str
    action: str
    subject: str
    subject_id: uuid.UUID | None
    order_id: uuid.UUID | None
    note: str | None
    outcome: str | None
    created_at: datetime


class AdminOrderList(ResponseModel):
    items: list[OrderOut]
    next_cursor: str | None


class AdminOrderDetail(OrderOut):
    payments: list[AdminPayment]
    timeline: list[StatusChangeOut]
    jobs: list[JobOut]
    actions: list[AdminActionOut]


class AdminProductList(ResponseModel):
    items: list[AdminProductOut]


class EmailQueued(ResponseModel):
    order_id: uuid.UUID
    event: str


class MarkPaidIn(RequestModel):
    reason: str = Field(strict=True, max_length=500)
