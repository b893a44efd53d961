"""uvicorn's WebSocket protocol with a direct path for text frames, both ways.

Through ASGI, every inbound frame is queued, uvicorn pauses reading, the endpoint's task wakes on the next turn
of the event loop, and reading resumes: two system calls and a loop turn per frame, about a third of a relay's
time in this process (measured). An endpoint that can handle a frame at once, without I/O, registers a receiver
here (`DirectSocket.receive_now`); the frame is then handled inside `data_received`, and anything that needs I/O
(a join, a Redis look-up) still goes through ASGI in order. `send_now` writes a text frame with no coroutine
layers. Everything else (handshake, ping/pong, close, backpressure) is uvicorn's own code.

`stue serve` uses this class; under any other server (Starlette's TestClient, stock uvicorn) the scope has no
`stue.direct` extension and the endpoint uses plain ASGI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.frames import Frame

EXTENSION = "stue.direct"

#: Takes one text frame; True when it handled the frame, False to have it delivered through ASGI instead.
Receiver = Callable[[str], bool]


class DirectSocket(Protocol):
    """What the endpoint may do with a socket served by `DirectWebSocketProtocol`."""

    receive_now: Receiver | None

    def send_now(self, frame: bytes) -> bool: ...


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """`websockets-sansio` with the direct path; the scope's `extensions["stue.direct"]` is the protocol itself."""

    receive_now: Receiver | None = None

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # absent when the handshake was refused
            scope["extensions"][EXTENSION] = self

    def handle_text(self, event: Frame) -> None:
        receiver = self.receive_now
        # Only when nothing is queued for the app: a frame never overtakes one that went through ASGI.
        if receiver is not None and event.fin and self.queue.empty() and not self.close_sent:
            try:
                text = bytes(event.data).decode()
            except UnicodeDecodeError:
                pass  # uvicorn's own path closes with 1007
            else:
                if receiver(text):
                    return
        super().handle_text(event)

    def send_now(self, frame: bytes) -> bool:
        """Write `frame` (UTF-8 JSON) as one text frame now; False when the socket cannot take it at once (not open,
        closing, or the transport asked us to pause writing), and the caller should use the ASGI send."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
        ):
            return False
        try:
            self.conn.send_text(frame)
        except InvalidState:
            return False
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True
