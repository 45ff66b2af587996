"""Playwright for Python driving the system Chromium (`executable_path`): Playwright's own
browser download cannot work offline, Debian's chromium can. Tests call `open_browser()`
and skip with the reason when either is missing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str | None:
    """The system Chromium, if installed (`make browser` installs it as root with apt, as CI does)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def why_not() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (the [dev] extra: make setup-dev)"
    if chromium() is None:
        return "Debian chromium is not installed (make browser installs it as root with apt)"
    return None


@contextmanager
def open_browser() -> Iterator:
    """A headless system Chromium under Playwright; yields the Browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def wait_header(page, text: str, timeout_ms: int = 60_000) -> str:
    """Wait until the Browse header's title contains `text`; returns the header's text."""
    page.wait_for_function(
        "t => { const h = document.querySelector('#latent-header h2'); return h !== null && h.innerText.includes(t); }",
        arg=text,
        timeout=timeout_ms,
    )
    return page.inner_text("#latent-header")


def wait_text(page, selector: str, text: str, timeout_ms: int = 60_000) -> str:
    """Wait until the element (mounted or not yet: tabs mount on first visit) contains `text`."""
    page.wait_for_function(
        "([s, t]) => ((document.querySelector(s) || {}).innerText || '').includes(t)",
        arg=[selector, text],
        timeout=timeout_ms,
    )
    return page.inner_text(selector)


def wait_url(page, suffix: str, timeout_ms: int = 30_000) -> str:
    """Wait until the page's URL ends with `suffix` (the app pushes history after it renders a
    page, so the URL can trail the header by a moment); returns the URL."""
    page.wait_for_function("s => window.location.href.endsWith(s)", arg=suffix, timeout=timeout_ms)
    return page.url


def overflows_sideways(page) -> bool:
    """True if the page scrolls horizontally (content wider than the viewport)."""
    return bool(page.evaluate("() => document.documentElement.scrollWidth > window.innerWidth + 1"))
