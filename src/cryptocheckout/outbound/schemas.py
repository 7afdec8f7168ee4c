"""The admin API's shapes for webhook endpoints and their delivery attempts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from cryptocheckout.kit.schemas import RequestModel, ResponseModel, SafeText
from cryptocheckout.outbound.models import WebhookDelivery, WebhookEndpoint
from cryptocheckout.payments.events import OrderEventType

Url = Annotated[SafeText, StringConstraints(strict=True, min_length=1, max_length=2000)]
Description = Annotated[SafeText, StringConstraints(strict=True, max_length=500)]
# null sends every event type; a list names the types to send.
EventFilter = Annotated[list[OrderEventType] | None, Field(min_length=1, max_length=20)]


class EndpointCreate(RequestModel):
    url: Url
    events: EventFilter = None
    description: Description | None = None


class EndpointUpdate(RequestModel):
    """Only the fields given change; `"events": null` sends every type again."""

    url: Url | None = None
    events: EventFilter = None
    enabled: bool | None = Field(default=None, strict=True)
    description: Description | None = None


class EndpointOut(ResponseModel):
    id: uuid.UUID
    url: str
    events: list[str] | None
    enabled: bool
    description: str | None
    # Why the service disabled it (failing for days), or null.
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> EndpointOut:
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            events=endpoint.events,
            enabled=endpoint.enabled,
            description=endpoint.description,
            disabled_reason=endpoint.disabled_reason,
            failing_since=endpoint.failing_since,
            created_at=endpoint.created_at,
        )


class EndpointWithSecret(EndpointOut):
    """At creation and rotation only: the secret the receiver verifies with."""

    secret: str


class EndpointList(ResponseModel):
    items: list[EndpointOut]
    next_cursor: str | None


class DeliveryOut(ResponseModel):
    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    webhook_id: str
    status_code: int | None
    response_excerpt: str | None
    error: str | None
    duration_ms: int | None
    created_at: datetime

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> DeliveryOut:
        return cls.model_validate(delivery, from_attributes=True)


class DeliveryList(ResponseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


class Redelivery(ResponseModel):
    """A redelivery was queued: the same event, the same `webhook-id`."""

    event_id: uuid.UUID
    webhook_id: str
    queued: bool
