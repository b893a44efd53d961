"""Tests for server/probe.py: pure parts first, then whole runs against a minimal in-test signalling relay."""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import logging
import math
import os
import socket
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field

import msgspec
import orjson
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from server import probe
from server.probe import (
    AUDIO_RATE,
    AUDIO_SAMPLES,
    ExitCode,
    ProbeReport,
    Stage,
    candidate_from_init,
    exit_code_for,
    format_summary,
    ice_servers_from_wire,
    parse_link,
    run_probe,
    timeout_reason,
)
from server.protocol import (
    Answer,
    Candidate,
    IceCandidate,
    IceServer,
    Join,
    Joined,
    Leave,
    Offer,
    Ping,
    RelayedCandidate,
    RelayedOffer,
    decode_server_frame,
    encode_client_message,
)
from server.protocol import Error as ServerError

TIME_SCALE = float(os.environ.get("STUE_TEST_TIME_SCALE", "1"))
TOKEN = "x2M0Vq3r1yq2u0d0YbZ0wqk3zJp1h6Cq"
OTHER_TOKEN = "Qk3zJp1h6Cqx2M0Vq3r1yq2u0d0YbZ0w"


# --- links ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("link", "origin", "ws_url"),
    [
        (f"http://127.0.0.1:8766/call#t={TOKEN}", "http://127.0.0.1:8766", "ws://127.0.0.1:8766/ws"),
        (f"https://stue.example/call#t={TOKEN}", "https://stue.example", "wss://stue.example/ws"),
        (f"https://stue.example:443/call#t={TOKEN}", "https://stue.example", "wss://stue.example/ws"),
        (f"http://stue.example:80/call#t={TOKEN}", "http://stue.example", "ws://stue.example/ws"),
        (
            f"HTTPS://Stue.Example:8443/call#t={TOKEN}",
            "https://stue.example:8443",
            "wss://stue.example:8443/ws",
        ),
        (f"http://[::1]:8766/call#t={TOKEN}", "http://[::1]:8766", "ws://[::1]:8766/ws"),
        (f"  https://stue.example/call#x=1&t={TOKEN}\n", "https://stue.example", "wss://stue.example/ws"),
    ],
)
def test_parse_link(link: str, origin: str, ws_url: str) -> None:
    parsed = parse_link(link)
    assert (parsed.origin, parsed.ws_url, parsed.token) == (origin, ws_url, TOKEN)


def test_parse_link_ws_url_override_keeps_the_link_origin() -> None:
    parsed = parse_link(f"http://127.0.0.1:8766/call#t={TOKEN}", ws_url="ws://127.0.0.1:9000/ws")
    assert parsed.origin == "http://127.0.0.1:8766"
    assert parsed.ws_url == "ws://127.0.0.1:9000/ws"


@pytest.mark.parametrize(
    ("link", "ws_url"),
    [
        ("", None),
        ("stue.example/call", None),
        (f"ftp://stue.example/call#t={TOKEN}", None),
        (f"http:///call#t={TOKEN}", None),
        (f"http://user:pw@stue.example/call#t={TOKEN}", None),
        (f"http://stue.example:99999/call#t={TOKEN}", None),
        ("http://stue.example/call", None),
        (f"http://stue.example/call?t={TOKEN}", None),
        ("http://stue.example/call#t=short", None),
        (f"http://stue.example/call#t={TOKEN}!", None),
        (f"http://stue.example/call#t={'a' * 129}", None),
        (f"http://stue.example/call#t={TOKEN}", "http://stue.example/ws"),
    ],
)
def test_parse_link_rejects(link: str, ws_url: str | None) -> None:
    with pytest.raises(probe.BadLink) as caught:
        parse_link(link, ws_url=ws_url)
    assert caught.value.code == "bad_link"
    assert TOKEN not in caught.value.reason


def test_token_never_in_repr() -> None:
    assert TOKEN not in repr(parse_link(f"http://h/call#t={TOKEN}"))
    assert TOKEN not in repr(Join(token=TOKEN))


# --- wire messages ----------------------------------------------------------------------------------------


def test_encode_client_messages_exactly() -> None:
    assert orjson.loads(encode_client_message(Join(token=TOKEN))) == {"type": "join", "token": TOKEN}
    assert orjson.loads(encode_client_message(Offer(to="p_a", sdp="v=0"))) == {
        "type": "offer",
        "to": "p_a",
        "sdp": "v=0",
    }
    assert orjson.loads(encode_client_message(Answer(to="p_a", sdp="v=0")))["type"] == "answer"
    assert orjson.loads(encode_client_message(Candidate(to="p_a", candidate=None))) == {
        "type": "candidate",
        "to": "p_a",
        "candidate": None,
    }
    assert encode_client_message(Leave()) == b'{"type":"leave"}'
    assert encode_client_message(Ping()) == b'{"type":"ping"}'


def test_decode_joined_from_protocol_example() -> None:
    message = decode_server_frame(
        '{"type": "joined", "participant": "p_Kz8", "role": "clinician", "consultation": "c_9f",'
        ' "peers": [{"participant": "p_C3", "role": "citizen", "polite": false}], "ice_servers": []}'
    )
    assert isinstance(message, Joined)
    assert message.peers[0].participant == "p_C3"
    assert message.peers[0].polite is False


def test_decode_relayed_messages_map_from() -> None:
    offer = decode_server_frame('{"type": "offer", "from": "p_C3", "sdp": "v=0"}')
    assert offer == RelayedOffer(sender="p_C3", sdp="v=0")
    end = decode_server_frame('{"type": "candidate", "from": "p_C3", "candidate": null}')
    assert end == RelayedCandidate(sender="p_C3", candidate=None)
    error = decode_server_frame('{"type": "error", "code": "unknown_peer", "message": "m", "ref": "offer"}')
    assert error == ServerError(code="unknown_peer", message="m", ref="offer")


@pytest.mark.parametrize(
    "raw",
    ['{"type": "surprise"}', '{"participant": "p"}', "[]", "not json", '{"type": "offer", "sdp": "v=0"}'],
)
def test_decode_rejects_unexpected_frames(raw: str) -> None:
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        decode_server_frame(raw)


def test_ice_servers_from_wire_is_always_a_list() -> None:
    assert ice_servers_from_wire([]) == []
    servers = ice_servers_from_wire(
        [
            IceServer(urls="stun:turn.stue.example:3478"),
            IceServer(urls=["turn:turn.stue.example:3478?transport=udp"], username="u", credential="c"),
        ]
    )
    assert [s.urls for s in servers] == [
        "stun:turn.stue.example:3478",
        ["turn:turn.stue.example:3478?transport=udp"],
    ]
    assert (servers[1].username, servers[1].credential) == ("u", "c")


# --- candidates -------------------------------------------------------------------------------------------


def test_candidate_host() -> None:
    init = IceCandidate(candidate="candidate:1 1 udp 2122260223 192.0.2.2 50000 typ host", sdpMid="0", sdpMLineIndex=0)
    candidate = candidate_from_init(init)
    assert candidate is not None
    assert (candidate.foundation, candidate.component, candidate.protocol) == ("1", 1, "udp")
    assert (candidate.priority, candidate.ip, candidate.port, candidate.type) == (
        2122260223,
        "192.0.2.2",
        50000,
        "host",
    )
    assert (candidate.sdpMid, candidate.sdpMLineIndex) == ("0", 0)


def test_candidate_srflx_and_tcp_extensions() -> None:
    srflx = candidate_from_init(
        IceCandidate(
            candidate="candidate:842163049 1 udp 1677729535 198.51.100.7 61000 typ srflx"
            " raddr 192.0.2.2 rport 50000 generation 0 ufrag abcd network-cost 999",
            sdpMid="0",
        )
    )
    assert srflx is not None
    assert (srflx.type, srflx.relatedAddress, srflx.relatedPort) == ("srflx", "192.0.2.2", 50000)
    tcp = candidate_from_init(
        IceCandidate(candidate="candidate:2 1 tcp 1518280447 192.0.2.2 9 typ host tcptype active", sdpMLineIndex=1)
    )
    assert tcp is not None
    assert (tcp.protocol, tcp.tcpType, tcp.sdpMid, tcp.sdpMLineIndex) == ("tcp", "active", None, 1)


def test_candidate_without_prefix_or_mid() -> None:
    candidate = candidate_from_init(IceCandidate(candidate="1 1 udp 1 192.0.2.2 5000 typ host"))
    assert candidate is not None
    assert (candidate.sdpMid, candidate.sdpMLineIndex) == (None, 0)


@pytest.mark.parametrize("init", [None, IceCandidate(candidate="", sdpMid="0")])
def test_end_of_candidates(init: IceCandidate | None) -> None:
    assert candidate_from_init(init) is None


@pytest.mark.parametrize(
    "text",
    [
        "candidate:1 1 udp",
        "candidate:1 1 udp 2122260223 192.0.2.2 50000 host typ",
        "candidate:1 x udp 2122260223 192.0.2.2 50000 typ host",
        "candidate:1 1 udp 2122260223 192.0.2.2 port typ host",
    ],
)
def test_malformed_candidate(text: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        candidate_from_init(IceCandidate(candidate=text, sdpMid="0"))


# --- exit codes and report --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (None, 0),
        ("timeout", 1),
        ("probe_fault", 1),
        ("bad_link", 2),
        ("usage", 2),
        ("bad_token", 3),
        ("unreachable", 4),
        ("handshake_refused", 4),
        ("replaced", 5),
        ("internal", 5),
        ("rate_limited", 5),
        ("closed", 5),
    ],
)
def test_exit_code_for(error: str | None, code: int) -> None:
    assert exit_code_for(error) == code


def test_report_to_dict_is_json_with_the_promised_fields() -> None:
    report = ProbeReport()
    report.fail("timeout", "timed out")
    data = orjson.loads(orjson.dumps(report.to_dict()))
    for key in (
        "connected",
        "connect_ms",
        "frames_received",
        "audio_packets_received",
        "remote_peers",
        "participant",
        "consultation",
        "media_sent_confirmed",
        "error",
        "duration_ms",
    ):
        assert key in data
    assert (data["ok"], data["exit_code"], data["error"], data["connect_ms"]) == (False, 1, "timeout", None)


@pytest.mark.parametrize(
    ("stage", "words"),
    [
        (Stage.CONNECTING, "waiting for the server"),
        (Stage.JOINING, "waiting for the server"),
        (Stage.WAITING_FOR_PEER, "nobody else joined"),
        (Stage.NEGOTIATING, "never connected"),
        (Stage.CONNECTED, "remote media did not arrive"),
        (Stage.RECEIVING, "never confirmed"),
    ],
)
def test_timeout_reason_says_how_far_we_got(stage: Stage, words: str) -> None:
    reason = timeout_reason(stage, 20.0, ProbeReport())
    assert reason.startswith("timed out after 20 s")
    assert words in reason
    assert "\n" not in reason


def test_format_summary() -> None:
    report = ProbeReport(ok=True, exit_code=0, reason="media flowed both ways", connect_ms=31.2, remote_peers=1)
    assert format_summary(report).startswith("probe ok: media flowed both ways")
    report.fail("bad_token", "link is unknown or expired")
    assert format_summary(report).startswith("probe FAILED (bad_token, exit 3): link is unknown or expired")


def test_main_bad_link_exits_2_without_echoing_the_link(capsys: pytest.CaptureFixture[str]) -> None:
    assert probe.main(f"ftp://h/call#t={TOKEN}", timeout=1.0) == ExitCode.USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert "http:// or https://" in err
    assert TOKEN not in err


async def test_run_probe_rejects_bad_timeout() -> None:
    report = await run_probe(f"http://h/call#t={TOKEN}", timeout=0)
    assert (report.error, report.exit_code) == ("usage", 2)


# --- synthetic media --------------------------------------------------------------------------------------


async def test_tone_track_is_a_440_hz_sine_in_20_ms_frames() -> None:
    track = probe.ToneTrack()
    first, second = await track.recv(), await track.recv()
    track.stop()
    assert (first.samples, first.sample_rate, first.format.name, first.layout.name) == (
        AUDIO_SAMPLES,
        AUDIO_RATE,
        "s16",
        "mono",
    )
    assert (first.pts, second.pts) == (0, AUDIO_SAMPLES)
    samples = array.array("h", bytes(first.planes[0]))
    crossings = sum(1 for a, b in itertools.pairwise(samples) if a < 0 <= b)
    assert crossings in (8, 9)  # 440 Hz over 20 ms is 8.8 cycles
    assert max(samples) == pytest.approx(0.3 * 32767, rel=0.01)
    assert samples[1] == round(0.3 * 32767 * math.sin(2 * math.pi * 440 / AUDIO_RATE))


async def test_tone_track_is_continuous_across_frames() -> None:
    track = probe.ToneTrack()
    frames = [await track.recv() for _ in range(4)]
    track.stop()
    samples = array.array("h", b"".join(bytes(frame.planes[0]) for frame in frames))
    assert list(samples) == [
        round(0.3 * 32767 * math.sin(2 * math.pi * 440 * n / AUDIO_RATE)) for n in range(4 * AUDIO_SAMPLES)
    ]


async def test_pattern_track_moves() -> None:
    track = probe.PatternTrack()
    first, second = await track.recv(), await track.recv()
    track.stop()
    assert (first.width, first.height, first.format.name) == (320, 240, "yuv420p")
    assert bytes(first.planes[0]) != bytes(second.planes[0])
    assert second.pts is not None
    assert second.pts > (first.pts or 0)


# --- whole runs against a minimal relay -------------------------------------------------------------------
# The relay follows protocol.md just far enough to exercise the probe; the real server is covered by the
# lead's integration tests.


@dataclass
class Relay:
    origin: str
    tokens: dict[str, str]
    # participant id -> (connection, token, role)
    members: dict[str, tuple[ServerConnection, str, str]] = field(default_factory=dict)
    someone_joined: asyncio.Event = field(default_factory=asyncio.Event)
    counter: itertools.count[int] = field(default_factory=itertools.count)
    server: Server | None = None

    @property
    def ws_url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/ws"

    async def broadcast(self, sender: str, message: dict[str, object]) -> None:
        for member, (ws, _, _) in list(self.members.items()):
            if member != sender:
                with contextlib.suppress(Exception):
                    await ws.send(orjson.dumps(message).decode())

    async def handle(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.serve_one(ws)

    async def serve_one(self, ws: ServerConnection) -> None:
        me: str | None = None
        try:
            async for raw in ws:
                message = orjson.loads(raw)
                kind = message["type"]
                if kind == "join":
                    role = self.tokens.get(message["token"])
                    if role is None:
                        await ws.send('{"type":"error","code":"bad_token","message":"no","ref":"join"}')
                        await ws.close(4401)
                        return
                    for old, (old_ws, token, _) in list(self.members.items()):
                        if token == message["token"]:
                            del self.members[old]
                            await old_ws.send('{"type":"error","code":"replaced","message":"r","ref":null}')
                            await old_ws.close(4409)
                            await self.broadcast(old, {"type": "peer-left", "participant": old, "reason": "replaced"})
                    me = f"p_{next(self.counter)}"
                    peers = [{"participant": p, "role": r, "polite": False} for p, (_, _, r) in self.members.items()]
                    self.members[me] = (ws, message["token"], role)
                    joined = {"participant": me, "role": role, "consultation": "c_test", "peers": peers}
                    await ws.send(orjson.dumps({"type": "joined", **joined, "ice_servers": []}).decode())
                    await self.broadcast(me, {"type": "peer-joined", "participant": me, "role": role, "polite": True})
                    self.someone_joined.set()
                elif kind in ("offer", "answer", "candidate"):
                    target = self.members.get(message.pop("to"))
                    if target is not None:
                        await target[0].send(orjson.dumps({**message, "from": me}).decode())
                elif kind == "ping":
                    await ws.send('{"type":"pong"}')
                elif kind == "leave":
                    break
        finally:
            if me is not None and self.members.get(me, (None,))[0] is ws:
                del self.members[me]
                await self.broadcast(me, {"type": "peer-left", "participant": me, "reason": "left"})
            await ws.close()


ORIGIN = "http://127.0.0.1:8766"


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    relay = Relay(origin=ORIGIN, tokens={TOKEN: "citizen", OTHER_TOKEN: "clinician"})
    async with serve(relay.handle, "127.0.0.1", 0, origins=[Origin(ORIGIN)], compression=None) as server:
        relay.server = server
        yield relay


def link(token: str = TOKEN) -> str:
    return f"{ORIGIN}/call#t={token}"


async def test_two_probes_see_each_other(relay: Relay) -> None:
    citizen, clinician = await asyncio.gather(
        run_probe(link(TOKEN), timeout=15 * TIME_SCALE, ws_url=relay.ws_url),
        run_probe(link(OTHER_TOKEN), timeout=15 * TIME_SCALE, ws_url=relay.ws_url),
    )
    for report in (citizen, clinician):
        assert report.ok, report.reason
        assert (report.exit_code, report.error, report.stage) == (0, None, "confirmed")
        assert report.connected
        assert report.media_sent_confirmed
        assert report.connect_ms is not None
        assert 0 < report.connect_ms < 5000 * TIME_SCALE
        assert report.negotiate_ms is not None
        assert 0 < report.negotiate_ms <= report.connect_ms
        assert report.frames_received >= 1
        assert report.audio_frames_received >= 1
        assert report.audio_packets_received >= 1
        assert report.remote_peers == 1
        assert report.server_errors == []
    assert {citizen.role, clinician.role} == {"citizen", "clinician"}
    assert relay.members == {}  # both sent leave and closed


async def test_bad_token_exits_3(relay: Relay) -> None:
    report = await run_probe(link("A" * 32), timeout=5 * TIME_SCALE, ws_url=relay.ws_url)
    assert (report.error, report.exit_code, report.reason) == ("bad_token", 3, "link is unknown or expired")


async def test_refused_origin_exits_4(relay: Relay) -> None:
    report = await run_probe(f"http://evil.example/call#t={TOKEN}", timeout=5 * TIME_SCALE, ws_url=relay.ws_url)
    assert (report.error, report.exit_code) == ("handshake_refused", 4)
    assert "HTTP 403" in report.reason


async def test_closed_port_exits_4() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    report = await run_probe(f"http://127.0.0.1:{port}/call#t={TOKEN}", timeout=5 * TIME_SCALE)
    assert (report.error, report.exit_code) == ("unreachable", 4)
    assert f"ws://127.0.0.1:{port}/ws" in report.reason


async def test_silent_server_times_out_within_budget() -> None:
    async def mute(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with serve(mute, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        report = await run_probe(f"http://127.0.0.1:{port}/call#t={TOKEN}", timeout=0.5 * TIME_SCALE)
    assert (report.error, report.exit_code, report.stage) == ("timeout", 1, "joining")
    assert report.duration_ms < (0.5 * TIME_SCALE + probe.SHUTDOWN_GRACE) * 1000


async def test_alone_times_out_waiting_for_peer(relay: Relay, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    report = await run_probe(link(), timeout=1 * TIME_SCALE, ws_url=relay.ws_url)
    assert any(r.name.startswith("stue.probe") for r in caplog.records)
    # websockets logs frame contents at DEBUG; only the relay's own server-side log may show the join frame.
    probe_side = [r.getMessage() for r in caplog.records if r.name != "websockets.server"]
    assert not [line for line in probe_side if TOKEN in line]
    assert TOKEN not in orjson.dumps(report.to_dict()).decode()
    assert (report.error, report.exit_code, report.stage) == ("timeout", 1, "waiting_for_peer")
    assert (report.participant, report.consultation) == ("p_0", "c_test")
    assert "nobody else joined" in report.reason
    assert relay.members == {}


async def test_replaced_exits_5(relay: Relay) -> None:
    first = asyncio.create_task(run_probe(link(), timeout=10 * TIME_SCALE, ws_url=relay.ws_url))
    async with asyncio.timeout(5 * TIME_SCALE):
        await relay.someone_joined.wait()
    second = asyncio.create_task(run_probe(link(), timeout=0.5 * TIME_SCALE, ws_url=relay.ws_url))
    report = await first
    await second
    assert (report.error, report.exit_code) == ("replaced", 5)
    assert report.server_errors == ["replaced"]


class FakeBrowser:
    """A second client written against protocol.md the way a browser behaves: it trickles its candidates
    (here deliberately *before* its answer, to exercise the probe's queue) and renegotiates once connected."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.renegotiated = asyncio.Event()
        self.frames = 0
        self.connected = asyncio.Event()
        self.pc.add_listener("track", self._on_track)
        self.pc.add_listener("connectionstatechange", self._on_state)
        self._tasks: set[asyncio.Task[None]] = set()

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            self.connected.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        async def consume() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    await track.recv()
                    self.frames += 1

        self._spawn(consume())

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, joined: asyncio.Event) -> None:
        async with connect(self.relay.ws_url, origin=Origin(ORIGIN), compression=None) as ws:
            await ws.send(encode_client_message(Join(token=OTHER_TOKEN)))
            assert orjson.loads(await ws.recv())["type"] == "joined"
            joined.set()
            async for raw in ws:
                message = orjson.loads(raw)
                if message["type"] == "offer":
                    await self._answer(ws, message["from"], message["sdp"])
                elif message["type"] == "answer":
                    await self.pc.setRemoteDescription(RTCSessionDescription(message["sdp"], "answer"))
                    self.renegotiated.set()
                elif message["type"] == "peer-left":
                    break
        for task in self._tasks:
            task.cancel()
        await self.pc.close()

    async def _answer(self, ws: ClientConnection, peer: str, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        self.pc.addTrack(probe.ToneTrack())
        self.pc.addTrack(probe.PatternTrack())
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        lines = self.pc.localDescription.sdp.splitlines()
        candidates = dict.fromkeys(line.removeprefix("a=") for line in lines if line.startswith("a=candidate:"))
        for candidate in candidates:
            init = {"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": None}
            await ws.send(orjson.dumps({"type": "candidate", "to": peer, "candidate": init}).decode())
        bare = [line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates"))]
        await ws.send(encode_client_message(Answer(to=peer, sdp="\r\n".join(bare) + "\r\n")))
        await ws.send(encode_client_message(Candidate(to=peer, candidate=None)))
        self._spawn(self._renegotiate(ws, peer))

    async def _renegotiate(self, ws: ClientConnection, peer: str) -> None:
        await self.connected.wait()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await ws.send(encode_client_message(Offer(to=peer, sdp=self.pc.localDescription.sdp)))


async def test_probe_against_a_trickling_renegotiating_remote(relay: Relay) -> None:
    browser = FakeBrowser(relay)
    joined = asyncio.Event()
    remote = asyncio.create_task(browser.run(joined))
    async with asyncio.timeout(5 * TIME_SCALE):
        await joined.wait()
    report = await run_probe(link(TOKEN), timeout=15 * TIME_SCALE, ws_url=relay.ws_url)
    async with asyncio.timeout(5 * TIME_SCALE):
        await remote
    assert report.ok, report.reason
    assert report.server_errors == []
    assert browser.renegotiated.is_set()
    assert browser.frames > 0


@pytest.mark.parametrize(
    ("frame", "close_code", "error", "exit_code"),
    [
        ('{"type":"error","code":"internal","message":"redis","ref":null}', 1011, "internal", 5),
        ('{"type":"error","code":"rate_limited","message":"slow down","ref":null}', 1008, "rate_limited", 5),
        (None, 1001, "closed", 5),
        (None, 4401, "bad_token", 3),
        (None, 4409, "replaced", 5),
    ],
)
async def test_server_ending_the_session(frame: str | None, close_code: int, error: str, exit_code: int) -> None:
    async def end_after_join(ws: ServerConnection) -> None:
        await ws.recv()
        if frame is not None:
            await ws.send(frame)
        await ws.close(close_code)

    async with serve(end_after_join, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        report = await run_probe(f"http://127.0.0.1:{port}/call#t={TOKEN}", timeout=5 * TIME_SCALE)
    assert (report.error, report.exit_code) == (error, exit_code)
    assert report.duration_ms < 1000 * TIME_SCALE
