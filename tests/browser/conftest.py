"""Real browsers with a fake camera and microphone: Debian's chromium (Playwright) and firefox-esr (Marionette)."""

from firefox import firefox

from pages import browser, browser_that_asks, open_page, open_page_that_asks, playwright

__all__ = ["browser", "browser_that_asks", "firefox", "open_page", "open_page_that_asks", "playwright"]
