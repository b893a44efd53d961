"""The relay baseline: a minimal uvicorn WebSocket endpoint that forwards frames by their `to` field.

No validation, no Starlette: `{"type":"join","token":X}` registers the connection as X (answered with
`{"type":"joined","participant":X}`); any later frame is sent unchanged to the connection registered as its `to`.
uvicorn runs with the same WebSocket settings as `stue serve` (server/cli.py).

With `--redis URL --node N --peer M` it is the *hop-matched* baseline: a frame for someone not connected here is
published, unchanged, on node M's Redis channel (through Stue's own bus, `server/store/bus.py`), and frames
published on N's channel are delivered here. Two such processes have exactly Stue's hops (client → process →
Redis → process → client) with none of its validation, sessions or routing.

With `--direct` it runs on Stue's own WebSocket protocol (server/wsprotocol.py) and forwards each frame inside the
transport's callback, as `stue serve` does, instead of through ASGI: an informative baseline that shows how much of
Stue's figure that path accounts for.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
import redis.asyncio as aioredis
import uvicorn

from server.cli import SERVE_OPTIONS, UVICORN_OPTIONS
from server.eager import start_eagerly
from server.store.bus import Bus
from server.wsprotocol import EXTENSION, DirectSocket

Send = Any
ROUTES: dict[str, Send] = {}
#: Set in hop-matched mode: (the bus, the node to publish unknown addressees to).
BUS: tuple[Bus, str] | None = None
OPTIONS: dict[str, str] = {}
#: In `--direct` mode: participant → its socket's direct path.
SOCKETS: dict[str, DirectSocket] = {}


def forward_now(text: str) -> bool:
    """`--direct`: forward a frame from inside the transport's callback; False leaves it to the ASGI path."""
    peer = SOCKETS.get(orjson.loads(text).get("to"))
    return peer is not None and peer.send_now(text.encode())


def deliver(payload: bytes) -> None:
    """A frame that came over the bus: send it to the local addressee, if connected."""
    peer = ROUTES.get(orjson.loads(payload).get("to"))
    if peer is not None:
        start_eagerly(peer({"type": "websocket.send", "text": payload.decode()}))


async def start_bus() -> None:
    global BUS
    if OPTIONS.get("redis"):
        bus = Bus(aioredis.from_url(OPTIONS["redis"]), OPTIONS["node"], deliver)
        await bus.start()
        BUS = (bus, OPTIONS["peer"])


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await start_bus()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        body = b'{"status":"ok"}'
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    me: str | None = None
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                continue
            frame = orjson.loads(text)
            if me is None:
                me = str(frame["token"])
                ROUTES[me] = send
                direct: DirectSocket | None = (scope.get("extensions") or {}).get(EXTENSION)
                if direct is not None:
                    SOCKETS[me] = direct
                    direct.receive_now = forward_now
                await send({"type": "websocket.send", "text": f'{{"type":"joined","participant":"{me}"}}'})
                continue
            peer = ROUTES.get(frame.get("to"))
            if peer is not None:
                try:
                    await peer({"type": "websocket.send", "text": text})
                except Exception:  # noqa: S112 - the addressee went away; a relay drops the frame
                    continue
            elif BUS is not None:
                BUS[0].send(BUS[1], text.encode())
    finally:
        if me is not None and ROUTES.get(me) is send:
            del ROUTES[me]
            SOCKETS.pop(me, None)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.bare_relay")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", help="hop-matched mode: the Redis URL of the bus")
    parser.add_argument("--node", help="hop-matched mode: this process's channel")
    parser.add_argument("--peer", help="hop-matched mode: the channel for addressees not connected here")
    parser.add_argument("--direct", action="store_true", help="forward in the transport's callback, as Stue does")
    args = parser.parse_args()
    if args.redis:
        OPTIONS.update(redis=args.redis, node=args.node, peer=args.peer)
    uvicorn.run(app, host="127.0.0.1", port=args.port, **(SERVE_OPTIONS if args.direct else UVICORN_OPTIONS))


if __name__ == "__main__":
    main()
