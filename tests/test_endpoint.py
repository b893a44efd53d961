"""The WebSocket endpoint in-process (Starlette's TestClient, the embedded Redis): what a kick may close, and the
count of sockets open without a join on every way a socket ends."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from server import routing
from server.app import create_app
from server.config import load_settings
from server.endpoint import Connection
from server.node import Node, now_ms
from server.routing import Envelope, Kind
from support import TIME_SCALE

ORIGIN = "http://testserver"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(load_settings({"STUE_DATA_DIR": str(tmp_path / "data"), "STUE_PUBLIC_URL": ORIGIN}))
    with TestClient(app) as client:
        yield client


def capped_app(tmp_path: Path, **env: str) -> TestClient:
    """An app whose client address (TestClient's, "testclient") may hold two sockets without a join."""
    env = {
        "STUE_DATA_DIR": str(tmp_path / "data"),
        "STUE_PUBLIC_URL": ORIGIN,
        "STUE_MAX_UNJOINED_PER_ADDRESS": "2",
        **env,
    }
    return TestClient(create_app(load_settings(env)))


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[TestClient]:
    with capped_app(tmp_path) as client:
        yield client


def node_of(client: TestClient) -> Node:
    node: Node = client.app.state.node  # type: ignore[attr-defined]
    return node


def settles(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Whether `predicate` holds within `timeout` (scaled): the app runs in the TestClient's portal thread."""
    deadline = time.monotonic() + timeout * TIME_SCALE
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def tokens(client: TestClient) -> dict[str, str]:
    assert client.portal is not None
    node = node_of(client)
    return client.portal.call(lambda: node.store.create(now_ms=now_ms(), ttl_s=60)).tokens


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


def test_sockets_over_the_limit_are_refused_before_accept_and_joined_ones_do_not_count(capped: TestClient) -> None:
    unjoined = node_of(capped).unjoined
    made = tokens(capped)
    with capped.websocket_connect("/ws", headers={"origin": ORIGIN}) as member:
        member.send_text(json.dumps({"type": "join", "token": made["citizen"]}))
        assert member.receive_json()["type"] == "joined"
        assert unjoined.held("testclient") == 0
        with (
            capped.websocket_connect("/ws", headers={"origin": ORIGIN}) as first,
            capped.websocket_connect("/ws", headers={"origin": ORIGIN}),
        ):
            assert unjoined.held("testclient") == 2
            with (
                pytest.raises(WebSocketDisconnect) as refused,  # closed before accept: 403 over HTTP
                capped.websocket_connect("/ws", headers={"origin": ORIGIN}),
            ):
                pass
            assert refused.value.code == 1008
            assert unjoined.held("testclient") == 2
            first.send_text(json.dumps({"type": "join", "token": made["clinician"]}))
            assert first.receive_json()["type"] == "joined"
            assert unjoined.held("testclient") == 1
            with capped.websocket_connect("/ws", headers={"origin": ORIGIN}):
                assert unjoined.held("testclient") == 2
        member.send_text('{"type": "ping"}')
        assert member.receive_json()["type"] == "peer-joined"
        assert member.receive_json()["type"] == "pong"  # the member was never disturbed
    assert settles(lambda: unjoined.total == 0)


def test_closed_before_joining(capped: TestClient) -> None:
    unjoined = node_of(capped).unjoined
    for _ in range(5):
        with capped.websocket_connect("/ws", headers={"origin": ORIGIN}) as ws:
            ws.send_text('{"type": "ping"}')
            assert ws.receive_json() == {"type": "pong"}
            assert unjoined.held("testclient") == 1
        assert settles(lambda: unjoined.total == 0)


def test_joined_then_left(capped: TestClient) -> None:
    unjoined = node_of(capped).unjoined
    made = tokens(capped)
    for _ in range(5):
        with capped.websocket_connect("/ws", headers={"origin": ORIGIN}) as ws:
            ws.send_text(json.dumps({"type": "join", "token": made["citizen"]}))
            assert ws.receive_json()["type"] == "joined"
            assert unjoined.held("testclient") == 0
            ws.send_text('{"type": "leave"}')
            with pytest.raises(WebSocketDisconnect):
                ws.receive_json()
        assert settles(lambda: unjoined.total == 0)


def failing_joins(client: TestClient, code: str, close_code: int) -> None:
    """Sockets whose `join` fails with `code` and closes them: the count is back to zero after each."""
    unjoined = node_of(client).unjoined
    for _ in range(5):
        with client.websocket_connect("/ws", headers={"origin": ORIGIN}) as ws:
            ws.send_text(json.dumps({"type": "join", "token": "Z" * 32}))
            assert ws.receive_json()["code"] == code
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == close_code
        assert settles(lambda: unjoined.total == 0)


def test_join_refused_for_a_bad_token(capped: TestClient) -> None:
    failing_joins(capped, "bad_token", 4401)


def test_join_failed_on_a_redis_error(capped: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    node = node_of(capped)

    async def unreachable(token: str) -> None:
        raise redis.ConnectionError("gone")

    monkeypatch.setattr(node.store, "resolve", unreachable)
    failing_joins(capped, "internal", 1011)


def test_join_deadline_passed(tmp_path: Path) -> None:
    with capped_app(tmp_path, STUE_JOIN_TIMEOUT="0.5") as client:
        unjoined = node_of(client).unjoined
        with (
            client.websocket_connect("/ws", headers={"origin": ORIGIN}) as first,
            client.websocket_connect("/ws", headers={"origin": ORIGIN}) as second,
        ):
            for ws in (first, second):
                assert ws.receive_json()["code"] == "join_timeout"
                with pytest.raises(WebSocketDisconnect) as closed:
                    ws.receive_json()
                assert closed.value.code == 1008
            assert settles(lambda: unjoined.total == 0)  # before the client side goes away


def test_server_error_while_joining(capped: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    node = node_of(capped)

    async def broken(token: str) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(node.store, "resolve", broken)

    def join_into_the_bug() -> None:
        with capped.websocket_connect("/ws", headers={"origin": ORIGIN}) as ws:
            ws.send_text(json.dumps({"type": "join", "token": "Z" * 32}))
            settles(lambda: node.unjoined.total == 0)  # the app has met the bug before the client side goes

    for _ in range(3):
        with pytest.raises(RuntimeError, match="a bug"):  # TestClient re-raises what escaped the app
            join_into_the_bug()
        assert node.unjoined.total == 0
