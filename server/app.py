"""The Starlette application: routes, security headers, and the lifespan that owns Redis and the node."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import msgspec
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.config import Settings
from server.endpoint import signalling_endpoint
from server.node import Node
from server.protocol import LinkCheck
from server.store.connection import RedisHandle, open_redis

log = logging.getLogger(__name__)

WEB_DIR: Final = Path(__file__).resolve().parent.parent / "web"


def content_security_policy(public_origin: str) -> str:
    """No inline script or style, nothing from elsewhere; the socket only to our own origin.

    The WebSocket origin is named as well as 'self', for browsers (older Safari) where 'self' does not cover ws:.
    """
    socket_origin = public_origin.replace("http", "ws", 1)
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        f"media-src 'self' blob: mediastream:; connect-src 'self' {socket_origin}; font-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


class SecurityHeaders:
    """Adds CSP and friends to every HTTP response (not to WebSocket handshakes)."""

    def __init__(self, app: ASGIApp, public_origin: str) -> None:
        self.app = app
        self.headers = [
            (b"content-security-policy", content_security_policy(public_origin).encode()),
            (b"referrer-policy", b"no-referrer"),
            (b"x-content-type-options", b"nosniff"),
            (b"permissions-policy", b"camera=(self), microphone=(self), geolocation=()"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def call_page(request: Request) -> Response:
    return FileResponse(WEB_DIR / "call.html", headers={"cache-control": "no-store"})


async def link_status(request: Request) -> Response:
    """Whether a link still opens a consultation, and as which role; nothing else about it."""
    node: Node = request.app.state.node
    address = request.client.host if request.client else ""
    if not node.link_checks.allow(address, time.monotonic()):
        # The page treats any answer but 404 as "unknown" and goes on; joining then tells.
        return JSONResponse({"error": "rate_limited"}, status_code=429, headers={"retry-after": "1"})
    body = await request.body()
    if len(body) > 1024:
        return JSONResponse({"error": "too_large"}, status_code=413)
    try:
        check = msgspec.json.decode(body, type=LinkCheck)
    except msgspec.MsgspecError:
        return JSONResponse({"error": "bad_request"}, status_code=400)
    found = await node.store.resolve(check.token)
    if found is None:
        return JSONResponse({"error": "bad_token"}, status_code=404, headers={"cache-control": "no-store"})
    return JSONResponse({"role": found[1]}, headers={"cache-control": "no-store"})


async def healthz(request: Request) -> Response:
    node: Node = request.app.state.node
    try:
        await node.handle.client.ping()
    except (redis.RedisError, OSError):
        return JSONResponse({"status": "degraded", "redis": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "redis": "ok", "node": node.id})


def create_app(settings: Settings, redis_handle: RedisHandle | None = None) -> Starlette:
    """The app. With `redis_handle`, it uses that connection and leaves closing it to the caller."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        handle = redis_handle or await open_redis(settings)
        node = Node(settings, handle)
        await node.start()
        app.state.node = node
        log.info("node %s serving %s with %s Redis", node.id, settings.public_url, handle.description)
        try:
            yield
        finally:
            await node.stop()
            if redis_handle is None:
                await handle.close()

    app = Starlette(
        routes=[
            Route("/call", call_page),
            Route("/healthz", healthz),
            Route("/api/link", link_status, methods=["POST"]),
            WebSocketRoute("/ws", signalling_endpoint),
            Mount("/static", StaticFiles(directory=WEB_DIR, check_dir=False), name="static"),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(SecurityHeaders, public_origin=settings.public_origin)
    return app
