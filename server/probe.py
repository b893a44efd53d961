"""Headless participant that joins a consultation like a browser and checks that media flows both ways."""

from __future__ import annotations

import array
import asyncio
import contextlib
import dataclasses
import enum
import fractions
import logging
import math
import re
import signal
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Iterable

import av
import msgspec
import orjson
from aiortc import (
    RTCConfiguration,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack, VideoStreamTrack
from aiortc.sdp import candidate_from_sdp
from aiortc.stats import RTCInboundRtpStreamStats, RTCRemoteInboundRtpStreamStats
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Origin

from server.protocol import (
    Answer,
    ClientMessage,
    IceCandidate,
    IceServer,
    Join,
    Joined,
    Leave,
    Offer,
    PeerJoined,
    PeerLeft,
    Ping,
    RelayedAnswer,
    RelayedCandidate,
    RelayedMessage,
    RelayedOffer,
    ServerMessage,
    decode_server_frame,
    encode_client_message,
)
from server.protocol import Error as ServerError

logger = logging.getLogger("stue.probe")

MAX_FRAME = 2**17  # the server refuses larger frames at the WebSocket layer anyway
KEEPALIVE_INTERVAL = 20.0  # protocol.md: send a ping every 20 s
WATCH_INTERVAL = 0.1
SHUTDOWN_GRACE = 3.0  # upper bound on cleanup after the deadline or the outcome

VIDEO_WIDTH = 320
VIDEO_HEIGHT = 240
AUDIO_RATE = 48_000
AUDIO_SAMPLES = AUDIO_RATE // 50  # 20 ms
TONE_HZ = 440


# --- exit codes and errors ----------------------------------------------------------------------------------


class ExitCode(enum.IntEnum):
    """Process exit status of `stue probe`, one per kind of failure."""

    OK = 0
    NO_MEDIA = 1  # timed out before media was confirmed both ways
    USAGE = 2  # bad link or arguments
    BAD_TOKEN = 3  # the link is unknown, revoked or expired
    UNREACHABLE = 4  # no TCP connection, or the WebSocket handshake was refused (e.g. 403 origin)
    SESSION_ENDED = 5  # the server ended the session (replaced, internal, ...) or dropped the socket
    # Stopped by SIGINT or SIGTERM (a supervisor, `timeout`): 128 + the signal's number, as a shell reports it.
    INTERRUPTED = 130


_EXIT_FOR_ERROR = {
    "usage": ExitCode.USAGE,
    "bad_link": ExitCode.USAGE,
    "bad_token": ExitCode.BAD_TOKEN,
    "unreachable": ExitCode.UNREACHABLE,
    "handshake_refused": ExitCode.UNREACHABLE,
    "timeout": ExitCode.NO_MEDIA,
    "probe_fault": ExitCode.NO_MEDIA,
    "interrupted": ExitCode.INTERRUPTED,
}

# Server error codes after which the server closes the connection (protocol.md, "Errors").
FATAL_SERVER_ERRORS = frozenset({"bad_token", "too_large", "rate_limited", "replaced", "slow_consumer", "internal"})


def exit_code_for(error: str | None) -> ExitCode:
    """Map a report's error code to the exit status; any other code is the server ending the session."""
    if error is None:
        return ExitCode.OK
    return _EXIT_FOR_ERROR.get(error, ExitCode.SESSION_ENDED)


class ProbeError(Exception):
    """Something ended the probe before media was confirmed; `code` goes into the report's `error`."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class BadLink(ProbeError):
    """Raised when the link is not `http(s)://host[:port]/call#t=<token>`; never echoes the token."""

    def __init__(self, reason: str) -> None:
        super().__init__("bad_link", reason)


class Unreachable(ProbeError):
    """Raised when the WebSocket cannot be opened: no route, refused, handshake timeout or HTTP refusal."""


class SessionEnded(ProbeError):
    """Raised when the server refuses the token, reports a fatal error or closes the socket before success."""


# --- links --------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")
_DEFAULT_PORT = {"http": 80, "https": 443}


@dataclasses.dataclass(frozen=True)
class ProbeLink:
    """Where to connect and what to send in `join`; the token stays out of repr so it never reaches a log."""

    origin: str
    ws_url: str
    token: str = dataclasses.field(repr=False)


def parse_link(link: str, *, ws_url: str | None = None) -> ProbeLink:
    """Split a consultation link into origin, WebSocket URL (origin + /ws, or `ws_url`) and token."""
    try:
        parts = urllib.parse.urlsplit(link.strip())
        port = parts.port
    except ValueError:
        raise BadLink("link is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORT:
        raise BadLink("link must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise BadLink("link must not carry a user name or password")
    host = parts.hostname
    if not host:
        raise BadLink("link has no host")
    token = _token_from_fragment(parts.fragment)
    if ":" in host:
        host = f"[{host}]"
    # Browsers leave the default port out of Origin; the server's allow-list is compared with that form.
    netloc = host if port in (None, _DEFAULT_PORT[scheme]) else f"{host}:{port}"
    origin = f"{scheme}://{netloc}"
    if ws_url is None:
        ws_url = f"{'wss' if scheme == 'https' else 'ws'}://{netloc}/ws"
    elif urllib.parse.urlsplit(ws_url).scheme not in ("ws", "wss"):
        raise BadLink("WebSocket URL must start with ws:// or wss://")
    return ProbeLink(origin=origin, ws_url=ws_url, token=token)


def _token_from_fragment(fragment: str) -> str:
    for item in fragment.split("&"):
        key, _, value = item.partition("=")
        if key == "t":
            token = urllib.parse.unquote(value)
            if not _TOKEN.fullmatch(token):
                raise BadLink("link token is malformed")
            return token
    raise BadLink("link has no token (expected #t=<token> after /call)")


# --- wire messages (protocol.md) ----------------------------------------------------------------------------


def ice_servers_from_wire(entries: Iterable[IceServer]) -> list[RTCIceServer]:
    """Always a list: given `None`, aiortc falls back to Google's STUN server, which we must never contact."""
    return [RTCIceServer(urls=e.urls, username=e.username, credential=e.credential) for e in entries]


def candidate_from_init(init: IceCandidate | None) -> RTCIceCandidate | None:
    """Convert a trickled candidate object; `None` or an empty candidate string means end of candidates."""
    if init is None or init.candidate == "":
        return None
    text = init.candidate.removeprefix("a=").removeprefix("candidate:")
    bits = text.split()
    if len(bits) < 8 or bits[6] != "typ":
        raise ValueError("malformed ICE candidate")
    try:
        candidate = candidate_from_sdp(text)
    except (ValueError, IndexError) as exc:
        raise ValueError("malformed ICE candidate") from exc
    candidate.sdpMid = init.sdpMid
    # Only `candidate` is required on the wire; with BUNDLE every candidate belongs to the first m-line.
    candidate.sdpMLineIndex = 0 if init.sdpMid is None and init.sdpMLineIndex is None else init.sdpMLineIndex
    return candidate


# --- report -----------------------------------------------------------------------------------------------


class Stage(enum.IntEnum):
    """How far the probe got; the report names the furthest stage reached."""

    STARTING = 0
    CONNECTING = 1  # opening the WebSocket
    JOINING = 2  # `join` sent, waiting for `joined`
    WAITING_FOR_PEER = 3  # joined, alone in the consultation
    NEGOTIATING = 4  # a peer connection exists, ICE/DTLS not connected yet
    CONNECTED = 5  # ICE/DTLS connected to a peer
    RECEIVING = 6  # decoded remote video and audio
    CONFIRMED = 7  # the remote confirmed receipt of our media: success

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclasses.dataclass
class ProbeReport:
    """What one probe run reached; `to_dict()` is the `--json` output."""

    ok: bool = False
    exit_code: int = int(ExitCode.NO_MEDIA)
    error: str | None = None
    reason: str = ""
    stage: str = Stage.STARTING.label
    participant: str | None = None
    consultation: str | None = None
    role: str | None = None
    connected: bool = False
    connect_ms: float | None = None
    negotiate_ms: float | None = None  # first peer known -> connected, without the wait for someone to join
    frames_received: int = 0
    audio_frames_received: int = 0
    audio_packets_received: int = 0
    media_sent_confirmed: bool = False
    rtt_ms: float | None = None
    remote_peers: int = 0
    server_errors: list[str] = dataclasses.field(default_factory=list)
    duration_ms: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def fail(self, code: str, reason: str) -> None:
        self.ok = False
        self.error = code
        self.reason = reason
        self.exit_code = int(exit_code_for(code))


def timeout_reason(stage: Stage, timeout: float, report: ProbeReport) -> str:
    """One line saying what was and was not reached when the deadline passed."""
    prefix = f"timed out after {timeout:g} s"
    if stage <= Stage.JOINING:
        return f"{prefix} waiting for the server to answer join"
    if stage == Stage.WAITING_FOR_PEER:
        return f"{prefix}: nobody else joined the consultation"
    if stage == Stage.NEGOTIATING:
        return f"{prefix}: ICE/DTLS never connected to any of {report.remote_peers} peer(s)"
    if stage == Stage.CONNECTED:
        return (
            f"{prefix}: connected but remote media did not arrive "
            f"(video frames {report.frames_received}, audio frames {report.audio_frames_received})"
        )
    return f"{prefix}: receiving remote media, but the remote never confirmed receipt of ours"


def format_summary(report: ProbeReport) -> str:
    """The short human-readable output (without --json): a verdict line and a details line."""
    verdict = "ok" if report.ok else f"FAILED ({report.error}, exit {report.exit_code})"
    connect = "-" if report.connect_ms is None else f"{report.connect_ms:.0f} ms"
    rtt = "-" if report.rtt_ms is None else f"{report.rtt_ms:.1f} ms"
    return (
        f"probe {verdict}: {report.reason}\n"
        f"  participant {report.participant or '-'} in {report.consultation or '-'}, "
        f"peers seen {report.remote_peers}, connect {connect}, video frames {report.frames_received}, "
        f"audio packets {report.audio_packets_received}, ours confirmed "
        f"{'yes' if report.media_sent_confirmed else 'no'}, rtt {rtt}, took {report.duration_ms / 1000:.1f} s"
    )


# --- synthetic media --------------------------------------------------------------------------------------


class ToneTrack(MediaStreamTrack):
    """A 440 Hz sine, 48 kHz s16 mono, in 20 ms frames paced in real time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        # The tone repeats exactly every `period` samples (11 cycles of 440 Hz = 25 ms), so two periods hold
        # every 20 ms window and the loop has no click. Cheap to build: it runs while a peer is waiting.
        self._period = AUDIO_RATE // math.gcd(AUDIO_RATE, TONE_HZ)
        samples = (
            round(0.3 * 32767 * math.sin(2 * math.pi * TONE_HZ * n / AUDIO_RATE)) for n in range(2 * self._period)
        )
        self._tone = array.array("h", samples).tobytes()
        self._pts = 0
        self._start = 0.0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        pts = self._pts
        if pts == 0:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._start + pts / AUDIO_RATE - time.monotonic()))
        self._pts += AUDIO_SAMPLES
        offset = (pts % self._period) * 2
        frame = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES)
        frame.planes[0].update(self._tone[offset : offset + AUDIO_SAMPLES * 2])
        frame.pts = pts
        frame.sample_rate = AUDIO_RATE
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        return frame


class PatternTrack(VideoStreamTrack):
    """320x240 diagonal luma stripes scrolling at 30 fps, so every frame differs from the last."""

    def __init__(self) -> None:
        super().__init__()
        self._ramp = bytes(range(256)) * 4
        self._count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(VIDEO_WIDTH, VIDEO_HEIGHT, "yuv420p")
        luma, *chroma = frame.planes
        shift = self._count * 4
        pad = bytes(luma.line_size - VIDEO_WIDTH)
        luma.update(b"".join(self._ramp[(y + shift) % 256 :][:VIDEO_WIDTH] + pad for y in range(VIDEO_HEIGHT)))
        for plane in chroma:
            plane.update(bytes([128]) * plane.buffer_size)
        self._count += 1
        frame.pts = pts
        frame.time_base = time_base
        return frame


# --- one peer ---------------------------------------------------------------------------------------------

Send = Callable[[ClientMessage], Awaitable[None]]


class ProbePeer:
    """One RTCPeerConnection towards one remote participant: its signalling inbox, media and counters."""

    def __init__(self, participant: str, *, polite: bool, configuration: RTCConfiguration, send: Send) -> None:
        self.participant = participant
        self.polite = polite
        self.pc = RTCPeerConnection(configuration)
        self.inbox: asyncio.Queue[RelayedMessage] = asyncio.Queue()
        self.created_at = asyncio.get_running_loop().time()
        self.connected_at: float | None = None
        self.video_frames = 0
        self.audio_frames = 0
        self.audio_packets = 0
        self.confirmed_kinds: set[str] = set()
        self.rtt_ms: float | None = None
        self._send = send
        self._tracks = (ToneTrack(), PatternTrack())
        self._tracks_added = False
        self._ignore_offer = False
        self._pending: list[RTCIceCandidate | None] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._closing: asyncio.Task[None] | None = None
        self.pc.add_listener("connectionstatechange", self._on_connection_state)
        self.pc.add_listener("track", self._on_track)

    @property
    def connected(self) -> bool:
        return self.pc.connectionState == "connected"

    @property
    def media_received(self) -> bool:
        return self.video_frames >= 1 and self.audio_frames >= 1

    @property
    def media_confirmed(self) -> bool:
        return {"audio", "video"} <= self.confirmed_kinds

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        logger.info("peer %s connection %s", self.participant, state)
        if state == "connected" and self.connected_at is None:
            self.connected_at = asyncio.get_running_loop().time()

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._spawn(self._consume(track))

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            if track.kind == "video":
                self.video_frames += 1
            else:
                self.audio_frames += 1

    async def run(self) -> None:
        """Offer first when impolite (we are the newcomer), then handle relayed messages in order."""
        try:
            if not self.polite:
                await self._offer()
            while True:
                message = await self.inbox.get()
                try:
                    await self._handle(message)
                except ConnectionClosed:
                    raise
                except Exception as exc:  # aiortc raises assorted errors on SDP it cannot apply
                    logger.warning("peer %s: could not apply %s: %s", self.participant, type(message).__name__, exc)
        except ConnectionClosed:
            return

    async def _handle(self, message: RelayedMessage) -> None:
        if isinstance(message, RelayedOffer):
            await self._on_offer(message.sdp)
        elif isinstance(message, RelayedAnswer):
            await self._on_answer(message.sdp)
        else:
            await self._on_candidate(message.candidate)

    def _add_tracks(self) -> None:
        if not self._tracks_added:
            for track in self._tracks:
                self.pc.addTrack(track)
            self._tracks_added = True

    async def _offer(self) -> None:
        self._add_tracks()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        # aiortc gathers every candidate into the SDP (with a=end-of-candidates): nothing to trickle.
        await self._send(Offer(to=self.participant, sdp=self._local_sdp()))

    async def _on_offer(self, sdp: str) -> None:
        if self.pc.signalingState != "stable":
            # Glare. aiortc cannot roll back, so the probe only ever offers as the impolite side and ignores
            # the colliding offer; the polite browser rolls back and answers ours.
            self._ignore_offer = True
            logger.info("peer %s: ignored colliding offer", self.participant)
            return
        self._ignore_offer = False
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        self._add_tracks()
        await self._flush_candidates()
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await self._send(Answer(to=self.participant, sdp=self._local_sdp()))

    async def _on_answer(self, sdp: str) -> None:
        if self.pc.signalingState != "have-local-offer":
            logger.info("peer %s: ignored answer in state %s", self.participant, self.pc.signalingState)
            return
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        await self._flush_candidates()

    async def _on_candidate(self, init: IceCandidate | None) -> None:
        if self._ignore_offer:
            return
        try:
            candidate = candidate_from_init(init)
        except ValueError:
            logger.info("peer %s: ignored malformed candidate", self.participant)
            return
        if self.pc.remoteDescription is None:
            self._pending.append(candidate)
        else:
            await self.pc.addIceCandidate(candidate)

    async def _flush_candidates(self) -> None:
        pending, self._pending = self._pending, []
        for candidate in pending:
            await self.pc.addIceCandidate(candidate)

    def _local_sdp(self) -> str:
        description = self.pc.localDescription
        if description is None:
            raise RuntimeError("no local description after setLocalDescription")
        return description.sdp

    async def refresh_stats(self) -> None:
        """Read RTCP evidence: receiver reports about our streams, and audio packets we received."""
        if self._closed:
            return
        for stats in (await self.pc.getStats()).values():
            if isinstance(stats, RTCRemoteInboundRtpStreamStats):
                if stats.packetsReceived > 0:
                    self.confirmed_kinds.add(stats.kind)
                if stats.roundTripTime is not None:
                    self.rtt_ms = round(stats.roundTripTime * 1000, 1)
            elif isinstance(stats, RTCInboundRtpStreamStats) and stats.kind == "audio":
                self.audio_packets = max(self.audio_packets, stats.packetsReceived)

    def start(self) -> None:
        self._spawn(self.run())

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Take a last look at the counters, then close the peer connection; safe to call more than once."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        try:
            await self.refresh_stats()
        except Exception as exc:  # the stats are a bonus; closing must go on
            logger.debug("peer %s: final stats failed: %s", self.participant, exc)
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.pc.close()
        except Exception as exc:  # a half-built connection may fail to stop cleanly; it is gone either way
            logger.warning("peer %s: close failed: %s", self.participant, exc)
        for track in self._tracks:
            track.stop()


# --- the probe --------------------------------------------------------------------------------------------


class _NoFrameLogging(logging.LoggerAdapter[logging.Logger]):
    """websockets logs frame contents at DEBUG level, and the `join` frame holds the token."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


class Probe:
    """One run: open the socket, join, negotiate with each peer, watch media until success or deadline."""

    def __init__(self, link: ProbeLink, *, timeout: float, linger: float, stop: asyncio.Event | None = None) -> None:
        self._link = link
        self._stop = stop
        self._timeout = timeout
        self._linger = linger
        self._stage = Stage.STARTING
        self._ws: ClientConnection | None = None
        self._joined: Joined | None = None
        self._configuration: RTCConfiguration | None = None
        self._peers: dict[str, ProbePeer] = {}
        self._all_peers: list[ProbePeer] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server_errors: list[str] = []
        self._join_sent_at: float | None = None
        self._outcome: asyncio.Future[None] | None = None

    async def run(self) -> ProbeReport:
        timeout = self._timeout
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + timeout
        self._outcome = loop.create_future()
        report = ProbeReport()
        try:
            if self._stop is not None:
                self._spawn(self._stop_when_asked(self._stop))
            await self._until_outcome(self._open(deadline))
            await self._send(Join(token=self._link.token))
            self._join_sent_at = loop.time()
            self._reach(Stage.JOINING)
            self._spawn(self._read_loop())
            self._spawn(self._keepalive())
            self._spawn(self._watch())
            async with asyncio.timeout_at(deadline):
                await self._outcome
            # Stay a moment so the other side also gets our receiver reports and confirms its own media.
            await asyncio.sleep(max(0.0, min(self._linger, deadline - loop.time())))
        except ProbeError as exc:
            report.fail(exc.code, exc.reason)
        except ConnectionClosed as exc:  # the socket went away while we were sending join
            error = self._closed_error(exc)
            report.fail(error.code, error.reason)
        except TimeoutError:
            report.fail("timeout", "")
        finally:
            await self._shutdown()
        self._fill(report)
        report.duration_ms = round((loop.time() - started) * 1000, 1)
        if report.error is None and report.connect_ms is not None:
            report.ok = True
            report.exit_code = int(ExitCode.OK)
            report.reason = f"media flowed both ways; connected in {report.connect_ms:.0f} ms"
        elif report.error == "timeout":
            report.reason = timeout_reason(self._stage, timeout, report)
        logger.info("probe finished stage=%s error=%s", report.stage, report.error)
        return report

    def _fill(self, report: ProbeReport) -> None:
        peers = self._all_peers
        report.stage = self._stage.label
        if self._joined is not None:
            report.participant = self._joined.participant
            report.consultation = self._joined.consultation
            report.role = self._joined.role
        connected = [(p.connected_at, p.created_at) for p in peers if p.connected_at is not None]
        report.connected = bool(connected)
        if connected and self._join_sent_at is not None:
            connected_at, created_at = min(connected)
            report.connect_ms = round((connected_at - self._join_sent_at) * 1000, 1)
            report.negotiate_ms = round((connected_at - created_at) * 1000, 1)
        report.frames_received = sum(p.video_frames for p in peers)
        report.audio_frames_received = sum(p.audio_frames for p in peers)
        report.audio_packets_received = sum(p.audio_packets for p in peers)
        report.media_sent_confirmed = any(p.media_confirmed for p in peers)
        rtts = [p.rtt_ms for p in peers if p.rtt_ms is not None]
        report.rtt_ms = min(rtts) if rtts else None
        report.remote_peers = len(peers)
        report.server_errors = list(self._server_errors)

    def _reach(self, stage: Stage) -> None:
        self._stage = max(self._stage, stage)

    async def _stop_when_asked(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._fail(ProbeError("interrupted", "stopped before media was confirmed"))

    async def _until_outcome(self, work: Coroutine[object, object, None]) -> None:
        """`work`, unless the outcome is decided first (the probe was stopped): then that outcome is raised."""
        assert self._outcome is not None
        task = asyncio.ensure_future(work)
        await asyncio.wait({task, self._outcome}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._outcome.done():
            self._outcome.result()  # raises why the probe ended
        task.result()

    def _succeed(self) -> None:
        if self._outcome is not None and not self._outcome.done():
            self._outcome.set_result(None)

    def _fail(self, error: ProbeError) -> None:
        if self._outcome is not None and not self._outcome.done():
            self._outcome.set_exception(error)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("probe task failed: %r", exc)
            self._fail(ProbeError("probe_fault", f"probe fault: {exc!r}"))

    async def _open(self, deadline: float) -> None:
        self._reach(Stage.CONNECTING)
        url = self._link.ws_url
        budget = max(0.001, deadline - asyncio.get_running_loop().time())
        try:
            self._ws = await connect(
                url,
                origin=Origin(self._link.origin),
                compression=None,
                max_size=MAX_FRAME,
                open_timeout=budget,
                close_timeout=1.0,
                proxy=None,  # never route through a proxy from the environment
                logger=_NoFrameLogging(logging.getLogger("stue.probe.websocket")),
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            hint = " (origin not allowed)" if status == 403 else ""
            raise Unreachable(
                "handshake_refused", f"server refused the WebSocket at {url}: HTTP {status}{hint}"
            ) from None
        except InvalidURI:
            raise BadLink("WebSocket URL is not valid") from None
        except TimeoutError:
            raise Unreachable("unreachable", f"cannot reach {url}: no handshake within {budget:.1f} s") from None
        except (OSError, InvalidHandshake) as exc:
            raise Unreachable("unreachable", f"cannot reach {url}: {exc}") from None

    async def _send(self, message: ClientMessage) -> None:
        if self._ws is None:
            raise RuntimeError("socket not open")
        await self._ws.send(encode_client_message(message).decode())

    async def _read_loop(self) -> None:
        assert self._ws is not None
        while True:
            try:
                raw = await self._ws.recv()
            except ConnectionClosed as exc:
                self._fail(self._closed_error(exc))
                return
            try:
                message = decode_server_frame(raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                logger.warning("ignored unexpected frame from server: %s", exc)
                continue
            self._dispatch(message)

    def _closed_error(self, exc: ConnectionClosed) -> ProbeError:
        if exc.rcvd is None:
            return SessionEnded("closed", "the connection to the server was lost")
        code = exc.rcvd.code
        if code == 4401:
            return SessionEnded("bad_token", "link is unknown or expired")
        if code == 4409:
            return SessionEnded("replaced", "another connection joined with the same link")
        return SessionEnded("closed", f"server closed the connection (code {code})")

    def _dispatch(self, message: ServerMessage) -> None:
        if isinstance(message, ServerError):
            self._on_error(message)
        elif isinstance(message, Joined):
            self._on_joined(message)
        elif self._joined is None:
            logger.warning("ignored %s before joined", type(message).__name__)
        elif isinstance(message, PeerJoined):
            logger.info("peer %s joined (%s)", message.participant, message.role)
            self._add_peer(message.participant, polite=message.polite)
        elif isinstance(message, PeerLeft):
            self._on_peer_left(message)
        elif isinstance(message, RelayedOffer | RelayedAnswer | RelayedCandidate):
            self._relay(message)

    def _on_error(self, message: ServerError) -> None:
        logger.warning("server error %s (ref %s)", message.code, message.ref)
        self._server_errors.append(message.code)
        if message.code == "bad_token":
            self._fail(SessionEnded("bad_token", "link is unknown or expired"))
        elif message.code in FATAL_SERVER_ERRORS:
            self._fail(SessionEnded(message.code, f"server ended the session: {message.code}"))

    def _on_joined(self, message: Joined) -> None:
        if self._joined is not None:
            logger.warning("ignored a second joined")
            return
        self._joined = message
        # An explicit list, even empty: aiortc's default would contact Google's STUN server.
        self._configuration = RTCConfiguration(iceServers=ice_servers_from_wire(message.ice_servers))
        logger.info(
            "joined consultation %s as %s (%s), %d peer(s)",
            message.consultation,
            message.participant,
            message.role,
            len(message.peers),
        )
        self._reach(Stage.WAITING_FOR_PEER)
        for entry in message.peers:
            self._add_peer(entry.participant, polite=entry.polite)

    def _add_peer(self, participant: str, *, polite: bool) -> ProbePeer | None:
        if participant in self._peers or any(p.participant == participant for p in self._all_peers):
            return self._peers.get(participant)  # ids are never reused; a departed id stays departed
        assert self._configuration is not None
        peer = ProbePeer(participant, polite=polite, configuration=self._configuration, send=self._send)
        self._peers[participant] = peer
        self._all_peers.append(peer)
        self._reach(Stage.NEGOTIATING)
        peer.start()
        return peer

    def _on_peer_left(self, message: PeerLeft) -> None:
        logger.info("peer %s left (%s)", message.participant, message.reason)
        peer = self._peers.pop(message.participant, None)
        if peer is not None:
            self._spawn(peer.close())

    def _relay(self, message: RelayedMessage) -> None:
        peer = self._peers.get(message.sender)
        if peer is None and isinstance(message, RelayedOffer):
            # The offer overtook peer-joined (possible across server processes): the offerer is the newcomer.
            peer = self._add_peer(message.sender, polite=True)
        if peer is None:
            logger.info("ignored %s from unknown peer %s", type(message).__name__, message.sender)
            return
        peer.inbox.put_nowait(message)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_INTERVAL)
            try:
                await self._send(Ping())
            except ConnectionClosed:
                return

    async def _watch(self) -> None:
        """Success: one peer is connected, its video and audio decode, and its RTCP confirms ours arrived."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            for peer in list(self._peers.values()):
                if not peer.connected:
                    continue
                self._reach(Stage.CONNECTED)
                if not peer.media_received:
                    continue
                self._reach(Stage.RECEIVING)
                try:
                    await peer.refresh_stats()
                except Exception as exc:  # the peer may be closing under us (peer-left); look again later
                    logger.debug("peer %s: stats failed: %s", peer.participant, exc)
                    continue
                if peer.media_confirmed:
                    self._reach(Stage.CONFIRMED)
                    self._succeed()
                    return

    async def _shutdown(self) -> None:
        """Leave, close every peer connection and the socket; bounded so the probe never hangs."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        ws = self._ws
        try:
            async with asyncio.timeout(SHUTDOWN_GRACE):
                if ws is not None and self._joined is not None:
                    with contextlib.suppress(ConnectionClosed):
                        await ws.send(encode_client_message(Leave()).decode())
                await asyncio.gather(*(p.close() for p in self._all_peers), return_exceptions=True)
                if ws is not None:
                    await ws.close()
        except TimeoutError:
            logger.warning("cleanup did not finish within %.0f s", SHUTDOWN_GRACE)
        finally:
            if ws is not None:
                ws.transport.abort()


# The deadline covers connecting, negotiating and the media check as one budget, hence a `timeout` argument.
async def run_probe(
    link: str,
    *,
    timeout: float = 20.0,  # noqa: ASYNC109
    linger: float = 1.0,
    ws_url: str | None = None,
    stop: asyncio.Event | None = None,
) -> ProbeReport:
    """Join the consultation behind `link`, confirm media both ways, report; a failed probe never raises. Setting
    `stop` ends it early, as a failure (`interrupted`), after it has left the consultation."""
    if not (math.isfinite(timeout) and timeout > 0) or not (math.isfinite(linger) and linger >= 0):
        report = ProbeReport()
        report.fail("usage", "timeout must be a positive number of seconds and linger not negative")
        return report
    try:
        target = parse_link(link, ws_url=ws_url)
    except BadLink as exc:
        report = ProbeReport()
        report.fail(exc.code, exc.reason)
        return report
    return await Probe(target, timeout=timeout, linger=linger, stop=stop).run()


async def _run_until_signalled(link: str, timeout: float) -> ProbeReport:  # noqa: ASYNC109
    """The probe as a command: SIGINT or SIGTERM stops it cleanly (it leaves, so the other side hears at once
    instead of after the resume grace) and it still reports, with the signal's exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    report = await run_probe(link, timeout=timeout, stop=stop)
    if report.error == "interrupted" and received:
        report.reason = f"stopped by {signal.Signals(received[0]).name} before media was confirmed"
        report.exit_code = 128 + received[0]
    return report


def main(link: str, *, timeout: float = 20.0, json_output: bool = False) -> int:
    """Entry point for `stue probe`: print the report (JSON or a summary) and return the exit status."""
    report = asyncio.run(_run_until_signalled(link, timeout))
    if json_output:
        print(orjson.dumps(report.to_dict()).decode())
        if not report.ok:
            print(f"stue probe: {report.reason}", file=sys.stderr)
    elif report.ok:
        print(format_summary(report))
    else:
        print(format_summary(report), file=sys.stderr)
    return report.exit_code
