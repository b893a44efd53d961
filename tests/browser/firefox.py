"""Real Firefox (Debian's firefox-esr), headless, driven over Marionette, with a fake camera and microphone.

A second engine in the tests: Chromium and Firefox differ in SDP, candidates, rollback and ICE timing, which is
where WebRTC apps break. Marionette has no init scripts, so these tests read the call page's own DOM (the state
hook on <body>, the remote tile's `data-connected`, the remote video's shown frames) instead of its
RTCPeerConnections.

The Marionette client is the few lines below rather than Mozilla's `marionette_driver`, whose dependencies
import `telnetlib` (gone in Python 3.13, and Stue supports 3.11 and later).
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import TIME_SCALE, free_port

FIREFOX = "/usr/bin/firefox-esr"

PREFS: dict[str, Any] = {
    # A fake camera and microphone, allowed without a prompt.
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.autoplay.default": 0,
    # Chromium on this host cannot resolve Firefox's mDNS names for its host candidates.
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    # No first-run pages, telemetry or update checks in the tests.
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.disabledForTesting": True,
    "intl.accept_languages": "da-DK, da",
}

#: A fingerprint of what the remote video shows now (headless Firefox counts no frames in
#: getVideoPlaybackQuality, so the tests look at the pixels: Chromium's fake camera moves all the time).
REMOTE_PICTURE = """
const video = document.querySelector('video[data-participant]');
if (!video || video.videoWidth === 0) return null;
const canvas = document.createElement('canvas');
canvas.width = 64;
canvas.height = 48;
const context = canvas.getContext('2d');
context.drawImage(video, 0, 0, canvas.width, canvas.height);
const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
let hash = 0;
for (let i = 0; i < pixels.length; i += 1) hash = (hash * 31 + pixels[i]) >>> 0;
return hash;
"""


class MarionetteError(RuntimeError):
    """Firefox refused a command."""


class Marionette:
    """A minimal Marionette client: `<length>:<JSON>` messages; a command is [0, id, name, params] and its
    response [1, id, error, result]."""

    ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C web element identifier

    def __init__(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("Firefox's Marionette port never opened") from None
                time.sleep(0.1)
        self.sock.settimeout(timeout)
        self.buffer = b""
        self.last_id = 0
        self._read()  # the greeting: {"applicationType": "gecko", "marionetteProtocol": 3}

    def _read(self) -> Any:
        while b":" not in self.buffer:
            self.buffer += self._recv()
        length, _, rest = self.buffer.partition(b":")
        size = int(length)
        while len(rest) < size:
            rest += self._recv()
        self.buffer = rest[size:]
        return json.loads(rest[:size])

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("Firefox closed its Marionette connection")
        return chunk

    def call(self, name: str, params: dict[str, Any] | None = None) -> Any:
        self.last_id += 1
        data = json.dumps([0, self.last_id, name, params or {}]).encode()
        self.sock.sendall(str(len(data)).encode() + b":" + data)
        while True:
            message = self._read()
            if message[0] == 1 and message[1] == self.last_id:
                break
        _, _, error, result = message
        if error:
            raise MarionetteError(f"{name}: {error.get('error')}: {error.get('message')}")
        return result

    def close(self) -> None:
        self.sock.close()


class FirefoxPage:
    """The one tab of a headless Firefox."""

    def __init__(self, marionette: Marionette) -> None:
        self.marionette = marionette

    def goto(self, url: str) -> None:
        self.marionette.call("WebDriver:Navigate", {"url": url})

    def evaluate(self, script: str, *args: Any) -> Any:
        """Run `script` as a function body in the page (`arguments` holds `args`) and return its value."""
        result = self.marionette.call("WebDriver:ExecuteScript", {"script": script, "args": list(args)})
        return result["value"]

    def click(self, selector: str) -> None:
        """A WebDriver click (real input events, so it counts as the person's tap)."""
        found = self.marionette.call("WebDriver:FindElement", {"using": "css selector", "value": selector})
        reference = found.get("value", found)  # the web element reference, wrapped or not by the protocol level
        self.marionette.call("WebDriver:ElementClick", {"id": reference[Marionette.ELEMENT]})

    def wait_for(self, script: str, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout * TIME_SCALE
        while not self.evaluate(script):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Firefox: timed out waiting for {what}")
            time.sleep(0.1)

    def wait_state(self, state: str, timeout: float = 20.0) -> None:
        self.wait_for(f"return document.body.dataset.state === {json.dumps(state)};", f"state {state}", timeout)

    def remote_picture(self) -> int | None:
        """A fingerprint of the remote video's current picture, or None while there is none."""
        value = self.evaluate(REMOTE_PICTURE)
        return None if value is None else int(value)

    def wait_remote_video_moving(self, timeout: float = 20.0) -> None:
        """Until the remote video shows a picture, and then a different one: media is flowing now."""
        deadline = time.monotonic() + timeout * TIME_SCALE
        first = None
        while True:
            now = self.remote_picture()
            if first is None:
                first = now
            elif now is not None and now != first:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("Firefox: the remote video shows no moving picture")
            time.sleep(0.2)

    def screenshot(self, path: Path) -> None:
        shot = self.marionette.call("WebDriver:TakeScreenshot", {"full": False, "hash": False, "scroll": True})
        path.write_bytes(base64.b64decode(shot["value"]))


@pytest.fixture
def firefox() -> Iterator[FirefoxPage]:
    """A fresh headless Firefox per test (its own profile: camera, storage), closed afterwards."""
    if not Path(FIREFOX).exists():
        pytest.fail(
            "Debian's firefox-esr is not installed: run `make test` (it installs it) or apt-get install firefox-esr"
        )
    profile = Path(tempfile.mkdtemp(prefix="stue-firefox-"))
    port = free_port()
    prefs = {**PREFS, "marionette.port": port}
    (profile / "user.js").write_text("".join(f'user_pref("{k}", {json.dumps(v)});\n' for k, v in prefs.items()))
    process = subprocess.Popen(
        [FIREFOX, "--headless", "--marionette", "--no-remote", "--profile", str(profile)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marionette: Marionette | None = None
    try:
        marionette = Marionette(port, timeout=60 * TIME_SCALE)
        marionette.call("WebDriver:NewSession", {"strictFileInteractability": True})
        marionette.call("WebDriver:SetWindowRect", {"width": 1024, "height": 768})
        yield FirefoxPage(marionette)
    finally:
        if marionette is not None:
            with contextlib.suppress(OSError, MarionetteError):
                marionette.call("WebDriver:DeleteSession")
            marionette.close()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
