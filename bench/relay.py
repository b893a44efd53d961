"""Figure (b): signalling relay through the full path (two Stue processes + Redis) beside a bare relay.

1,000 participants in 500 consultations; every citizen on Stue process A, every clinician on process B, so every
relayed offer crosses the Redis hop. The bare relay holds the same 1,000 participants (same connections, same
frames) in one process. A third, informative target is the *hop-matched* bare relay: two bare processes joined by
Redis pub/sub through Stue's own bus, so it has Stue's hops and none of its work; Stue against it shows what
Stue's code costs, apart from the architecture's extra hop. A fourth, also informative, is the bare relay on Stue's
direct frame path (bench/bare_relay.py --direct, server/wsprotocol.py): one process that, like `stue serve`, skips
uvicorn's ASGI hand-off for in-call frames. Runs rotate between the targets (order flipped every
pair); the first second of each run is discarded. Latency is measured at both ends of the issue's range of
offered load (1,000 and 3,000 msg/s over the 1,000 participants).
"""

from __future__ import annotations

import time
from typing import Any

from bench.driver import LoadGen, create_consultations
from bench.procs import ORIGIN, idle_config, raise_nofile, start_bare, start_redis, start_stue
from bench.report import Metric, median, paired

CONSULTATIONS = 500
SDP_PAD = 400  # bytes of filler after the timestamp: a relayed frame is ~0.5 KB, between a candidate and an offer
PACED_RATES = (1000.0, 3000.0)  # msg/s over all 1,000 participants: the range, bare p99 ~0.5–1 ms here
TARGETS = ("stue", "bare", "hops", "direct")


def _order(i: int, names: tuple[str, ...]) -> tuple[str, ...]:
    return names if i % 2 == 0 else tuple(reversed(names))


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
        hops_a = start_bare(redis.extra["url"], node="bare-a", peer="bare-b", name="hops-a")
        procs.append(hops_a)
        hops_b = start_bare(redis.extra["url"], node="bare-b", peer="bare-a", name="hops-b")
        procs.append(hops_b)
        direct = start_bare(name="bare-direct", direct=True)
        procs.append(direct)
        tokens = create_consultations(redis.extra["url"], CONSULTATIONS)
        pids = {
            "stue": [stue_a.pid, stue_b.pid, redis.pid],
            "bare": [bare.pid],
            "hops": [hops_a.pid, hops_b.pid, redis.pid],
            "direct": [direct.pid],
        }
        pairs_of = {
            "stue": ("stue", [[stue_a.ws_url, t["citizen"], stue_b.ws_url, t["clinician"]] for t in tokens]),
            "bare": ("bare", [[bare.ws_url, "", bare.ws_url, ""] for _ in tokens]),
            "hops": ("bare", [[hops_a.ws_url, "", hops_b.ws_url, ""] for _ in tokens]),
            "direct": ("bare", [[direct.ws_url, "", direct.ws_url, ""] for _ in tokens]),
        }
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            "saturate": {name: [] for name in TARGETS},
            **{f"paced@{rate:.0f}": {name: [] for name in TARGETS} for rate in PACED_RATES},
        }
        with LoadGen() as lg:
            opened = {
                name: lg.call(
                    {"cmd": "open", "group": name, "kind": kind, "origin": ORIGIN, "pad": SDP_PAD, "pairs": pairs}
                )
                for name, (kind, pairs) in pairs_of.items()
            }
            for i in range(pairs):
                for name in _order(i, ("stue", "bare")):
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
            for rate in PACED_RATES:
                for i in range(pairs):
                    for name in _order(i, TARGETS):
                        job = {
                            "cmd": "paced",
                            "group": name,
                            "rate": rate,
                            "warmup": warmup,
                            "duration": duration,
                            "pids": pids[name],
                        }
                        runs[f"paced@{rate:.0f}"][name].append(lg.call(job))
                        time.sleep(0.3)
            for p in procs:
                p.check_alive()
    finally:
        for p in reversed(procs):
            p.stop()

    sat = runs["saturate"]

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
    ]
    for rate in PACED_RATES:
        pac = runs[f"paced@{rate:.0f}"]
        for label, key, target in (("p50", "p50_ms", "ratio <= 1.5"), ("p99", "p99_ms", "ratio <= 1.5"),
                                   ("p99.9", "p999_ms", "")):  # fmt: skip
            stue, bare = col(pac, "stue", key), col(pac, "bare", key)
            metrics.append(paired("relay", f"{label} @ {rate:.0f} msg/s", "ms", stue, bare, target))
            if label != "p99.9":
                for name, what in (("hops", "hop-matched"), ("direct", "bare on the direct path")):
                    other = col(pac, name, key)
                    metrics.append(
                        paired("relay", f"{label} @ {rate:.0f} msg/s vs {what} (info)", "ms", stue, other, "")
                    )
    metrics.append(
        paired("relay", "server CPU per msg at saturation", "us", cpu_us_per_msg("stue"), cpu_us_per_msg("bare"), "")
    )
    bare_p99 = {rate: median(col(runs[f"paced@{rate:.0f}"], "bare", "p99_ms")) for rate in PACED_RATES}
    paced_runs = [r for kind, by_name in runs.items() if kind != "saturate" for rs in by_name.values() for r in rs]
    others = median([r["cpu_s"]["others"] / duration for r in paced_runs + sat["stue"] + sat["bare"]])
    idle = idle_config()
    notes = [
        "Stue: two `stue serve` processes (citizens on A, clinicians on B) sharing one redis-server; "
        "every frame crosses Redis pub/sub.",
        "Stue's processes handle in-call frames inside uvicorn's transport callback (server/wsprotocol.py); "
        "joins and anything needing Redis go through ASGI.",
        "Bare relay: ONE process (bench/bare_relay.py) on stock uvicorn ASGI holding the same 1,000 participants.",
        "Hop-matched (info): two bare relay processes publishing through Stue's bus to the same redis-server "
        "(bench/bare_relay.py --redis): Stue's hops without its validation, sessions and routing.",
        "Bare on the direct path (info): the bare relay forwarding inside the transport callback, as Stue does "
        "(bench/bare_relay.py --direct).",
        f"Each relayed frame is an offer of ~{SDP_PAD + 90} bytes; latency = one-way, same-process monotonic clock.",
        "Bare p99: "
        + ", ".join(f"{bare_p99[rate]:.2f} ms at {rate:.0f} msg/s" for rate in PACED_RATES)
        + (" (< 5 ms)." if max(bare_p99.values()) < 5 else " (NOT all < 5 ms)."),
        "Stue server CPU = A + B + redis-server; the 2-core machine is shared with the load generator "
        f"and with other users (median {others:.2f} cores busy elsewhere during a run; per run in the JSON).",
        "Ratio = median of per-pair ratios (runs back to back, order flipped every pair).",
        f"CPU idle: driver {idle['cpuidle_driver']}, guest_halt_poll_ns {idle['guest_halt_poll_ns']} (0: an idle "
        "vCPU halts at once, so every wake-up of a sleeping process waits for the host; see docs/benchmarks.md).",
    ]
    every = [r for by_name in runs.values() for rs in by_name.values() for r in rs]
    lost = sum(r["lost"] for r in every)
    closed = sum(r["connections_closed"] for r in every)
    detail = {
        "config": {
            "consultations": CONSULTATIONS,
            "participants": 2 * CONSULTATIONS,
            "pairs": pairs,
            "warmup_s": warmup,
            "duration_s": duration,
            "paced_rates": list(PACED_RATES),
            "sdp_pad": SDP_PAD,
            "quick": quick,
            "cpu_idle": idle,
        },
        "opened": opened,
        "runs": runs,
        "lost_frames": lost,
        "connections_closed": closed,
        "notes": notes,
    }
    return metrics, detail
