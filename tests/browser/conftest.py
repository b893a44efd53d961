"""Real Chromium (Debian's) driven by Playwright, with a fake camera and microphone."""

from pages import browser, open_page, playwright

__all__ = ["browser", "open_page", "playwright"]
