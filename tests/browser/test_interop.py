"""Two browser engines in one call: Chromium (Playwright) and Firefox (Marionette), through Stue."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from firefox import FirefoxPage
from playwright.sync_api import Page

from pages import (
    RECORD_SIGNALLING,
    TABLET,
    connection_states,
    frames_decoded,
    open_connection_states,
    wait_connected_with_video,
    wait_frames_after,
    wait_state,
)
from support import ARTIFACTS, StueServer

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("firefox_first", [False, True], ids=["chromium-waits", "firefox-waits"])
def test_chromium_and_firefox_see_each_other(
    stue_embedded: StueServer, open_page: Callable[..., Page], firefox: FirefoxPage, firefox_first: bool
) -> None:
    links = stue_embedded.new_consultation()
    citizen = open_page(links["citizen_link"], **TABLET)
    firefox.goto(links["clinician_link"])
    firefox.wait_state("preview")
    wait_state(citizen, "preview")
    # Whoever waits in the call is the polite side; the newcomer offers its prepared connection.
    if firefox_first:
        firefox.click("#join")
        firefox.wait_state("waiting")
        citizen.click("#join")
    else:
        citizen.click("#join")
        wait_state(citizen, "waiting")
        firefox.click("#join")
    wait_connected_with_video(citizen, timeout=30)
    firefox.wait_state("in-call")
    firefox.wait_for("return document.querySelector('[data-tile]')?.dataset.connected === 'true';", "connected")
    firefox.wait_remote_video_moving(timeout=30)
    assert open_connection_states(citizen) == ["connected"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    firefox.screenshot(ARTIFACTS / f"call-in-call-firefox-{'waits' if firefox_first else 'joins'}.png")
    assert citizen.errors == []  # type: ignore[attr-defined]


def test_a_resume_keeps_a_call_with_firefox_going(
    stue_embedded: StueServer, open_page: Callable[..., Page], firefox: FirefoxPage
) -> None:
    """Chromium's socket drops mid-call with Firefox: Chromium resumes, and neither side rebuilds its connection."""
    links = stue_embedded.new_consultation()
    citizen = open_page(links["citizen_link"], **TABLET, init_script=RECORD_SIGNALLING)
    firefox.goto(links["clinician_link"])
    firefox.wait_state("preview")
    firefox.click("#join")
    firefox.wait_state("waiting")
    wait_state(citizen, "preview")
    citizen.click("#join")
    wait_connected_with_video(citizen, timeout=30)
    firefox.wait_remote_video_moving(timeout=30)
    tiles = "return [...document.querySelectorAll('[data-tile]')].map((t) => t.dataset.tile);"
    tiles_before = firefox.evaluate(tiles)

    citizen.evaluate("() => window.__sockets.at(-1).close(4000)")  # to the server, a lost connection
    citizen.wait_for_function("() => window.__sockets.length === 2 && window.__sockets[1].readyState === 1")
    wait_state(citizen, "in-call")
    wait_frames_after(citizen, frames_decoded(citizen))
    firefox.wait_remote_video_moving()
    assert connection_states(citizen) == ["connected"]  # the same one connection
    assert firefox.evaluate(tiles) == tiles_before  # Firefox was told nothing that replaced its peer
