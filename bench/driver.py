"""The orchestrator's side of the load generator: spawn `bench.loadgen`, send it jobs, read its answers."""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import time
from types import TracebackType
from typing import Any

import orjson
import redis.asyncio as aioredis

from bench.procs import LOG_DIR, ROOT
from server.store.consultations import ConsultationStore


class LoadGen:
    """A `bench.loadgen` child process. Use as a context manager; every call is bounded by a timeout."""

    def __init__(self) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log = LOG_DIR / f"loadgen-{os.getpid()}-{time.monotonic_ns()}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("wb"),
            cwd=ROOT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def call(self, job: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(orjson.dumps(job) + b"\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"load generator did not answer {job['cmd']} within {timeout} s (log {self.log})")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator exited; log {self.log}:\n{self.log.read_text()[-2000:]}")
        reply: dict[str, Any] = orjson.loads(line)
        if "failed" in reply:
            raise RuntimeError(f"load generator: {job['cmd']} failed: {reply['failed']} (log {self.log})")
        return reply

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(b'{"cmd":"exit"}\n')
                self.process.stdin.close()
                self.process.wait(30)
            except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
                self.process.kill()
                self.process.wait(5)

    def __enter__(self) -> LoadGen:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


async def _create(redis_url: str, count: int) -> list[dict[str, str]]:
    client = aioredis.Redis.from_url(redis_url, max_connections=64)
    try:
        store = ConsultationStore(client, membership_ttl_s=45)
        now_ms = int(time.time() * 1000)
        made = []
        for start in range(0, count, 50):
            batch = min(50, count - start)
            made += await asyncio.gather(*(store.create(now_ms=now_ms, ttl_s=3600) for _ in range(batch)))
        return [{"citizen": m.tokens["citizen"], "clinician": m.tokens["clinician"]} for m in made]
    finally:
        await client.aclose()


def create_consultations(redis_url: str, count: int) -> list[dict[str, str]]:
    """`count` consultations straight in Redis; the link tokens per role."""
    return asyncio.run(_create(redis_url, count))
