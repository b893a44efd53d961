"""A minimal protocol-v1 client for tests: JSON in, JSON out, with timeouts scaled by TIME_SCALE."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from support import TIME_SCALE


class Client:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.token = ""
        self.joined: dict[str, Any] = {}

    @classmethod
    async def open(cls, ws_url: str, origin: str, headers: dict[str, str] | None = None) -> Client:
        ws = await connect(
            ws_url,
            origin=origin,  # type: ignore[arg-type]
            compression=None,
            max_size=2**20,
            additional_headers=headers,
        )
        return cls(ws)

    @property
    def id(self) -> str:
        return str(self.joined["participant"])

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        data = await asyncio.wait_for(self.ws.recv(), timeout * TIME_SCALE)
        result: dict[str, Any] = json.loads(data)
        return result

    async def expect(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame, which must be of type `kind`."""
        frame = await self.recv(timeout)
        assert frame["type"] == kind, frame
        return frame

    async def join(self, token: str, resume: dict[str, str] | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "join", "token": token}
        if resume is not None:
            message["resume"] = resume
        await self.send(message)
        self.token = token
        self.joined = await self.expect("joined")
        return self.joined

    @property
    def resume(self) -> dict[str, str]:
        """What a later connection sends as `join.resume` to continue this client's participant."""
        return {"participant": self.id, "secret": str(self.joined["resume"])}

    async def silent(self, timeout: float) -> None:
        """Assert that nothing arrives for `timeout` seconds (scaled)."""
        try:
            frame = await self.recv(timeout)
        except TimeoutError:
            return
        raise AssertionError(f"expected silence, got {frame}")

    async def closed(self, timeout: float = 5.0) -> int | None:
        """Wait for the server to close; the close code."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout * TIME_SCALE)
        except Exception:
            pass
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
