"""Figure (a), browser part: two Chromium pages through Stue beside two RTCPeerConnections in one page."""

from __future__ import annotations

from typing import Any

from bench.procs import ROOT
from bench.report import Metric


def ready() -> tuple[bool, str]:
    for name in ("main.js", "peer.js"):
        path = ROOT / "web" / "js" / name
        if not path.exists() or path.stat().st_size < 2000:
            return False, f"web/js/{name} is missing or still a stub"
    return False, "not written yet"


def run(quick: bool = False) -> tuple[list[Metric], dict[str, Any]]:
    raise NotImplementedError
