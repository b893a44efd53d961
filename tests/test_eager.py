"""Eager start: synchronous to the first suspension, then a task; results and cancellation behave as in asyncio."""

from __future__ import annotations

import asyncio

import pytest

from server.eager import start_eagerly


async def test_a_coroutine_that_never_suspends_runs_to_the_end_at_once() -> None:
    done: list[int] = []

    async def work() -> None:
        done.append(1)

    assert start_eagerly(work()) is None
    assert done == [1]


async def test_a_suspending_coroutine_runs_up_to_the_suspension_then_finishes_as_a_task() -> None:
    steps: list[str] = []
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def work() -> None:
        steps.append("before")
        steps.append(await gate)
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        steps.append("after")

    task = start_eagerly(work())
    assert steps == ["before"]
    assert task is not None
    gate.set_result("gate")
    await task
    assert steps == ["before", "gate", "after"]


async def test_exceptions_from_awaited_futures_reach_the_coroutine() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    caught: list[BaseException] = []

    async def work() -> None:
        try:
            await gate
        except ValueError as exc:
            caught.append(exc)

    task = start_eagerly(work())
    gate.set_exception(ValueError("boom"))
    assert task is not None
    await task
    assert [str(e) for e in caught] == ["boom"]


async def test_cancelling_the_task_cancels_the_coroutine() -> None:
    cleaned: list[bool] = []

    async def work() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append(True)

    task = start_eagerly(work())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]
