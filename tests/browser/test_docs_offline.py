"""The API's /docs and /redoc render in a real browser with no network but loopback.

Swagger UI and ReDoc come from the installed package; any request the browser makes
elsewhere (a CDN, a font service) is refused and recorded, and fails the test (except ReDoc's
logo image, which it does without).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.async_api import Route, async_playwright, expect

from cryptocheckout.app import create_app
from cryptocheckout.config import Settings
from tests.browser.support import CHROMIUM, CHROMIUM_ARGS
from tests.support.servers import serve_in_thread


async def test_docs_and_redoc_render_offline(settings: Settings) -> None:
    refused: list[str] = []

    async def only_loopback(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            refused.append(route.request.url)
            await route.abort()

    with serve_in_thread(create_app(settings)) as base:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
            )
            try:
                page = await browser.new_page()
                await page.route("**/*", only_loopback)
                await page.goto(f"{base}/docs")
                await expect(page.locator(".swagger-ui .info .title")).to_contain_text(
                    "cryptocheckout", timeout=15_000
                )
                await expect(page.locator(".opblock-summary-path").first).to_be_visible()
                await page.goto(f"{base}/redoc")
                await expect(page.locator("h1").first).to_contain_text(
                    "cryptocheckout", timeout=15_000
                )
            finally:
                await browser.close()
    # ReDoc's sidebar footer shows its maker's logo from their CDN, an image the page does
    # without; every script, style sheet and font came from the shop.
    assert [url for url in refused if url != "https://cdn.redoc.ly/redoc/logo-mini.svg"] == []
