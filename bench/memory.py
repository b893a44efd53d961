"""Figure (c): resident memory per idle joined participant, one Stue process beside the bare relay process.

Each pair of runs starts a fresh Stue process and a fresh bare relay (order flipped every pair), opens and closes
a few warm-up connections, reads VmRSS, opens the participants (citizen + clinician of N/2 consultations, all on
the one process, in bounded-concurrency batches), waits for VmRSS to settle and reads it again.
"""

from __future__ import annotations

from typing import Any

from bench.driver import LoadGen, create_consultations
from bench.procs import ORIGIN, Proc, raise_nofile, rss_kib, settle_rss, start_bare, start_redis, start_stue
from bench.report import Metric, paired

WARMUP_PAIRS = 10


def _pairs(kind: str, proc: Proc, tokens: list[dict[str, str]]) -> list[list[str]]:
    if kind == "bare":
        return [[proc.ws_url, "", proc.ws_url, ""] for _ in tokens]
    return [[proc.ws_url, t["citizen"], proc.ws_url, t["clinician"]] for t in tokens]


def _measure(kind: str, lg: LoadGen, redis: Proc, participants: int) -> dict[str, Any]:
    proc = start_stue(redis.extra["url"], "stue-mem") if kind == "stue" else start_bare()
    try:
        warm = create_consultations(redis.extra["url"], WARMUP_PAIRS)
        lg.call({"cmd": "open", "group": "warm", "kind": kind, "origin": ORIGIN, "pairs": _pairs(kind, proc, warm)})
        lg.call({"cmd": "close", "group": "warm"})
        tokens = create_consultations(redis.extra["url"], participants // 2)
        before = settle_rss(proc.pid)
        redis_before = rss_kib(redis.pid)
        opened = lg.call(
            {
                "cmd": "open",
                "group": "idle",
                "kind": kind,
                "origin": ORIGIN,
                "concurrency": 64,
                "pairs": _pairs(kind, proc, tokens),
            },
            timeout=300,
        )
        after = settle_rss(proc.pid, quiet_s=1.0, timeout_s=10.0)
        redis_after = rss_kib(redis.pid)
        proc.check_alive()
        lg.call({"cmd": "close", "group": "idle"}, timeout=120)
        return {
            "rss_before_kib": before,
            "rss_after_kib": after,
            "participants": opened["opened"],
            "open_seconds": opened["seconds"],
            "kib_per_participant": (after - before) / opened["opened"],
            "redis_kib_per_participant": (redis_after - redis_before) / opened["opened"],
        }
    finally:
        proc.stop()


def run(quick: bool = False) -> tuple[list[Metric], dict[str, Any]]:
    raise_nofile()
    pairs = 2 if quick else 5
    participants = 1000 if quick else 5000
    runs: dict[str, list[dict[str, Any]]] = {"stue": [], "bare": []}
    redis = start_redis()
    try:
        with LoadGen() as lg:
            for i in range(pairs):
                for kind in ("stue", "bare") if i % 2 == 0 else ("bare", "stue"):
                    runs[kind].append(_measure(kind, lg, redis, participants))
    finally:
        redis.stop()

    def col(name: str, key: str) -> list[float]:
        return [float(r[key]) for r in runs[name]]

    metrics = [
        paired(
            "memory",
            f"RSS per idle participant, {participants:,}",
            "KiB",
            col("stue", "kib_per_participant"),
            col("bare", "kib_per_participant"),
            "stue <= 40",
        ),
    ]
    redis_kib = sorted(col("stue", "redis_kib_per_participant"))[len(runs["stue"]) // 2]
    notes = [
        f"{participants:,} joined participants ({participants // 2:,} consultations, both roles) on one process; "
        "RSS = /proc/<pid>/status VmRSS after − before, after warm-up connections.",
        f"Not counted above: redis-server grows ~{redis_kib:.1f} KiB per Stue participant (membership, deadlines).",
    ]
    return metrics, {
        "config": {"participants": participants, "pairs": pairs, "quick": quick},
        "runs": runs,
        "notes": notes,
    }
