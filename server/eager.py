"""Run a coroutine eagerly: synchronously up to its first real suspension, then as a task.

Sending a frame to a WebSocket almost never suspends (uvicorn writes to the transport at once), so delivering a
relayed frame this way saves a trip through the event loop on every message. Python 3.12's
`asyncio.eager_task_factory` does the same; drop this module when 3.12 is the floor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def start_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run `coro` now; None if it finished without suspending, else the task that finishes it."""
    try:
        awaited = coro.send(None)
    except StopIteration:
        return None
    except BaseException:
        coro.close()
        raise
    return asyncio.ensure_future(_finish(coro, awaited))


async def _finish(coro: Coroutine[Any, Any, None], awaited: Any) -> None:
    """Drive `coro` on, from the future (or bare yield) it suspended on, as an asyncio task would."""
    while True:
        try:
            if awaited is None:
                await asyncio.sleep(0)
            else:
                awaited._asyncio_future_blocking = False
                try:
                    await awaited
                except asyncio.CancelledError:
                    if not awaited.cancelled():
                        raise  # this task was cancelled: pass it into coro below
                except BaseException:  # noqa: S110 - coro reads the outcome from the future itself
                    pass
        except asyncio.CancelledError:
            try:
                awaited = coro.throw(asyncio.CancelledError())
            except StopIteration:
                return
            continue
        try:
            awaited = coro.send(None)
        except StopIteration:
            return
