"""What every browser test shares: Debian's Chromium, a context that allows only loopback,
the page's CSP complaints, axe-core, and where screenshots go."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

try:
    from playwright.async_api import Browser, BrowserContext, Page, Route
except ImportError as exc:  # a loud collection error, never a skip
    raise ImportError("tests/browser needs playwright: .venv/bin/pip install -e '.[dev]'") from exc

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling Google services, which a
# closed network refuses; the test browser needs nothing but loopback.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
WAIT_MS = 10_000


def screens_dir(default: str, fallback: str) -> Path:
    """`SCREENS` or `default`, else a folder under the temporary directory."""
    wanted = Path(os.environ.get("SCREENS", default))
    try:
        wanted.mkdir(parents=True, exist_ok=True)
    except OSError:
        wanted = Path(tempfile.gettempdir()) / fallback
        wanted.mkdir(parents=True, exist_ok=True)
    return wanted


async def loopback_context(
    browser: Browser, *, width: int = 1280, javascript: bool = True
) -> tuple[BrowserContext, list[str]]:
    """A context whose requests off 127.0.0.1 are refused and listed (tests assert none)."""
    context = await browser.new_context(
        viewport={"width": width, "height": 900}, java_script_enabled=javascript
    )
    context.set_default_timeout(WAIT_MS)
    elsewhere: list[str] = []

    async def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort()

    await context.route("**/*", loopback_only)
    return context, elsewhere


def csp_complaints(page: Page) -> list[str]:
    """The page's console messages about its Content-Security-Policy, as they come."""
    complaints: list[str] = []
    page.on(
        "console",
        lambda message: (
            complaints.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return complaints
