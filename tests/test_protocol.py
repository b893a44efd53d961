"""Protocol v1 parsing and validation: every class of bad frame maps to its error code."""

from __future__ import annotations

import contextlib
import json
import random

import pytest

from server import exceptions
from server.consultation import JoinAction
from server.protocol import (
    MAX_FRAME_BYTES,
    Answer,
    Candidate,
    IceCandidate,
    Join,
    Joined,
    Leave,
    Offer,
    PeerEntry,
    Ping,
    Resume,
    decode_server_frame,
    encode,
    encode_client_message,
    parse_frame,
    relay_frame,
)

TOKEN = "A" * 32
SECRET = "s3cr3t-_" * 4  # 32 URL-safe characters, like the server's
RESUME = {"participant": "p_1", "secret": SECRET}


def frame(**fields: object) -> str:
    return json.dumps(fields)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (frame(type="join", token=TOKEN), Join(token=TOKEN)),
        (frame(type="join", token=TOKEN, resume=RESUME), Join(token=TOKEN, resume=Resume("p_1", SECRET))),
        (frame(type="join", token=TOKEN, resume=None), Join(token=TOKEN)),
        (
            frame(type="join", token=TOKEN, resume={**RESUME, "secret": "x" * 128}),
            Join(TOKEN, Resume("p_1", "x" * 128)),
        ),
        (
            frame(type="join", token=TOKEN, resume={**RESUME, "received": 0}),
            Join(TOKEN, Resume("p_1", SECRET, received=0)),
        ),
        (
            frame(type="join", token=TOKEN, resume={**RESUME, "received": 2**53 - 1}),
            Join(TOKEN, Resume("p_1", SECRET, received=2**53 - 1)),
        ),
        (frame(type="join", token=TOKEN, resume={**RESUME, "received": None}), Join(TOKEN, Resume("p_1", SECRET))),
        (frame(type="offer", to="p_1", sdp="v=0"), Offer(to="p_1", sdp="v=0")),
        (frame(type="answer", to="p_1", sdp="v=0"), Answer(to="p_1", sdp="v=0")),
        (frame(type="candidate", to="p_1", candidate=None), Candidate(to="p_1", candidate=None)),
        (
            frame(
                type="candidate",
                to="p_1",
                candidate={"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host", "sdpMid": "0", "sdpMLineIndex": 0},
            ),
            Candidate(to="p_1", candidate=IceCandidate("candidate:1 1 udp 1 1.2.3.4 5 typ host", "0", 0)),
        ),
        (frame(type="leave"), Leave()),
        (frame(type="ping"), Ping()),
    ],
)
def test_valid_messages_parse(text: str, expected: object) -> None:
    assert parse_frame(text) == expected
    assert parse_frame(text.encode()) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{", exceptions.BadJSON),
        ("", exceptions.BadJSON),
        (b"\xff\xfe", exceptions.BadJSON),
        ("[1, 2]", exceptions.NotAnObject),
        ('"join"', exceptions.NotAnObject),
        ("null", exceptions.NotAnObject),
        ("{}", exceptions.UnknownType),
        (frame(type="hello"), exceptions.UnknownType),
        (frame(type=7), exceptions.UnknownType),
        (frame(type=None), exceptions.UnknownType),
        (frame(type="offer", to="p_1"), exceptions.MissingField),
        (frame(type="join"), exceptions.MissingField),
        (frame(type="candidate", to="p_1"), exceptions.MissingField),
        (frame(type="offer", to="p_1", sdp="v=0", **{"from": "p_2"}), exceptions.UnknownField),
        (frame(type="ping", extra=1), exceptions.UnknownField),
        (frame(type="candidate", to="p", candidate={"candidate": "c", "foo": 1}), exceptions.UnknownField),
        (frame(type="offer", to=1, sdp="v=0"), exceptions.BadField),
        (frame(type="offer", to="p_1", sdp=""), exceptions.BadField),
        (frame(type="offer", to="p_1", sdp="x" * 60_001), exceptions.BadField),
        (frame(type="offer", to="", sdp="v=0"), exceptions.BadField),
        (frame(type="join", token="short"), exceptions.BadField),
        (frame(type="join", token=["A" * 32]), exceptions.BadField),
        (frame(type="join", token=TOKEN, resume="p_1"), exceptions.BadField),
        (frame(type="join", token=TOKEN, resume=[RESUME]), exceptions.BadField),
        (frame(type="join", token=TOKEN, resume={**RESUME, "participant": 1}), exceptions.BadField),
        (frame(type="join", token=TOKEN, resume={**RESUME, "participant": ""}), exceptions.BadField),
        (frame(type="join", token=TOKEN, resume={**RESUME, "participant": "p" * 65}), exceptions.BadField),
        (frame(type="join", token=TOKEN, resume={**RESUME, "secret": None}), exceptions.BadField),
        (frame(type="join", token=TOKEN, resume={**RESUME, "secret": "x" * 15}), exceptions.BadField),
        (frame(type="join", token=TOKEN, resume={**RESUME, "secret": "x" * 129}), exceptions.BadField),
        (frame(type="join", token=TOKEN, resume={**RESUME, "secret": "+/" * 16}), exceptions.BadField),
        (frame(type="join", token=TOKEN, resume={**RESUME, "secret": SECRET + "="}), exceptions.BadField),
        (frame(type="join", token=TOKEN, resume={**RESUME, "received": -1}), exceptions.BadField),
        (frame(type="join", token=TOKEN, resume={**RESUME, "received": 2**53}), exceptions.BadField),
        (frame(type="join", token=TOKEN, resume={**RESUME, "received": 1.5}), exceptions.BadField),
        (frame(type="join", token=TOKEN, resume={**RESUME, "received": 2.0}), exceptions.BadField),
        (frame(type="join", token=TOKEN, resume={**RESUME, "received": True}), exceptions.BadField),
        (frame(type="join", token=TOKEN, resume={**RESUME, "received": "3"}), exceptions.BadField),
        (frame(type="join", token=TOKEN, resume={"participant": "p_1"}), exceptions.MissingField),
        (frame(type="join", token=TOKEN, resume={"secret": SECRET}), exceptions.MissingField),
        (frame(type="join", token=TOKEN, resume={**RESUME, "role": "clinician"}), exceptions.UnknownField),
        (frame(type="join", token=TOKEN, resume={**RESUME, "resume": RESUME}), exceptions.UnknownField),
        (frame(type="join", resume=RESUME), exceptions.MissingField),
        (
            f'{{"type": "join", "token": "{TOKEN}", "resume": {{"participant": "p_1", "participant": "p_2", '
            f'"secret": "{SECRET}"}}}}',
            exceptions.DuplicateKey,
        ),
        (frame(type="candidate", to="p", candidate="candidate:1"), exceptions.BadField),
        (frame(type="candidate", to="p", candidate={"candidate": "c", "sdpMLineIndex": -1}), exceptions.BadField),
        (frame(type="candidate", to="p", candidate={"candidate": "c", "sdpMLineIndex": "0"}), exceptions.BadField),
        (
            frame(type="candidate", to="p", candidate={"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host"}),
            exceptions.BadField,
        ),
        ('{"type": "ping", "type": "ping"}', exceptions.DuplicateKey),
        ('{"type": "offer", "to": "p_1", "to": "p_2", "sdp": "v=0"}', exceptions.DuplicateKey),
        (
            '{"type": "candidate", "to": "p", "candidate": {"candidate": "a", "candidate": "b"}}',
            exceptions.DuplicateKey,
        ),
    ],
)
def test_bad_frames_raise_their_error(text: str | bytes, error: type[exceptions.ClientError]) -> None:
    with pytest.raises(error) as caught:
        parse_frame(text)
    assert caught.value.code == error.code
    assert caught.value.close_code is None


def test_error_names_the_type_of_the_offending_frame() -> None:
    with pytest.raises(exceptions.MissingField) as caught:
        parse_frame(frame(type="offer", to="p_1"))
    assert caught.value.ref == "offer"


def test_frame_at_the_limit_is_accepted_and_one_byte_more_is_too_large() -> None:
    base = frame(type="offer", to="p_1", sdp="")
    filler = "x" * 59_000
    padding = MAX_FRAME_BYTES - len(base) - len(filler)
    at_limit = base[:-2] + filler + '"' + " " * padding + "}"
    assert len(at_limit.encode()) == MAX_FRAME_BYTES
    assert isinstance(parse_frame(at_limit), Offer)
    with pytest.raises(exceptions.TooLarge) as caught:
        parse_frame(at_limit + " ")
    assert caught.value.close_code == 1009


def test_size_limit_counts_bytes_not_characters() -> None:
    text = frame(type="offer", to="p_1", sdp="æ" * 40_000)  # 80,000 bytes in UTF-8
    with pytest.raises(exceptions.TooLarge):
        parse_frame(text)


def test_relay_stamps_the_sender_and_drops_the_addressee() -> None:
    relayed = json.loads(relay_frame("p_sender", Offer(to="p_1", sdp="v=0")))
    assert relayed == {"type": "offer", "from": "p_sender", "sdp": "v=0"}
    relayed = json.loads(relay_frame("p_sender", Candidate(to="p_1", candidate=None)))
    assert relayed == {"type": "candidate", "from": "p_sender", "candidate": None}


def test_server_frames_round_trip() -> None:
    joined = Joined("p_1", "citizen", "c_1", [PeerEntry("p_2", "clinician", polite=False)], [], SECRET, True, 2)
    assert decode_server_frame(encode(joined)) == joined
    assert json.loads(encode(joined)) == {
        "type": "joined",
        "participant": "p_1",
        "role": "citizen",
        "consultation": "c_1",
        "peers": [{"participant": "p_2", "role": "clinician", "polite": False}],
        "ice_servers": [],
        "resume": SECRET,
        "resumed": True,
        "held": 2,
    }


def test_joined_always_carries_resume_and_resumed() -> None:
    fresh = json.loads(encode(Joined("p_1", "citizen", "c_1", [], [], SECRET, False)))
    assert (fresh["resume"], fresh["resumed"]) == (SECRET, False)


def test_a_join_without_resume_is_encoded_without_it() -> None:
    assert json.loads(encode_client_message(Join(TOKEN))) == {"type": "join", "token": TOKEN}
    with_resume = json.loads(encode_client_message(Join(TOKEN, Resume("p_1", SECRET))))
    assert with_resume == {"type": "join", "token": TOKEN, "resume": RESUME}
    with_received = json.loads(encode_client_message(Join(TOKEN, Resume("p_1", SECRET, received=7))))
    assert with_received == {"type": "join", "token": TOKEN, "resume": {**RESUME, "received": 7}}


def test_reprs_hide_the_token_and_the_resume_secret() -> None:
    join = parse_frame(frame(type="join", token=TOKEN, resume=RESUME))
    joined = Joined("p_1", "citizen", "c_1", [], [], SECRET, True)
    for shown in (repr(join), str(join), repr(joined), repr(JoinAction(TOKEN, Resume("p_1", SECRET)))):
        assert TOKEN not in shown
        assert SECRET not in shown
        assert "<hidden>" in shown
    assert "p_1" in repr(join)  # the participant id is not a secret; it helps reading logs


def test_random_garbage_only_ever_raises_client_errors() -> None:
    rng = random.Random(7)
    alphabet = '{}[]":,0123456789tfnule\\ abcxyz' + "type to sdp candidate join offer"
    samples = [frame(type="offer", to="p", sdp="v"), frame(type="candidate", to="p", candidate={"candidate": "c"})]
    for _ in range(5000):
        if rng.random() < 0.5:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        else:
            base = list(rng.choice(samples))
            for _ in range(rng.randint(1, 4)):
                base[rng.randrange(len(base))] = rng.choice(alphabet)
            text = "".join(base)
        with contextlib.suppress(exceptions.ClientError):
            parse_frame(text)
