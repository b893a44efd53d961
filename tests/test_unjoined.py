"""The per-address count of sockets open without a join, without sockets."""

from __future__ import annotations

import random

import pytest

from server.unjoined import UnjoinedSockets


def test_an_address_at_the_limit_is_refused_and_nothing_is_counted_for_the_refusal() -> None:
    sockets = UnjoinedSockets(limit=3)
    held = [sockets.open("192.0.2.7") for _ in range(3)]
    assert all(s is not None for s in held)
    assert sockets.open("192.0.2.7") is None
    assert sockets.open("192.0.2.7") is None
    assert sockets.held("192.0.2.7") == 3


def test_addresses_are_counted_apart() -> None:
    sockets = UnjoinedSockets(limit=1)
    assert sockets.open("192.0.2.7") is not None
    assert sockets.open("192.0.2.8") is not None
    assert sockets.open("2001:db8::1") is not None
    assert sockets.open("2001:db8::2") is not None  # per address as given; no /64 grouping (yet)
    assert sockets.open("192.0.2.7") is None
    assert sockets.total == 4


def test_a_socket_that_joins_or_closes_makes_room() -> None:
    sockets = UnjoinedSockets(limit=2)
    first, second = sockets.open("a"), sockets.open("a")
    assert first is not None and second is not None
    first.joined()
    third = sockets.open("a")
    assert third is not None
    assert sockets.open("a") is None
    second.closed()
    assert sockets.open("a") is not None


def test_joined_then_closed_releases_once() -> None:
    sockets = UnjoinedSockets(limit=2)
    joiner, waiter = sockets.open("a"), sockets.open("a")
    assert joiner is not None and waiter is not None
    joiner.joined()
    joiner.closed()  # the endpoint closes every socket, joined or not
    joiner.joined()
    assert sockets.held("a") == 1  # the other socket still counts
    waiter.closed()
    waiter.closed()
    assert sockets.held("a") == 0
    assert sockets.total == 0


def test_many_random_cycles_return_every_count_to_zero_and_forget_the_addresses() -> None:
    sockets = UnjoinedSockets(limit=5)
    rng = random.Random(7)
    addresses = [f"198.51.100.{i}" for i in range(20)]
    open_now = []
    refused = 0
    for _ in range(20_000):
        if open_now and rng.random() < 0.5:
            held = open_now.pop(rng.randrange(len(open_now)))
            rng.choice([held.joined, held.closed])()
            if rng.random() < 0.5:
                held.closed()
        else:
            address = rng.choice(addresses)
            held = sockets.open(address)
            if held is None:
                refused += 1
                assert sockets.held(address) == 5
            else:
                open_now.append(held)
        assert sockets.total == len(open_now)
    assert refused > 0  # the limit was reached along the way
    for held in open_now:
        held.closed()
    assert sockets.total == 0
    assert sockets.addresses == 0  # no table of every address ever seen


@pytest.mark.parametrize("limit", [0, -1])
def test_the_limit_is_at_least_one(limit: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        UnjoinedSockets(limit)
