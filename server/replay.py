"""Replay after a resume: frames a connection wrote that its client may never have read. No I/O.

A socket can stay open on the server's side after the client's network changed (half-open): what the server writes
to it then is lost, and the client only learns of the loss when it reconnects. So a connection numbers the frames it
writes after `joined` (1, 2, …) and keeps the relayed ones among the last `RECENT_FRAMES`. When it ends without
`leave` (its socket dropped, or a resume replaced it), it hands those written in the last `WINDOW_S` on to the
frames held for its participant, each tagged with the connection and its number. The resume says how many frames
the client read after that connection's `joined` (`resume.received`); a tagged frame is delivered again only when
its number is above that, and only to the resume of the connection that wrote it.

A tagged frame is `#<connection> <number> <frame>`. A frame the server sends a client is a JSON object, so it never
starts with `#`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

#: Relayed frames a connection keeps for a replay: a few renegotiations' worth (an offer and its candidates).
RECENT_FRAMES: Final = 64
#: Older frames are not replayed. A dead socket is noticed within about 45 s (the client's keep-alive, 20 s + 20 s,
#: then a reconnect), so a frame written before that was written to a live socket and read.
WINDOW_S: Final = 60.0
#: How much of a connection's resume digest names it in a tag (64 bits: unique among one participant's sockets).
CONNECTION_TAG_CHARS: Final = 16

_MARK: Final = b"#"


def connection_tag(resume_digest: str) -> str:
    return resume_digest[:CONNECTION_TAG_CHARS]


def tag(connection: str, number: int, frame: bytes) -> bytes:
    return b"#%s %d %s" % (connection.encode(), number, frame)


def untag(frame: bytes) -> tuple[str, int, bytes] | None:
    """(connection, number, frame) of a tagged frame; None for a frame that is not tagged (or not well tagged)."""
    if not frame.startswith(_MARK):
        return None
    parts = frame[1:].split(b" ", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0].decode("ascii", "replace"), int(parts[1]), parts[2]


class Written:
    """What one connection wrote after `joined`: how many frames, and the latest relayed ones with their numbers.

    Kept in three deques of untracked objects (bytes, int, float), not one of tuples: a tuple per relayed frame that
    lives for 64 frames outlives the young garbage-collector generations, and thousands of them made full
    collections frequent on a busy server (about a fifth more CPU per relayed frame in the relay benchmark).
    """

    __slots__ = ("count", "frames", "numbers", "times")

    def __init__(self) -> None:
        self.count = 0
        # Made at the first relayed frame, so an idle connection keeps nothing.
        self.frames: deque[bytes] | None = None
        self.numbers: deque[int] = _EMPTY
        self.times: deque[float] = _EMPTY

    def wrote(self, frame: bytes, relayed: bool, now: float) -> None:
        self.count += 1
        if relayed:
            if self.frames is None:
                self.frames = deque(maxlen=RECENT_FRAMES)
                self.numbers = deque(maxlen=RECENT_FRAMES)
                self.times = deque(maxlen=RECENT_FRAMES)
            self.frames.append(frame)
            self.numbers.append(self.count)
            self.times.append(now)

    def unread(self, connection: str, now: float) -> list[bytes]:
        """The relayed frames of the last `WINDOW_S`, tagged, oldest first; forgotten here."""
        frames, numbers, times = self.frames or (), self.numbers, self.times
        self.frames, self.numbers, self.times = None, _EMPTY, _EMPTY
        return [
            tag(connection, number, frame)
            for number, when, frame in zip(numbers, times, frames, strict=True)
            if now - when <= WINDOW_S
        ]


_EMPTY: Final[deque] = deque(maxlen=0)  # type: ignore[type-arg]  # shared, never appended to


@dataclass(frozen=True, slots=True)
class Replay:
    """What a resumed connection delivers of the tagged frames its participant's previous connection handed on."""

    connection: str  # the tag of the connection resumed
    received: int | None  # how many frames its client read after `joined` there; None: it did not say

    def admit(self, frame: bytes) -> bytes | None:
        """The frame to deliver: an untagged one as it is; a tagged one without its tag when it is from the resumed
        connection and its client did not read it; otherwise None. A client that did not say what it read gets no
        tagged frames: a frame delivered twice (an offer) would do more harm than one lost, which it repairs."""
        tagged = untag(frame)
        if tagged is None:
            return frame
        connection, number, inner = tagged
        if self.received is None or connection != self.connection or number <= self.received:
            return None
        return inner


#: For a connection that did not resume: tagged frames (for an earlier connection of someone else) are dropped.
NO_REPLAY: Final = Replay(connection="", received=None)
