"""Child process for figure (a), probe part: alternate two-probe Stue consultations with a direct aiortc pair.

Reads `{"links": [[citizen_link, clinician_link], ...], "timeout": s, "linger": s}` on stdin, writes one JSON
object with the runs on stdout.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import orjson
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from server.probe import run_probe


async def stue_pair(citizen: str, clinician: str, timeout_s: float, linger: float) -> dict[str, Any]:
    """Both probes start together; each reports join sent → its peer connection connected (`connect_ms`)."""
    reports = await asyncio.gather(
        run_probe(citizen, timeout=timeout_s, linger=linger), run_probe(clinician, timeout=timeout_s, linger=linger)
    )
    out: dict[str, Any] = {}
    for role, report in zip(("citizen", "clinician"), reports, strict=True):
        out[role] = {
            "ok": report.ok,
            "error": report.error,
            "connect_ms": report.connect_ms,
            "negotiate_ms": report.negotiate_ms,
        }
    return out


async def direct_pair(timeout_s: float) -> dict[str, Any]:
    """Two RTCPeerConnections in this process, offer/answer handed over in memory, no ICE servers at all."""
    loop = asyncio.get_running_loop()
    # An explicit empty list: aiortc's default would contact Google's STUN server.
    pcs = [RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2)]
    connected: list[asyncio.Future[float]] = [loop.create_future() for _ in pcs]
    for pc, fut in zip(pcs, connected, strict=True):
        pc.addTrack(AudioStreamTrack())
        pc.addTrack(VideoStreamTrack())

        def on_state(pc: RTCPeerConnection = pc, fut: asyncio.Future[float] = fut) -> None:
            if pc.connectionState == "connected" and not fut.done():
                fut.set_result(loop.time())

        pc.add_listener("connectionstatechange", on_state)
    offerer, answerer = pcs
    try:
        started = loop.time()
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        times = await asyncio.wait_for(asyncio.gather(*connected), timeout_s)
        return {"ok": True, "connect_ms": [round((t - started) * 1000, 1) for t in times]}
    except TimeoutError:
        return {"ok": False, "connect_ms": None}
    finally:
        for pc in pcs:
            await pc.close()


async def main() -> None:
    job = orjson.loads(sys.stdin.read())
    timeout, linger = float(job["timeout"]), float(job["linger"])
    runs: list[dict[str, Any]] = []
    for i, (citizen, clinician) in enumerate(job["links"]):
        order = ("stue", "direct") if i % 2 == 0 else ("direct", "stue")
        run: dict[str, Any] = {}
        for name in order:
            if name == "stue":
                run["stue"] = await stue_pair(citizen, clinician, timeout, linger)
            else:
                run["direct"] = await direct_pair(timeout)
            await asyncio.sleep(0.2)
        runs.append(run)
    sys.stdout.write(orjson.dumps({"runs": runs}).decode() + "\n")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main())
