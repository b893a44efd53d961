"""The direct path for frames (server/wsprotocol.py) on a real uvicorn in this process, the embedded Redis and a
real WebSocket client: which frames take it, and that no frame ever overtakes another on the way."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from server.app import create_app
from server.cli import SERVE_OPTIONS
from server.config import load_settings
from server.endpoint import Connection
from server.node import Node, now_ms
from server.store.consultations import ConsultationStore
from server.wsprotocol import DirectWebSocketProtocol
from support import TIME_SCALE, free_port
from wsclient import Client


class Served:
    def __init__(self, server: uvicorn.Server, port: int, node: Node) -> None:
        self.server, self.port, self.node = server, port, node
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"

    async def consultation(self) -> dict[str, str]:
        store = ConsultationStore(self.node.handle.client, membership_ttl_s=45)
        made = await store.create(now_ms=now_ms(), ttl_s=600)
        return made.tokens


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """`stue serve`'s app and protocol, in this event loop."""
    port = free_port()
    settings = load_settings({"STUE_DATA_DIR": str(tmp_path / "data"), "STUE_PUBLIC_URL": f"http://127.0.0.1:{port}"})
    app = create_app(settings)
    options = {**SERVE_OPTIONS, "log_level": "warning"}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    yield Served(server, port, app.state.node)
    server.should_exit = True
    await asyncio.wait_for(task, 10)


@pytest.fixture
def direct_frames(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The frame types the endpoint took on the direct path."""
    taken: list[str] = []
    receive_now = Connection.receive_now

    def spy(self: Connection, text: str) -> bool:
        handled = receive_now(self, text)
        if handled:
            taken.append(json.loads(text)["type"])
        return handled

    monkeypatch.setattr(Connection, "receive_now", spy)
    return taken


async def joined_pair(served: Served) -> tuple[Client, Client]:
    tokens = await served.consultation()
    citizen = await Client.open(served.ws_url, served.url)
    await citizen.join(tokens["citizen"])
    clinician = await Client.open(served.ws_url, served.url)
    await clinician.join(tokens["clinician"])
    await citizen.expect("peer-joined")
    return citizen, clinician


def offer(to: str, n: int) -> str:
    return json.dumps({"type": "offer", "to": to, "sdp": f"v=0 {n}"})


async def test_in_call_frames_take_the_direct_path_and_the_join_does_not(
    served: Served, direct_frames: list[str]
) -> None:
    citizen, clinician = await joined_pair(served)
    await clinician.send(offer(citizen.id, 1))
    assert (await citizen.expect("offer"))["sdp"] == "v=0 1"
    await citizen.send({"type": "ping"})
    await citizen.expect("pong")
    await citizen.send({"type": "offer", "to": citizen.id, "sdp": "v=0"})  # to oneself: refused, connection stays
    assert (await citizen.expect("error"))["code"] == "unknown_peer"
    await citizen.send({"type": "leave"})
    assert (await clinician.expect("peer-left"))["reason"] == "left"
    assert await citizen.closed() == 1000
    assert direct_frames == ["offer", "ping", "offer", "leave"]  # no join: that needs Redis
    await clinician.close()


async def test_frames_after_a_join_in_the_same_read_wait_for_it(served: Served) -> None:
    """A join (Redis round trips, through ASGI) and a ping written together: the pong comes after `joined`."""
    tokens = await served.consultation()
    client = await Client.open(served.ws_url, served.url)
    await client.send({"type": "join", "token": tokens["citizen"]})
    await client.send({"type": "ping"})
    assert (await client.recv())["type"] == "joined"
    assert (await client.recv())["type"] == "pong"
    await client.close()


async def test_frames_behind_a_store_look_up_keep_their_order(
    served: Served, direct_frames: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay to a peer the connection was not told of asks Redis where it is (I/O, off the direct path); the
    frames written right behind it, which could go directly, must not overtake it."""
    citizen, clinician = await joined_pair(served)
    member = served.node.store.member

    async def slow_member(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.2)  # so the frames behind it surely arrive while it runs
        return await member(*args, **kwargs)

    monkeypatch.setattr(served.node.store, "member", slow_member)
    forget_peers(served, clinician)
    burst = [offer(citizen.id, n) for n in range(20)]
    for frame in burst:  # one after another, with no wait for an answer: they reach the server together
        await clinician.ws.send(frame)
    got = [(await citizen.expect("offer"))["sdp"] for _ in burst]
    assert got == [f"v=0 {n}" for n in range(20)]
    # The first was taken directly and its look-up ran as pending I/O; the next went through ASGI behind it.
    assert 1 <= len(direct_frames) < len(burst)
    # A leave right behind a look-up: the offer is relayed before the connection ends, not dropped with it.
    forget_peers(served, clinician)
    await clinician.send(offer(citizen.id, 99))
    await clinician.send({"type": "leave"})
    assert (await citizen.expect("offer"))["sdp"] == "v=0 99"
    assert (await citizen.expect("peer-left"))["reason"] == "left"
    await citizen.close()


def forget_peers(served: Served, client: Client) -> None:
    """Make `client`'s connection forget where its peers are, as if their `peer-joined` had been lost."""
    connection = next(c for _, c in served.node.local.values() if c.member and c.member.participant == client.id)
    assert isinstance(connection, Connection)
    connection.session.peers.clear()


async def test_binary_and_non_utf8_frames_still_take_uvicorns_path(served: Served) -> None:
    citizen, clinician = await joined_pair(served)
    await citizen.ws.send(b"\x01binary")  # refused with an error; the connection carries on
    assert (await citizen.expect("error"))["code"] == "binary_frame"
    await citizen.send({"type": "ping"})
    await citizen.expect("pong")
    citizen.ws.protocol.send_text(b"\xff\xfe")  # a text frame that is not UTF-8: uvicorn closes with 1007
    citizen.ws.send_data()
    assert await citizen.closed() == 1007
    await clinician.send({"type": "ping"})  # the others carry on
    await clinician.expect("pong")
    await clinician.close()


async def test_a_slow_reader_gets_frames_through_the_asgi_send_in_order(served: Served) -> None:
    """When the transport asks to pause writing, `send_now` declines and frames wait in uvicorn's send."""
    citizen, clinician = await joined_pair(served)
    connection = next(c for _, c in served.node.local.values() if c.member and c.member.participant == citizen.id)
    direct: Any = connection.direct
    assert isinstance(direct, DirectWebSocketProtocol)
    direct.writable.clear()  # what uvicorn does on pause_writing
    assert direct.send_now(b'{"type":"pong"}') is False
    await clinician.send(offer(citizen.id, 1))
    await asyncio.sleep(0.2 * TIME_SCALE)
    await clinician.send(offer(citizen.id, 2))
    await citizen.silent(0.3)
    direct.writable.set()  # resume_writing
    assert [(await citizen.expect("offer"))["sdp"] for _ in range(2)] == ["v=0 1", "v=0 2"]
    await citizen.close()
    await clinician.close()
