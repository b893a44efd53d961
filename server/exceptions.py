"""Every error a client or the environment can cause, each with its protocol error code.

Handlers raise these; `server.endpoint` turns a `ClientError` into an `error` frame (and a close, when
`close_code` is set) in one place.
"""

from __future__ import annotations


class StueError(Exception):
    """Base class of all Stue errors."""


class ConfigError(StueError):
    """Raised at start-up when a `STUE_*` setting is invalid or a resource it names is unusable."""


class ClientError(StueError):
    """Raised when a client's frame cannot be accepted. `code` goes on the wire; the message is for developers."""

    code = "bad_frame"
    #: WebSocket close code to end the connection with, or None to keep it open.
    close_code: int | None = None

    def __init__(self, message: str, *, ref: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The `type` of the offending frame, when known.
        self.ref = ref


class BadJSON(ClientError):
    """Raised when a frame is not valid UTF-8 JSON."""

    code = "bad_json"


class DuplicateKey(ClientError):
    """Raised when an object in a frame repeats a key (two parsers could read it differently)."""

    code = "duplicate_key"


class NotAnObject(ClientError):
    """Raised when a frame is valid JSON but not an object."""

    code = "not_an_object"


class UnknownType(ClientError):
    """Raised when `type` is missing, not a string, or names no message of the protocol."""

    code = "unknown_type"


class MissingField(ClientError):
    """Raised when a required field is absent."""

    code = "missing_field"


class UnknownField(ClientError):
    """Raised when a frame carries a field its type does not have."""

    code = "unknown_field"


class BadField(ClientError):
    """Raised when a field has the wrong type, length or range."""

    code = "bad_field"


class BinaryFrame(ClientError):
    """Raised when a client sends a binary frame; the protocol is text only."""

    code = "binary_frame"


class NotJoined(ClientError):
    """Raised when a message other than `join` arrives before `join`."""

    code = "not_joined"


class JoinTimeout(ClientError):
    """Raised when a connection has not sent `join` within the join deadline."""

    code = "join_timeout"
    close_code = 1008


class AlreadyJoined(ClientError):
    """Raised when `join` arrives on a connection that has joined."""

    code = "already_joined"


class UnknownPeer(ClientError):
    """Raised when `to` names no current participant of the sender's consultation (or the sender)."""

    code = "unknown_peer"


class BadToken(ClientError):
    """Raised when a join token is unknown, revoked or expired."""

    code = "bad_token"
    close_code = 4401


class TooLarge(ClientError):
    """Raised when a frame exceeds the protocol's size limit."""

    code = "too_large"
    close_code = 1009


class RateLimited(ClientError):
    """Raised when a connection sends faster than its budget allows."""

    code = "rate_limited"
    close_code = 1008


class Replaced(ClientError):
    """Raised on a connection whose link has joined again from another connection."""

    code = "replaced"
    close_code = 4409


class SlowConsumer(ClientError):
    """Raised when frames for a connection pile up faster than it reads them."""

    code = "slow_consumer"
    close_code = 1008


class Internal(ClientError):
    """Raised when the server cannot serve a frame for reasons of its own (e.g. Redis unreachable)."""

    code = "internal"
    close_code = 1011


class IllegalTransition(StueError):
    """Raised when a participant's state machine is asked for a transition it does not allow (a bug)."""
