"""Signalling protocol v1: parse and validate client frames, build server frames. No I/O.

`docs/protocol.md` is the specification; this module is its executable form. `parse_frame` turns raw text into
one of the typed client messages or raises a `ClientError` subclass; the `encode_*` helpers produce the exact
bytes the server sends.
"""

from __future__ import annotations

import json
from typing import Annotated, Final, Literal

import msgspec

from server.exceptions import (
    BadField,
    BadJSON,
    DuplicateKey,
    MissingField,
    NotAnObject,
    TooLarge,
    UnknownField,
    UnknownType,
)

MAX_FRAME_BYTES: Final = 65_536
#: What the WebSocket layer itself accepts; frames between the two limits get a `too_large` error frame.
TRANSPORT_MAX_BYTES: Final = 2 * MAX_FRAME_BYTES

Role = Literal["citizen", "clinician"]
PeerLeftReason = Literal["left", "disconnected", "timeout", "replaced"]

ParticipantId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Token = Annotated[str, msgspec.Meta(min_length=16, max_length=128)]
#: A resume secret as the server hands it out: URL-safe base64 (32 characters today; room to grow).
ResumeSecret = Annotated[str, msgspec.Meta(min_length=16, max_length=128, pattern="^[A-Za-z0-9_-]+$")]
Sdp = Annotated[str, msgspec.Meta(min_length=1, max_length=60_000)]
#: A count of frames a client read (an integer JavaScript holds exactly).
FrameCount = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]


class _ClientMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    """Base of every client → server message."""


class Resume(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """`join.resume`: continue as `participant`, proven by the secret from that participant's last `joined`."""

    participant: ParticipantId
    secret: ResumeSecret
    #: Frames the client read after that `joined`, on that socket: the server replays those it wrote after them.
    received: FrameCount | None = None

    def __repr__(self) -> str:
        # The secret is a bearer secret, like the token.
        return f"Resume(participant={self.participant!r}, secret=<hidden>, received={self.received!r})"


class Join(_ClientMessage, tag="join", frozen=True, omit_defaults=True):
    token: Token
    resume: Resume | None = None

    def __repr__(self) -> str:
        return f"Join(token=<hidden>, resume={self.resume!r})"  # a token must never reach a log


class Offer(_ClientMessage, tag="offer", frozen=True):
    to: ParticipantId
    sdp: Sdp


class Answer(_ClientMessage, tag="answer", frozen=True):
    to: ParticipantId
    sdp: Sdp


class IceCandidate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The fields of the browser's `RTCIceCandidateInit`."""

    candidate: Annotated[str, msgspec.Meta(max_length=1024)]
    sdpMid: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    sdpMLineIndex: Annotated[int, msgspec.Meta(ge=0, le=1023)] | None = None
    usernameFragment: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class Candidate(_ClientMessage, tag="candidate", frozen=True):
    to: ParticipantId
    candidate: IceCandidate | None


class Leave(_ClientMessage, tag="leave", frozen=True):
    pass


class Ping(_ClientMessage, tag="ping", frozen=True):
    pass


ClientMessage = Join | Offer | Answer | Candidate | Leave | Ping
#: Messages relayed to one peer.
Relayed = Offer | Answer | Candidate

_DECODERS: Final[dict[str, msgspec.json.Decoder[ClientMessage]]] = {
    cls.__struct_config__.tag: msgspec.json.Decoder(cls)  # type: ignore[misc]
    for cls in (Join, Offer, Answer, Candidate, Leave, Ping)
}


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise DuplicateKey(f"key {duplicate!r} appears more than once")
    return obj


_STRICT_JSON: Final = json.JSONDecoder(object_pairs_hook=_reject_duplicates)


def parse_frame(text: str | bytes) -> ClientMessage:
    """Validate one client frame and return the typed message, or raise the `ClientError` that says why not."""
    data = text.encode() if isinstance(text, str) else text
    if len(data) > MAX_FRAME_BYTES:
        raise TooLarge(f"frame is {len(data)} bytes; the limit is {MAX_FRAME_BYTES}")
    try:
        # The stdlib decoder only rejects duplicate keys (msgspec keeps the last one silently); msgspec does
        # the typed validation below.
        obj = _STRICT_JSON.decode(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadJSON(f"frame is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise NotAnObject(f"frame is a JSON {type(obj).__name__}, not an object")
    kind = obj.get("type")
    decoder = _DECODERS.get(kind) if isinstance(kind, str) else None
    if decoder is None:
        raise UnknownType(f"unknown message type {kind!r}" if kind is not None else "frame has no 'type'")
    try:
        message = decoder.decode(data)
    except msgspec.ValidationError as exc:
        reason = str(exc)
        if "missing required field" in reason:
            raise MissingField(reason, ref=kind) from None
        if "unknown field" in reason:
            raise UnknownField(reason, ref=kind) from None
        raise BadField(reason, ref=kind) from None
    if isinstance(message, Candidate) and message.candidate is not None:
        init = message.candidate
        if init.sdpMid is None and init.sdpMLineIndex is None and init.candidate:
            # Browsers refuse such a candidate (TypeError); refuse it here, where the sender learns why.
            raise BadField("a candidate needs sdpMid or sdpMLineIndex", ref=kind)
    return message


class LinkCheck(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of `POST /api/link`: is this link's token good? (The call page asks before it asks for the camera.)"""

    token: Token


# --- server → client -------------------------------------------------------------------------------------


class _ServerMessage(msgspec.Struct, frozen=True, tag_field="type"):
    """Base of every server → client message."""


class IceServer(msgspec.Struct, frozen=True, omit_defaults=True):
    """An `RTCIceServer` as the browser takes it."""

    urls: str | list[str]
    username: str | None = None
    credential: str | None = None


class PeerEntry(msgspec.Struct, frozen=True):
    participant: str
    role: Role
    polite: bool


class Joined(_ServerMessage, tag="joined", frozen=True):
    participant: str
    role: Role
    consultation: str
    peers: list[PeerEntry]
    ice_servers: list[IceServer]
    #: The secret that lets the next connection resume this participant; a new one on every `joined`. (The
    #: defaults only let Python clients read a server that predates resume; this server always sends both.)
    resume: str = ""
    #: True when this join continued an earlier connection's participant (same id, same peers).
    resumed: bool = False

    #: After a resume: how many frames follow this one at once, relayed to this participant while it was away.
    held: int = 0

    def __repr__(self) -> str:
        return (
            f"Joined(participant={self.participant!r}, role={self.role!r}, consultation={self.consultation!r}, "
            f"peers={self.peers!r}, ice_servers={self.ice_servers!r}, resume=<hidden>, resumed={self.resumed!r}, "
            f"held={self.held!r})"
        )


class PeerJoined(_ServerMessage, tag="peer-joined", frozen=True):
    participant: str
    role: Role
    polite: bool = True


class PeerLeft(_ServerMessage, tag="peer-left", frozen=True):
    participant: str
    reason: PeerLeftReason


class RelayedOffer(_ServerMessage, tag="offer", frozen=True):
    sender: str = msgspec.field(name="from")
    sdp: str


class RelayedAnswer(_ServerMessage, tag="answer", frozen=True):
    sender: str = msgspec.field(name="from")
    sdp: str


class RelayedCandidate(_ServerMessage, tag="candidate", frozen=True):
    sender: str = msgspec.field(name="from")
    candidate: IceCandidate | None


class Pong(_ServerMessage, tag="pong", frozen=True):
    pass


class Error(_ServerMessage, tag="error", frozen=True):
    code: str
    message: str
    ref: str | None = None


#: What an addressee receives of a relayed message.
RelayedMessage = RelayedOffer | RelayedAnswer | RelayedCandidate
ServerMessage = Joined | PeerJoined | PeerLeft | RelayedOffer | RelayedAnswer | RelayedCandidate | Pong | Error

_encoder: Final = msgspec.json.Encoder()
PONG: Final = _encoder.encode(Pong())


def encode(message: ServerMessage) -> bytes:
    return _encoder.encode(message)


def relay_frame(sender: str, message: Relayed) -> bytes:
    """The frame the addressee receives: the same content, with `from` stamped from the sender's connection."""
    relayed: ServerMessage
    if isinstance(message, Offer):
        relayed = RelayedOffer(sender=sender, sdp=message.sdp)
    elif isinstance(message, Answer):
        relayed = RelayedAnswer(sender=sender, sdp=message.sdp)
    else:
        relayed = RelayedCandidate(sender=sender, candidate=message.candidate)
    return _encoder.encode(relayed)


_server_decoder: Final = msgspec.json.Decoder(ServerMessage)


def decode_server_frame(data: bytes | str) -> ServerMessage:
    """Parse a server frame, for clients written in Python (the probe, tests, benchmarks).

    Unknown fields are ignored, so a client keeps working when a later server version adds one.
    """
    message: ServerMessage = _server_decoder.decode(data)
    return message


def encode_client_message(message: ClientMessage) -> bytes:
    """Encode a client → server message, for clients written in Python."""
    return _encoder.encode(message)
