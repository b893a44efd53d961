"""Figure (b): signalling relay through the full path (two Stue processes + Redis) beside a bare relay.

1,000 participants in 500 consultations; every citizen on Stue process A, every clinician on process B, so every
relayed offer crosses the Redis hop. The bare relay holds the same 1,000 participants (same connections, same
frames) in one process. Runs alternate Stue/bare (order flipped every pair); the first second of each is discarded.
"""

from __future__ import annotations

import time
from typing import Any

from bench.driver import LoadGen, create_consultations
from bench.procs import ORIGIN, raise_nofile, start_bare, start_redis, start_stue
from bench.report import Metric, median, paired

CONSULTATIONS = 500
SDP_PAD = 400  # bytes of filler after the timestamp: a relayed frame is ~0.5 KB, between a candidate and an offer
PACED_RATE = 1000.0  # msg/s over all 1,000 participants: bare p99 ~2 ms here, with room for a noisy neighbour


def _order(i: int) -> tuple[str, str]:
    return ("stue", "bare") if i % 2 == 0 else ("bare", "stue")


def run(quick: bool = False) -> tuple[list[Metric], dict[str, Any]]:
    raise_nofile()
    pairs = 2 if quick else 7
    warmup, duration = 1.0, (1.5 if quick else 3.0)
    redis = start_redis()
    procs = [redis]
    try:
        stue_a = start_stue(redis.extra["url"], "stue-a")
        procs.append(stue_a)
        stue_b = start_stue(redis.extra["url"], "stue-b")
        procs.append(stue_b)
        bare = start_bare()
        procs.append(bare)
        tokens = create_consultations(redis.extra["url"], CONSULTATIONS)
        pids = {"stue": [stue_a.pid, stue_b.pid, redis.pid], "bare": [bare.pid]}
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            "saturate": {"stue": [], "bare": []},
            "paced": {"stue": [], "bare": []},
        }
        with LoadGen() as lg:
            opened = {
                "stue": lg.call(
                    {
                        "cmd": "open",
                        "group": "stue",
                        "kind": "stue",
                        "origin": ORIGIN,
                        "pad": SDP_PAD,
                        "pairs": [[stue_a.ws_url, t["citizen"], stue_b.ws_url, t["clinician"]] for t in tokens],
                    }
                ),
                "bare": lg.call(
                    {
                        "cmd": "open",
                        "group": "bare",
                        "kind": "bare",
                        "origin": ORIGIN,
                        "pad": SDP_PAD,
                        "pairs": [[bare.ws_url, "", bare.ws_url, ""] for _ in tokens],
                    }
                ),
            }
            for i in range(pairs):
                for name in _order(i):
                    job = {
                        "cmd": "saturate",
                        "group": name,
                        "warmup": warmup,
                        "duration": duration,
                        "per_participant": 1,
                        "pids": pids[name],
                    }
                    runs["saturate"][name].append(lg.call(job))
                    time.sleep(0.3)
            for i in range(pairs):
                for name in _order(i):
                    job = {
                        "cmd": "paced",
                        "group": name,
                        "rate": PACED_RATE,
                        "warmup": warmup,
                        "duration": duration,
                        "pids": pids[name],
                    }
                    runs["paced"][name].append(lg.call(job))
                    time.sleep(0.3)
            for p in procs:
                p.check_alive()
    finally:
        for p in reversed(procs):
            p.stop()

    sat, pac = runs["saturate"], runs["paced"]

    def col(kind: dict[str, list[dict[str, Any]]], name: str, key: str) -> list[float]:
        return [float(r[key]) for r in kind[name]]

    def cpu_us_per_msg(name: str) -> list[float]:
        out = []
        for r in sat[name]:
            server_cpu = sum(v for k, v in r["cpu_s"].items() if k not in ("loadgen", "others"))
            out.append(server_cpu / max(1, r["delivered"]) * 1e6)
        return out

    metrics = [
        paired(
            "relay",
            "max throughput",
            "msg/s",
            col(sat, "stue", "msgs_per_s"),
            col(sat, "bare", "msgs_per_s"),
            "ratio >= 0.4",
        ),
        paired(
            "relay",
            f"p50 @ {PACED_RATE:.0f} msg/s",
            "ms",
            col(pac, "stue", "p50_ms"),
            col(pac, "bare", "p50_ms"),
            "ratio <= 1.5",
        ),
        paired(
            "relay",
            f"p99 @ {PACED_RATE:.0f} msg/s",
            "ms",
            col(pac, "stue", "p99_ms"),
            col(pac, "bare", "p99_ms"),
            "ratio <= 1.5",
        ),
        paired(
            "relay",
            f"p99.9 @ {PACED_RATE:.0f} msg/s",
            "ms",
            col(pac, "stue", "p999_ms"),
            col(pac, "bare", "p999_ms"),
            "",
        ),
        paired("relay", "server CPU per msg at saturation", "us", cpu_us_per_msg("stue"), cpu_us_per_msg("bare"), ""),
    ]
    bare_p99 = median(col(pac, "bare", "p99_ms"))
    others = median([r["cpu_s"]["others"] / duration for kind in (sat, pac) for n in kind for r in kind[n]])
    notes = [
        "Stue: two `stue serve` processes (citizens on A, clinicians on B) sharing one redis-server; "
        "every frame crosses Redis pub/sub.",
        "Bare relay: ONE process (bench/bare_relay.py) holding the same 1,000 participants.",
        f"Each relayed frame is an offer of ~{SDP_PAD + 90} bytes; latency = one-way, same-process monotonic clock.",
        f"Bare p99 at {PACED_RATE:.0f} msg/s is {bare_p99:.2f} ms ({'<' if bare_p99 < 5 else 'NOT <'} 5 ms).",
        "Stue server CPU = A + B + redis-server; the 2-core machine is shared with the load generator "
        f"and with other users (median {others:.2f} cores busy elsewhere during a run; per run in the JSON).",
        "Ratio = median of per-pair ratios (pairs run back to back, order flipped every pair).",
    ]
    lost = {name: sum(r["lost"] for r in pac[name]) + sum(r["lost"] for r in sat[name]) for name in ("stue", "bare")}
    closed = {name: sum(r["connections_closed"] for r in pac[name] + sat[name]) for name in ("stue", "bare")}
    detail = {
        "config": {
            "consultations": CONSULTATIONS,
            "participants": 2 * CONSULTATIONS,
            "pairs": pairs,
            "warmup_s": warmup,
            "duration_s": duration,
            "paced_rate": PACED_RATE,
            "sdp_pad": SDP_PAD,
            "quick": quick,
        },
        "opened": opened,
        "runs": runs,
        "lost_frames": lost,
        "connections_closed": closed,
        "notes": notes,
    }
    return metrics, detail
