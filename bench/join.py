"""Figure (a): join-to-connected. Headless probes through one Stue server beside two aiortc peers with no server;
then two Chromium pages through Stue beside two RTCPeerConnections in one page (bench/browser.py)."""

from __future__ import annotations

import statistics
import subprocess
import sys
from typing import Any

import orjson

from bench import browser
from bench.driver import create_consultations
from bench.procs import LOG_DIR, ROOT, raise_nofile, start_redis, start_stue
from bench.report import Metric, paired

PROBE_TIMEOUT_S = 20.0
PROBE_LINGER_S = 2.0  # each probe waits for the other to confirm media; shorter makes the slower one time out


def _probe_part(quick: bool) -> tuple[list[Metric], dict[str, Any]]:
    consultations = 4 if quick else 11  # the first pair is a warm-up and is discarded
    redis = start_redis()
    procs = [redis]
    try:
        stue = start_stue(redis.extra["url"], "stue-join")
        procs.append(stue)
        made = create_consultations(redis.extra["url"], consultations)
        links = [[f"{stue.url}/call#t={t['citizen']}", f"{stue.url}/call#t={t['clinician']}"] for t in made]
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with (LOG_DIR / "join_probe.log").open("wb") as log:
            done = subprocess.run(
                [sys.executable, "-m", "bench.join_probe"],
                input=orjson.dumps({"links": links, "timeout": PROBE_TIMEOUT_S, "linger": PROBE_LINGER_S}),
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
                timeout=consultations * 2 * (PROBE_TIMEOUT_S + 5),
                check=True,
            )
        stue.check_alive()
    finally:
        for p in reversed(procs):
            p.stop()
    runs = orjson.loads(done.stdout)["runs"][1:]
    stue_ms, direct_ms, every_probe, failures = [], [], [], 0
    for run in runs:
        probes = [run["stue"][role] for role in ("citizen", "clinician")]
        failures += sum(1 for p in probes if not p["ok"]) + (0 if run["direct"]["ok"] else 1)
        got = [p["connect_ms"] for p in probes if p["connect_ms"] is not None]
        every_probe += got
        stue_ms.append(statistics.fmean(got) if len(got) == 2 else float("nan"))
        direct = run["direct"]["connect_ms"]
        direct_ms.append(statistics.fmean(direct) if direct else float("nan"))
    p50_all = statistics.median(every_probe) if every_probe else float("nan")
    metrics = [paired("join", "probe join→connected", "ms", stue_ms, direct_ms, "stue <= 60")]
    notes = [
        f"Probe part: {len(runs)} consultations (after 1 warm-up), citizen + clinician probes started together "
        "through one Stue server; value per run = mean of the two probes' connect_ms (join sent → peer "
        f"connection connected); p50 over all {len(every_probe)} probes = {p50_all:.1f} ms.",
        "Probe baseline: two aiortc RTCPeerConnections in one process, offer/answer in memory, iceServers=[], "
        "same audio+video tracks count; value = mean of both sides' createOffer → connected.",
        f"Failed probes or direct pairs: {failures}.",
    ]
    return metrics, {"probe_runs": runs, "probe_p50_all_ms": p50_all, "probe_failures": failures, "notes": notes}


def run(quick: bool = False) -> tuple[list[Metric], dict[str, Any]]:
    raise_nofile()
    metrics, detail = _probe_part(quick)
    notes = list(detail.pop("notes"))
    ready, why = browser.ready()
    if ready:
        b_metrics, b_detail = browser.run(quick)
        metrics += b_metrics
        notes += b_detail.pop("notes")
        detail["browser"] = b_detail
    else:
        notes.append(f"Browser part skipped: {why}")
    detail["notes"] = notes
    return metrics, detail
