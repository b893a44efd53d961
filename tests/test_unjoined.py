"""The per-address count of sockets open without a join, without sockets."""

from __future__ import annotations

import random

import pytest

from server.unjoined import AddressRate, UnjoinedSockets


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


def test_the_link_check_rate_allows_a_burst_then_refills() -> None:
    rate = AddressRate(rate=2.0, burst=3.0)
    assert [rate.allow("192.0.2.7", 0.0) for _ in range(4)] == [True, True, True, False]
    assert rate.allow("192.0.2.8", 0.0)  # another address has its own bucket
    assert not rate.allow("192.0.2.7", 0.25)  # half a token
    assert rate.allow("192.0.2.7", 0.5)  # one token refilled
    assert not rate.allow("192.0.2.7", 0.5)
    assert [rate.allow("192.0.2.7", 100.0) for _ in range(4)] == [True, True, True, False]  # never above the burst


def test_the_link_check_rate_forgets_idle_addresses_when_its_table_is_full() -> None:
    rate = AddressRate(rate=1.0, burst=2.0, max_addresses=100)
    for i in range(100):
        rate.allow(f"10.0.0.{i}", 0.0)
    assert rate.addresses == 100
    rate.allow("10.0.1.0", 10.0)  # the others have been idle long enough to be full again
    assert rate.addresses == 1
    for i in range(150):
        rate.allow(f"10.0.2.{i}", 10.0)  # all busy now: none is forgotten, so none gets a fresh burst
    assert rate.addresses == 151
    for i in range(150):
        rate.allow(f"10.0.3.{i}", 15.0)  # the earlier ones are idle again and go at the next sweep
    assert rate.addresses <= 151
