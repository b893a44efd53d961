"""The signalling WebSocket: read a frame, let the session core decide, carry out what it decided."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Final

import redis
from starlette.websockets import WebSocket

from server.consultation import (
    JoinAction,
    LeaveAction,
    RelayAction,
    ReplyAction,
    Session,
    TokenBucket,
    new_participant_id,
)
from server.eager import start_eagerly
from server.exceptions import BadToken, BinaryFrame, ClientError, Internal, JoinTimeout, Replaced, SlowConsumer
from server.node import Node, now_ms
from server.protocol import Error, Joined, PeerEntry, PeerLeftReason, encode
from server.routing import Kind
from server.store.consultations import Member

log = logging.getLogger(__name__)

OUTBOX_FRAMES: Final = 1024


def error_frame(error: ClientError) -> bytes:
    return encode(Error(code=error.code, message=error.message, ref=error.ref))


class Connection:
    """One client's socket: its session core, and an ordered outbox, drained at once (eagerly) when frames arrive."""

    def __init__(self, websocket: WebSocket, node: Node) -> None:
        self.ws = websocket
        self.node = node
        settings = node.settings
        self.session = Session(TokenBucket(rate=settings.frame_rate, burst=settings.frame_burst))
        self.outbox: deque[tuple[Kind, bytes, str, str]] = deque()
        self.writer: asyncio.Task[None] | None = None  # set while a drain is suspended (backpressure)
        self.draining = False
        self.holding = False  # while joining, deliveries wait until `joined` is first in line
        self.fatal: ClientError | None = None  # set when the connection must close after the outbox drains

    # --- outbound ----------------------------------------------------------------------------------------

    def deliver(self, kind: Kind, frame: bytes, subject: str = "", subject_node: str = "") -> None:
        if self.fatal is not None:
            return
        if len(self.outbox) >= OUTBOX_FRAMES:
            self.fail(SlowConsumer("frames are queueing faster than the client reads them"))
            return
        self.outbox.append((kind, frame, subject, subject_node))
        if kind is Kind.KICK:
            self.fatal = Replaced("this link joined from another connection")
        self._wake_writer()

    def fail(self, error: ClientError) -> None:
        """Send `error` after what is queued, then close with its close code."""
        if self.fatal is None:
            self.outbox.append((Kind.FORWARD, error_frame(error), "", ""))
            self.fatal = error
            self._wake_writer()

    def lost_membership(self) -> None:
        self.fail(Internal("membership expired on the server; join again"))

    def _wake_writer(self) -> None:
        if self.writer is None and not self.draining and not self.holding:
            self.writer = start_eagerly(self._drain())

    async def _drain(self) -> None:
        self.draining = True
        try:
            while self.outbox:
                kind, frame, subject, subject_node = self.outbox.popleft()
                # The peers a client may address are the peers it has been told about.
                if kind is Kind.PEER_JOINED:
                    self.session.peer_joined(subject, subject_node)
                elif kind is Kind.PEER_LEFT:
                    self.session.peer_left(subject)
                await self.ws.send_text(frame.decode())
            if self.fatal is not None and self.fatal.close_code is not None:
                await self.ws.close(code=self.fatal.close_code)
        except Exception:  # whatever the socket raised, the receive loop sees the disconnect
            log.debug("send failed; the client went away")
        finally:
            self.draining = False
            self.writer = None

    # --- inbound -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        reason: PeerLeftReason = "disconnected"
        loop = asyncio.get_running_loop()
        join_deadline = loop.time() + self.node.settings.join_timeout_s
        try:
            while self.fatal is None:
                if self.session.participant is None:
                    try:
                        message = await asyncio.wait_for(self.ws.receive(), join_deadline - loop.time())
                    except TimeoutError:
                        self.fail(JoinTimeout("no join within the join deadline"))
                        continue
                else:
                    message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                try:
                    text = message.get("text")
                    if text is None:
                        raise BinaryFrame("frames must be text (JSON)")
                    action = self.session.handle(text, loop.time())
                    if isinstance(action, RelayAction):
                        await self.relay(action)
                    elif isinstance(action, ReplyAction):
                        self.deliver(Kind.FORWARD, action.frame)
                    elif isinstance(action, JoinAction):
                        await self.join(action.token)
                    elif isinstance(action, LeaveAction):
                        reason = "left"
                        self.fatal = _Goodbye("left")
                        self._wake_writer()
                except ClientError as error:
                    if error.close_code is None:
                        self.deliver(Kind.FORWARD, error_frame(error))
                    else:
                        self.fail(error)
            if self.writer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(self.writer), timeout=2.0)
        finally:
            await self.finish(reason)

    async def relay(self, action: RelayAction) -> None:
        node = action.node
        if node is None:
            # Not told of this peer: perhaps its `peer-joined` was lost while the bus reconnected. Ask the store.
            consultation = self.session.consultation
            assert consultation is not None
            try:
                member = await self.node.store.member(consultation, action.to)
            except (redis.RedisError, OSError):
                member = None
            if member is None:
                raise action.unknown()
            node = member.node
            self.session.peer_joined(member.participant, node)
        self.node.forward(node, action.to, action.frame)

    async def join(self, token: str) -> None:
        try:
            found = await self.node.store.resolve(token)
            if found is None:
                raise BadToken("this link is unknown or has expired", ref="join")
            consultation, role = found
            member = Member(new_participant_id(), role, self.node.id, role)
            self.holding = True
            self.node.register(member.participant, consultation, self)
            try:
                result = await self.node.store.join(consultation, member, now_ms=now_ms())
            except BaseException:
                self.node.unregister(member.participant)
                raise
        except (redis.RedisError, OSError) as exc:
            self.session.join_failed()
            self.holding = False
            log.error("join failed: Redis %s", type(exc).__name__)
            raise Internal("the service cannot reach its database; try again shortly", ref="join") from None
        except ClientError:
            self.session.join_failed()
            self.holding = False
            raise
        for gone in result.removed:
            if gone.reason == "replaced":
                self.node.kick(gone.member, error_frame(Replaced("this link joined from another connection")))
            self.node.announce_left(gone.member.participant, gone.reason, result.others)
        self.node.announce_joined(member, result.others)
        self.session.joined(member.participant, consultation, role, {m.participant: m.node for m in result.others})
        joined = Joined(
            participant=member.participant,
            role=role,
            consultation=consultation,
            peers=[PeerEntry(m.participant, m.role, polite=False) for m in result.others],
            ice_servers=[],
        )
        self.outbox.appendleft((Kind.FORWARD, encode(joined), "", ""))
        self.holding = False
        self._wake_writer()
        log.info("participant %s joined %s as %s on %s", member.participant, consultation, role, self.node.id)

    async def finish(self, reason: PeerLeftReason) -> None:
        session = self.session
        if self.writer is not None:
            self.writer.cancel()
        if session.participant is None or session.consultation is None:
            return
        self.node.unregister(session.participant)
        session.leave()
        try:
            remaining = await self.node.store.leave(session.consultation, session.participant)
        except (redis.RedisError, OSError) as exc:
            log.error("leave of %s not recorded (%s); membership expires", session.participant, type(exc).__name__)
            return
        if remaining is not None:
            self.node.announce_left(session.participant, reason, remaining)
        log.info("participant %s left %s (%s)", session.participant, session.consultation, reason)


class _Goodbye(ClientError):
    """Not an error: closes the connection normally after `leave`."""

    code = "bye"
    close_code = 1000


async def signalling_endpoint(websocket: WebSocket) -> None:
    node: Node = websocket.app.state.node
    origin = websocket.headers.get("origin")
    if origin is None or origin.lower() not in node.settings.origins:
        # Closing before accept makes the server answer the upgrade with 403 (cross-site WebSocket hijacking).
        log.warning("refused a WebSocket from a foreign origin")
        await websocket.close(code=1008)
        return
    await websocket.accept()
    await Connection(websocket, node).run()
