"""Replay after a resume, the rules without sockets: what a connection keeps, how it tags, what a resume delivers."""

from __future__ import annotations

from server.replay import NO_REPLAY, RECENT_FRAMES, WINDOW_S, Replay, Written, connection_tag, tag, untag

OFFER = b'{"type":"offer","from":"p_2","sdp":"v=0"}'
PONG = b'{"type":"pong"}'


def test_a_tag_names_the_connection_and_the_number_and_comes_off_whole() -> None:
    tagged = tag("c0ffee", 17, OFFER)
    assert tagged == b"#c0ffee 17 " + OFFER
    assert untag(tagged) == ("c0ffee", 17, OFFER)
    assert untag(OFFER) is None
    for malformed in (b"#", b"#c0ffee", b"#c0ffee x " + OFFER, b"#c0ffee -1 " + OFFER):
        assert untag(malformed) is None


def test_a_connection_is_named_by_the_start_of_its_resume_digest() -> None:
    assert connection_tag("ab" * 32) == "ab" * 8


def test_every_frame_written_is_counted_and_only_relayed_ones_are_kept() -> None:
    written = Written()
    assert written.frames is None  # an idle connection keeps nothing
    written.wrote(OFFER, relayed=True, now=0.0)
    written.wrote(PONG, relayed=False, now=0.0)
    written.wrote(OFFER, relayed=True, now=0.0)
    assert written.count == 3
    assert written.unread("c", now=1.0) == [tag("c", 1, OFFER), tag("c", 3, OFFER)]
    assert written.unread("c", now=1.0) == []  # handed on once


def test_only_the_latest_frames_of_the_window_are_kept() -> None:
    written = Written()
    for number in range(1, RECENT_FRAMES + 11):
        written.wrote(b"%d" % number, relayed=True, now=float(number))
    # The last RECENT_FRAMES are 11–74, and of those, the frames numbered 11–18 are older than the window.
    numbers = [untag(frame)[1] for frame in written.unread("c", now=19 + WINDOW_S)]  # type: ignore[index]
    assert numbers == list(range(19, RECENT_FRAMES + 11))


def test_a_resume_gets_what_its_client_did_not_read_of_the_connection_it_resumed() -> None:
    replay = Replay(connection="old", received=5)
    assert replay.admit(OFFER) == OFFER  # held while away: never read
    assert replay.admit(tag("old", 5, OFFER)) is None  # read
    assert replay.admit(tag("old", 6, OFFER)) == OFFER  # written, not read
    assert replay.admit(tag("older", 6, OFFER)) is None  # from another connection: its count says nothing of it


def test_a_resume_that_does_not_say_what_it_read_gets_no_tagged_frame() -> None:
    assert Replay(connection="old", received=None).admit(tag("old", 1, OFFER)) is None
    assert NO_REPLAY.admit(tag("", 1, OFFER)) is None
    assert NO_REPLAY.admit(OFFER) == OFFER
