"""The signalling WebSocket: read a frame, let the session core decide, carry out what it decided."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, Final

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
    new_resume_secret,
    resume_secret_matches,
    secret_digest,
)
from server.eager import start_eagerly
from server.exceptions import BadToken, BinaryFrame, ClientError, Internal, JoinTimeout, Replaced, SlowConsumer
from server.node import Node, now_ms
from server.protocol import Error, Joined, PeerEntry, PeerLeftReason, Resume, Role, encode
from server.replay import NO_REPLAY, Replay, Written, connection_tag
from server.routing import Kind
from server.store.consultations import Member
from server.unjoined import UnjoinedSocket
from server.wsprotocol import EXTENSION, DirectSocket

log = logging.getLogger(__name__)

OUTBOX_FRAMES: Final = 1024
#: The node that saw a socket drop sweeps this long after the grace ends, so a deadline just passed is due.
GRACE_SWEEP_MARGIN_S: Final = 0.25


def error_frame(error: ClientError) -> bytes:
    return encode(Error(code=error.code, message=error.message, ref=error.ref))


class Connection:
    """One client's socket: its session core, and an ordered outbox, drained at once (eagerly) when frames arrive."""

    def __init__(self, websocket: WebSocket, node: Node, unjoined: UnjoinedSocket) -> None:
        self.ws = websocket
        self.node = node
        #: This socket's place among its address's unjoined sockets, given up when it joins.
        self.unjoined = unjoined
        settings = node.settings
        self.session = Session(TokenBucket(rate=settings.frame_rate, burst=settings.frame_burst))
        self.outbox: deque[tuple[Kind, bytes, str, str]] = deque()
        self.writer: asyncio.Task[None] | None = None  # set while a drain is suspended (backpressure)
        self.draining = False
        self.holding = False  # while joining, deliveries wait until `joined` is first in line
        self.fatal: ClientError | None = None  # set when the connection must close after the outbox drains
        #: The membership as this connection holds it (its node and resume digest name this connection).
        self.member: Member | None = None
        #: Kicked: another connection holds this participant, or its link, now. Closing then changes nothing.
        self.superseded = False
        self.reason: PeerLeftReason = "disconnected"  # what the others are told when this connection ends
        self.loop = asyncio.get_running_loop()
        #: The socket's direct path, under `stue serve` (server/wsprotocol.py); None under plain ASGI.
        self.direct: DirectSocket | None = (websocket.scope.get("extensions") or {}).get(EXTENSION)
        self.idle = False  # `run` is waiting for a frame: one may be handled directly
        #: The I/O of a frame handled directly (a join or a store look-up), which the next frame waits for.
        self.pending: asyncio.Task[None] | None = None
        #: What this connection wrote after `joined` (None until `joined` is written), for a replay after a resume.
        self.written: Written | None = None
        self.joined_frame: bytes | None = None  # `joined`, until it is written
        #: Which tagged frames (written by the connection this one resumed) to deliver, and which to drop.
        self.replay: Replay = NO_REPLAY

    # --- outbound ----------------------------------------------------------------------------------------

    def deliver(self, kind: Kind, frame: bytes, subject: str = "", subject_node: str = "") -> None:
        if kind is Kind.KICK:
            if subject and (self.member is None or subject != self.member.resume_digest):
                return  # meant for an earlier connection of this participant, gone already
            self.superseded = True
            if subject_node:  # the participant resumed, there: its client may not have read what we wrote
                self._hand_over()
        elif kind is Kind.FORWARD and frame[:1] == b"#":  # tagged: handed on by the connection we resumed
            admitted = self.replay.admit(frame)
            if admitted is None:
                return
            frame = admitted
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
            self.outbox.append((Kind.REPLY, error_frame(error), "", ""))
            self.fatal = error
            self._wake_writer()

    def lost_membership(self) -> None:
        self.fail(Internal("membership expired on the server; join again"))

    def _hand_over(self) -> None:
        """This connection ends without `leave`, and its socket may have been dead for a while (half-open): hand what
        its client may not have read on to the frames held for its participant, for the resume to deliver. First the
        relayed frames written lately, tagged with their numbers (server/replay.py), then those not written yet.
        Frames for the participant that reach this node from now on are held after them."""
        member = self.member
        if member is None:
            return
        written = self.written.unread(connection_tag(member.resume_digest), self.loop.time()) if self.written else []
        unwritten = [frame for kind, frame, _, _ in self.outbox if kind is Kind.FORWARD]
        rest = [entry for entry in self.outbox if entry[0] is not Kind.FORWARD]
        self.outbox.clear()
        self.outbox.extend(rest)
        for frame in [*written, *unwritten]:
            self.node.hold(member.participant, frame)
        self.node.unregister(member.participant, self)

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
                if self.written is not None:
                    self.written.wrote(frame, kind is Kind.FORWARD, self.loop.time())
                elif frame is self.joined_frame:
                    self.written, self.joined_frame = Written(), None  # frames are numbered from the next one
                if self.direct is None or not self.direct.send_now(frame):
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
        if self.direct is not None:
            self.direct.receive_now = self.receive_now
        join_deadline = self.loop.time() + self.node.settings.join_timeout_s
        try:
            while self.fatal is None:
                if self.session.participant is None:
                    try:
                        message = await asyncio.wait_for(self.ws.receive(), join_deadline - self.loop.time())
                    except TimeoutError:
                        self.fail(JoinTimeout("no join within the join deadline"))
                        continue
                else:
                    # While this task waits here, and only then, frames may be handled directly (`receive_now`).
                    self.idle = True
                    try:
                        message = await self.ws.receive()
                    finally:
                        self.idle = False
                if self.pending is not None:
                    # A directly handled frame's I/O comes before the frames after it (its failure is its own).
                    await asyncio.wait((self.pending,))
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None:
                    self._refuse(BinaryFrame("frames must be text (JSON)"))
                    continue
                work = self._carry_out(text)
                if work is not None:
                    await work
            if self.writer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(self.writer), timeout=2.0)
        finally:
            await self.finish(self.reason)

    def receive_now(self, text: str) -> bool:
        """The direct path, called from the transport's callback: handle a frame at once when that keeps the order
        (the task in `run` is waiting for a frame and nothing handled directly is still doing I/O). False sends the
        frame through ASGI to `run`."""
        if self.fatal is not None:
            return True  # nothing is read after a fatal error, as in `run`
        if not self.idle or self.pending is not None:
            return False
        try:
            work = self._carry_out(text)
        except Exception:
            log.exception("handling a frame failed")
            self.fail(Internal("the server failed to handle a frame"))
            return True
        if work is not None:
            self.pending = asyncio.ensure_future(work)
            self.pending.add_done_callback(self._pending_done)
        return True

    def _pending_done(self, task: asyncio.Task[None]) -> None:
        if self.pending is task:
            self.pending = None
        if not task.cancelled() and task.exception() is not None:
            log.error("handling a frame failed", exc_info=task.exception())
            self.fail(Internal("the server failed to handle a frame"))

    def _carry_out(self, text: str) -> Coroutine[Any, Any, None] | None:
        """Carry out one inbound frame: at once when that needs no I/O; otherwise return the coroutine that does."""
        try:
            action = self.session.handle(text, self.loop.time())
            if isinstance(action, RelayAction):
                if action.node is not None:
                    self.node.forward(action.node, action.to, action.frame)
                    return None
                return self._refusing(self._relay_via_store(action))
            if isinstance(action, ReplyAction):
                self.deliver(Kind.REPLY, action.frame)
            elif isinstance(action, JoinAction):
                return self._refusing(self.join(action.token, action.resume))
            elif isinstance(action, LeaveAction):
                self.reason = "left"
                self.fatal = _Goodbye("left")
                self._wake_writer()
        except ClientError as error:
            self._refuse(error)
        return None

    async def _refusing(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except ClientError as error:
            self._refuse(error)

    def _refuse(self, error: ClientError) -> None:
        """Answer a refused frame: an error frame, and the connection carries on unless the error closes it."""
        if error.close_code is None:
            self.deliver(Kind.REPLY, error_frame(error))
        else:
            self.fail(error)

    async def _relay_via_store(self, action: RelayAction) -> None:
        """Relay to a peer this connection was not told of: perhaps its `peer-joined` was lost while the bus
        reconnected. Ask the store where it is."""
        consultation = self.session.consultation
        assert consultation is not None
        try:
            member = await self.node.store.member(consultation, action.to)
        except (redis.RedisError, OSError):
            member = None
        if member is None:
            raise action.unknown()
        self.session.peer_joined(member.participant, member.node)
        self.node.forward(member.node, action.to, action.frame)

    async def join(self, token: str, resume: Resume | None) -> None:
        try:
            found = await self.node.store.resolve(token)
            if found is None:
                raise BadToken("this link is unknown or has expired", ref="join")
            consultation, role = found
            secret = new_resume_secret()
            self.holding = True
            joining = None if resume is None else await self._resume(consultation, role, resume, secret)
            resumed = joining is not None
            if joining is None:
                joining = await self._join_anew(consultation, role, secret)
        except (redis.RedisError, OSError) as exc:
            self.session.join_failed()
            self.holding = False
            log.error("join failed: Redis %s", type(exc).__name__)
            raise Internal("the service cannot reach its database; try again shortly", ref="join") from None
        except ClientError:
            self.session.join_failed()
            self.holding = False
            raise
        member, others = joining
        held = await self._take_held(member.participant) if resumed else []
        self.session.joined(member.participant, consultation, role, {m.participant: m.node for m in others})
        self.unjoined.joined()
        joined = Joined(
            participant=member.participant,
            role=role,
            consultation=consultation,
            # Of two members, the one that joined later is the impolite one; after a resume that can be either.
            peers=[PeerEntry(m.participant, m.role, polite=m.seq > member.seq) for m in others],
            ice_servers=[],
            resume=secret,
            resumed=resumed,
            held=len(held),
        )
        # `joined`, then what was held for us while away (oldest first), then what came while we were joining.
        self.outbox.extendleft((Kind.FORWARD, frame, "", "") for frame in reversed(held))
        self.joined_frame = encode(joined)
        self.outbox.appendleft((Kind.REPLY, self.joined_frame, "", ""))
        self.holding = False
        self._wake_writer()
        verb = "resumed in" if resumed else "joined"
        log.info("participant %s %s %s as %s on %s", member.participant, verb, consultation, role, self.node.id)

    async def _join_anew(self, consultation: str, role: Role, secret: str) -> tuple[Member, list[Member]]:
        """A new participant id; the link's previous holder, if any, is replaced."""
        member = Member(new_participant_id(), role, self.node.id, role, resume_digest=secret_digest(secret))
        self.member = member
        self.node.register(member.participant, consultation, self)
        try:
            result = await self.node.store.join(consultation, member, now_ms=now_ms())
        except BaseException:
            self.node.unregister(member.participant, self)
            self.member = None
            raise
        self.member = result.member
        for gone in result.removed:
            if gone.reason == "replaced":
                self.node.kick(gone.member, error_frame(Replaced("this link joined from another connection")))
            self.node.announce_left(gone.member.participant, gone.reason, result.others)
        self.node.announce_joined(result.member, result.others)
        return result.member, result.others

    async def _resume(
        self, consultation: str, role: Role, resume: Resume, secret: str
    ) -> tuple[Member, list[Member]] | None:
        """Continue `resume.participant` on this connection, or None when that cannot be (then the caller joins
        anew): not a member any more, another role, a wrong secret, or expired."""
        held = await self.node.store.member(consultation, resume.participant)
        if held is None or held.role != role or not resume_secret_matches(resume.secret, held.resume_digest):
            # The id is the client's word until the store confirms it: logged only when it names a member.
            who = "an unknown participant" if held is None else held.participant
            log.info("resume of %s in %s refused; joining anew", who, consultation)
            return None
        member = replace(held, node=self.node.id, resume_digest=secret_digest(secret))
        others = await self.node.store.resume(consultation, held, member, now_ms=now_ms())
        if others is None:
            log.info("resume of %s in %s lost a race with its expiry; joining anew", held.participant, consultation)
            return None
        self.member = member
        self.replay = Replay(connection_tag(held.resume_digest), resume.received)
        # A socket of the old connection may still look open (half-open, unnoticed): close it without side
        # effects, after it hands on what its client may not have read, so that comes with the resumed `joined`.
        # Taken over before this connection registers, so on this same node the kick reaches the old one.
        await self.node.take_over(held, error_frame(Replaced("this participant resumed on another connection")))
        self.node.register(member.participant, consultation, self)
        # Told again, so every other connection routes to this node from now on (clients know the id already).
        self.node.announce_joined(member, others)
        return member, others

    async def _take_held(self, participant: str) -> list[bytes]:
        """The frames relayed to `participant` while it was away (its peers were not told it was), oldest first, after
        those its client did not read from the connection resumed."""
        try:
            return [frame for frame in map(self.replay.admit, await self.node.take_held(participant)) if frame]
        except (redis.RedisError, OSError) as exc:
            # The resume itself stands; what was held is lost, and the client repairs it as after any drop.
            log.error("frames held for %s not read: Redis %s", participant, type(exc).__name__)
            return []

    async def finish(self, reason: PeerLeftReason) -> None:
        session, member = self.session, self.member
        if self.direct is not None:
            self.direct.receive_now = None
        if self.pending is not None:
            self.pending.cancel()
        if self.writer is not None:
            self.writer.cancel()
        if session.participant is None or session.consultation is None or member is None:
            return
        suspending = reason == "disconnected" and self.fatal is None and not self.superseded
        if suspending:
            self._hand_over()
        self.node.unregister(member.participant, self)
        session.leave()
        if self.superseded:
            log.info("connection of %s in %s closed: superseded", member.participant, session.consultation)
            return
        try:
            if suspending:
                await self.suspend(session.consultation, member)
                return
            remaining = await self.node.store.leave(session.consultation, member)
        except (redis.RedisError, OSError) as exc:
            log.error("end of %s not recorded (%s); membership expires", member.participant, type(exc).__name__)
            return
        if remaining is not None:
            self.node.announce_left(member.participant, reason, remaining)
        log.info("participant %s left %s (%s)", member.participant, session.consultation, reason)

    async def suspend(self, consultation: str, member: Member) -> None:
        """The socket went away without `leave`: keep the membership for the resume grace, unrefreshed, and tell
        nobody yet. If it is not resumed in time, the sweep tells the others (`peer-left`, reason `timeout`)."""
        grace = self.node.settings.resume_grace_s
        if await self.node.store.suspend(consultation, member, deadline_ms=now_ms() + int(grace * 1000)):
            self.node.sweep_after(grace + GRACE_SWEEP_MARGIN_S)
            log.info("participant %s dropped from %s; it may resume for %g s", member.participant, consultation, grace)


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
    # The address uvicorn gives: the socket's peer, or what a trusted proxy (STUE_TRUSTED_PROXIES) says it forwards.
    address = websocket.client.host if websocket.client is not None else ""
    unjoined = node.unjoined.open(address)
    if unjoined is None:
        # Refused before accept, as above: each open socket costs memory and a descriptor. No address: personal data.
        log.warning(
            "refused a WebSocket: its client address is at its limit of %d sockets without a join", node.unjoined.limit
        )
        await websocket.close(code=1008)
        return
    try:
        await websocket.accept()
        await Connection(websocket, node, unjoined).run()
    finally:
        unjoined.closed()
