"""The rules of a consultation and of one participant's session in it. No I/O.

A `Session` is the sans-I/O core of one signalling connection: `handle` takes a raw frame and returns what to do
(an `Action`) or raises the `ClientError` that says why not. The WebSocket endpoint performs the actions.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Final

from server.exceptions import AlreadyJoined, IllegalTransition, NotJoined, RateLimited, UnknownPeer
from server.protocol import PONG, ClientMessage, Join, Leave, Ping, Relayed, Resume, Role, parse_frame, relay_frame

ROLES: Final[tuple[Role, ...]] = ("citizen", "clinician")


def new_token() -> str:
    """A link token: 192 random bits, URL-safe, 32 characters."""
    return secrets.token_urlsafe(24)


def secret_digest(secret: str) -> str:
    """What the store keeps of a link token or a resume secret: its SHA-256, so a dump of Redis opens nothing."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_resume_secret() -> str:
    """The secret a participant's next connection proves itself with: 192 random bits, URL-safe, 32 characters."""
    return secrets.token_urlsafe(24)


def resume_secret_matches(secret: str, digest: str) -> bool:
    """Whether `secret` is the one whose digest the store holds, compared in constant time."""
    return bool(digest) and hmac.compare_digest(secret_digest(secret), digest)


def new_consultation_id() -> str:
    return "c_" + secrets.token_urlsafe(16)


def new_participant_id() -> str:
    """A fresh id for every join: ids are never reused, so nobody inherits another session's place."""
    return "p_" + secrets.token_urlsafe(16)


class ParticipantState(enum.Enum):
    """Where one connection's participant is. WAITING arrives with the waiting room."""

    JOINING = "joining"
    IN_CALL = "in_call"
    LEFT = "left"


_ALLOWED: Final = {
    ParticipantState.JOINING: {ParticipantState.IN_CALL, ParticipantState.LEFT},
    ParticipantState.IN_CALL: {ParticipantState.LEFT},
    ParticipantState.LEFT: set[ParticipantState](),
}


@dataclass(slots=True)
class TokenBucket:
    """A budget of `burst` at once, refilled at `rate` per second (frames per connection; link checks per address)."""

    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


# --- what a frame asks the endpoint to do ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinAction:
    token: str = field(repr=False)  # a token must never reach a log
    resume: Resume | None = None  # its repr hides the secret


@dataclass(frozen=True, slots=True)
class RelayAction:
    to: str
    #: The addressee's node, or None when this connection has not been told of the addressee: the endpoint
    #: then asks the store (a `peer-joined` lost in a Redis blip must not strand a call).
    node: str | None
    frame: bytes
    kind: str  # the message type, for an `unknown_peer` error

    def unknown(self) -> UnknownPeer:
        return UnknownPeer(f"no participant {self.to} in this consultation", ref=self.kind)


@dataclass(frozen=True, slots=True)
class ReplyAction:
    frame: bytes


@dataclass(frozen=True, slots=True)
class LeaveAction:
    pass


Action = JoinAction | RelayAction | ReplyAction | LeaveAction


@dataclass(slots=True)
class Session:
    """One connection's participant: its state, identity once joined, the peers it may address, its budget."""

    bucket: TokenBucket
    state: ParticipantState = ParticipantState.JOINING
    participant: str | None = None
    consultation: str | None = None
    role: Role | None = None
    #: participant id → id of the server node holding its connection, as this client has been told.
    peers: dict[str, str] = field(default_factory=dict)
    joining: bool = False

    def handle(self, text: str | bytes, now: float) -> Action:
        """Decide what one inbound frame means. Raises a `ClientError` for anything the protocol refuses."""
        if not self.bucket.take(now):
            raise RateLimited("too many frames; slow down")
        message: ClientMessage = parse_frame(text)
        if isinstance(message, Join):
            if self.state is not ParticipantState.JOINING or self.joining:
                raise AlreadyJoined("this connection has already joined", ref="join")
            self.joining = True
            return JoinAction(message.token, message.resume)
        if isinstance(message, Ping):
            return ReplyAction(PONG)
        if self.state is not ParticipantState.IN_CALL:
            raise NotJoined("send join first", ref=message.__struct_config__.tag)  # type: ignore[arg-type]
        if isinstance(message, Leave):
            return LeaveAction()
        return self._relay(message)

    def _relay(self, message: Relayed) -> RelayAction:
        assert self.participant is not None
        kind: str = message.__struct_config__.tag  # type: ignore[assignment]
        action = RelayAction(message.to, self.peers.get(message.to), relay_frame(self.participant, message), kind)
        if message.to == self.participant:
            raise action.unknown()
        return action

    def join_failed(self) -> None:
        self.joining = False

    def joined(self, participant: str, consultation: str, role: Role, peers: dict[str, str]) -> None:
        self._move(ParticipantState.IN_CALL)
        self.joining = False
        self.participant, self.consultation, self.role = participant, consultation, role
        self.peers.update(peers)

    def peer_joined(self, participant: str, node: str) -> None:
        if participant != self.participant:
            self.peers[participant] = node

    def peer_left(self, participant: str) -> None:
        self.peers.pop(participant, None)

    def leave(self) -> None:
        if self.state is not ParticipantState.LEFT:
            self._move(ParticipantState.LEFT)

    def _move(self, target: ParticipantState) -> None:
        if target not in _ALLOWED[self.state]:
            raise IllegalTransition(f"{self.state.value} → {target.value}")
        self.state = target
