"""The WebSocket endpoint in-process (Starlette's TestClient, the embedded Redis): what a kick may close."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from server import routing
from server.app import create_app
from server.config import load_settings
from server.endpoint import Connection
from server.node import Node, now_ms
from server.routing import Envelope, Kind

ORIGIN = "http://testserver"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(load_settings({"STUE_DATA_DIR": str(tmp_path / "data"), "STUE_PUBLIC_URL": ORIGIN}))
    with TestClient(app) as client:
        yield client


def test_a_kick_meant_for_an_earlier_connection_leaves_the_current_one_alone(client: TestClient) -> None:
    assert client.portal is not None
    node: Node = client.app.state.node  # type: ignore[attr-defined]
    made = client.portal.call(lambda: node.store.create(now_ms=now_ms(), ttl_s=60))
    with client.websocket_connect("/ws", headers={"origin": ORIGIN}) as ws:
        ws.send_text(json.dumps({"type": "join", "token": made.tokens["citizen"]}))
        participant = ws.receive_json()["participant"]
        connection = node.local[participant][1]
        assert isinstance(connection, Connection) and connection.member is not None

        def kick(digest: str) -> None:
            payload = routing.encode(Envelope(Kind.KICK, (participant,), b'{"type":"error"}', digest, ""))
            client.portal.call(node.dispatch, payload)  # type: ignore[union-attr]

        kick("0" * 64)  # a late kick for a connection this participant had before resuming here
        ws.send_text('{"type": "ping"}')
        assert ws.receive_json() == {"type": "pong"}
        assert not connection.superseded

        kick(connection.member.resume_digest)
        assert ws.receive_json() == {"type": "error"}
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 4409
        assert connection.superseded
