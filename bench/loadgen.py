"""The load generator: its own process, driven by one JSON command per line on stdin, answering one per line.

It holds groups of participants (WebSocket clients, a citizen/clinician pair per consultation) and either
bounces offers between the two sides of every pair as fast as they are delivered (`saturate`) or sends them at a
fixed total rate from one pacing coroutine (`paced`). Every offer's sdp starts with `v=0 t=<monotonic ns>`, so the
receiving side of the same process measures the one-way latency on the same clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from bench.procs import cpu_seconds

MAX_SIZE = 2**17
STAMP_AT = len("v=0 t=")
STAMP_DIGITS = 19
IDLE, SATURATE, PACED = "idle", "saturate", "paced"
DRAIN_TIMEOUT_S = 3.0


@dataclass(slots=True)
class Participant:
    ws: ClientConnection
    me: str
    peer: str = ""
    prefix: str = ""
    suffix: str = ""

    def address(self, peer: str, pad: int) -> None:
        self.peer = peer
        self.prefix = f'{{"type":"offer","to":"{peer}","sdp":"v=0 t='
        self.suffix = " " + "x" * pad + '"}'

    def frame(self, now_ns: int) -> str:
        return f"{self.prefix}{now_ns:019d}{self.suffix}"


@dataclass
class Group:
    """The participants of one target (Stue or the bare relay) and the counters of the run in progress."""

    name: str
    participants: list[Participant] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    mode: str = IDLE
    win_start: int = 0
    win_end: int = 0
    stop_at: int = 0
    sent: int = 0
    received: int = 0
    delivered_in_window: int = 0
    sent_in_window: int = 0
    latencies: list[int] = field(default_factory=list)
    trace: list[tuple[int, int]] | None = None  # (sent at, latency) per offer, when a paced job asks for it
    others: int = 0
    errors: list[str] = field(default_factory=list)
    closed: int = 0

    def reset(self, mode: str) -> None:
        self.mode = mode
        self.sent = self.received = self.delivered_in_window = self.sent_in_window = 0
        self.latencies = []
        self.others = 0

    async def read(self, p: Participant) -> None:
        ws = p.ws
        try:
            async for text in ws:
                now = time.monotonic_ns()
                message = orjson.loads(text)
                if message.get("type") != "offer":
                    self.others += 1
                    if message.get("type") == "error" and len(self.errors) < 5:
                        self.errors.append(str(message.get("code")))
                    continue
                self.received += 1
                if self.mode == SATURATE:
                    if self.win_start <= now < self.win_end:
                        self.delivered_in_window += 1
                    if now < self.stop_at:
                        self.sent += 1
                        await ws.send(p.frame(time.monotonic_ns()))
                elif self.mode == PACED:
                    sdp = message["sdp"]
                    sent_at = int(sdp[STAMP_AT : STAMP_AT + STAMP_DIGITS])
                    if self.win_start <= sent_at < self.win_end:
                        self.latencies.append(now - sent_at)
                        if self.trace is not None:
                            self.trace.append((sent_at - self.win_start, now - sent_at))
        except ConnectionClosed:
            pass
        finally:
            self.closed += 1


GROUPS: dict[str, Group] = {}


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile of an ascending list, in the list's unit."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return float(sorted_values[rank - 1])


def machine_busy_seconds() -> float:
    """CPU time all processes on the machine have used (from /proc/stat), to see how noisy a run was."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_of(pids: list[int]) -> dict[str, float]:
    out = {str(pid): cpu_seconds(pid) for pid in pids}
    out["loadgen"] = cpu_seconds(os.getpid())
    out["machine"] = machine_busy_seconds()
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per-process CPU seconds over the window, and `others`: what the rest of the machine used meanwhile."""
    delta = {key: round(after[key] - before[key], 4) for key in before}
    ours = sum(v for k, v in delta.items() if k != "machine")
    delta["others"] = round(max(0.0, delta.pop("machine") - ours), 4)
    return delta


async def _open_ws(url: str, origin: str) -> ClientConnection:
    return await connect(
        url,
        origin=Origin(origin),
        compression=None,
        max_size=MAX_SIZE,
        ping_interval=None,
        open_timeout=20,
        close_timeout=2,
    )


async def _expect(ws: ClientConnection, kind: str) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), timeout=20))
    if message.get("type") != kind:
        raise RuntimeError(f"expected {kind}, got {message}")
    return message


async def _open_pair(kind: str, origin: str, pair: list[str], index: int, pad: int) -> list[Participant]:
    url_a, token_a, url_b, token_b = pair
    a_ws = await _open_ws(url_a, origin)
    if kind == "bare":
        token_a, token_b = f"bench-{index}-a", f"bench-{index}-b"
    await a_ws.send(orjson.dumps({"type": "join", "token": token_a}).decode())
    a = Participant(a_ws, (await _expect(a_ws, "joined"))["participant"])
    b_ws = await _open_ws(url_b, origin)
    await b_ws.send(orjson.dumps({"type": "join", "token": token_b}).decode())
    b = Participant(b_ws, (await _expect(b_ws, "joined"))["participant"])
    if kind == "stue":
        # The citizen may address the clinician once it has been told about them.
        seen = await _expect(a_ws, "peer-joined")
        if seen["participant"] != b.me:
            raise RuntimeError("peer-joined names someone else")
    a.address(b.me, pad)
    b.address(a.me, pad)
    return [a, b]


async def cmd_open(job: dict[str, Any]) -> dict[str, Any]:
    group = GROUPS.setdefault(job["group"], Group(job["group"]))
    limit = asyncio.Semaphore(int(job.get("concurrency", 64)))
    started = time.monotonic()

    async def one(index: int, pair: list[str]) -> list[Participant]:
        async with limit:
            return await _open_pair(job["kind"], job["origin"], pair, index, int(job.get("pad", 0)))

    for chunk_start in range(0, len(job["pairs"]), 500):
        chunk = job["pairs"][chunk_start : chunk_start + 500]
        opened = await asyncio.gather(*(one(chunk_start + i, pair) for i, pair in enumerate(chunk)))
        for pair_participants in opened:
            for p in pair_participants:
                group.participants.append(p)
                group.readers.append(asyncio.create_task(group.read(p)))
    return {"opened": len(group.participants), "seconds": round(time.monotonic() - started, 3)}


async def cmd_close(job: dict[str, Any]) -> dict[str, Any]:
    group = GROUPS.pop(job["group"], None)
    if group is None:
        return {"closed": 0}
    for start in range(0, len(group.participants), 500):
        batch = group.participants[start : start + 500]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(p.ws.close() for p in batch), return_exceptions=True), 10)
    for task in group.readers:
        task.cancel()
    await asyncio.gather(*group.readers, return_exceptions=True)
    return {"closed": len(group.participants)}


async def _drain(group: Group, done: Any) -> None:
    """Wait (bounded) for the frames still in flight; polled, so the hot receive path stays free of events."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while not done() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def cmd_saturate(job: dict[str, Any]) -> dict[str, Any]:
    """Every participant keeps `per_participant` offers bouncing to its peer; count deliveries in the window."""
    group = GROUPS[job["group"]]
    warmup, duration = float(job["warmup"]), float(job["duration"])
    closed_before = group.closed
    group.reset(SATURATE)
    start = time.monotonic_ns()
    group.win_start = start + int(warmup * 1e9)
    group.win_end = group.win_start + int(duration * 1e9)
    group.stop_at = group.win_end
    for _ in range(int(job.get("per_participant", 1))):
        for p in group.participants:
            group.sent += 1
            await p.ws.send(p.frame(time.monotonic_ns()))
    await asyncio.sleep(max(0.0, (group.win_start - time.monotonic_ns()) / 1e9))
    before = cpu_of(job["pids"])
    await asyncio.sleep(max(0.0, (group.win_end - time.monotonic_ns()) / 1e9))
    after = cpu_of(job["pids"])
    await _drain(group, lambda: group.received >= group.sent)
    result = {
        "delivered": group.delivered_in_window,
        "msgs_per_s": group.delivered_in_window / duration,
        "cpu_s": cpu_delta(before, after),
        "lost": group.sent - group.received,
        "non_offer_frames": group.others,
        "errors": group.errors[:5],
        "connections_closed": group.closed - closed_before,
    }
    group.mode = IDLE
    return result


async def cmd_paced(job: dict[str, Any]) -> dict[str, Any]:
    """One coroutine sends `rate` offers per second round-robin over all participants; latency per offer."""
    group = GROUPS[job["group"]]
    rate, warmup, duration = float(job["rate"]), float(job["warmup"]), float(job["duration"])
    closed_before = group.closed
    group.reset(PACED)
    group.trace = [] if job.get("trace") else None
    parts = group.participants
    count = len(parts)
    total_s = warmup + duration
    limit = int(rate * total_s) + 1
    start = time.monotonic()
    start_ns = time.monotonic_ns()
    group.win_start = start_ns + int(warmup * 1e9)
    group.win_end = start_ns + int(total_s * 1e9)
    index = sent = 0
    before: dict[str, float] | None = None
    while sent < limit:
        elapsed = time.monotonic() - start
        if elapsed >= total_s:
            break
        if before is None and elapsed >= warmup:
            before = cpu_of(job["pids"])
        due = min(limit, int(elapsed * rate) + 1)
        while sent < due:
            p = parts[index]
            index = index + 1 if index + 1 < count else 0
            now = time.monotonic_ns()
            await p.ws.send(p.frame(now))
            sent += 1
            if group.win_start <= now < group.win_end:
                group.sent_in_window += 1
        await asyncio.sleep(0.0005)
    after = cpu_of(job["pids"])
    group.sent = sent
    await _drain(group, lambda: len(group.latencies) >= group.sent_in_window)
    group.mode = IDLE
    if group.trace is not None:
        await asyncio.to_thread(Path(job["trace"]).write_bytes, orjson.dumps(group.trace))
        group.trace = None
    lat = sorted(group.latencies)
    ms = 1e-6
    return {
        "rate": rate,
        "sent_in_window": group.sent_in_window,
        "received_in_window": len(lat),
        "lost": group.sent_in_window - len(lat),
        "achieved_rate": group.sent_in_window / duration,
        "p50_ms": percentile(lat, 50) * ms,
        "p99_ms": percentile(lat, 99) * ms,
        "p999_ms": percentile(lat, 99.9) * ms,
        "max_ms": (lat[-1] * ms) if lat else float("nan"),
        "cpu_s": cpu_delta(before or after, after),
        "errors": group.errors[:5],
        "connections_closed": group.closed - closed_before,
    }


COMMANDS = {"open": cmd_open, "close": cmd_close, "saturate": cmd_saturate, "paced": cmd_paced}


async def serve() -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        job = orjson.loads(line)
        if job["cmd"] == "exit":
            for name in list(GROUPS):
                await cmd_close({"group": name})
            return
        try:
            reply = await COMMANDS[job["cmd"]](job)
        except Exception as exc:
            reply = {"failed": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(orjson.dumps(reply).decode() + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(serve())
