"""The node bus on a real Redis: delivery across nodes, order, and recovery when Redis drops its connections."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from server.config import load_settings
from server.routing import channel
from server.store.bus import Bus, Dispatch, command
from server.store.connection import RedisHandle, open_redis
from support import TIME_SCALE


def test_commands_are_resp_arrays_of_bulk_strings() -> None:
    assert command(b"PUBLISH", b"stue:node:a", b"x\r\ny") == (
        b"*3\r\n$7\r\nPUBLISH\r\n$11\r\nstue:node:a\r\n$4\r\nx\r\ny\r\n"
    )


@pytest.fixture
async def handle(redis_env: dict[str, str]) -> AsyncIterator[RedisHandle]:
    handle = await open_redis(load_settings(redis_env))
    yield handle
    await handle.close()


@contextlib.asynccontextmanager
async def two_nodes(handle: RedisHandle, on_a: Dispatch, on_b: Dispatch) -> AsyncIterator[tuple[Bus, Bus]]:
    """The buses of nodes `node-a` and `node-b`, started, and stopped afterwards."""
    a = Bus(handle.client, "node-a", on_a)
    b = Bus(handle.client, "node-b", on_b)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


async def eventually(predicate: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout * TIME_SCALE
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_envelopes_reach_the_other_node_in_order_and_local_ones_skip_redis(handle: RedisHandle) -> None:
    got_a: list[bytes] = []
    got_b: list[bytes] = []
    async with two_nodes(handle, got_a.append, got_b.append) as (a, _):
        for i in range(1000):
            a.send("node-b", b"frame %d" % i)
        a.send("node-a", b"local")
        assert got_a == [b"local"]  # delivered synchronously, without Redis
        await eventually(lambda: len(got_b) == 1000)
        assert got_b == [b"frame %d" % i for i in range(1000)]


async def test_the_bus_recovers_when_redis_drops_its_connections(handle: RedisHandle) -> None:
    got: list[bytes] = []
    async with two_nodes(handle, lambda _: None, got.append) as (a, _):
        a.send("node-b", b"before")
        await eventually(lambda: got == [b"before"])
        await handle.client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await handle.client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")

        async def delivered_again() -> None:
            while b"after" not in got:
                a.send("node-b", b"after")
                await asyncio.sleep(0.05)

        await asyncio.wait_for(delivered_again(), 10 * TIME_SCALE)


async def test_a_turns_first_envelope_goes_at_once_and_the_rest_together_at_its_end(handle: RedisHandle) -> None:
    got: list[bytes] = []
    async with two_nodes(handle, lambda _: None, got.append) as (a, _):
        publisher = a._publisher
        assert publisher is not None
        writes: list[bytes] = []
        write = publisher.write

        def recording(data: bytes | bytearray | memoryview) -> None:
            writes.append(bytes(data))
            write(data)

        publisher.write = recording  # type: ignore[method-assign]

        def published(payload: bytes) -> bytes:
            return command(b"PUBLISH", channel("node-b").encode(), payload)

        for payload in (b"one", b"two", b"three"):
            a.send("node-b", payload)
        assert writes == [published(b"one")]  # at once: a lone frame waits for nothing
        await asyncio.sleep(0)  # the end of the turn
        assert writes == [published(b"one"), published(b"two") + published(b"three")]
        await eventually(lambda: got == [b"one", b"two", b"three"])
        a.send("node-b", b"four")  # a new turn: at once again
        assert writes[-1] == published(b"four")

        # The publisher is lost within a turn: what was gathered goes to the backlog before anything sent after it.
        await asyncio.sleep(0)
        a.send("node-b", b"five")
        a.send("node-b", b"six")
        a._publisher = None  # as when Redis drops the connection
        try:
            a.send("node-b", b"seven")
            await asyncio.sleep(0)
            a.send("node-b", b"eight")
            assert a._backlog == [published(b"six"), published(b"seven"), published(b"eight")]
        finally:
            a._publisher = publisher  # so the bus closes its connection
