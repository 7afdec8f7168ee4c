"""`/api/admin/webhook-endpoints`: the shop's own systems that hear of order events."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from cryptocheckout.kit.db import unit_of_work
from cryptocheckout.kit.http import AppSettings, SessionMaker
from cryptocheckout.kit.security import require_admin
from cryptocheckout.outbound import repository, service
from cryptocheckout.outbound.schemas import (
    DeliveryList,
    DeliveryOut,
    EndpointCreate,
    EndpointList,
    EndpointOut,
    EndpointUpdate,
    EndpointWithSecret,
    Redelivery,
)

router = APIRouter(
    prefix="/api/admin/webhook-endpoints",
    tags=["admin", "webhooks"],
    dependencies=[Depends(require_admin)],
)
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=200)]


@router.post("", status_code=201, response_model=EndpointWithSecret)
async def create_endpoint(
    data: EndpointCreate, sessionmaker: SessionMaker, settings: AppSettings
) -> EndpointWithSecret:
    """The secret (`whsec_...`) is shown here and after a rotation, never again."""
    async with unit_of_work(sessionmaker) as session:
        endpoint = await service.create_endpoint(
            session, data, allow_private=settings.webhooks_allow_private
        )
        await session.commit()
    return EndpointWithSecret(**EndpointOut.of(endpoint).model_dump(), secret=endpoint.secret)


@router.get("", response_model=EndpointList)
async def list_endpoints(
    sessionmaker: SessionMaker, limit: Limit = 50, cursor: Cursor = None
) -> EndpointList:
    async with unit_of_work(sessionmaker) as session:
        rows, next_cursor = await repository.list_endpoints(session, limit=limit, cursor=cursor)
    return EndpointList(items=[EndpointOut.of(row) for row in rows], next_cursor=next_cursor)


@router.get("/{endpoint_id}", response_model=EndpointOut)
async def get_endpoint(endpoint_id: uuid.UUID, sessionmaker: SessionMaker) -> EndpointOut:
    async with unit_of_work(sessionmaker) as session:
        return EndpointOut.of(await service.endpoint_or_404(session, endpoint_id))


@router.patch("/{endpoint_id}", response_model=EndpointOut)
async def update_endpoint(
    endpoint_id: uuid.UUID, data: EndpointUpdate, sessionmaker: SessionMaker, settings: AppSettings
) -> EndpointOut:
    async with unit_of_work(sessionmaker) as session:
        endpoint = await service.update_endpoint(
            session, endpoint_id, data, allow_private=settings.webhooks_allow_private
        )
        await session.commit()
    return EndpointOut.of(endpoint)


@router.delete("/{endpoint_id}", status_code=204)
async def delete_endpoint(endpoint_id: uuid.UUID, sessionmaker: SessionMaker) -> Response:
    async with unit_of_work(sessionmaker) as session:
        await service.delete_endpoint(session, endpoint_id)
        await session.commit()
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret", response_model=EndpointWithSecret)
async def rotate_secret(endpoint_id: uuid.UUID, sessionmaker: SessionMaker) -> EndpointWithSecret:
    """A new secret; the old one still signs alongside it for 24 hours."""
    async with unit_of_work(sessionmaker) as session:
        endpoint = await service.rotate_secret(session, endpoint_id)
        await session.commit()
    return EndpointWithSecret(**EndpointOut.of(endpoint).model_dump(), secret=endpoint.secret)


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryList)
async def list_deliveries(
    endpoint_id: uuid.UUID, sessionmaker: SessionMaker, limit: Limit = 50, cursor: Cursor = None
) -> DeliveryList:
    """Every attempt, newest first (kept 30 days)."""
    async with unit_of_work(sessionmaker) as session:
        await service.endpoint_or_404(session, endpoint_id)
        rows, next_cursor = await repository.list_deliveries(
            session, endpoint_id, limit=limit, cursor=cursor
        )
    return DeliveryList(items=[DeliveryOut.of(row) for row in rows], next_cursor=next_cursor)


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/redeliver", status_code=202, response_model=Redelivery
)
async def redeliver(
    endpoint_id: uuid.UUID, delivery_id: uuid.UUID, sessionmaker: SessionMaker
) -> Redelivery:
    """Sends the attempt's event again: the same event, the same `webhook-id`."""
    async with unit_of_work(sessionmaker) as session:
        delivery = await service.redeliver(session, endpoint_id, delivery_id)
        await session.commit()
    return Redelivery(event_id=delivery.event_id, webhook_id=delivery.webhook_id, queued=True)
