"""What the rest of the service needs from delivery, built from the settings."""

from __future__ import annotations

import ssl
from datetime import timedelta
from typing import Annotated

from fastapi import Depends

from cryptocheckout.config import Settings
from cryptocheckout.delivery.jobs import SEND_ORDER_EMAIL_JOB, order_email_handler
from cryptocheckout.delivery.links import DeliveryLinks
from cryptocheckout.kit import jobs
from cryptocheckout.kit.encryption import KeyRing
from cryptocheckout.kit.http import AppKeyRing, AppSettings
from cryptocheckout.kit.mail import Mailer, mailer_for


def delivery_links(settings: Settings, ring: KeyRing) -> DeliveryLinks:
    return DeliveryLinks(
        ring, settings.public_base_url, timedelta(seconds=settings.delivery_link_ttl_seconds)
    )


def mailer_from_settings(settings: Settings, tls_context: ssl.SSLContext | None = None) -> Mailer:
    return mailer_for(
        settings.smtp_url.get_secret_value(),
        settings.mail_from,
        settings.mail_dir,
        tls_context=tls_context,
    )


def mail_job_handlers(settings: Settings, ring: KeyRing) -> dict[str, jobs.Handler]:
    """`{"send_order_email": handler}`, to merge into the worker's table of handlers."""
    handler = order_email_handler(
        mailer_from_settings(settings),
        delivery_links(settings, ring),
        settings.shop_name,
        settings.support_email,
    )
    return {SEND_ORDER_EMAIL_JOB: handler}


def get_delivery_links(settings: AppSettings, ring: AppKeyRing) -> DeliveryLinks:
    return delivery_links(settings, ring)


# A request's delivery links (signing with the app's key ring).
Links = Annotated[DeliveryLinks, Depends(get_delivery_links)]
