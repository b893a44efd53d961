"""THREATS.md, replayed against real `stue serve` processes: each test is named after the attack it stops.

See docs/security.md for the table of threats and how Stue meets each.
"""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import InvalidStatus

from support import StueServer, token_of
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
