"""One server process: its local connections, the bus to other processes, and membership upkeep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Iterable
from typing import Protocol

import redis

from server import routing
from server.config import Settings
from server.protocol import PeerJoined, PeerLeft, PeerLeftReason, encode
from server.routing import Envelope, Kind
from server.store.bus import Bus
from server.store.connection import RedisHandle
from server.store.consultations import ConsultationStore, Member
from server.unjoined import AddressRate, UnjoinedSockets

log = logging.getLogger(__name__)

#: Link checks per client address (a municipality office may put many workstations behind one address).
LINK_CHECKS_PER_S = 5.0
LINK_CHECK_BURST = 50.0
#: Grace sweeps due within one slot are one sweep, so a thousand drops at once (a restart) cost a few sweeps.
SWEEP_SLOT_S = 0.25
#: Relayed frames kept for a participant who is away: an offer and its candidates, for a few renegotiations.
HELD_FRAMES_PER_PARTICIPANT = 64
#: Held frames are kept this much longer than the resume grace, so one sent at its very end is still there.
HELD_TTL_MARGIN_S = 5.0
#: Frames to hold that wait for Redis; beyond this (Redis unreachable) they are dropped, and clients repair.
HELD_BACKLOG_LIMIT = 10_000
#: How long a resume waits for the participant's old node to confirm that it has handed on what its old connection
#: wrote and the client may not have read: a bus round trip and one Redis write, longer only when that node is stuck.
HAND_OVER_WAIT_S = 1.0


class Endpoint(Protocol):
    """What the node needs of a local connection."""

    def deliver(self, kind: Kind, frame: bytes, subject: str, subject_node: str) -> None: ...

    def lost_membership(self) -> None: ...


def now_ms() -> int:
    return int(time.time() * 1000)


class Node:
    """Routes envelopes to local connections and keeps this process's memberships alive in Redis."""

    def __init__(self, settings: Settings, handle: RedisHandle) -> None:
        self.settings = settings
        self.handle = handle
        self.id = settings.node_id or "n" + secrets.token_hex(6)
        self.store = ConsultationStore(handle.client, membership_ttl_s=settings.membership_ttl_s)
        self.bus = Bus(handle.client, self.id, self.dispatch)
        #: participant id → (consultation id, connection), for this process only.
        self.local: dict[str, tuple[str, Endpoint]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._sweeps: dict[int, asyncio.Task[None]] = {}  # slot number → the sweep due at its end
        #: Sockets open without a join, per client address: in memory, so the upgrade costs no Redis round trip.
        self.unjoined = UnjoinedSockets(settings.max_unjoined_per_address)
        #: `POST /api/link` per client address: a page checks its link once per load; this is far above that.
        self.link_checks = AddressRate(rate=LINK_CHECKS_PER_S, burst=LINK_CHECK_BURST)
        #: (participant, frame) to keep in Redis for participants away from this node, in arrival order.
        self._held: list[tuple[str, bytes]] = []
        self._holder: asyncio.Task[None] | None = None  # the one task that writes them, while there are any
        #: (participant, resume digest of its old connection) → resolved when the old node has handed on.
        self._hand_overs: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._confirmations: set[asyncio.Task[None]] = set()  # hand-overs to confirm once their frames are held

    async def start(self) -> None:
        await self.bus.start()
        self._tasks.append(asyncio.create_task(self._upkeep(), name="membership-upkeep"))

    async def stop(self) -> None:
        holder = [self._holder] if self._holder is not None else []
        for task in [*self._tasks, *self._sweeps.values(), *holder, *self._confirmations]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.bus.stop()

    # --- delivery ----------------------------------------------------------------------------------------

    def register(self, participant: str, consultation: str, endpoint: Endpoint) -> None:
        self.local[participant] = (consultation, endpoint)

    def unregister(self, participant: str, endpoint: Endpoint) -> None:
        """Forget `participant`'s connection, unless a newer connection (a resume) has taken its place here."""
        entry = self.local.get(participant)
        if entry is not None and entry[1] is endpoint:
            del self.local[participant]

    def dispatch(self, payload: bytes) -> None:
        """Hand an envelope that reached this node to the local connections it names; a relayed frame for someone
        with no connection here is held for its resume."""
        try:
            envelope = routing.decode(payload)
        except (ValueError, UnicodeDecodeError):
            log.error("dropped a malformed bus envelope")
            return
        if envelope.kind is Kind.HANDED_OVER:
            for participant in envelope.recipients:
                confirmed = self._hand_overs.get((participant, envelope.subject))
                if confirmed is not None and not confirmed.done():
                    confirmed.set_result(None)
            return
        for participant in envelope.recipients:
            entry = self.local.get(participant)
            if entry is not None:
                entry[1].deliver(envelope.kind, envelope.frame, envelope.subject, envelope.subject_node)
            elif envelope.kind is Kind.FORWARD:
                self.hold(participant, envelope.frame)
            if envelope.kind is Kind.KICK and envelope.subject_node and envelope.subject_node != self.id:
                self._confirm_hand_over(participant, envelope.subject, envelope.subject_node)

    def hold(self, participant: str, frame: bytes) -> None:
        """A relayed frame for someone with no connection here: its socket dropped, and it may resume (here or on
        another node) within the grace. Keep the frame in Redis for the resume to deliver; the others never learn
        of the drop, so they keep sending. (For someone who left for good it just expires.)"""
        if len(self._held) >= HELD_BACKLOG_LIMIT:
            log.error("held-frame backlog full: a frame for an away participant dropped")
            return
        self._held.append((participant, frame))
        if self._holder is None:
            self._holder = asyncio.get_running_loop().create_task(self._write_held(), name="held-frames")

    @property
    def held_ttl_ms(self) -> int:
        """How long frames are held (and a resume's new node remembered) after the latest."""
        return int((self.settings.resume_grace_s + HELD_TTL_MARGIN_S) * 1000)

    async def take_held(self, participant: str) -> list[bytes]:
        """For a resume here: what was held for `participant` (all of it, including frames that reached this node
        a moment ago), oldest first; frames that reach its old node from now on are passed on here."""
        if self._holder is not None:
            await asyncio.shield(self._holder)
        return await self.store.take_held(participant, node=self.id, ttl_ms=self.held_ttl_ms)

    async def _write_held(self) -> None:
        """Write held frames in batches, one batch at a time, so each participant's frames stay in order."""
        try:
            while self._held:
                batch, self._held = self._held, []
                try:
                    await self.store.hold(
                        batch, node=self.id, ttl_ms=self.held_ttl_ms, limit=HELD_FRAMES_PER_PARTICIPANT
                    )
                except (redis.RedisError, OSError) as exc:
                    log.error("%d frame(s) for away participants not held: Redis %s", len(batch), type(exc).__name__)
        finally:
            self._holder = None

    def send(self, node: str, envelope: Envelope) -> None:
        self.bus.send(node, routing.encode(envelope))

    def forward(self, node: str, participant: str, frame: bytes) -> None:
        self.bus.send(node, routing.encode_forward(participant, frame))

    # --- membership announcements ------------------------------------------------------------------------

    def announce_joined(self, member: Member, others: Iterable[Member]) -> None:
        """Tell `others` that `member` is in, at its node. A recipient is polite towards `member` when `member` joined
        after it: every recipient, for a new participant; after a resume, not those that joined while it was in."""
        audiences: dict[bool, dict[str, str]] = {}
        for other in others:
            audiences.setdefault(other.seq < member.seq, {})[other.participant] = other.node
        for polite, audience in audiences.items():
            frame = encode(PeerJoined(participant=member.participant, role=member.role, polite=polite))
            for node, envelope in routing.broadcast(Kind.PEER_JOINED, audience, frame, member.participant, member.node):
                self.send(node, envelope)

    def announce_left(self, participant: str, reason: PeerLeftReason, others: Iterable[Member]) -> None:
        frame = encode(PeerLeft(participant=participant, reason=reason))
        audience = {m.participant: m.node for m in others}
        for node, envelope in routing.broadcast(Kind.PEER_LEFT, audience, frame, participant, ""):
            self.send(node, envelope)

    async def take_over(self, member: Member, frame: bytes) -> None:
        """For a resume here of `member`: close its old connection with `frame`, and return once what that connection
        wrote and its client may not have read is held (it hands it on when closed: server/replay.py), so the resume
        takes those frames with the ones held while it was away. On this node the kick is dispatched at once. Another
        node confirms; this returns at once when no process serves that node any more, and after `HAND_OVER_WAIT_S`
        when it does not confirm (then the frames it hands on later are passed on here, after `joined`)."""
        serving = 0
        if member.node != self.id:
            [(_, serving)] = await self.handle.client.pubsub_numsub(routing.channel(member.node))
        if not serving:
            self.kick(member, frame, resumed_on=self.id)
            return
        key = (member.participant, member.resume_digest)
        self._hand_overs[key] = confirmed = asyncio.get_running_loop().create_future()
        self.kick(member, frame, resumed_on=self.id)
        try:
            await asyncio.wait_for(confirmed, HAND_OVER_WAIT_S)
        except TimeoutError:
            log.warning(
                "node %s did not confirm a hand-over within %g s; resuming without it", member.node, HAND_OVER_WAIT_S
            )
        finally:
            del self._hand_overs[key]

    def _confirm_hand_over(self, participant: str, digest: str, node: str) -> None:
        """Tell `node`, where `participant` resumed, that what its connection `digest` handed on here is held: at once,
        or when the frames still waiting for Redis are written."""
        envelope = Envelope(Kind.HANDED_OVER, (participant,), b"", digest, self.id)
        holder = self._holder
        if holder is None:
            self.send(node, envelope)
            return

        async def once_held() -> None:
            await asyncio.shield(holder)
            self.send(node, envelope)

        confirmation = asyncio.get_running_loop().create_task(once_held(), name="hand-over-confirmation")
        self._confirmations.add(confirmation)
        confirmation.add_done_callback(self._confirmations.discard)

    def kick(self, member: Member, frame: bytes, *, resumed_on: str = "") -> None:
        """Close the connection that held `member`: only that one (named by its resume digest), never a later
        connection that resumed the same participant on the same node. `resumed_on`: the node where the participant
        resumed; the closed connection then hands on what its client may not have read."""
        self.send(member.node, Envelope(Kind.KICK, (member.participant,), frame, member.resume_digest, resumed_on))

    # --- upkeep ------------------------------------------------------------------------------------------

    async def _upkeep(self) -> None:
        """Refresh this node's memberships and drop expired ones anywhere, a few times per membership TTL."""
        interval = self.settings.membership_ttl_s / 4
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh_and_sweep()
            except (redis.RedisError, OSError) as exc:
                log.error("membership upkeep failed: %s", type(exc).__name__)

    async def refresh_and_sweep(self) -> None:
        memberships = [(cid, pid) for pid, (cid, _) in self.local.items()]
        for _cid, pid in await self.store.refresh(memberships, now_ms=now_ms()):
            entry = self.local.get(pid)
            if entry is not None:
                log.warning("participant %s lost its membership; closing so the client re-joins", pid)
                entry[1].lost_membership()
        await self.sweep()

    async def sweep(self) -> None:
        """Drop expired memberships anywhere and tell their consultations (`peer-left`, reason `timeout`)."""
        for swept in await self.store.sweep(now_ms=now_ms()):
            log.info("membership of %s in %s expired", swept.participant, swept.consultation)
            self.announce_left(swept.participant, "timeout", swept.remaining)

    def sweep_after(self, delay_s: float) -> None:
        """Sweep once, `delay_s` from now (or up to one slot later): when a suspended membership's grace ends, its
        peers hear of it then, not up to a whole upkeep interval later. (The periodic sweep of any node still
        covers this node's death.)"""
        loop = asyncio.get_running_loop()
        slot = math.ceil((loop.time() + delay_s) / SWEEP_SLOT_S)
        if slot not in self._sweeps:
            task = loop.create_task(self._sweep_at(slot * SWEEP_SLOT_S), name="resume-grace-sweep")
            self._sweeps[slot] = task
            task.add_done_callback(lambda _: self._sweeps.pop(slot, None))

    async def _sweep_at(self, when: float) -> None:
        await asyncio.sleep(when - asyncio.get_running_loop().time())
        try:
            await self.sweep()
        except (redis.RedisError, OSError) as exc:
            log.error("grace sweep failed: %s", type(exc).__name__)
