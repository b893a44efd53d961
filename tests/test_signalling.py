"""The signalling server end to end: real `stue serve` processes, real Redis, a real WebSocket client."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from support import StueServer, token_of
from wsclient import Client

pytestmark = pytest.mark.slow


async def pair(server: StueServer, links: dict[str, str] | None = None) -> tuple[Client, Client]:
    """A citizen and a clinician joined to one consultation (a new one unless `links` are given)."""
    links = links or server.new_consultation()
    citizen = await Client.open(server.ws_url, server.url)
    await citizen.join(token_of(links["citizen_link"]))
    clinician = await Client.open(server.ws_url, server.url)
    await clinician.join(token_of(links["clinician_link"]))
    return citizen, clinician


async def test_join_relay_and_leave(stue: StueServer) -> None:
    citizen, clinician = await pair(stue)
    assert citizen.joined["peers"] == []
    assert citizen.joined["role"] == "citizen"
    assert clinician.joined["peers"] == [{"participant": citizen.id, "role": "citizen", "polite": False}]
    assert clinician.joined["consultation"] == citizen.joined["consultation"]
    assert await citizen.expect("peer-joined") == {
        "type": "peer-joined",
        "participant": clinician.id,
        "role": "clinician",
        "polite": True,
    }
    await clinician.send({"type": "offer", "to": citizen.id, "sdp": "v=0 offer"})
    assert await citizen.expect("offer") == {"type": "offer", "from": clinician.id, "sdp": "v=0 offer"}
    await citizen.send({"type": "answer", "to": clinician.id, "sdp": "v=0 answer"})
    assert (await clinician.expect("answer"))["from"] == citizen.id
    candidate = {
        "candidate": "candidate:1 1 udp 2122260223 192.0.2.2 50000 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }
    await citizen.send({"type": "candidate", "to": clinician.id, "candidate": candidate})
    assert (await clinician.expect("candidate"))["candidate"] == {**candidate, "usernameFragment": None}
    await citizen.send({"type": "ping"})
    await citizen.expect("pong")
    await clinician.send({"type": "leave"})
    assert await citizen.expect("peer-left") == {"type": "peer-left", "participant": clinician.id, "reason": "left"}
    assert await clinician.closed() == 1000
    await citizen.close()


async def pair_from(server: StueServer, links: dict[str, str]) -> tuple[Client, Client]:
    citizen = await Client.open(server.ws_url, server.url)
    await citizen.join(token_of(links["citizen_link"]))
    clinician = await Client.open(server.ws_url, server.url)
    await clinician.join(token_of(links["clinician_link"]))
    return citizen, clinician


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ("[]", "not_an_object"),
        ('{"type": "teleport"}', "unknown_type"),
        ('{"type": "offer", "to": "p_x"}', "missing_field"),
        ('{"type": "offer", "to": "p_x", "sdp": "v=0", "from": "p_spoof"}', "unknown_field"),
        ('{"type": "offer", "to": 5, "sdp": "v=0"}', "bad_field"),
        ('{"type": "ping", "type": "leave"}', "duplicate_key"),
        ('{"type": "offer", "to": "p_nobody", "sdp": "v=0"}', "unknown_peer"),
        (b"\x00binary", "binary_frame"),
    ],
)
async def test_bad_frames_get_an_error_and_everyone_carries_on(
    stue_embedded: StueServer, frame: str | bytes, code: str
) -> None:
    citizen, clinician = await pair(stue_embedded)
    await citizen.expect("peer-joined")
    await clinician.send(frame)
    error = await clinician.expect("error")
    assert error["code"] == code
    assert isinstance(error["message"], str)
    # the offender's connection still works, and so does everyone else's
    await clinician.send({"type": "offer", "to": citizen.id, "sdp": "v=0"})
    assert (await citizen.expect("offer"))["from"] == clinician.id


async def test_messages_before_join_and_a_second_join(stue_embedded: StueServer) -> None:
    links = stue_embedded.new_consultation()
    client = await Client.open(stue_embedded.ws_url, stue_embedded.url)
    await client.send({"type": "offer", "to": "p_x", "sdp": "v=0"})
    assert (await client.expect("error"))["code"] == "not_joined"
    await client.join(token_of(links["citizen_link"]))
    await client.send({"type": "join", "token": token_of(links["citizen_link"])})
    assert (await client.expect("error"))["code"] == "already_joined"


async def test_the_same_link_joining_again_replaces_the_old_connection(stue_embedded: StueServer) -> None:
    links = stue_embedded.new_consultation()
    citizen, clinician = await pair_from(stue_embedded, links)
    await citizen.expect("peer-joined")
    second = await Client.open(stue_embedded.ws_url, stue_embedded.url)
    await second.join(token_of(links["clinician_link"]))
    assert [p["participant"] for p in second.joined["peers"]] == [citizen.id]
    assert (await clinician.expect("error"))["code"] == "replaced"
    assert await clinician.closed() == 4409
    assert await citizen.expect("peer-left") == {"type": "peer-left", "participant": clinician.id, "reason": "replaced"}
    assert (await citizen.expect("peer-joined"))["participant"] == second.id


async def pair_on_two_nodes(
    stue_factory: Callable[..., StueServer], env: dict[str, str], second_env: dict[str, str] | None = None
) -> tuple[StueServer, StueServer, Client, Client]:
    """Two server processes on one Redis, serving one public origin; the citizen on the first, the clinician on
    the second (`second_env` added to `env` there)."""
    first = stue_factory(env)
    second = stue_factory({**env, **(second_env or {}), "STUE_PUBLIC_URL": first.url})
    links = first.new_consultation()
    citizen = await Client.open(first.ws_url, first.url)
    await citizen.join(token_of(links["citizen_link"]))
    clinician = await Client.open(second.ws_url, first.url)
    await clinician.join(token_of(links["clinician_link"]))
    return first, second, citizen, clinician


async def test_two_server_processes_route_through_redis(
    stue_factory: Callable[..., StueServer], redis_env: dict[str, str]
) -> None:
    _, _, citizen, clinician = await pair_on_two_nodes(stue_factory, redis_env)
    assert [p["participant"] for p in clinician.joined["peers"]] == [citizen.id]
    assert (await citizen.expect("peer-joined"))["participant"] == clinician.id
    for i in range(50):
        await clinician.send({"type": "offer", "to": citizen.id, "sdp": f"v=0 {i}"})
    received = [(await citizen.expect("offer"))["sdp"] for _ in range(50)]
    assert received == [f"v=0 {i}" for i in range(50)]  # in order across the Redis hop
    await citizen.send({"type": "answer", "to": clinician.id, "sdp": "v=0 back"})
    assert (await clinician.expect("answer"))["from"] == citizen.id
    await clinician.send({"type": "leave"})
    assert await citizen.expect("peer-left") == {"type": "peer-left", "participant": clinician.id, "reason": "left"}


async def test_a_crashed_server_s_participants_time_out(
    stue_factory: Callable[..., StueServer], redis_env: dict[str, str]
) -> None:
    env = {**redis_env, "STUE_MEMBERSHIP_TTL": "2"}
    _, second, citizen, clinician = await pair_on_two_nodes(stue_factory, env)
    await citizen.expect("peer-joined")
    second.process.kill()  # no goodbye: only the membership expiry can tell
    left = await citizen.expect("peer-left", timeout=10)
    assert left == {"type": "peer-left", "participant": clinician.id, "reason": "timeout"}


def test_health_and_security_headers(stue: StueServer) -> None:
    with urllib.request.urlopen(f"{stue.url}/healthz") as response:  # noqa: S310 - loopback
        assert json.loads(response.read())["redis"] == "ok"
    with urllib.request.urlopen(f"{stue.url}/call") as response:  # noqa: S310 - loopback
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert f"connect-src 'self' {stue.ws_url.removesuffix('/ws')};" in csp
        assert response.headers["referrer-policy"] == "no-referrer"


async def test_many_clients_in_parallel(stue_embedded: StueServer) -> None:
    # Made first, in threads: `new_consultation` runs the CLI, which would block this loop while sockets' open
    # timeouts run.
    consultations = await asyncio.gather(*(asyncio.to_thread(stue_embedded.new_consultation) for _ in range(20)))
    pairs = await asyncio.gather(*(pair(stue_embedded, links) for links in consultations))
    for citizen, clinician in pairs:
        await citizen.expect("peer-joined")
        await clinician.send({"type": "offer", "to": citizen.id, "sdp": "v=0"})
    for citizen, clinician in pairs:
        assert (await citizen.expect("offer"))["from"] == clinician.id


async def test_a_socket_that_never_joins_is_closed_after_the_join_deadline(
    stue_factory: Callable[..., StueServer], tmp_path: Path
) -> None:
    server = stue_factory({"STUE_DATA_DIR": str(tmp_path / "data"), "STUE_JOIN_TIMEOUT": "1"})
    idle = await Client.open(server.ws_url, server.url)
    for _ in range(3):  # keeping busy does not extend the deadline
        await idle.send({"type": "ping"})
        await idle.expect("pong")
        await asyncio.sleep(0.4)
    assert (await idle.expect("error", timeout=5))["code"] == "join_timeout"
    assert await idle.closed() == 1008
    # joining in time keeps the socket: the deadline does not apply once joined
    links = server.new_consultation()
    member = await Client.open(server.ws_url, server.url)
    await member.join(token_of(links["citizen_link"]))
    with pytest.raises(TimeoutError):
        await member.recv(timeout=2)


def post_link(server: StueServer, body: bytes) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(f"{server.url}/api/link", data=body, method="POST")  # noqa: S310 - loopback
    request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_link_check_tells_only_whether_a_link_opens_and_as_which_role(stue: StueServer) -> None:
    links = stue.new_consultation()
    token = token_of(links["clinician_link"])
    assert post_link(stue, json.dumps({"token": token}).encode()) == (200, {"role": "clinician"})
    assert post_link(stue, json.dumps({"token": "Z" * 32}).encode()) == (404, {"error": "bad_token"})
    assert post_link(stue, b'{"token": "short"}')[0] == 400
    assert post_link(stue, json.dumps({"token": token, "extra": 1}).encode())[0] == 400
    assert post_link(stue, b"x" * 2000)[0] == 413


def test_link_checks_are_rate_limited_per_address(stue_embedded: StueServer) -> None:
    """Far more checks than pages: the burst passes, then 429 (the page treats it as "unknown" and goes on)."""
    links = stue_embedded.new_consultation()
    body = json.dumps({"token": token_of(links["citizen_link"])}).encode()
    statuses = [post_link(stue_embedded, body)[0] for _ in range(80)]
    assert statuses[:40] == [200] * 40  # within the burst of 50 (a little refill on the way does not matter)
    assert statuses[-1] == 429
    assert 429 in statuses and set(statuses) == {200, 429}
