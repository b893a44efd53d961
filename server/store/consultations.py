"""Consultations, their link tokens and their live membership, in Redis.

Keys (all under `stue:`):
    stue:c:<cid>            hash   the consultation record (created_ms, expires_ms)
    stue:c:<cid>:members    hash   participant id -> "role|node|link|seq|resume digest" for everyone connected now
                                   (or dropped a moment ago and within the resume grace)
    stue:token:<sha256>     string "<cid> <role>": what a link token opens (the token itself is never stored)
    stue:deadlines          zset   "<cid>:<pid>" -> ms after which a membership not refreshed or resumed is dropped
    stue:held:<pid>         list   relayed frames that reached no connection of <pid> (away, may resume), oldest
                                   first; capped, and gone when the resume grace is over
    stue:moved:<pid>        string the node <pid> last resumed on, for as long as frames are held: a frame that
                                   still reaches its old node is passed on there
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources
from typing import Final, cast

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from server import routing
from server.consultation import ROLES, new_consultation_id, new_token, secret_digest
from server.protocol import PeerLeftReason, Role

PREFIX: Final = "stue:c:"
DEADLINES: Final = "stue:deadlines"
HELD: Final = "stue:held:"
MOVED: Final = "stue:moved:"


def _load(name: str) -> str:
    return resources.files("server.store").joinpath("lua", name).read_text()


@dataclass(frozen=True, slots=True)
class Member:
    """One membership as stored. Its encoded value names the connection that holds it: the node and the resume
    digest change with every resume, so a stale connection's leave or suspend (compare and set) changes nothing."""

    participant: str
    role: Role
    node: str
    link: str
    #: Join order among members present together: the higher joined later (set by join.lua, kept on resume).
    seq: int = 0
    #: SHA-256 of the secret that resumes this membership ("" for none).
    resume_digest: str = ""

    def encode(self) -> str:
        return f"{self.role}|{self.node}|{self.link}|{self.seq}|{self.resume_digest}"

    @classmethod
    def decode(cls, participant: str, value: str) -> Member:
        role, node, rest = value.split("|", 2)
        link, _, rest = rest.partition("|")  # a value written before resume existed ends here
        seq, _, digest = rest.partition("|")
        return cls(participant, cast(Role, role), node, link, int(seq or 0), digest)


@dataclass(frozen=True, slots=True)
class NewConsultation:
    consultation: str
    tokens: dict[Role, str]
    expires_ms: int


@dataclass(frozen=True, slots=True)
class Removed:
    member: Member
    reason: PeerLeftReason


@dataclass(frozen=True, slots=True)
class JoinResult:
    member: Member  # as stored, with its seq
    others: list[Member]
    removed: list[Removed]


@dataclass(frozen=True, slots=True)
class Swept:
    consultation: str
    participant: str
    remaining: list[Member]


def _members(flat: list[bytes]) -> list[Member]:
    return [Member.decode(flat[i].decode(), flat[i + 1].decode()) for i in range(0, len(flat), 2)]


class ConsultationStore:
    """Redis adapter for consultations and membership. Scripts are registered once per store."""

    def __init__(self, redis: aioredis.Redis, *, membership_ttl_s: float) -> None:
        self.redis = redis
        self.membership_ttl_ms = int(membership_ttl_s * 1000)
        self._join: AsyncScript = redis.register_script(_load("join.lua"))
        self._resume: AsyncScript = redis.register_script(_load("resume.lua"))
        self._suspend: AsyncScript = redis.register_script(_load("suspend.lua"))
        self._leave: AsyncScript = redis.register_script(_load("leave.lua"))
        self._sweep: AsyncScript = redis.register_script(_load("sweep.lua"))
        self._refresh: AsyncScript = redis.register_script(_load("refresh.lua"))
        self._hold: AsyncScript = redis.register_script(_load("hold.lua"))

    async def create(self, *, now_ms: int, ttl_s: int) -> NewConsultation:
        cid = new_consultation_id()
        tokens: dict[Role, str] = {role: new_token() for role in ROLES}
        expires_ms = now_ms + ttl_s * 1000
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"{PREFIX}{cid}", mapping={"created_ms": now_ms, "expires_ms": expires_ms})
            pipe.pexpireat(f"{PREFIX}{cid}", expires_ms)
            for role, token in tokens.items():
                pipe.set(f"stue:token:{secret_digest(token)}", f"{cid} {role}", pxat=expires_ms)
            await pipe.execute()
        return NewConsultation(cid, tokens, expires_ms)

    async def resolve(self, token: str) -> tuple[str, Role] | None:
        """The consultation and role a token opens, or None when it is unknown or expired."""
        value = await self.redis.get(f"stue:token:{secret_digest(token)}")
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else value
        cid, role = text.split(" ", 1)
        return cid, cast(Role, role)

    async def join(self, consultation: str, member: Member, *, now_ms: int) -> JoinResult:
        """Add `member` (its seq is given by the store), dropping expired members and the link's previous holder."""
        others, removed, seq = await self._join(
            keys=[f"{PREFIX}{consultation}:members", DEADLINES, f"{PREFIX}{consultation}"],
            args=[
                consultation,
                member.participant,
                f"{member.role}|{member.node}|{member.link}",
                member.link,
                now_ms + self.membership_ttl_ms,
                now_ms,
                self.membership_ttl_ms,
                member.resume_digest,
            ],
        )
        gone = [
            Removed(Member.decode(removed[i].decode(), removed[i + 1].decode()), removed[i + 2].decode())
            for i in range(0, len(removed), 3)
        ]
        return JoinResult(replace(member, seq=int(seq)), _members(others), gone)

    async def member(self, consultation: str, participant: str) -> Member | None:
        """One current member, or None."""
        value = await self.redis.hget(f"{PREFIX}{consultation}:members", participant)
        if value is None:
            return None
        return Member.decode(participant, value.decode() if isinstance(value, bytes) else value)

    async def resume(self, consultation: str, held: Member, resumed: Member, *, now_ms: int) -> list[Member] | None:
        """Replace membership `held` (as read and verified by the caller) with `resumed`; the others, or None when
        `held` is no longer the membership (swept, replaced, resumed by another connection) or has expired."""
        result = await self._resume(
            keys=[f"{PREFIX}{consultation}:members", DEADLINES, f"{PREFIX}{consultation}"],
            args=[
                consultation,
                held.participant,
                held.encode(),
                resumed.encode(),
                now_ms + self.membership_ttl_ms,
                now_ms,
                self.membership_ttl_ms,
            ],
        )
        if not result:
            return None
        return _members(result[1:])

    async def suspend(self, consultation: str, member: Member, *, deadline_ms: int) -> bool:
        """Keep `member` until `deadline_ms` without refreshing; False when it is gone or held by another
        connection now."""
        held = await self._suspend(
            keys=[f"{PREFIX}{consultation}:members", DEADLINES],
            args=[consultation, member.participant, member.encode(), deadline_ms],
        )
        return bool(held)

    async def hold(self, frames: list[tuple[str, bytes]], *, node: str, ttl_ms: int, limit: int) -> None:
        """Keep relayed frames, in order, for participants that are away from `node`: at most the last `limit` per
        participant, for `ttl_ms` after the latest. A frame for someone who resumed on another node since is
        passed on to that node instead."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for participant, frame in frames:
                await self._hold(
                    keys=[f"{HELD}{participant}", f"{MOVED}{participant}"],
                    args=[frame, limit, ttl_ms, node, routing.forward_header(participant), routing.channel("")],
                    client=pipe,
                )
            await pipe.execute()

    async def take_held(self, participant: str, *, node: str, ttl_ms: int) -> list[bytes]:
        """The frames held for `participant`, oldest first, which are removed; frames held for it from now on go
        to `node`, where it resumed, for `ttl_ms`."""
        key = f"{HELD}{participant}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrange(key, 0, -1)
            pipe.delete(key)
            pipe.set(f"{MOVED}{participant}", node, px=ttl_ms)
            frames, _, _ = await pipe.execute()
        return [frame if isinstance(frame, bytes) else frame.encode() for frame in frames]

    async def leave(self, consultation: str, member: Member) -> list[Member] | None:
        """Remove `member`; the remaining members, or None when it had been removed already (or is held by another
        connection now)."""
        result = await self._leave(
            keys=[f"{PREFIX}{consultation}:members", DEADLINES],
            args=[consultation, member.participant, member.encode()],
        )
        if not result:
            return None
        return _members(result[1:])

    async def refresh(
        self, memberships: list[tuple[str, str]], *, now_ms: int, batch: int = 1000
    ) -> list[tuple[str, str]]:
        """Push back the deadlines of (consultation, participant) pairs; returns the pairs no longer members.

        One script call per `batch` pairs, so a node with thousands of participants never holds the event loop
        (or Redis) for long.
        """
        deadline = now_ms + self.membership_ttl_ms
        lost: list[tuple[str, str]] = []
        for start in range(0, len(memberships), batch):
            entries = [f"{cid}:{pid}" for cid, pid in memberships[start : start + batch]]
            for entry in await self._refresh(keys=[DEADLINES], args=[deadline, *entries]):
                cid, pid = entry.decode().split(":", 1)
                lost.append((cid, pid))
        return lost

    async def sweep(self, *, now_ms: int, limit: int = 500) -> list[Swept]:
        result = await self._sweep(keys=[DEADLINES], args=[now_ms, limit, PREFIX])
        return [
            Swept(result[i].decode(), result[i + 1].decode(), _members(result[i + 2])) for i in range(0, len(result), 3)
        ]
