"""Every table, imported in one place so the metadata (and Alembic) sees them all."""

from cryptocheckout.admin.models import AdminAction, AdminSession
from cryptocheckout.catalogue.models import LicenceKey, Product, StockHold
from cryptocheckout.delivery.models import Delivery
from cryptocheckout.kit.db import Base
from cryptocheckout.kit.idempotency_models import IdempotencyKey
from cryptocheckout.kit.jobs_models import Job
from cryptocheckout.orders.models import Order, OrderItem
from cryptocheckout.outbound.models import WebhookDelivery, WebhookEndpoint
from cryptocheckout.payments.models import Payment, StatusChange
from cryptocheckout.webhooks.models import RejectedWebhook, WebhookLog

__all__ = [
    "AdminAction",
    "AdminSession",
    "Base",
    "Delivery",
    "IdempotencyKey",
    "Job",
    "LicenceKey",
    "Order",
    "OrderItem",
    "Payment",
    "Product",
    "RejectedWebhook",
    "StatusChange",
    "StockHold",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookLog",
]
