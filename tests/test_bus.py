"""The node bus on a real Redis: delivery across nodes, order, and recovery when Redis drops its connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from server.config import load_settings
from server.store.bus import Bus, command
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


async def eventually(predicate: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout * TIME_SCALE
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_envelopes_reach_the_other_node_in_order_and_local_ones_skip_redis(handle: RedisHandle) -> None:
    got_a: list[bytes] = []
    got_b: list[bytes] = []
    a = Bus(handle.client, "node-a", got_a.append)
    b = Bus(handle.client, "node-b", got_b.append)
    await a.start()
    await b.start()
    try:
        for i in range(1000):
            a.send("node-b", b"frame %d" % i)
        a.send("node-a", b"local")
        assert got_a == [b"local"]  # delivered synchronously, without Redis
        await eventually(lambda: len(got_b) == 1000)
        assert got_b == [b"frame %d" % i for i in range(1000)]
    finally:
        await a.stop()
        await b.stop()


async def test_the_bus_recovers_when_redis_drops_its_connections(handle: RedisHandle) -> None:
    got: list[bytes] = []
    a = Bus(handle.client, "node-a", lambda _: None)
    b = Bus(handle.client, "node-b", got.append)
    await a.start()
    await b.start()
    try:
        a.send("node-b", b"before")
        await eventually(lambda: got == [b"before"])
        await handle.client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await handle.client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")

        async def delivered_again() -> None:
            while b"after" not in got:
                a.send("node-b", b"after")
                await asyncio.sleep(0.05)

        await asyncio.wait_for(delivered_again(), 10 * TIME_SCALE)
    finally:
        await a.stop()
        await b.stop()
