"""One server process: its local connections, the bus to other processes, and membership upkeep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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

log = logging.getLogger(__name__)


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

    async def start(self) -> None:
        await self.bus.start()
        self._tasks.append(asyncio.create_task(self._upkeep(), name="membership-upkeep"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.bus.stop()

    # --- delivery ----------------------------------------------------------------------------------------

    def register(self, participant: str, consultation: str, endpoint: Endpoint) -> None:
        self.local[participant] = (consultation, endpoint)

    def unregister(self, participant: str) -> None:
        self.local.pop(participant, None)

    def dispatch(self, payload: bytes) -> None:
        """Hand an envelope that reached this node to the local connections it names."""
        try:
            envelope = routing.decode(payload)
        except (ValueError, UnicodeDecodeError):
            log.error("dropped a malformed bus envelope")
            return
        for participant in envelope.recipients:
            entry = self.local.get(participant)
            if entry is not None:
                entry[1].deliver(envelope.kind, envelope.frame, envelope.subject, envelope.subject_node)

    def send(self, node: str, envelope: Envelope) -> None:
        self.bus.send(node, routing.encode(envelope))

    def forward(self, node: str, participant: str, frame: bytes) -> None:
        self.bus.send(node, routing.encode_forward(participant, frame))

    # --- membership announcements ------------------------------------------------------------------------

    def announce_joined(self, member: Member, others: Iterable[Member]) -> None:
        frame = encode(PeerJoined(participant=member.participant, role=member.role))
        audience = {m.participant: m.node for m in others}
        for node, envelope in routing.broadcast(Kind.PEER_JOINED, audience, frame, member.participant, member.node):
            self.send(node, envelope)

    def announce_left(self, participant: str, reason: PeerLeftReason, others: Iterable[Member]) -> None:
        frame = encode(PeerLeft(participant=participant, reason=reason))
        audience = {m.participant: m.node for m in others}
        for node, envelope in routing.broadcast(Kind.PEER_LEFT, audience, frame, participant, ""):
            self.send(node, envelope)

    def kick(self, member: Member, frame: bytes) -> None:
        self.send(member.node, Envelope(Kind.KICK, (member.participant,), frame))

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
        for swept in await self.store.sweep(now_ms=now_ms()):
            log.info("membership of %s in %s expired", swept.participant, swept.consultation)
            self.announce_left(swept.participant, "timeout", swept.remaining)
