"""The delivery pages: `GET /delivery/{token}` shows the keys, `/download` gives them as text.

HTML for people (these are links from an e-mail), so a wrong link is an HTML 404 and an
expired one an HTML 410 with the `Email me a new link` form, rather than problem+json.
Every answer here is `no-store` and sends no referrer: the URL itself is the credential.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from cryptocheckout.delivery import service
from cryptocheckout.delivery.wiring import Links
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.db import unit_of_work
from cryptocheckout.kit.errors import NotFound
from cryptocheckout.kit.http import AppKeyRing, AppSettings, SessionMaker

router = APIRouter(tags=["delivery"], include_in_schema=False)

_pages = Environment(
    loader=PackageLoader("cryptocheckout.delivery", "templates"),
    autoescape=select_autoescape(default=True),
    undefined=StrictUndefined,
)

PRIVATE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    # The shop's stylesheet and script (copy buttons) from /static, nothing else.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


def _page(template: str, settings: AppSettings, status: int = 200, **values: Any) -> HTMLResponse:
    html = _pages.get_template(template).render(
        shop_name=settings.shop_name, support_email=settings.support_email, **values
    )
    return HTMLResponse(html, status_code=status, headers=PRIVATE_HEADERS)


async def _open(
    token: str, sessionmaker: SessionMaker, ring: AppKeyRing, links: Links, settings: AppSettings
) -> service.DeliveryPage | HTMLResponse:
    """The keys behind a link, or the page that says why not (404, or 410 with the form)."""
    try:
        async with unit_of_work(sessionmaker) as session:
            page = await service.open_delivery(session, ring, links, token, utcnow())
            await session.commit()
    except NotFound:
        return _page("delivery_not_found.html", settings, 404)
    except service.LinkExpired:
        return _page("delivery_expired.html", settings, 410, token=token)
    return page


Opened = Annotated[service.DeliveryPage | HTMLResponse, Depends(_open)]


@router.get("/delivery/{token}", response_class=HTMLResponse)
async def delivery_page(token: str, opened: Opened, settings: AppSettings) -> HTMLResponse:
    if isinstance(opened, HTMLResponse):
        return opened
    return _page(
        "delivery_keys.html", settings, token=token, keys=opened.keys, expires_at=opened.expires_at
    )


@router.get("/delivery/{token}/download")
async def delivery_download(opened: Opened) -> Response:
    if isinstance(opened, HTMLResponse):
        return opened
    text = "".join(f"{item.product_name}\t{item.key}\n" for item in opened.keys)
    return PlainTextResponse(
        text,
        headers={
            **PRIVATE_HEADERS,
            "Content-Disposition": f'attachment; filename="keys-{opened.order_id.hex[:8]}.txt"',
        },
    )


@router.post("/delivery/{token}/new-link", response_class=HTMLResponse)
async def delivery_new_link(
    token: str, sessionmaker: SessionMaker, links: Links, settings: AppSettings
) -> HTMLResponse:
    try:
        async with unit_of_work(sessionmaker) as session:
            await service.request_fresh_link(session, links, token, utcnow())
            await session.commit()
    except NotFound:
        return _page("delivery_not_found.html", settings, 404)
    except service.FreshLinkTooSoon as exc:
        minutes = max(1, math.ceil(exc.retry_after.total_seconds() / 60))
        return _page("delivery_link_sent.html", settings, 429, too_soon=True, minutes=minutes)
    return _page("delivery_link_sent.html", settings, 202, too_soon=False, minutes=0)
