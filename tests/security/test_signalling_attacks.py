"""THREATS.md, replayed against real `stue serve` processes: each test is named after the attack it stops.

See docs/security.md for the table of threats and how Stue meets each.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from support import TIME_SCALE, StueServer, token_of
from test_signalling import pair
from wsclient import Client

pytestmark = pytest.mark.slow


async def test_jsa_2022_0004_sender_spoofed_through_a_payload_field(stue_embedded: StueServer) -> None:
    citizen, clinician = await pair(stue_embedded)
    await citizen.expect("peer-joined")
    await clinician.send({"type": "offer", "to": citizen.id, "sdp": "v=0", "from": citizen.id})
    assert (await clinician.expect("error"))["code"] == "unknown_field"
    await clinician.send({"type": "offer", "to": clinician.id, "sdp": "v=0"})
    assert (await clinician.expect("error"))["code"] == "unknown_peer"


async def test_cve_2021_39215_forged_or_unknown_token_is_refused(stue: StueServer) -> None:
    client = await Client.open(stue.ws_url, stue.url)
    await client.send({"type": "join", "token": "Z" * 32})
    assert (await client.expect("error"))["code"] == "bad_token"
    assert await client.closed() == 4401


async def test_oversized_frame_closes_only_the_offender(stue_embedded: StueServer) -> None:
    citizen, clinician = await pair(stue_embedded)
    await citizen.expect("peer-joined")
    await clinician.send({"type": "offer", "to": citizen.id, "sdp": "x" * 70_000})
    assert (await clinician.expect("error"))["code"] == "too_large"
    assert await clinician.closed() == 1009
    assert (await citizen.expect("peer-left"))["participant"] == clinician.id
    await citizen.send({"type": "ping"})
    await citizen.expect("pong")


async def test_uvicorn_16mib_default_is_not_in_force(stue_embedded: StueServer) -> None:
    client = await Client.open(stue_embedded.ws_url, stue_embedded.url)
    await client.send("x" * 200_000)
    assert await client.closed() == 1009


async def test_flood_closes_only_the_offender(stue_embedded: StueServer) -> None:
    citizen, clinician = await pair(stue_embedded)
    await citizen.expect("peer-joined")
    for _ in range(400):
        await clinician.send({"type": "ping"})
    codes = []
    while True:
        frame = await clinician.recv()
        if frame["type"] == "error":
            codes.append(frame["code"])
            break
    assert codes == ["rate_limited"]
    assert await clinician.closed() == 1008
    assert (await citizen.expect("peer-left"))["participant"] == clinician.id
    await citizen.send({"type": "ping"})
    await citizen.expect("pong")


@pytest.mark.parametrize("origin", ["http://evil.example", "null", None])
async def test_cross_site_websocket_hijacking_is_refused_at_the_handshake(
    stue_embedded: StueServer, origin: str | None
) -> None:
    with pytest.raises(InvalidStatus) as caught:
        await Client.open(stue_embedded.ws_url, origin)  # type: ignore[arg-type]
    assert caught.value.response.status_code == 403


async def test_a_participant_cannot_reach_another_consultation(stue_embedded: StueServer) -> None:
    a_citizen, _ = await pair(stue_embedded)
    b_citizen, b_clinician = await pair(stue_embedded)
    await a_citizen.expect("peer-joined")
    await b_citizen.expect("peer-joined")
    await b_clinician.send({"type": "offer", "to": a_citizen.id, "sdp": "v=0"})
    assert (await b_clinician.expect("error"))["code"] == "unknown_peer"
    with pytest.raises(TimeoutError):
        await a_citizen.recv(timeout=0.5)


async def test_jsa_2023_0001_duplicate_json_keys_are_rejected_outright(stue_embedded: StueServer) -> None:
    citizen, clinician = await pair(stue_embedded)
    await citizen.expect("peer-joined")
    # Two parsers could disagree on which "to" wins; Stue refuses to pick.
    await clinician.send(f'{{"type": "offer", "to": "p_other", "to": "{citizen.id}", "sdp": "v=0"}}')
    assert (await clinician.expect("error"))["code"] == "duplicate_key"
    with pytest.raises(TimeoutError):
        await citizen.recv(timeout=0.5)


async def test_invite_tokens_stay_out_of_server_logs(stue_embedded: StueServer) -> None:
    links = stue_embedded.new_consultation()
    citizen = await Client.open(stue_embedded.ws_url, stue_embedded.url)
    await citizen.join(token_of(links["citizen_link"]))
    bad = await Client.open(stue_embedded.ws_url, stue_embedded.url)
    await bad.send(json.dumps({"type": "join", "token": "Q" * 32}))
    await bad.expect("error")
    await citizen.close()
    assert "#t=" in links["citizen_link"]  # the token rides in the fragment: never sent in a request line
    log = stue_embedded.log.read_text()
    assert token_of(links["citizen_link"]) not in log
    assert "Q" * 32 not in log


async def test_resume_secrets_stay_out_of_server_logs(stue_embedded: StueServer) -> None:
    citizen, clinician = await pair(stue_embedded)
    await citizen.expect("peer-joined")
    first_secret = clinician.joined["resume"]
    clinician.ws.transport.abort()
    again = await Client.open(stue_embedded.ws_url, stue_embedded.url)
    await again.join(clinician.token, resume=clinician.resume)
    assert again.joined["resumed"] is True
    again.ws.transport.abort()
    guess = await Client.open(stue_embedded.ws_url, stue_embedded.url)
    await guess.join(clinician.token, resume={"participant": clinician.id, "secret": "G" * 40})
    assert guess.joined["resumed"] is False
    await guess.send({"type": "leave"})
    await guess.closed()
    log = stue_embedded.log.read_text()
    assert "resumed in" in log  # the resume was logged, by participant id only
    for secret in (first_secret, again.joined["resume"], guess.joined["resume"], "G" * 40):
        assert secret not in log


REFUSED_UNJOINED = "refused a WebSocket: its client address is at its limit of"


async def refused_status(server: StueServer, headers: dict[str, str] | None = None) -> int:
    """The HTTP status an upgrade that must be refused gets."""
    with pytest.raises(InvalidStatus) as caught:
        await Client.open(server.ws_url, server.url, headers)
    return int(caught.value.response.status_code)


async def admitted(server: StueServer, headers: dict[str, str] | None = None, timeout: float = 5.0) -> Client:
    """A socket, once the server has counted the sockets that closed before (their end reaches it a little later)."""
    deadline = time.monotonic() + timeout * TIME_SCALE
    while True:
        try:
            return await Client.open(server.ws_url, server.url, headers)
        except InvalidStatus as refused:
            if refused.response.status_code != 403 or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


async def test_connection_exhaustion_by_unjoined_sockets_is_refused_at_the_handshake(
    stue_factory: Callable[..., StueServer], tmp_path: Path
) -> None:
    server = stue_factory({"STUE_DATA_DIR": str(tmp_path / "data"), "STUE_MAX_UNJOINED_PER_ADDRESS": "3"})
    links = server.new_consultation()
    member = await Client.open(server.ws_url, server.url)
    await member.join(token_of(links["citizen_link"]))  # joined: not counted
    unjoined = [await Client.open(server.ws_url, server.url) for _ in range(3)]
    for client in unjoined:
        await client.send({"type": "ping"})
        await client.expect("pong")
    assert await refused_status(server) == 403
    assert await refused_status(server) == 403
    await member.send({"type": "ping"})
    await member.expect("pong")  # the joined participant on the same address carries on

    await unjoined[0].join(token_of(links["clinician_link"]))  # one joins: room for one more
    await member.expect("peer-joined")
    unjoined.append(await Client.open(server.ws_url, server.url))
    assert await refused_status(server) == 403

    await unjoined[1].close()  # one closes: room for one more
    unjoined.append(await admitted(server))
    assert await refused_status(server) == 403

    refusals = [line for line in server.log.read_text().splitlines() if REFUSED_UNJOINED in line]
    assert len(refusals) == 4
    for line in refusals:
        assert "WARNING" in line
        assert "limit of 3 sockets without a join" in line
        assert "127.0.0.1" not in line  # a client address is personal data


async def test_the_cap_counts_the_address_a_trusted_proxy_forwards_and_never_logs_it(
    stue_factory: Callable[..., StueServer], tmp_path: Path
) -> None:
    cap_one = {"STUE_MAX_UNJOINED_PER_ADDRESS": "1"}
    # The default trusts a proxy on loopback, where these clients connect from.
    behind_proxy = stue_factory({"STUE_DATA_DIR": str(tmp_path / "a"), **cap_one})
    household, office = {"x-forwarded-for": "203.0.113.5"}, {"x-forwarded-for": "203.0.113.6"}
    held = [await Client.open(behind_proxy.ws_url, behind_proxy.url, household)]
    assert await refused_status(behind_proxy, household) == 403
    held.append(await Client.open(behind_proxy.ws_url, behind_proxy.url, office))
    # A client that names someone else in front of the proxy's entry is still counted as itself.
    assert await refused_status(behind_proxy, {"x-forwarded-for": "198.51.100.1, 203.0.113.6"}) == 403
    held.append(await Client.open(behind_proxy.ws_url, behind_proxy.url))  # the proxy's own address: 127.0.0.1
    log = behind_proxy.log.read_text()
    assert log.count(REFUSED_UNJOINED) == 2
    for address in ("203.0.113.5", "203.0.113.6", "198.51.100.1"):
        assert address not in log

    # From a peer that is not a trusted proxy the header is ignored: every socket is 127.0.0.1's.
    direct = stue_factory({"STUE_DATA_DIR": str(tmp_path / "b"), "STUE_TRUSTED_PROXIES": "192.0.2.1", **cap_one})
    held.append(await Client.open(direct.ws_url, direct.url, household))
    assert await refused_status(direct, office) == 403


async def test_unjoined_counts_return_to_zero_after_many_open_close_cycles(
    stue_factory: Callable[..., StueServer], tmp_path: Path
) -> None:
    server = stue_factory(
        {"STUE_DATA_DIR": str(tmp_path / "data"), "STUE_MAX_UNJOINED_PER_ADDRESS": "3", "STUE_JOIN_TIMEOUT": "1"}
    )
    links = server.new_consultation()
    token = token_of(links["citizen_link"])
    for cycle in range(200):
        client = await admitted(server)
        ending = cycle % 5
        if ending == 0:  # closed before joining
            await client.close()
        elif ending == 1:  # lost before joining, no close handshake
            client.ws.transport.abort()
        elif ending == 2:  # join refused
            await client.send({"type": "join", "token": "Z" * 32})
            assert await client.closed() == 4401
        elif ending == 3:  # joined and left
            await client.join(token)
            await client.send({"type": "leave"})
            assert await client.closed() == 1000
        else:  # joined and lost
            await client.join(token)
            client.ws.transport.abort()
    idle = [await admitted(server) for _ in range(3)]
    for client in idle:  # the join deadline ends them
        assert (await client.expect("error", timeout=5))["code"] == "join_timeout"
        assert await client.closed() == 1008
    # Back to zero: exactly the cap is admitted again, and no more.
    fresh = [await admitted(server) for _ in range(3)]
    assert await refused_status(server) == 403
    for client in fresh:
        await client.close()
