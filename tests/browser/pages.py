"""Driving the call page in real Chromium: fixtures, waits, stats, screenshots and axe-core."""

from __future__ import annotations

import shutil
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from support import ARTIFACTS, ROOT, TIME_SCALE

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--autoplay-policy=no-user-gesture-required",
]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"

#: Keeps every RTCPeerConnection the page makes, without touching the app's code.
TRACK_PEER_CONNECTIONS = """
(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Native(...args);
    window.__pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
  Object.setPrototypeOf(window.RTCPeerConnection, Native);
})();
"""

#: Viewports: a municipality's tablet, a clinician's workstation.
TABLET = {"width": 1024, "height": 768}
DESKTOP = {"width": 1440, "height": 900}

#: Keeps the page's WebSockets, the `joined` frames it gets and the types of all frames it receives.
RECORD_SIGNALLING = """
(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.__joined = [];
  window.__received = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.__sockets.push(this);
      this.addEventListener('message', (event) => {
        const frame = JSON.parse(event.data);
        window.__received.push(frame.type);
        if (frame.type === 'joined') window.__joined.push({ participant: frame.participant, resumed: frame.resumed });
      });
    }
  };
})();
"""

#: The number of video frames decoded across the page's connected peer connections.
FRAMES_DECODED = """
async () => {
  let frames = 0;
  for (const pc of window.__pcs) {
    if (pc.connectionState !== 'connected') continue;
    const stats = await pc.getStats();
    stats.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0; });
  }
  return frames;
}
"""


# Module scope, not session: the sync API keeps its event loop marked as running in this thread, which would
# break every asyncio test that runs after it.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


def launch(playwright: Playwright, args: list[str]) -> Browser:
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(executable).exists():
        pytest.fail("Debian's chromium is not installed: run `make test` (it installs it) or apt-get install chromium")
    return playwright.chromium.launch(executable_path=executable, args=args, headless=True)


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = launch(playwright, CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def browser_that_asks(playwright: Playwright) -> Iterator[Browser]:
    """Chromium that keeps the person's camera and microphone permission (granted or denied, see
    `set_media_permission`): `--use-fake-ui-for-media-stream` would accept every request whatever was set."""
    browser = launch(playwright, [arg for arg in CHROMIUM_ARGS if arg != "--use-fake-ui-for-media-stream"])
    yield browser
    browser.close()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Open a page in its own browser context (its own camera, storage and permissions)."""
    yield from _page_opener(browser)


@pytest.fixture
def open_page_that_asks(browser_that_asks: Browser) -> Iterator[Callable[..., Page]]:
    """`open_page` in the browser that keeps permissions: `media="denied"` is a refused camera and microphone."""
    yield from _page_opener(browser_that_asks)


def _page_opener(browser: Browser) -> Iterator[Callable[..., Page]]:
    contexts = []

    def opener(
        url: str,
        *,
        width: int = 1024,
        height: int = 768,
        locale: str = "da-DK",
        axe: bool = False,
        init_script: str | None = None,
        media: str = "granted",
    ) -> Page:
        # axe-core is injected as a script tag, which the page's CSP rightly refuses; only axe runs bypass it.
        context = browser.new_context(viewport={"width": width, "height": height}, locale=locale, bypass_csp=axe)
        contexts.append(context)
        page = context.new_page()
        set_media_permission(page, url, media)
        page.add_init_script(TRACK_PEER_CONNECTIONS)
        if init_script is not None:
            page.add_init_script(init_script)
        page.errors: list[str] = []  # type: ignore[attr-defined]
        page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))  # type: ignore[attr-defined]
        page.on("pageerror", lambda e: page.errors.append(str(e)))  # type: ignore[attr-defined]
        page.set_default_timeout(15_000 * TIME_SCALE)
        page.goto(url)
        return page

    yield opener
    for context in contexts:
        context.close()


def set_media_permission(page: Page, url: str, setting: str) -> None:
    """Camera and microphone `granted` or `denied` for `url`'s origin in the page's browser context, as the person
    would set them in the browser's prompt or site settings (the browser itself then answers getUserMedia)."""
    origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(url))
    if setting == "granted":
        page.context.grant_permissions(["camera", "microphone"], origin=origin)
        return
    # Playwright can grant, not deny: the DevTools protocol sets a denial as the browser keeps one.
    cdp = page.context.new_cdp_session(page)
    context_id = cdp.send("Target.getTargetInfo")["targetInfo"]["browserContextId"]
    for name in ("camera", "microphone"):
        cdp.send(
            "Browser.setPermission",
            {"permission": {"name": name}, "setting": setting, "origin": origin, "browserContextId": context_id},
        )
    cdp.detach()


def wait_state(page: Page, state: str, timeout: float = 15.0) -> None:
    page.wait_for_function("(s) => document.body.dataset.state === s", arg=state, timeout=timeout * 1000 * TIME_SCALE)


def wait_frames_after(page: Page, frames: int, timeout: float = 20.0) -> None:
    """Until the page's connected peer connections have decoded more than `frames` video frames."""
    deadline = time.monotonic() + timeout * TIME_SCALE
    while frames_decoded(page) <= frames:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no new video decoded; peer connections are {connection_states(page)}")
        page.wait_for_timeout(200)


def wait_connected_with_video(page: Page, timeout: float = 20.0) -> None:
    """Until a connected peer connection of the page has decoded video frames."""
    wait_frames_after(page, 0, timeout)


def frames_decoded(page: Page) -> int:
    return int(page.evaluate(FRAMES_DECODED))


def open_connection_states(page: Page) -> list[str]:
    """The states of the page's peer connections that are not closed (a page that waited alone in the call closed
    its prepared offer for a connection ready to answer)."""
    return [state for state in connection_states(page) if state != "closed"]


def connection_states(page: Page) -> list[str]:
    states: list[str] = page.evaluate("() => window.__pcs.map((pc) => pc.connectionState)")
    return states


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def axe_violations(page: Page) -> list[dict[str, Any]]:
    if not AXE.exists():
        pytest.fail("axe-core is not installed: run `make test` (it runs npm ci)")
    page.add_script_tag(path=str(AXE))
    result: list[dict[str, Any]] = page.evaluate(
        """async () => {
          const tags = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'];
          const r = await axe.run(document, {runOnly: {type: 'tag', values: tags}});
          return r.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,
                                           nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5)}));
        }"""
    )
    return result
