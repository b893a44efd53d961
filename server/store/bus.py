"""The node bus over Redis pub/sub: one subscription per process, one batching publisher per process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import redis
import redis.asyncio as aioredis

from server.routing import channel

log = logging.getLogger(__name__)

Dispatch = Callable[[bytes], None]


class Bus:
    """Delivers envelopes to the node that holds their recipients.

    Envelopes for this node skip Redis. Envelopes for other nodes are queued and published by a single writer
    task in pipelines, so order is kept per destination and a burst costs one round trip, not one per frame.
    """

    def __init__(self, redis_client: aioredis.Redis, node: str, dispatch: Dispatch) -> None:
        self.redis = redis_client
        self.node = node
        self.dispatch = dispatch
        self._outbox: list[tuple[str, bytes]] = []
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pubsub: aioredis.client.PubSub | None = None
        self._busy = False

    async def start(self) -> None:
        self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(channel(self.node))
        self._tasks = [
            asyncio.create_task(self._listen(), name="bus-listen"),
            asyncio.create_task(self._publish_loop(), name="bus-publish"),
        ]

    async def stop(self) -> None:
        await self.flush()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    def send(self, node: str, payload: bytes) -> None:
        """Queue `payload` for `node`; never blocks the caller."""
        if node == self.node:
            self.dispatch(payload)
            return
        self._outbox.append((channel(node), payload))
        self._wakeup.set()

    async def flush(self) -> None:
        """Wait until everything queued so far has been handed to Redis."""
        while self._outbox or self._busy:  # noqa: ASYNC110 - only at shutdown
            await asyncio.sleep(0.001)

    async def _publish_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._outbox = self._outbox, []
            if not batch:
                continue
            self._busy = True
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for chan, payload in batch:
                        pipe.publish(chan, payload)
                    await pipe.execute()
            except (redis.RedisError, OSError) as exc:
                # Signalling is soft state: a lost relay is repaired by ICE restart and re-join on the clients.
                log.error("bus publish failed: %d envelopes dropped: %s", len(batch), type(exc).__name__)
                await asyncio.sleep(0.2)
            finally:
                self._busy = False

    async def _listen(self) -> None:
        assert self._pubsub is not None
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except (redis.RedisError, OSError) as exc:
                log.error("bus subscription lost (%s); resubscribing", type(exc).__name__)
                await asyncio.sleep(0.5)
                with contextlib.suppress(redis.RedisError, OSError):
                    await self._pubsub.subscribe(channel(self.node))
                continue
            if message is not None and message["type"] == "message":
                try:
                    self.dispatch(message["data"])
                except Exception:
                    log.exception("bus dispatch failed")
