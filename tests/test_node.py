"""One server process's bookkeeping against a real Redis: local registrations and the grace sweep."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from server.config import load_settings
from server.node import Node, now_ms
from server.routing import Kind
from server.store.connection import open_redis
from server.store.consultations import Member


class Recorder:
    """A local connection that keeps what it is given."""

    def __init__(self) -> None:
        self.frames: list[tuple[Kind, dict[str, object]]] = []

    def deliver(self, kind: Kind, frame: bytes, subject: str, subject_node: str) -> None:
        self.frames.append((kind, json.loads(frame)))

    def lost_membership(self) -> None:
        raise AssertionError("not expected here")


@pytest.fixture
async def node(redis_env: dict[str, str]) -> AsyncIterator[Node]:
    settings = load_settings(redis_env)
    handle = await open_redis(settings)
    await handle.client.flushdb()
    node = Node(settings, handle)  # not started: envelopes for this node are dispatched in-process anyway
    yield node
    await node.stop()
    await handle.close()


async def test_unregister_forgets_only_the_connection_it_is_given(node: Node) -> None:
    old, new = Recorder(), Recorder()
    node.register("p_a", "c_1", old)
    node.register("p_a", "c_1", new)  # resumed on this node while the old socket was still open
    node.unregister("p_a", old)  # the old connection ends later
    assert node.local["p_a"] == ("c_1", new)
    node.unregister("p_a", new)
    assert "p_a" not in node.local


async def test_a_grace_sweep_tells_the_others_when_the_grace_ends(node: Node) -> None:
    made = await node.store.create(now_ms=now_ms(), ttl_s=60)
    dropped = await node.store.join(made.consultation, Member("p_a", "citizen", node.id, "citizen"), now_ms=now_ms())
    await node.store.join(made.consultation, Member("p_b", "clinician", node.id, "clinician"), now_ms=now_ms())
    other = Recorder()
    node.register("p_b", made.consultation, other)
    assert await node.store.suspend(made.consultation, dropped.member, deadline_ms=now_ms() + 200)
    for _ in range(50):  # many drops at once: one sweep
        node.sweep_after(0.3)
    assert len(node._sweeps) <= 2
    await asyncio.sleep(0.1)
    assert other.frames == []
    await asyncio.sleep(0.8)
    assert other.frames == [(Kind.PEER_LEFT, {"type": "peer-left", "participant": "p_a", "reason": "timeout"})]
