"""Messages between server nodes: the envelope that carries a client frame to the node holding its addressees.

Each node subscribes to one Redis channel, `stue:node:<node id>`, and fans what arrives out to its own
connections. An envelope is one header line and the frame, already encoded for the client, so the receiving node
never re-encodes it:

    <kind> <recipient>[,<recipient>...] [<subject> <subject node>]\\n<frame bytes>

No I/O here.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class Kind(enum.Enum):
    FORWARD = "F"  # deliver the frame
    PEER_JOINED = "J"  # the subject joined: recipients may now address it, at subject node
    PEER_LEFT = "L"  # the subject left: recipients may no longer address it
    KICK = "K"  # recipients are replaced by another connection: send the frame and close. The subject, when
    # set, is the resume digest of the one connection to close (a later connection of the participant stays); the
    # subject node, when set, is where the participant resumed (the closed connection hands its frames on)
    HANDED_OVER = "H"  # to the node where the recipient resumed: its old node has handed on (held) what the
    # connection named by the subject (its resume digest) wrote and its client may not have read
    REPLY = "R"  # never on the bus: a connection's answer to its own client's frame (pong, error), not replayed


@dataclass(frozen=True, slots=True)
class Envelope:
    kind: Kind
    recipients: tuple[str, ...]
    frame: bytes
    subject: str = ""
    subject_node: str = ""


def channel(node: str) -> str:
    return f"stue:node:{node}"


def forward_header(recipient: str) -> bytes:
    """The header line of a FORWARD envelope to one participant: the envelope is this followed by the frame."""
    return b"F " + recipient.encode() + b"\n"


def encode_forward(recipient: str, frame: bytes) -> bytes:
    """The hot path: one relayed frame to one participant."""
    return forward_header(recipient) + frame


def encode(envelope: Envelope) -> bytes:
    header = f"{envelope.kind.value} {','.join(envelope.recipients)}"
    if envelope.subject:
        header += f" {envelope.subject} {envelope.subject_node}"
    return header.encode() + b"\n" + envelope.frame


def decode(payload: bytes) -> Envelope:
    """Parse an envelope published by a Stue node. Raises ValueError on anything else."""
    header, sep, frame = payload.partition(b"\n")
    if not sep:
        raise ValueError("envelope has no header line")
    parts = header.decode().split(" ")
    kind = Kind(parts[0])
    recipients = tuple(parts[1].split(",")) if len(parts) > 1 and parts[1] else ()
    subject, subject_node = (parts[2], parts[3]) if len(parts) == 4 else ("", "")
    return Envelope(kind, recipients, frame, subject, subject_node)


def by_node(members: Mapping[str, str]) -> dict[str, list[str]]:
    """Group participant ids (participant → node) by the node that holds them."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for participant, node in members.items():
        grouped[node].append(participant)
    return dict(grouped)


def broadcast(
    kind: Kind, members: Mapping[str, str], frame: bytes, subject: str = "", subject_node: str = ""
) -> Iterable[tuple[str, Envelope]]:
    """One envelope per node, addressed to that node's members."""
    for node, recipients in by_node(members).items():
        yield node, Envelope(kind, tuple(recipients), frame, subject, subject_node)
