"""Real browsers with a fake camera and microphone: Debian's chromium (Playwright) and firefox-esr (Marionette)."""

from firefox import firefox

from pages import browser, open_page, playwright

__all__ = ["browser", "firefox", "open_page", "playwright"]
