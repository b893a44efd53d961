"""Figure (a), browser part: two Chromium pages through Stue beside two RTCPeerConnections in one page.

Stue: one `stue serve` + redis-server; two pages (separate browser contexts) open `/call#t=<token>` for the citizen
and the clinician and wait for `preview`. An init script wraps `window.RTCPeerConnection` (the app is untouched) to
record `performance.timeOrigin + performance.now()` when a connection reaches `connected`, and a capture-phase
listener records the click on `#join`. Two ways to join:

- *one waiting* (the figure with the target): the clinician taps Join and waits alone in the call, as clinicians
  do; then the citizen taps. Value = the citizen's click → the later of the two pages' first `connected`.
- *together* (informative): both pages are clicked at the same moment; value = the first click → both
  `connected`. Both pages build their call view at once on the 2 cores, so this is the worst case.

Floor: a tiny page served from 127.0.0.1 takes the camera and microphone first (like the preview), then times
creating pc1 and pc2, adding the tracks to both, offer/answer and candidates handed over in the page, until
both are `connected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import statistics
import threading
from collections.abc import Iterator
from typing import Any

from bench.driver import create_consultations
from bench.procs import HOST, ROOT, free_port, start_redis, start_stue
from bench.report import Metric, paired

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
STEP_TIMEOUT_MS = 20_000
#: In the "one waiting" run, how long the clinician sits in the call before the citizen taps.
WAITING_SETTLE_S = 0.5

WRAP_PEER_CONNECTION = """
(() => {
  const now = () => performance.timeOrigin + performance.now();
  const bench = (window.__bench = { created: [], connected: [], clickAt: null, events: [] });
  const mark = (label) => bench.events.push([now(), label]);
  const Original = window.RTCPeerConnection;
  if (Original) {
    class BenchPeerConnection extends Original {
      constructor(...args) {
        super(...args);
        bench.created.push(now());
        mark('pc created');
        this.addEventListener('connectionstatechange', () => {
          mark('pc ' + this.connectionState);
          if (this.connectionState === 'connected') bench.connected.push(now());
        });
        this.addEventListener('iceconnectionstatechange', () => mark('ice ' + this.iceConnectionState));
        this.addEventListener('signalingstatechange', () => mark('signaling ' + this.signalingState));
      }
    }
    window.RTCPeerConnection = BenchPeerConnection;
  }
  // Signalling frames by type (a candidate also by its kind, never its address), to see where the time goes.
  const describe = (frame) => {
    if (frame.type !== 'candidate') return frame.type;
    if (!frame.candidate) return 'candidate end';
    const words = frame.candidate.candidate.split(' ');
    return `candidate ${words[2]} ${words[7]} ${words[4].includes(':') ? 'ipv6' : 'ipv4'}`.toLowerCase();
  };
  const OriginalSocket = window.WebSocket;
  class BenchSocket extends OriginalSocket {
    constructor(...args) {
      super(...args);
      mark('ws created');
      this.addEventListener('open', () => mark('ws open'));
      this.addEventListener('message', (event) => {
        try { mark('recv ' + describe(JSON.parse(event.data))); } catch { mark('recv ?'); }
      });
    }
    send(data) {
      try { mark('send ' + describe(JSON.parse(String(data)))); } catch { mark('send ?'); }
      super.send(data);
    }
  }
  window.WebSocket = BenchSocket;
  document.addEventListener('click', (event) => {
    if (bench.clickAt === null && event.target instanceof Element && event.target.closest('#join')) {
      bench.clickAt = now();
      mark('click #join');
    }
  }, true);
})();
"""

FLOOR_PAGE = b"""<!doctype html><meta charset="utf-8"><title>floor</title>
<script>
async function floor() {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  const started = performance.now();
  const pc1 = new RTCPeerConnection({ iceServers: [] });
  const pc2 = new RTCPeerConnection({ iceServers: [] });
  const connected = [pc1, pc2].map((pc) => new Promise((resolve) => {
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState === 'connected') resolve(performance.now() - started);
    });
  }));
  pc1.onicecandidate = (e) => { if (e.candidate) pc2.addIceCandidate(e.candidate); };
  pc2.onicecandidate = (e) => { if (e.candidate) pc1.addIceCandidate(e.candidate); };
  for (const track of stream.getTracks()) { pc1.addTrack(track, stream); pc2.addTrack(track.clone(), stream); }
  await pc1.setLocalDescription();
  await pc2.setRemoteDescription(pc1.localDescription);
  await pc2.setLocalDescription();
  await pc1.setRemoteDescription(pc2.localDescription);
  const times = await Promise.all(connected);
  pc1.close(); pc2.close();
  for (const track of stream.getTracks()) track.stop();
  return { both_ms: Math.max(...times), each_ms: times };
}
</script>"""


#: A second, informative floor: two pages (two renderers, two cameras shown on screen, as in a call) that signal
#: through a BroadcastChannel, with no server. The difference between it and FLOOR_PAGE is what two pages cost.
TWO_PAGE_FLOOR = b"""<!doctype html><meta charset="utf-8"><title>two-page floor</title>
<video id="local" autoplay muted playsinline width="320"></video>
<video id="remote" autoplay playsinline width="320"></video>
<script>
let pc, channel, stream, queue = Promise.resolve();
const now = () => performance.timeOrigin + performance.now();
async function prepare() {
  stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  document.getElementById('local').srcObject = stream;
  window.connectedAt = null;
  pc = new RTCPeerConnection({ iceServers: [] });
  pc.ontrack = (e) => { document.getElementById('remote').srcObject = e.streams[0]; };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'connected' && window.connectedAt === null) window.connectedAt = now();
  };
  channel = new BroadcastChannel('floor');
  pc.onicecandidate = (e) => {
    if (e.candidate) channel.postMessage({ kind: 'candidate', candidate: e.candidate.toJSON() });
  };
  channel.onmessage = ({ data }) => { queue = queue.then(() => handle(data)).catch(() => {}); };
}
async function handle(data) {
  if (data.kind === 'offer') {
    for (const track of stream.getTracks()) pc.addTrack(track, stream);
    await pc.setRemoteDescription(data.description);
    await pc.setLocalDescription();
    channel.postMessage({ kind: 'answer', description: pc.localDescription.toJSON() });
  } else if (data.kind === 'answer') {
    await pc.setRemoteDescription(data.description);
  } else {
    await pc.addIceCandidate(data.candidate);
  }
}
async function start() {
  const startedAt = now();
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  await pc.setLocalDescription();
  channel.postMessage({ kind: 'offer', description: pc.localDescription.toJSON() });
  return startedAt;
}
function stop() { pc.close(); for (const track of stream.getTracks()) track.stop(); channel.close(); }
</script>"""


def ready() -> tuple[bool, str]:
    for name in ("main.js", "peer.js"):
        path = ROOT / "web" / "js" / name
        if not path.exists() or path.stat().st_size < 2000:
            return False, f"web/js/{name} is missing or still a stub"
    return True, ""


class _FloorHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        page = TWO_PAGE_FLOOR if self.path.startswith("/two-page") else FLOOR_PAGE
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _floor_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer((HOST, free_port()), _FloorHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


async def _stue_run(browser: Any, base_url: str, tokens: dict[str, str], *, together: bool) -> dict[str, Any]:
    contexts = [await browser.new_context() for _ in range(2)]
    try:
        pages = []
        for context, role in zip(contexts, ("clinician", "citizen"), strict=True):
            page = await context.new_page()
            await page.add_init_script(WRAP_PEER_CONNECTION)
            await page.goto(f"{base_url}/call#t={tokens[role]}")
            pages.append(page)
        for page in pages:
            await page.wait_for_function("() => document.body.dataset.state === 'preview'", timeout=STEP_TIMEOUT_MS)
        # Raw mouse clicks at the button's centre (trusted input, like a tap): page.click's actionability checks
        # would put ~100 ms of harness time between the two pages.
        centres = []
        for page in pages:
            box = await page.locator("#join").bounding_box()
            if box is None:
                raise RuntimeError("#join is not visible in the preview")
            centres.append((box["x"] + box["width"] / 2, box["y"] + box["height"] / 2))
        if together:
            await asyncio.gather(*(page.mouse.click(x, y) for page, (x, y) in zip(pages, centres, strict=True)))
        else:
            await pages[0].mouse.click(*centres[0])
            await pages[0].wait_for_function("() => document.body.dataset.state === 'waiting'", timeout=STEP_TIMEOUT_MS)
            await asyncio.sleep(WAITING_SETTLE_S)
            await pages[1].mouse.click(*centres[1])
        for page in pages:
            await page.wait_for_function("() => window.__bench.connected.length > 0", timeout=STEP_TIMEOUT_MS)
        marks = [await page.evaluate("() => window.__bench") for page in pages]
        states = [await page.evaluate("() => document.body.dataset.state") for page in pages]
        clicks = [m["clickAt"] for m in marks]
        first_click, last_click = min(clicks), max(clicks)
        connected = [m["connected"][0] for m in marks]
        return {
            "both_ms": max(connected) - (first_click if together else last_click),
            "from_first_click_ms": max(connected) - first_click,
            "each_ms": [c - m["clickAt"] for c, m in zip(connected, marks, strict=True)],
            "click_gap_ms": last_click - first_click,
            "segments_ms": [_segments(m) for m in marks],
            "states": states,
            "timeline": [[[round(t - last_click, 1), label] for t, label in m["events"]] for m in marks],
        }
    finally:
        for context in contexts:
            await context.close()


def _segments(marks: dict[str, Any]) -> dict[str, float | None]:
    """Where one page's click → connected went: join sent, join round trip, joined → connected."""

    def first(label: str) -> float | None:
        return next((t for t, name in marks["events"] if name == label), None)

    click, join_sent = marks["clickAt"], first("send join")
    joined, connected = first("recv joined"), first("pc connected")

    def span(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 1)

    return {
        "click_to_join_sent": span(click, join_sent),
        "join_round_trip": span(join_sent, joined),
        "joined_to_connected": span(joined, connected),
    }


async def _floor_run(browser: Any, url: str) -> dict[str, Any]:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(url)
        result: dict[str, Any] = await asyncio.wait_for(page.evaluate("() => floor()"), STEP_TIMEOUT_MS / 1000)
        return result
    finally:
        await context.close()


async def _two_page_floor_run(browser: Any, url: str) -> dict[str, Any]:
    context = await browser.new_context()  # one context: BroadcastChannel does not cross contexts
    try:
        pages = [await context.new_page() for _ in range(2)]
        for page in pages:
            await page.goto(f"{url}two-page")
            await page.evaluate("() => prepare()")
        started = await pages[0].evaluate("() => start()")
        for page in pages:
            await page.wait_for_function("() => window.connectedAt !== null", timeout=STEP_TIMEOUT_MS)
        connected = [await page.evaluate("() => window.connectedAt") for page in pages]
        for page in pages:
            await page.evaluate("() => stop()")
        return {"both_ms": max(connected) - started, "each_ms": [c - started for c in connected]}
    finally:
        await context.close()


async def _measure(base_url: str, floor_url: str, tokens: list[dict[str, str]]) -> list[dict[str, Any]]:
    """One pair per token pair: every kind of run, in an order flipped from one pair to the next."""
    from playwright.async_api import async_playwright

    kinds = ("waiting", "together", "floor", "two_page")
    runs = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for i, pair_tokens in enumerate(tokens):
                run: dict[str, Any] = {}
                for name in kinds if i % 2 == 0 else reversed(kinds):
                    if name == "waiting":
                        run[name] = await _stue_run(browser, base_url, pair_tokens["waiting"], together=False)
                    elif name == "together":
                        run[name] = await _stue_run(browser, base_url, pair_tokens["together"], together=True)
                    elif name == "floor":
                        run[name] = await _floor_run(browser, floor_url)
                    else:
                        run[name] = await _two_page_floor_run(browser, floor_url)
                runs.append(run)
        finally:
            await browser.close()
    return runs


def run(quick: bool = False) -> tuple[list[Metric], dict[str, Any]]:
    pairs = 2 if quick else 9
    redis = start_redis()
    procs = [redis]
    try:
        stue = start_stue(redis.extra["url"], "stue-browser")
        procs.append(stue)
        made = create_consultations(redis.extra["url"], 2 * (pairs + 1))
        tokens = [{"waiting": made[2 * i], "together": made[2 * i + 1]} for i in range(pairs + 1)]
        with _floor_server() as floor_url:
            runs = asyncio.run(_measure(stue.url, floor_url, tokens))[1:]  # the first pair is a warm-up
        stue.check_alive()
    finally:
        for p in reversed(procs):
            p.stop()

    def col(kind: str) -> list[float]:
        return [float(r[kind]["both_ms"]) for r in runs]

    metrics = [
        paired("join", "browser tap→both connected, one waiting", "ms", col("waiting"), col("floor"), "ratio <= 1.3"),
        paired("join", "browser, one waiting, vs a two-page floor (info)", "ms", col("waiting"), col("two_page"), ""),
        paired("join", "browser, both tap together (info)", "ms", col("together"), col("floor"), ""),
    ]

    def segment(kind: str, page: int, key: str) -> float:
        values = [r[kind]["segments_ms"][page][key] for r in runs if r[kind]["segments_ms"][page][key] is not None]
        return statistics.median(values) if values else float("nan")

    keys = ("click_to_join_sent", "join_round_trip", "joined_to_connected")
    segments = {kind: {key: segment(kind, 1, key) for key in keys} for kind in ("waiting", "together")}
    waiting = segments["waiting"]
    notes = [
        f"Browser part: {len(runs)} pairs after 1 warm-up, Chromium {CHROMIUM} with fake devices; each pair runs "
        "every kind once, the order flipped from pair to pair.",
        "One waiting (target): the clinician's page taps Join and waits alone in the call "
        f"({WAITING_SETTLE_S * 1000:.0f} ms); then the citizen's page taps. Value = the citizen's click → the later "
        "of the two pages' first RTCPeerConnection 'connected'.",
        "The tapping page, medians: click → join sent "
        f"{waiting['click_to_join_sent']:.0f} ms, join → joined {waiting['join_round_trip']:.0f} ms, "
        f"joined → connected {waiting['joined_to_connected']:.0f} ms. Each page opens its socket and prepares a "
        "peer connection (tracks, offer, candidates) while the preview shows; a page waiting alone in the call "
        "swaps it for one that will answer (tracks only).",
        "Together (info): both pages clicked at once (median gap "
        f"{statistics.median(r['together']['click_gap_ms'] for r in runs):.0f} ms); value = first click → both "
        "connected; both pages build the call view at the same time on 2 cores.",
        "Browser floor: one page, camera already taken, pc1↔pc2 with candidates exchanged in-page, "
        "start → both 'connected'.",
        "Two-page floor (info): two pages of one browser context, each showing its camera and the remote video, "
        "signalling over a BroadcastChannel with no server; offerer's start → both 'connected'.",
    ]
    return metrics, {"runs": runs, "segments_ms": segments, "notes": notes}
