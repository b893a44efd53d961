"""The relay baseline: a minimal uvicorn WebSocket endpoint that forwards frames by their `to` field.

No validation, no Redis, no Starlette: `{"type":"join","token":X}` registers the connection as X (answered with
`{"type":"joined","participant":X}`); any later frame is sent unchanged to the connection registered as its `to`.
uvicorn runs with the same WebSocket settings as `stue serve` (server/cli.py).
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
import uvicorn

from server.cli import UVICORN_OPTIONS

Send = Any
ROUTES: dict[str, Send] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
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
                await send({"type": "websocket.send", "text": f'{{"type":"joined","participant":"{me}"}}'})
                continue
            peer = ROUTES.get(frame.get("to"))
            if peer is not None:
                try:
                    await peer({"type": "websocket.send", "text": text})
                except Exception:  # noqa: S112 - the addressee went away; a relay drops the frame
                    continue
    finally:
        if me is not None and ROUTES.get(me) is send:
            del ROUTES[me]


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.bare_relay")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, **UVICORN_OPTIONS)


if __name__ == "__main__":
    main()
