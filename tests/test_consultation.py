"""The session core: join before anything else, address only known peers, budgets, state transitions."""

from __future__ import annotations

import json

import pytest

from server import exceptions
from server.consultation import (
    JoinAction,
    LeaveAction,
    ParticipantState,
    RelayAction,
    ReplyAction,
    Session,
    TokenBucket,
    new_participant_id,
    new_resume_secret,
    new_token,
    resume_secret_matches,
    secret_digest,
)
from server.protocol import PONG, Resume

TOKEN = "T" * 32


def session() -> Session:
    return Session(TokenBucket(rate=50, burst=200))


def joined_session() -> Session:
    s = session()
    assert s.handle(json.dumps({"type": "join", "token": TOKEN}), 0.0) == JoinAction(TOKEN)
    s.joined("p_me", "c_1", "citizen", {"p_peer": "node-b"})
    return s


def test_tokens_and_ids_are_long_random_and_distinct() -> None:
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(len(t) == 32 for t in tokens)  # 192 bits of URL-safe base64
    assert len({new_participant_id() for _ in range(1000)}) == 1000
    assert secret_digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_resume_secrets_are_long_random_and_checked_against_their_digest_only() -> None:
    drawn = {new_resume_secret() for _ in range(1000)}
    assert len(drawn) == 1000
    assert all(len(s) == 32 and s.replace("-", "").replace("_", "").isalnum() for s in drawn)  # 192 bits
    secret = new_resume_secret()
    digest = secret_digest(secret)
    assert resume_secret_matches(secret, digest)
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert not resume_secret_matches(flipped, digest)
    assert not resume_secret_matches(secret, digest.upper())
    assert not resume_secret_matches(secret, "")  # a membership stored without a digest cannot be resumed
    assert not resume_secret_matches(digest, digest)  # the digest itself is no secret: it opens nothing


def test_join_carries_the_resume_to_the_endpoint() -> None:
    s = session()
    frame = {"type": "join", "token": TOKEN, "resume": {"participant": "p_me", "secret": "S" * 32}}
    assert s.handle(json.dumps(frame), 0.0) == JoinAction(TOKEN, Resume("p_me", "S" * 32))


def test_only_join_and_ping_before_join() -> None:
    s = session()
    with pytest.raises(exceptions.NotJoined):
        s.handle(json.dumps({"type": "offer", "to": "p_x", "sdp": "v=0"}), 0.0)
    with pytest.raises(exceptions.NotJoined):
        s.handle(json.dumps({"type": "leave"}), 0.0)
    assert s.handle('{"type": "ping"}', 0.0) == ReplyAction(PONG)
    assert s.state is ParticipantState.JOINING


def test_second_join_is_refused_even_while_the_first_is_in_flight() -> None:
    s = session()
    s.handle(json.dumps({"type": "join", "token": TOKEN}), 0.0)
    with pytest.raises(exceptions.AlreadyJoined):
        s.handle(json.dumps({"type": "join", "token": TOKEN}), 0.0)
    s.join_failed()
    assert s.handle(json.dumps({"type": "join", "token": TOKEN}), 0.0) == JoinAction(TOKEN)


def test_relay_goes_to_the_peers_node_with_the_sender_stamped() -> None:
    s = joined_session()
    action = s.handle(json.dumps({"type": "answer", "to": "p_peer", "sdp": "v=0"}), 0.0)
    assert isinstance(action, RelayAction)
    assert (action.to, action.node) == ("p_peer", "node-b")
    assert json.loads(action.frame) == {"type": "answer", "from": "p_me", "sdp": "v=0"}


def test_relay_to_oneself_is_refused() -> None:
    s = joined_session()
    with pytest.raises(exceptions.UnknownPeer):
        s.handle(json.dumps({"type": "offer", "to": "p_me", "sdp": "v=0"}), 0.0)


def test_a_peer_not_yet_announced_is_left_for_the_store_to_resolve() -> None:
    s = joined_session()
    action = s.handle(json.dumps({"type": "offer", "to": "p_stranger", "sdp": "v=0"}), 0.0)
    assert isinstance(action, RelayAction)
    assert action.node is None
    assert action.unknown().code == "unknown_peer"
    assert action.unknown().ref == "offer"


def test_peers_follow_joins_and_leaves() -> None:
    s = joined_session()
    s.peer_joined("p_new", "node-c")
    action = s.handle(json.dumps({"type": "offer", "to": "p_new", "sdp": "v"}), 0.0)
    assert isinstance(action, RelayAction)
    assert action.node == "node-c"
    s.peer_left("p_new")
    action = s.handle(json.dumps({"type": "offer", "to": "p_new", "sdp": "v"}), 0.0)
    assert isinstance(action, RelayAction)
    assert action.node is None


def test_leave_and_illegal_transitions() -> None:
    s = joined_session()
    assert s.handle('{"type": "leave"}', 0.0) == LeaveAction()
    s.leave()
    assert s.state is ParticipantState.LEFT
    with pytest.raises(exceptions.IllegalTransition):
        s.joined("p_again", "c_1", "citizen", {})


def test_rate_limit_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    assert all(bucket.take(0.0) for _ in range(5))
    assert not bucket.take(0.0)
    assert bucket.take(0.1)  # one frame's worth refilled
    assert not bucket.take(0.1)
    s = Session(TokenBucket(rate=1, burst=3))
    for _ in range(3):
        s.handle('{"type": "ping"}', 0.0)
    with pytest.raises(exceptions.RateLimited) as caught:
        s.handle('{"type": "ping"}', 0.0)
    assert caught.value.close_code == 1008
