"""Consultations, their link tokens and their live membership, in Redis.

Keys (all under `stue:`):
    stue:c:<cid>            hash   the consultation record (created_ms, expires_ms)
    stue:c:<cid>:members    hash   participant id -> "role|node|link" for everyone connected now
    stue:token:<sha256>     string "<cid> <role>": what a link token opens (the token itself is never stored)
    stue:deadlines          zset   "<cid>:<pid>" -> ms after which the membership is dropped unless refreshed
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Final, cast

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from server.consultation import ROLES, new_consultation_id, new_token, token_digest
from server.protocol import PeerLeftReason, Role

PREFIX: Final = "stue:c:"
DEADLINES: Final = "stue:deadlines"


def _load(name: str) -> str:
    return resources.files("server.store").joinpath("lua", name).read_text()


@dataclass(frozen=True, slots=True)
class Member:
    participant: str
    role: Role
    node: str
    link: str

    def encode(self) -> str:
        return f"{self.role}|{self.node}|{self.link}"

    @classmethod
    def decode(cls, participant: str, value: str) -> Member:
        role, node, link = value.split("|", 2)
        return cls(participant, cast(Role, role), node, link)


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
        self._leave: AsyncScript = redis.register_script(_load("leave.lua"))
        self._sweep: AsyncScript = redis.register_script(_load("sweep.lua"))
        self._refresh: AsyncScript = redis.register_script(_load("refresh.lua"))

    async def create(self, *, now_ms: int, ttl_s: int) -> NewConsultation:
        cid = new_consultation_id()
        tokens: dict[Role, str] = {role: new_token() for role in ROLES}
        expires_ms = now_ms + ttl_s * 1000
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"{PREFIX}{cid}", mapping={"created_ms": now_ms, "expires_ms": expires_ms})
            pipe.pexpireat(f"{PREFIX}{cid}", expires_ms)
            for role, token in tokens.items():
                pipe.set(f"stue:token:{token_digest(token)}", f"{cid} {role}", pxat=expires_ms)
            await pipe.execute()
        return NewConsultation(cid, tokens, expires_ms)

    async def resolve(self, token: str) -> tuple[str, Role] | None:
        """The consultation and role a token opens, or None when it is unknown or expired."""
        value = await self.redis.get(f"stue:token:{token_digest(token)}")
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else value
        cid, role = text.split(" ", 1)
        return cid, cast(Role, role)

    async def join(self, consultation: str, member: Member, *, now_ms: int) -> JoinResult:
        others, removed = await self._join(
            keys=[f"{PREFIX}{consultation}:members", DEADLINES, f"{PREFIX}{consultation}"],
            args=[
                consultation,
                member.participant,
                member.encode(),
                member.link,
                now_ms + self.membership_ttl_ms,
                now_ms,
                self.membership_ttl_ms,
            ],
        )
        gone = [
            Removed(Member.decode(removed[i].decode(), removed[i + 1].decode()), removed[i + 2].decode())
            for i in range(0, len(removed), 3)
        ]
        return JoinResult(_members(others), gone)

    async def member(self, consultation: str, participant: str) -> Member | None:
        """One current member, or None."""
        value = await self.redis.hget(f"{PREFIX}{consultation}:members", participant)
        if value is None:
            return None
        return Member.decode(participant, value.decode() if isinstance(value, bytes) else value)

    async def leave(self, consultation: str, participant: str) -> list[Member] | None:
        """Remove a member; the remaining members, or None when it had been removed already."""
        result = await self._leave(
            keys=[f"{PREFIX}{consultation}:members", DEADLINES], args=[consultation, participant]
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
