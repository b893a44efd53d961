"""The call page in real Chromium: two browsers in a call, Chromium with `stue probe`, looks and accessibility."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page

from pages import (
    DESKTOP,
    RECORD_SIGNALLING,
    TABLET,
    axe_violations,
    connection_states,
    frames_decoded,
    open_connection_states,
    screenshot,
    set_media_permission,
    wait_connected_with_video,
    wait_frames_after,
    wait_state,
)
from support import ROOT, TIME_SCALE, StueServer, stue_command

pytestmark = pytest.mark.browser


def join(page: Page) -> None:
    wait_state(page, "preview")
    page.click("#join")


def in_call(open_page: Callable[..., Page], links: dict[str, str]) -> tuple[Page, Page]:
    """A citizen on a tablet and a clinician on a desktop, joined and seeing each other."""
    citizen = open_page(links["citizen_link"], **TABLET, init_script=RECORD_SIGNALLING)
    clinician = open_page(links["clinician_link"], **DESKTOP, init_script=RECORD_SIGNALLING)
    join(citizen)
    join(clinician)
    wait_connected_with_video(citizen)
    wait_connected_with_video(clinician)
    return citizen, clinician


def test_two_browsers_see_each_other(stue: StueServer, open_page: Callable[..., Page]) -> None:
    links = stue.new_consultation()
    citizen = open_page(links["citizen_link"], **TABLET)
    clinician = open_page(links["clinician_link"], **DESKTOP)
    join(citizen)
    wait_state(citizen, "waiting")
    join(clinician)
    for page in (citizen, clinician):
        wait_state(page, "in-call")
        wait_connected_with_video(page)
        assert "connected" in connection_states(page)
        assert page.locator("video[data-participant]").count() == 1
    screenshot(citizen, "call-in-call-tablet")
    screenshot(clinician, "call-in-call-desktop")
    assert citizen.errors == [] and clinician.errors == []  # type: ignore[attr-defined]


def test_a_peer_leaves_and_comes_back(stue_embedded: StueServer, open_page: Callable[..., Page]) -> None:
    links = stue_embedded.new_consultation()
    citizen, clinician = in_call(open_page, links)
    clinician.click("#hangup")
    wait_state(clinician, "ended")
    wait_state(citizen, "waiting")
    assert citizen.locator("video[data-participant]").count() == 0
    screenshot(citizen, "call-waiting-tablet")
    screenshot(clinician, "call-ended-desktop")
    clinician.click("#rejoin")
    wait_state(citizen, "in-call")
    wait_connected_with_video(citizen)
    # The citizen waited twice: each time alone it closed what it had for a connection ready to answer the newcomer.
    assert connection_states(citizen) == ["closed", "closed", "connected"]


def run_probe(link: str, timeout: float = 25) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*stue_command("probe", link, "--json", "--timeout", str(timeout * TIME_SCALE))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=os.environ.copy(),
    )


@pytest.mark.parametrize("browser_first", [True, False], ids=["browser-first", "probe-first"])
def test_chromium_and_stue_probe_interoperate(
    stue_embedded: StueServer, open_page: Callable[..., Page], browser_first: bool
) -> None:
    links = stue_embedded.new_consultation()
    page = open_page(links["citizen_link"], **TABLET)
    wait_state(page, "preview")
    if browser_first:
        page.click("#join")
        wait_state(page, "waiting")
        probe = run_probe(links["clinician_link"])
    else:
        probe = run_probe(links["clinician_link"])
        page.wait_for_timeout(1500 * TIME_SCALE)  # let the probe join first, so the browser is the newcomer
        page.click("#join")
    wait_connected_with_video(page, timeout=30)
    out, err = probe.communicate(timeout=60 * TIME_SCALE)
    report = json.loads(out)
    assert probe.returncode == 0, (report, err[-2000:])
    assert report["connected"] is True
    assert report["frames_received"] > 0
    assert report["audio_packets_received"] > 0


def test_a_bad_link_shows_a_calm_error(stue_embedded: StueServer, open_page: Callable[..., Page]) -> None:
    page = open_page(f"{stue_embedded.url}/call#t={'x' * 32}", **TABLET)
    # Told at once, without a tap and before the browser would ask for the camera.
    wait_state(page, "error")
    assert page.evaluate("() => document.querySelector('#preview-video').srcObject") is None
    assert page.evaluate("document.body.dataset.error") == "bad_link"
    assert page.locator("#main").inner_text().strip() != ""
    screenshot(page, "call-bad-link-tablet")


@pytest.mark.parametrize("language", ["da", "en"])
def test_the_call_page_passes_axe_in_both_languages(
    stue_embedded: StueServer, open_page: Callable[..., Page], language: str
) -> None:
    links = stue_embedded.new_consultation()
    citizen = open_page(links["citizen_link"], **TABLET, axe=True)
    if language == "en":
        citizen.click("#lang")
        citizen.wait_for_function("document.documentElement.lang === 'en'")
    wait_state(citizen, "preview")
    assert axe_violations(citizen) == []
    screenshot(citizen, f"call-preview-tablet-{language}")
    join(citizen)
    wait_state(citizen, "waiting")
    assert axe_violations(citizen) == []
    clinician = open_page(links["clinician_link"], **DESKTOP, axe=True)
    if language == "en":
        clinician.click("#lang")
    join(clinician)
    wait_connected_with_video(citizen)
    wait_state(citizen, "in-call")
    assert axe_violations(citizen) == []
    assert axe_violations(clinician) == []
    screenshot(clinician, f"call-in-call-desktop-{language}")
    screenshot(citizen, f"call-in-call-tablet-{language}")
    texts = citizen.locator("#view-call").inner_text()
    assert ("End call" in texts) == (language == "en")


#: The remote ICE username fragment of each connected peer connection: it changes with every ICE restart.
REMOTE_UFRAGS = """() => window.__pcs
  .filter((pc) => pc.connectionState === 'connected')
  .map((pc) => pc.remoteDescription.sdp.match(/a=ice-ufrag:(\\S+)/)[1])"""


@pytest.mark.parametrize("both_sides", [False, True], ids=["one-side", "glare"])
def test_ice_restart_goes_through_signalling(
    stue_embedded: StueServer, open_page: Callable[..., Page], both_sides: bool
) -> None:
    links = stue_embedded.new_consultation()
    citizen, clinician = in_call(open_page, links)
    before = citizen.evaluate(REMOTE_UFRAGS), clinician.evaluate(REMOTE_UFRAGS)
    # What the page does on ICE `disconnected`; both at once is an offer collision that perfect negotiation
    # must resolve (the polite side rolls back).
    citizen.evaluate("() => window.__pcs.forEach((pc) => pc.connectionState === 'connected' && pc.restartIce())")
    if both_sides:
        clinician.evaluate("() => window.__pcs.forEach((pc) => pc.connectionState === 'connected' && pc.restartIce())")
    for page, old in zip((citizen, clinician), before, strict=True):
        page.wait_for_function(
            f"(old) => {{ const now = ({REMOTE_UFRAGS})(); return now.length === 1 && now[0] !== old[0]; }}",
            arg=old,
            timeout=15_000 * TIME_SCALE,
        )
    for page in (citizen, clinician):
        wait_frames_after(page, frames_decoded(page))  # media still flows after the restart
        assert connection_states(page).count("connected") == 1
    assert citizen.errors == [] and clinician.errors == []  # type: ignore[attr-defined]


def test_both_pages_rejoin_after_the_server_restarts(
    stue_factory: Callable[..., StueServer], open_page: Callable[..., Page], tmp_path: Path
) -> None:
    env = {"STUE_DATA_DIR": str(tmp_path / "data")}
    server = stue_factory(env)
    links = server.new_consultation()
    citizen, clinician = in_call(open_page, links)
    server.stop()
    # The consultation and both memberships live on in the embedded Redis's files (a dropped socket is kept for
    # the resume grace); the pages reconnect with backoff and resume, and the call's media never depended on
    # the server: each page keeps its one peer connection.
    stue_factory(env, port=server.port)
    for page in (citizen, clinician):
        page.wait_for_function("() => window.__joined.length === 2", timeout=30_000 * TIME_SCALE)
        assert page.evaluate("() => window.__joined[1].resumed") is True
        wait_state(page, "in-call", timeout=30)
        wait_frames_after(page, frames_decoded(page), timeout=30)
        assert open_connection_states(page) == ["connected"]
        assert "peer-left" not in page.evaluate("() => window.__received")
    screenshot(citizen, "call-after-server-restart-tablet")


#: Loses the page's first outgoing offer, as a Redis blip between two server processes would.
DROP_FIRST_OFFER = """
(() => {
  const send = WebSocket.prototype.send;
  let dropped = false;
  WebSocket.prototype.send = function (data) {
    if (!dropped && typeof data === 'string' && JSON.parse(data).type === 'offer') {
      dropped = true;
      window.__droppedOffer = true;
      return;
    }
    return send.call(this, data);
  };
})();
"""


def test_a_lost_offer_is_offered_again(stue_embedded: StueServer, open_page: Callable[..., Page]) -> None:
    links = stue_embedded.new_consultation()
    citizen = open_page(links["citizen_link"], **TABLET)
    join(citizen)
    wait_state(citizen, "waiting")
    clinician = open_page(links["clinician_link"], **DESKTOP, init_script=DROP_FIRST_OFFER)
    join(clinician)  # the newcomer: its first offer is lost on the way
    wait_connected_with_video(citizen, timeout=30)
    wait_connected_with_video(clinician, timeout=30)
    assert clinician.evaluate("() => window.__droppedOffer") is True


def test_the_tap_uses_the_connection_prepared_in_the_preview(
    stue_embedded: StueServer, open_page: Callable[..., Page]
) -> None:
    """WebRTC starts while the preview shows: each page makes a connection, with its offer set, before the tap. The
    newcomer sends that offer. The page already waiting answers on a connection that never set an offer of its
    own, so it is the ICE-controlled side from the start (a rolled-back offer keeps Chrome in the controlling role,
    and the two sides' first checks then collide in a role conflict)."""
    links = stue_embedded.new_consultation()
    citizen = open_page(links["citizen_link"], **TABLET)
    clinician = open_page(links["clinician_link"], **DESKTOP)
    for page in (citizen, clinician):
        wait_state(page, "preview")
        page.wait_for_function("() => window.__pcs.length === 1 && window.__pcs[0].iceGatheringState === 'complete'")
        assert page.evaluate("() => window.__pcs[0].signalingState") == "have-local-offer"
    join(citizen)
    wait_state(citizen, "waiting")
    # Alone in the call: the prepared offer is dropped for a connection ready to answer (tracks, no offer).
    citizen.wait_for_function("() => window.__pcs.length === 2")
    assert citizen.evaluate("() => window.__pcs.map((pc) => pc.signalingState)") == ["closed", "stable"]
    assert citizen.evaluate("() => window.__pcs[1].getSenders().length") == 2
    join(clinician)  # the newcomer sends its prepared offer; the citizen answers on its prepared connection
    for page in (citizen, clinician):
        wait_connected_with_video(page)
    assert connection_states(clinician) == ["connected"]
    assert connection_states(citizen) == ["closed", "connected"]
    assert ice_roles(clinician) == ["controlling"]
    assert ice_roles(citizen) == ["controlled"]
    citizen.click("#hangup")
    wait_state(citizen, "ended")
    assert citizen.evaluate("() => window.__pcs[1].connectionState") == "closed"


#: Records what the iPad lessons are about: each getUserMedia stream, each AudioContext (as on iPadOS, one made
#: outside a user gesture starts suspended, and only a `resume` inside a tap runs it), and every read of the user
#: agent or its relatives.
IPAD_HABITS = """
(() => {
  window.__streams = [];
  window.__audio = [];
  window.__agentReads = 0;
  const devices = navigator.mediaDevices;
  const getUserMedia = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    const stream = await getUserMedia(constraints);
    window.__streams.push(stream);
    return stream;
  };
  const Native = window.AudioContext;
  window.AudioContext = class extends Native {
    constructor(...args) {
      super(...args);
      this.__resumedInTap = false;
      window.__audio.push(this);
      if (!navigator.userActivation.isActive) void super.suspend();
    }
    resume() {
      if (!(window.event && window.event.type === 'click')) {
        return Promise.reject(new DOMException('not inside a tap', 'NotAllowedError'));
      }
      this.__resumedInTap = true;
      return super.resume();
    }
  };
  for (const name of ['userAgent', 'platform', 'vendor', 'appVersion', 'userAgentData']) {
    const native = Object.getOwnPropertyDescriptor(Navigator.prototype, name);
    if (!native) continue;
    Object.defineProperty(Navigator.prototype, name, {
      configurable: true,
      get() {
        window.__agentReads += 1;
        return native.get.call(this);
      },
    });
  }
})();
"""


def test_the_ipad_lessons_one_camera_request_one_audio_context_resumed_in_the_tap(
    stue_embedded: StueServer, open_page: Callable[..., Page]
) -> None:
    """What broke comparable products on iPads: the page asks for the camera once and carries that stream from the
    preview into the call; it makes one AudioContext and resumes it inside the tap; it detects capabilities and
    never reads the user agent (iPadOS says it is a Mac)."""
    links = stue_embedded.new_consultation()
    citizen = open_page(links["citizen_link"], **TABLET, init_script=IPAD_HABITS)
    clinician = open_page(links["clinician_link"], **DESKTOP)
    wait_state(citizen, "preview")
    citizen.wait_for_function("() => window.__audio.length === 1 && window.__audio[0].state === 'suspended'")
    join(citizen)
    join(clinician)
    wait_connected_with_video(citizen)
    habits = citizen.evaluate(
        """() => {
          const pc = window.__pcs.find((pc) => pc.connectionState === 'connected');
          return {
            streams: window.__streams.length,
            cameraTracks: window.__streams.flatMap((s) => s.getTracks()).map((t) => t.id).sort(),
            sentTracks: pc.getSenders().map((s) => s.track && s.track.id).sort(),
            audioContexts: window.__audio.length,
            resumedInTap: window.__audio[0].__resumedInTap,
            audioState: window.__audio[0].state,
            agentReads: window.__agentReads,
          };
        }"""
    )
    assert habits["streams"] == 1
    assert habits["sentTracks"] == habits["cameraTracks"]  # the preview's own tracks, carried into the call
    assert (habits["audioContexts"], habits["resumedInTap"], habits["audioState"]) == (1, True, "running")
    assert habits["agentReads"] == 0


def ice_roles(page: Page) -> list[str]:
    """The ICE role of each connected peer connection's transport."""
    roles: list[str] = page.evaluate(
        """async () => {
          const roles = [];
          for (const pc of window.__pcs.filter((pc) => pc.connectionState === 'connected')) {
            (await pc.getStats()).forEach((s) => { if (s.type === 'transport' && s.iceRole) roles.push(s.iceRole); });
          }
          return roles;
        }"""
    )
    return roles


def test_a_signalling_drop_does_not_interrupt_the_call(
    stue_embedded: StueServer, open_page: Callable[..., Page]
) -> None:
    """The socket drops mid-call: the page resumes as the same participant and no peer connection is rebuilt."""
    citizen, clinician = in_call(open_page, stue_embedded.new_consultation())
    made = {id(page): page.evaluate("() => window.__pcs.length") for page in (citizen, clinician)}
    citizen.evaluate("() => window.__sockets.at(-1).close(4000)")  # to the server, a lost connection: no leave
    citizen.wait_for_function("() => window.__joined.length === 2")
    first, second = citizen.evaluate("() => window.__joined")
    assert second == {"participant": first["participant"], "resumed": True}
    for page in (citizen, clinician):
        wait_frames_after(page, frames_decoded(page))
        assert page.evaluate("() => window.__pcs.length") == made[id(page)]  # none made anew
        assert open_connection_states(page) == ["connected"]
        wait_state(page, "in-call")
    assert "peer-left" not in clinician.evaluate("() => window.__received")
    assert citizen.errors == [] and clinician.errors == []  # type: ignore[attr-defined]


def test_an_ice_restart_sent_while_away_is_answered_after_the_resume(
    stue_embedded: StueServer, open_page: Callable[..., Page]
) -> None:
    """The citizen's socket drops just as the clinician restarts ICE (one network change often does both). The
    clinician's offer is held for the citizen, comes right after its resumed `joined`, and is answered at once,
    not after the clinician's 5 s wait for a lost answer."""
    citizen, clinician = in_call(open_page, stue_embedded.new_consultation())
    warnings: list[str] = []
    clinician.on("console", lambda message: warnings.append(message.text))
    before = clinician.evaluate(REMOTE_UFRAGS)
    citizen.evaluate("() => window.__sockets.at(-1).close(4000)")  # no leave; the page retries after ≥ 0.8 s
    clinician.wait_for_timeout(200)
    clinician.evaluate("() => window.__pcs.forEach((pc) => pc.connectionState === 'connected' && pc.restartIce())")
    clinician.wait_for_function(
        f"(old) => {{ const now = ({REMOTE_UFRAGS})(); return now.length === 1 && now[0] !== old[0]; }}",
        arg=before,
        timeout=4_000 * TIME_SCALE,  # below OFFER_ANSWER_TIMEOUT_MS: the first offer was answered
    )
    received = citizen.evaluate("() => window.__received")
    resumed_at = [i for i, kind in enumerate(received) if kind == "joined"][1]
    assert received[resumed_at + 1] == "offer"  # held while away, delivered right after `joined`
    assert citizen.evaluate("() => window.__joined[1].resumed") is True
    assert not [text for text in warnings if "offering again" in text]
    for page in (citizen, clinician):
        wait_frames_after(page, frames_decoded(page))
    assert citizen.errors == [] and clinician.errors == []  # type: ignore[attr-defined]


def test_an_ice_restart_that_a_half_open_socket_swallowed_is_answered_after_the_resume(
    stue_embedded: StueServer, open_page: Callable[..., Page]
) -> None:
    """The citizen's socket goes silently dead (half-open after a network change): the server goes on writing to it,
    so the clinician's ICE restart is lost on the way. The page resumes on a new socket and says how many frames it
    read; the server writes the rest again right after `joined`, and the restart is answered then, not after the
    clinician's 5 s wait for a lost answer."""
    citizen, clinician = in_call(open_page, stue_embedded.new_consultation())
    warnings: list[str] = []
    clinician.on("console", lambda message: warnings.append(message.text))
    before = clinician.evaluate(REMOTE_UFRAGS)
    citizen.evaluate(SILENCE_SOCKET)
    citizen.evaluate("() => window.dispatchEvent(new Event('online'))")  # checks its socket: resumes after 4 s
    clinician.wait_for_timeout(2_500)
    lost_at = len(citizen.evaluate("() => window.__received"))
    clinician.evaluate("() => window.__pcs.forEach((pc) => pc.connectionState === 'connected' && pc.restartIce())")
    clinician.wait_for_function(
        f"(old) => {{ const now = ({REMOTE_UFRAGS})(); return now.length === 1 && now[0] !== old[0]; }}",
        arg=before,
        timeout=4_000 * TIME_SCALE,  # below OFFER_ANSWER_TIMEOUT_MS: the offer was answered, not made again
    )
    received = citizen.evaluate("() => window.__received")
    resumed_at = received.index("joined", lost_at)
    assert "offer" in received[lost_at:resumed_at]  # written to the dead socket, and lost there
    assert received[resumed_at + 1] == "offer"  # written again, right after `joined`
    assert citizen.evaluate("() => window.__joined[1].resumed") is True
    assert not [text for text in warnings if "offering again" in text]
    for page in (citizen, clinician):
        wait_frames_after(page, frames_decoded(page))
    assert citizen.errors == [] and clinician.errors == []  # type: ignore[attr-defined]


#: The local ICE username fragment of the page's latest peer connection (an ICE restart makes a new one).
LOCAL_UFRAG = "() => window.__pcs.at(-1).localDescription.sdp.match(/a=ice-ufrag:(\\S+)/)[1]"


def test_a_peer_that_vanishes_makes_the_page_restart_ice_by_itself(
    stue_embedded: StueServer, open_page: Callable[..., Page]
) -> None:
    """A real `disconnected`, not a scripted one: the probe on the other end is killed mid-call."""
    links = stue_embedded.new_consultation()
    page = open_page(links["citizen_link"], **TABLET)
    join(page)
    wait_state(page, "waiting")
    probe = run_probe(links["clinician_link"], timeout=60)
    try:
        wait_connected_with_video(page, timeout=30)
        before = page.evaluate(LOCAL_UFRAG)
        made = page.evaluate("() => window.__pcs.length")
        probe.kill()  # no leave, no goodbye: its socket drops (the server keeps it for the resume grace) and its
        probe.wait(10)  # ICE answers stop
        # Chromium sees no STUN answers (ICE `disconnected`); after the page's grace it restarts ICE itself,
        # which is a new offer through signalling with fresh ICE credentials.
        page.wait_for_function(f"(old) => ({LOCAL_UFRAG})() !== old", arg=before, timeout=30_000 * TIME_SCALE)
        assert page.evaluate("() => document.getElementById('status').dataset.i18n") == "status.peer_unstable"
        assert page.evaluate("() => window.__pcs.length") == made  # the same connection, repaired in place
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait(10)


def test_a_browser_without_webrtc_is_told_so_calmly(stue_embedded: StueServer, open_page: Callable[..., Page]) -> None:
    """An old tablet's browser without WebRTC (Debian's WebKitGTK is one): a plain message, and no camera asked."""
    links = stue_embedded.new_consultation()
    page = open_page(links["citizen_link"], **TABLET, init_script="delete window.RTCPeerConnection;")
    wait_state(page, "unsupported")
    assert page.locator("#unsupported-heading").inner_text().strip() != ""
    assert page.evaluate("() => document.querySelector('#preview-video').srcObject") is None
    screenshot(page, "call-unsupported-tablet")
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_network_change_in_the_preview_makes_a_fresh_prepared_offer(
    stue_embedded: StueServer, open_page: Callable[..., Page]
) -> None:
    """A tablet that changes networks while the preview shows: the offer prepared on the old network (its host
    candidates) is replaced when the browser says the network is back, and the tap joins on the new one."""
    links = stue_embedded.new_consultation()
    clinician = open_page(links["clinician_link"], **DESKTOP)
    join(clinician)
    wait_state(clinician, "waiting")
    citizen = open_page(links["citizen_link"], **TABLET)
    wait_state(citizen, "preview")
    citizen.wait_for_function("() => window.__pcs.length === 1 && window.__pcs[0].iceGatheringState === 'complete'")
    citizen.context.set_offline(True)  # the browser fires `offline`, then `online`
    citizen.context.set_offline(False)
    citizen.wait_for_function(
        "() => window.__pcs.length === 2 && window.__pcs[0].signalingState === 'closed'"
        " && window.__pcs[1].iceGatheringState === 'complete'"
    )
    join(citizen)  # the newcomer sends the fresh offer
    wait_connected_with_video(citizen)
    wait_connected_with_video(clinician)
    assert connection_states(citizen) == ["closed", "connected"]
    assert citizen.errors == []  # type: ignore[attr-defined]


#: The page's current socket goes silently dead (it stays open, but nothing gets through either way), as when the
#: network changes under it. Needs RECORD_SIGNALLING.
SILENCE_SOCKET = "() => { const s = window.__sockets.at(-1); s.send = () => {}; s.onmessage = null; }"


#: The page's first socket (the one opened during the preview) is silently dead: what it sends goes nowhere and
#: nothing arrives on it, as after a tablet slept or changed networks. Also keeps every view state shown.
DEAD_FIRST_SOCKET = """
(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      if (window.__sockets.push(this) === 1) {
        this.send = () => {};
        this.addEventListener('message', (event) => event.stopImmediatePropagation());
      }
    }
  };
  window.__states = [];
  new MutationObserver(() => window.__states.push(document.body.dataset.state)).observe(
    document.documentElement, { attributes: true, subtree: true, attributeFilter: ['data-state'] });
})();
"""


def test_a_socket_that_died_during_the_preview_is_replaced_at_the_tap(
    stue_embedded: StueServer, open_page: Callable[..., Page]
) -> None:
    """The join goes unanswered on the socket opened ahead: after 5 s the page joins on a fresh one, quietly (no
    error view), instead of waiting for the keep-alive to notice (20 s + 20 s)."""
    links = stue_embedded.new_consultation()
    page = open_page(links["citizen_link"], **TABLET, init_script=DEAD_FIRST_SOCKET)
    join(page)
    wait_state(page, "waiting", timeout=12)
    assert page.evaluate("() => window.__sockets.length") == 2
    assert "error" not in page.evaluate("() => window.__states")


def test_a_broken_media_path_makes_the_page_check_its_socket(
    stue_embedded: StueServer, open_page: Callable[..., Page]
) -> None:
    """Mid-call, the socket goes silently dead and the media path breaks (the network changed). ICE `disconnected`
    makes the page check its socket at once: no answer in 4 s, so it reconnects and resumes, well before the
    keep-alive would have noticed."""
    links = stue_embedded.new_consultation()
    page = open_page(links["citizen_link"], **TABLET, init_script=RECORD_SIGNALLING)
    join(page)
    wait_state(page, "waiting")
    probe = run_probe(links["clinician_link"], timeout=60)
    try:
        wait_connected_with_video(page, timeout=30)
        page.evaluate(SILENCE_SOCKET)
        probe.kill()
        probe.wait(10)
        page.wait_for_function("() => window.__joined.length === 2", timeout=15_000 * TIME_SCALE)
        assert page.evaluate("() => window.__joined[1].resumed") is True
        assert page.evaluate("() => window.__sockets.length") == 2
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait(10)


@pytest.mark.parametrize(
    "sign",
    ["window.dispatchEvent(new Event('online'))", "document.dispatchEvent(new Event('visibilitychange'))"],
    ids=["network-back", "shown-again"],
)
def test_a_sign_of_change_makes_a_waiting_page_check_its_socket(
    stue_embedded: StueServer, open_page: Callable[..., Page], sign: str
) -> None:
    """A clinician waits alone (no media path to break) when the network changes under a socket that stays open on
    the page's side. The browser's `online`, or the page being shown again, makes the page check it at once: no
    answer in 4 s, so it resumes on a new socket (before its 5 s keep-alive could have noticed)."""
    links = stue_embedded.new_consultation()
    page = open_page(links["clinician_link"], **DESKTOP, init_script=RECORD_SIGNALLING)
    warnings: list[str] = []
    page.on("console", lambda message: warnings.append(message.text))
    join(page)
    wait_state(page, "waiting")
    page.evaluate(SILENCE_SOCKET)
    page.evaluate(f"() => {sign}")
    page.wait_for_function("() => window.__joined.length === 2", timeout=10_000 * TIME_SCALE)
    assert page.evaluate("() => window.__joined[1].resumed") is True
    assert [text for text in warnings if "liveness check" in text]  # the check, not the keep-alive, found it
    wait_state(page, "waiting")


def test_a_page_waiting_alone_notices_a_dead_socket_by_its_keep_alive(
    stue_embedded: StueServer, open_page: Callable[..., Page]
) -> None:
    """Waiting alone, with no media path to break and no event from the browser (Wi-Fi roaming, say): the page
    pings every 5 s while alone, so it resumes within about 10 s rather than the 20 s + 20 s of a call."""
    links = stue_embedded.new_consultation()
    page = open_page(links["clinician_link"], **DESKTOP, init_script=RECORD_SIGNALLING)
    join(page)
    wait_state(page, "waiting")
    page.evaluate(SILENCE_SOCKET)
    page.wait_for_function("() => window.__joined.length === 2", timeout=15_000 * TIME_SCALE)
    assert page.evaluate("() => window.__joined[1].resumed") is True


#: Lets a test move the page's performance.now() forward, as if the preview had been open that much longer.
SHIFTABLE_CLOCK = """
(() => {
  const now = performance.now.bind(performance);
  window.__shiftMs = 0;
  performance.now = () => now() + window.__shiftMs;
})();
"""


def test_a_stale_prepared_offer_is_not_sent(stue_embedded: StueServer, open_page: Callable[..., Page]) -> None:
    """An offer prepared long ago may carry the candidates of a network the tablet has left: the newcomer makes a
    fresh connection instead of sending it."""
    links = stue_embedded.new_consultation()
    citizen = open_page(links["citizen_link"], **TABLET)
    join(citizen)
    wait_state(citizen, "waiting")
    clinician = open_page(links["clinician_link"], **DESKTOP, init_script=SHIFTABLE_CLOCK)
    wait_state(clinician, "preview")
    clinician.wait_for_function(
        "() => window.__pcs.length === 1 && window.__pcs[0].signalingState === 'have-local-offer'"
    )
    clinician.evaluate("() => { window.__shiftMs = 6 * 60 * 1000; }")  # past the prepared offer's 5 minutes
    clinician.click("#join")
    wait_connected_with_video(clinician)
    wait_connected_with_video(citizen)
    assert connection_states(clinician) == ["closed", "connected"]  # the stale one closed, a fresh one in use


def test_a_refused_camera_is_explained_calmly_and_the_retry_works(
    stue_embedded: StueServer, open_page: Callable[..., Page], open_page_that_asks: Callable[..., Page]
) -> None:
    """The most common failure at home: the camera and microphone were refused (a tap on »Bloker«, or a tablet's
    settings). The page says what to do in plain words, and »Prøv igen« works once they are allowed."""
    links = stue_embedded.new_consultation()
    page = open_page_that_asks(links["citizen_link"], **TABLET, media="denied", axe=True)
    wait_state(page, "error")
    assert page.evaluate("document.body.dataset.error") == "media_denied"
    heading = page.locator("#error-heading")
    assert heading.inner_text().strip() == "Vi må ikke bruge kamera og mikrofon"
    assert heading.evaluate("(h) => document.activeElement === h")  # read out first by a screen reader
    retry = page.locator("#error-action")
    assert retry.is_visible()
    assert retry.inner_text().strip() == "Prøv igen"
    box = retry.bounding_box()
    assert box is not None
    assert box["height"] >= 44  # WCAG 2.5.5 target size, for unsteady hands
    assert axe_violations(page) == []
    screenshot(page, "call-camera-refused-tablet")
    # Allowed in the browser's site settings, then »Prøv igen«: the preview, and the call works.
    set_media_permission(page, links["citizen_link"], "granted")
    retry.click()
    wait_state(page, "preview")
    join(page)
    clinician = open_page(links["clinician_link"], **DESKTOP)
    join(clinician)
    wait_connected_with_video(page)
    wait_connected_with_video(clinician)
