"""Envelopes between nodes."""

from __future__ import annotations

import pytest

from server import routing
from server.routing import Envelope, Kind


def test_envelopes_round_trip() -> None:
    for envelope in [
        Envelope(Kind.FORWARD, ("p_1",), b'{"type":"offer"}'),
        Envelope(Kind.PEER_JOINED, ("p_1", "p_2"), b"{}\n{}", "p_3", "node-x"),
        Envelope(Kind.PEER_LEFT, ("p_1",), b"{}", "p_3", ""),
        Envelope(Kind.KICK, ("p_1",), b""),
        Envelope(Kind.KICK, ("p_1",), b"{}", "ab" * 32, ""),  # only the connection with this resume digest
        Envelope(Kind.KICK, ("p_1",), b"{}", "ab" * 32, "node-y"),  # ... which hands its frames on: p_1 is at node-y
        Envelope(Kind.HANDED_OVER, ("p_1",), b"", "ab" * 32, "node-x"),  # node-x has held what it handed on
    ]:
        assert routing.decode(routing.encode(envelope)) == envelope


def test_forward_fast_path_matches_the_general_encoding() -> None:
    assert routing.encode_forward("p_1", b"x") == routing.encode(Envelope(Kind.FORWARD, ("p_1",), b"x"))
    assert routing.forward_header("p_1") + b"x" == routing.encode_forward("p_1", b"x")


def test_broadcast_sends_one_envelope_per_node() -> None:
    out = dict(routing.broadcast(Kind.PEER_LEFT, {"a": "n1", "b": "n2", "c": "n1"}, b"f", "z", ""))
    assert out["n1"].recipients == ("a", "c")
    assert out["n2"].recipients == ("b",)


@pytest.mark.parametrize("payload", [b"no header", b"Q p_1\n{}", b""])
def test_malformed_envelopes_are_refused(payload: bytes) -> None:
    with pytest.raises(ValueError, match=r".+"):
        routing.decode(payload)
