"""Signalling resume end to end: a participant whose socket drops comes back as itself, on any server process."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from support import TIME_SCALE, RedisServer, StueServer, token_of, wait_until
from test_signalling import pair, pair_on_two_nodes
from wsclient import Client

pytestmark = pytest.mark.slow

#: A secret of the right shape that the server never handed out.
WRONG_SECRET = "W" * 32


async def relays_both_ways(one: Client, other: Client) -> None:
    """An offer from `one` reaches `other`'s socket and the answer comes back to `one`'s."""
    await one.send({"type": "offer", "to": other.id, "sdp": "v=0 there"})
    assert await other.expect("offer") == {"type": "offer", "from": one.id, "sdp": "v=0 there"}
    await other.send({"type": "answer", "to": one.id, "sdp": "v=0 back"})
    assert await one.expect("answer") == {"type": "answer", "from": other.id, "sdp": "v=0 back"}


async def rejoin(server: StueServer, origin: str, old: Client, resume: dict[str, str]) -> Client:
    """A new socket to `server` joining with `old`'s link and `resume`."""
    client = await Client.open(server.ws_url, origin)
    await client.join(old.token, resume=resume)
    return client


async def test_a_dropped_socket_resumes_as_the_same_participant(stue: StueServer) -> None:
    citizen, clinician = await pair(stue)
    assert (await citizen.expect("peer-joined"))["participant"] == clinician.id
    citizen.ws.transport.abort()  # a dropped network, not a goodbye
    await clinician.silent(1.5)  # no peer-left: the citizen may come back

    again = await rejoin(stue, stue.url, citizen, citizen.resume)
    assert again.id == citizen.id
    assert again.joined["resumed"] is True
    assert again.joined["resume"] != citizen.joined["resume"]  # rotated
    # The clinician joined after the citizen, so it stays the impolite side of the pair.
    assert again.joined["peers"] == [{"participant": clinician.id, "role": "clinician", "polite": True}]
    # Told again, for the servers' routing (a client already knows the id and ignores it), politeness unchanged.
    assert await clinician.expect("peer-joined") == {
        "type": "peer-joined",
        "participant": citizen.id,
        "role": "citizen",
        "polite": False,
    }
    await relays_both_ways(again, clinician)
    await relays_both_ways(clinician, again)

    # The first secret was used up: it opens nothing now, and the link's membership is replaced as on any join.
    again.ws.transport.abort()
    late = await rejoin(stue, stue.url, citizen, citizen.resume)
    assert late.id != citizen.id
    assert late.joined["resumed"] is False
    assert await clinician.expect("peer-left") == {"type": "peer-left", "participant": citizen.id, "reason": "replaced"}
    assert (await clinician.expect("peer-joined"))["participant"] == late.id


@pytest.mark.parametrize(
    "attempt",
    ["a wrong secret", "an unknown participant", "another participant with its secret", "another participant"],
)
async def test_a_resume_that_does_not_hold_is_an_ordinary_join(stue_embedded: StueServer, attempt: str) -> None:
    citizen, clinician = await pair(stue_embedded)
    await citizen.expect("peer-joined")
    clinician.ws.transport.abort()
    resume = {
        "a wrong secret": {"participant": clinician.id, "secret": WRONG_SECRET},
        "an unknown participant": {**clinician.resume, "participant": "p_nobody"},
        # Peers know each other's ids; the clinician's link must not continue the citizen, secret or not.
        "another participant with its secret": citizen.resume,
        "another participant": {**clinician.resume, "participant": citizen.id},
    }[attempt]
    again = await rejoin(stue_embedded, stue_embedded.url, clinician, resume)
    assert again.id not in (clinician.id, citizen.id)
    assert again.joined["resumed"] is False
    assert again.joined["role"] == "clinician"
    assert again.joined["peers"] == [{"participant": citizen.id, "role": "citizen", "polite": False}]
    assert await citizen.expect("peer-left") == {"type": "peer-left", "participant": clinician.id, "reason": "replaced"}
    assert (await citizen.expect("peer-joined"))["participant"] == again.id
    await relays_both_ways(again, citizen)


async def test_no_resume_within_the_grace_tells_the_others_timeout(
    stue_factory: Callable[..., StueServer], redis_env: dict[str, str]
) -> None:
    server = stue_factory({**redis_env, "STUE_RESUME_GRACE": "1"})
    citizen, clinician = await pair(server)
    await citizen.expect("peer-joined")
    dropped = time.monotonic()
    clinician.ws.transport.abort()
    # Well before the upkeep's own sweep (every STUE_MEMBERSHIP_TTL / 4 = 11 s): the dropping node sweeps itself.
    left = await citizen.expect("peer-left", timeout=8)
    assert left == {"type": "peer-left", "participant": clinician.id, "reason": "timeout"}
    assert time.monotonic() - dropped >= 0.9  # not before the grace ran out

    late = await rejoin(server, server.url, clinician, clinician.resume)
    assert late.id != clinician.id
    assert late.joined["resumed"] is False
    assert (await citizen.expect("peer-joined"))["participant"] == late.id  # no `replaced`: the old one is gone


async def test_a_grace_outlives_the_node_that_started_it(
    stue_factory: Callable[..., StueServer], redis_env: dict[str, str]
) -> None:
    env = {**redis_env, "STUE_RESUME_GRACE": "1", "STUE_MEMBERSHIP_TTL": "2"}
    _, second, citizen, clinician = await pair_on_two_nodes(stue_factory, env)
    await citizen.expect("peer-joined")
    await clinician.close()  # a clean close without `leave` is a drop too
    await citizen.silent(0.5)
    second.process.kill()  # its own grace sweep dies with it; the first node's upkeep sweeps instead
    left = await citizen.expect("peer-left", timeout=8)
    assert left == {"type": "peer-left", "participant": clinician.id, "reason": "timeout"}


async def test_a_participant_resumes_on_the_other_server_process(
    stue_factory: Callable[..., StueServer], redis_env: dict[str, str]
) -> None:
    first, second, citizen, clinician = await pair_on_two_nodes(stue_factory, redis_env)
    await citizen.expect("peer-joined")

    clinician.ws.transport.abort()  # the clinician was on the second process; it comes back on the first
    await citizen.silent(1.0)
    clinician_again = await rejoin(first, first.url, clinician, clinician.resume)
    assert (clinician_again.id, clinician_again.joined["resumed"]) == (clinician.id, True)
    assert clinician_again.joined["peers"] == [{"participant": citizen.id, "role": "citizen", "polite": False}]
    assert await citizen.expect("peer-joined") == {
        "type": "peer-joined",
        "participant": clinician.id,
        "role": "clinician",
        "polite": True,
    }
    await relays_both_ways(clinician_again, citizen)
    await relays_both_ways(citizen, clinician_again)

    citizen.ws.transport.abort()  # and the citizen, on the first process, comes back on the second
    await clinician_again.silent(1.0)
    citizen_again = await rejoin(second, first.url, citizen, citizen.resume)
    assert (citizen_again.id, citizen_again.joined["resumed"]) == (citizen.id, True)
    assert (await clinician_again.expect("peer-joined"))["participant"] == citizen.id
    await relays_both_ways(citizen_again, clinician_again)
    await relays_both_ways(clinician_again, citizen_again)


def while_away(to: str, count: int) -> list[dict[str, object]]:
    """What a peer sends to someone away: an ICE restart's offer, then candidates, then their end."""
    frames: list[dict[str, object]] = [{"type": "offer", "to": to, "sdp": "v=0 restart"}]
    for port in range(50000, 50000 + count - 2):
        candidate = {"candidate": f"candidate:1 1 udp 2122260223 192.0.2.2 {port} typ host", "sdpMid": "0"}
        frames.append({"type": "candidate", "to": to, "candidate": candidate})
    return [*frames, {"type": "candidate", "to": to, "candidate": None}]


def as_relayed(frame: dict[str, object], sender: str) -> dict[str, object]:
    """`frame` as the server relays it from `sender` (a candidate gets its optional fields, null)."""
    relayed = {key: value for key, value in frame.items() if key != "to"} | {"from": sender}
    if relayed["type"] == "candidate" and isinstance(relayed["candidate"], dict):
        relayed["candidate"] = {**relayed["candidate"], "sdpMLineIndex": None, "usernameFragment": None}
    return relayed


async def swallow(client: Client, count: int) -> None:
    """`count` frames reach the client's socket and are lost before the client reads them (a network change left
    the socket half-open): the server wrote them, and the client does not count them as read."""
    for _ in range(count):
        await client.recv()


async def swallowed(sender: Client, to: Client, count: int) -> list[dict[str, object]]:
    """`sender` sends `to` an ICE restart of `count` frames, which `to`'s socket swallows (see `swallow`)."""
    frames = while_away(to.id, count)
    for frame in frames:
        await sender.send(frame)
    await swallow(to, count)
    return frames


async def drop(client: Client) -> None:
    """A lost network: no `leave`, no close handshake; then time for the server to notice."""
    client.ws.transport.abort()
    await asyncio.sleep(0.3 * TIME_SCALE)


@pytest.mark.parametrize("where", ["same process", "other process"])
async def test_what_the_others_sent_while_away_follows_the_resumed_joined(
    stue_factory: Callable[..., StueServer], redis_env: dict[str, str], where: str
) -> None:
    """The others are not told of a drop, so they keep sending (an ICE restart, typically, since the network that
    dropped the socket dropped the media too). What they sent is held, and comes right after the resumed `joined`,
    in the order sent, on whichever process the participant comes back to."""
    first, second, citizen, clinician = await pair_on_two_nodes(stue_factory, redis_env)
    await citizen.expect("peer-joined")
    await drop(citizen)
    sent = while_away(citizen.id, 6)
    for frame in sent:
        await clinician.send(frame)
    await clinician.silent(0.5)  # no error: the citizen is still a member, only away
    again = await rejoin(first if where == "same process" else second, first.url, citizen, citizen.resume)
    assert (again.id, again.joined["resumed"], again.joined["held"]) == (citizen.id, True, len(sent))
    for frame in sent:
        assert await again.recv() == as_relayed(frame, clinician.id)
    assert (await clinician.expect("peer-joined"))["participant"] == citizen.id
    await relays_both_ways(again, clinician)

    # Delivered once: the next resume has nothing held.
    await drop(again)
    once_more = await rejoin(first, first.url, again, again.resume)
    assert (once_more.joined["resumed"], once_more.joined["held"]) == (True, 0)


async def test_frames_sent_just_before_the_resume_are_held_too(stue: StueServer) -> None:
    """No pause between the last frame and the resume: the resume waits for this node's held frames to be stored."""
    citizen, clinician = await pair(stue)
    await citizen.expect("peer-joined")
    await drop(citizen)
    sent = while_away(citizen.id, 20)
    for frame in sent:
        await clinician.send(frame)
    again = await rejoin(stue, stue.url, citizen, citizen.resume)
    assert again.joined["held"] == len(sent)
    assert [(await again.recv())["type"] for _ in sent] == [frame["type"] for frame in sent]


async def test_a_frame_that_still_reaches_the_old_process_after_a_resume_is_passed_on(
    stue_factory: Callable[..., StueServer], redis7: RedisServer
) -> None:
    """The citizen resumed on the second process, but a frame routed by what its sender's process knew a moment
    before (published to the first process) still reaches it."""
    env = {"STUE_REDIS_URL": redis7.url}
    first = stue_factory({**env, "STUE_NODE_ID": "first"})
    second = stue_factory({**env, "STUE_NODE_ID": "second", "STUE_PUBLIC_URL": first.url})
    links = first.new_consultation()
    citizen = await Client.open(first.ws_url, first.url)
    await citizen.join(token_of(links["citizen_link"]))
    clinician = await Client.open(second.ws_url, first.url)
    await clinician.join(token_of(links["clinician_link"]))
    await citizen.expect("peer-joined")
    await drop(citizen)
    again = await rejoin(second, first.url, citizen, citizen.resume)
    assert (again.joined["resumed"], again.joined["held"]) == (True, 0)
    # What the clinician's process would have published a moment before it learned of the move.
    stale = f'{{"type":"offer","from":"{clinician.id}","sdp":"v=0 stale route"}}'
    bus = aioredis.from_url(redis7.url)
    try:
        await bus.publish("stue:node:first", f"F {citizen.id}\n{stale}".encode())
    finally:
        await bus.aclose()
    assert await again.expect("offer") == {"type": "offer", "from": clinician.id, "sdp": "v=0 stale route"}


async def test_only_the_latest_frames_are_held_and_only_for_the_grace(
    stue_factory: Callable[..., StueServer], redis_env: dict[str, str]
) -> None:
    server = stue_factory({**redis_env, "STUE_RESUME_GRACE": "2", "STUE_FRAME_BURST": "500"})
    citizen, clinician = await pair(server)
    await citizen.expect("peer-joined")
    await drop(citizen)
    sent = while_away(citizen.id, 100)
    for frame in sent:
        await clinician.send(frame)
    await clinician.silent(0.3)
    again = await rejoin(server, server.url, citizen, citizen.resume)
    assert again.joined["held"] == 64
    first_held = await again.recv()
    assert first_held["candidate"]["candidate"] == sent[-64]["candidate"]["candidate"]  # type: ignore[index]
    assert (await clinician.expect("peer-joined"))["participant"] == citizen.id

    # Not resumed within the grace: what was held is gone with the membership.
    await drop(again)
    await clinician.send({"type": "offer", "to": citizen.id, "sdp": "v=0 unheard"})
    assert (await clinician.expect("peer-left", timeout=10))["reason"] == "timeout"
    late = await rejoin(server, server.url, again, again.resume)
    assert (late.joined["resumed"], late.joined["held"]) == (False, 0)


@pytest.mark.parametrize("where", ["same process", "other process"])
async def test_what_a_half_open_socket_swallowed_is_written_again_after_the_resume(
    stue_factory: Callable[..., StueServer], redis_env: dict[str, str], where: str
) -> None:
    """The server goes on writing to a socket whose client no longer gets anything (half-open). The client resumes
    on a new socket, saying how many frames it read after its `joined`; the server writes again the relayed frames
    that came after those, in order and once, but not what it answered itself (a pong)."""
    first, second, citizen, clinician = await pair_on_two_nodes(stue_factory, redis_env)
    await citizen.expect("peer-joined")
    await relays_both_ways(clinician, citizen)  # read: the citizen has read 2 frames after `joined`
    await citizen.send({"type": "ping"})
    await swallow(citizen, 1)  # the pong
    sent = await swallowed(clinician, citizen, 6)

    # Where the old socket is or on another process (which waits until the old one has handed them on), the frames
    # come with the resumed `joined`, counted in `held`.
    resumed_on = first if where == "same process" else second
    again = await rejoin(resumed_on, first.url, citizen, {**citizen.resume, "received": 2})
    assert (again.id, again.joined["resumed"], again.joined["held"]) == (citizen.id, True, len(sent))
    assert [await again.recv() for _ in sent] == [as_relayed(frame, clinician.id) for frame in sent]
    assert (await citizen.expect("error"))["code"] == "replaced"
    assert await citizen.closed() == 4409
    assert (await clinician.expect("peer-joined"))["participant"] == citizen.id
    await again.silent(0.5)  # written again once
    await relays_both_ways(clinician, again)


async def test_a_resume_does_not_wait_for_a_process_that_is_gone(
    stue_factory: Callable[..., StueServer], redis7: RedisServer
) -> None:
    """The old socket's process died (a crash, a deploy): nobody can hand anything on, and the resume on another
    process does not wait for it to."""
    env = {"STUE_REDIS_URL": redis7.url, "STUE_NODE_ID": "first"}
    first, second, citizen, clinician = await pair_on_two_nodes(stue_factory, env, {"STUE_NODE_ID": "second"})
    await citizen.expect("peer-joined")
    second.process.kill()  # the clinician's process
    second.process.wait()
    with redis.Redis.from_url(redis7.url) as plain:
        wait_until(lambda: not plain.pubsub_numsub("stue:node:second")[0][1], 5, "Redis to see the process go")

    again = await rejoin(first, first.url, clinician, clinician.resume)
    assert (again.id, again.joined["resumed"]) == (clinician.id, True)
    assert (await citizen.expect("peer-joined"))["participant"] == clinician.id
    await relays_both_ways(again, citizen)
    assert "did not confirm a hand-over" not in first.log.read_text()


async def test_a_resume_waits_only_so_long_for_a_process_that_is_stuck(
    stue_factory: Callable[..., StueServer], tmp_path: Path
) -> None:
    """The old socket's process does not answer: the resume goes ahead after a short wait, and what that process
    hands on when it wakes follows the resumed `joined`."""
    env = {"STUE_DATA_DIR": str(tmp_path / "data")}
    first, second, citizen, clinician = await pair_on_two_nodes(stue_factory, env)
    await citizen.expect("peer-joined")
    sent = await swallowed(citizen, clinician, 3)  # the clinician's socket, on the second process, is half-open
    second.process.send_signal(signal.SIGSTOP)
    try:
        again = await rejoin(first, first.url, clinician, {**clinician.resume, "received": 0})
        assert (again.id, again.joined["resumed"], again.joined["held"]) == (clinician.id, True, 0)
    finally:
        second.process.send_signal(signal.SIGCONT)
    assert [await again.recv() for _ in sent] == [as_relayed(frame, citizen.id) for frame in sent]
    assert (await clinician.expect("error"))["code"] == "replaced"
    assert "did not confirm a hand-over" in first.log.read_text()
    assert (await citizen.expect("peer-joined"))["participant"] == clinician.id
    await relays_both_ways(citizen, again)


@pytest.mark.parametrize(
    ("where", "received", "written_again"),
    [
        ("same process", 1, 3),  # read only `peer-joined`: the three frames after it are written again
        ("other process", 1, 3),
        ("same process", 4, 0),  # read everything
        ("same process", None, 0),  # did not say: nothing is written twice
    ],
)
async def test_a_dropped_socket_hands_on_what_its_client_may_not_have_read(
    stue_factory: Callable[..., StueServer], tmp_path: Path, where: str, received: int | None, written_again: int
) -> None:
    """A socket that the server saw drop: what it wrote just before may not have arrived. It comes again after the
    resumed `joined`, before what the others sent while the participant was away."""
    env = {"STUE_DATA_DIR": str(tmp_path / "data")}
    first, second, citizen, clinician = await pair_on_two_nodes(stue_factory, env)
    await citizen.expect("peer-joined")
    before = await swallowed(clinician, citizen, 3)
    await drop(citizen)
    away = [
        {"type": "offer", "to": citizen.id, "sdp": "v=0 while away"},
        {"type": "candidate", "to": citizen.id, "candidate": None},
    ]
    for frame in away:
        await clinician.send(frame)
    await clinician.silent(0.5)

    resume = citizen.resume if received is None else {**citizen.resume, "received": received}
    again = await rejoin(first if where == "same process" else second, first.url, citizen, resume)
    expected = [*before[len(before) - written_again :], *away]
    assert (again.joined["resumed"], again.joined["held"]) == (True, len(expected))
    assert [await again.recv() for _ in expected] == [as_relayed(frame, clinician.id) for frame in expected]
    assert (await clinician.expect("peer-joined"))["participant"] == citizen.id
    await again.silent(0.3)


@pytest.mark.parametrize("where", ["same process", "other process"])
async def test_resuming_while_the_old_socket_is_open_closes_only_the_old_socket(
    stue_factory: Callable[..., StueServer], tmp_path: Path, where: str
) -> None:
    env = {"STUE_DATA_DIR": str(tmp_path / "data")}
    first, second, citizen, clinician = await pair_on_two_nodes(stue_factory, env)
    await citizen.expect("peer-joined")
    # The client gave up on a socket the server still holds open (half-open after a network change).
    newer = await rejoin(second if where == "same process" else first, first.url, clinician, clinician.resume)
    assert (newer.id, newer.joined["resumed"]) == (clinician.id, True)
    assert (await clinician.expect("error"))["code"] == "replaced"
    assert await clinician.closed() == 4409
    assert (await citizen.expect("peer-joined"))["participant"] == clinician.id
    await citizen.silent(1.5)  # no peer-left: the old connection ended without touching the membership
    await relays_both_ways(citizen, newer)
    await relays_both_ways(newer, citizen)


async def test_leave_still_tells_the_others_at_once_and_cannot_be_resumed(stue: StueServer) -> None:
    citizen, clinician = await pair(stue)
    await citizen.expect("peer-joined")
    await clinician.send({"type": "leave"})
    left = await citizen.expect("peer-left", timeout=2)  # at once, not after the 20 s grace
    assert left == {"type": "peer-left", "participant": clinician.id, "reason": "left"}
    assert await clinician.closed() == 1000
    again = await rejoin(stue, stue.url, clinician, clinician.resume)
    assert again.id != clinician.id
    assert again.joined["resumed"] is False
    assert (await citizen.expect("peer-joined"))["participant"] == again.id
