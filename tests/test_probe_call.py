"""`stue probe` ↔ `stue probe` through real `stue serve` processes: the synthetic monitor end to end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from support import ROOT, TIME_SCALE, StueServer, free_port, stue_command, token_of
from wsclient import Client

pytestmark = pytest.mark.slow


async def start_probe(link: str, *, timeout: float) -> asyncio.subprocess.Process:
    """Start `stue probe LINK --json` as its own process."""
    return await asyncio.create_subprocess_exec(
        *stue_command("probe", link, "--json", "--timeout", str(timeout * TIME_SCALE)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=os.environ.copy(),
    )


async def probe(link: str, *, timeout: float = 20) -> tuple[int, dict[str, Any]]:
    """Run `stue probe LINK --json` as its own process; its exit status and report."""
    process = await start_probe(link, timeout=timeout)
    out, _ = await asyncio.wait_for(process.communicate(), (timeout + 15) * TIME_SCALE)
    assert process.returncode is not None
    report: dict[str, Any] = json.loads(out)
    return process.returncode, report


def assert_media_flowed(code: int, report: dict[str, Any]) -> None:
    assert code == 0, report
    assert report["connected"] is True
    assert report["connect_ms"] > 0
    assert report["frames_received"] > 0
    assert report["audio_packets_received"] > 0
    assert report["media_sent_confirmed"] is True
    assert report["remote_peers"] == 1


async def test_two_probes_call_each_other_through_the_server(stue: StueServer) -> None:
    links = stue.new_consultation()
    (code_a, citizen), (code_b, clinician) = await asyncio.gather(
        probe(links["citizen_link"]), probe(links["clinician_link"])
    )
    assert_media_flowed(code_a, citizen)
    assert_media_flowed(code_b, clinician)
    assert citizen["consultation"] == clinician["consultation"]


async def test_two_probes_on_two_server_processes(
    stue_factory: Callable[..., StueServer], redis_env: dict[str, str]
) -> None:
    first = stue_factory(redis_env)
    port = free_port()
    second = stue_factory({**redis_env, "STUE_PUBLIC_URL": f"http://127.0.0.1:{port}"}, port=port)
    links = first.new_consultation()
    clinician_link = links["clinician_link"].replace(first.url, second.url)
    (code_a, citizen), (code_b, clinician) = await asyncio.gather(probe(links["citizen_link"]), probe(clinician_link))
    assert_media_flowed(code_a, citizen)
    assert_media_flowed(code_b, clinician)


async def test_probe_reports_a_bad_link_and_an_unknown_token(stue_embedded: StueServer) -> None:
    code, report = await probe(f"{stue_embedded.url}/call#t={'z' * 32}", timeout=5)
    assert code == 3
    assert report["error"] == "bad_token"
    assert report["connected"] is False


async def test_probe_alone_times_out_with_exit_1(stue_embedded: StueServer) -> None:
    links = stue_embedded.new_consultation()
    code, report = await probe(links["citizen_link"], timeout=2)
    assert code == 1
    assert report["connected"] is False
    assert report["error"] == "timeout"


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_stopped_probe_leaves_at_once_and_still_reports(
    stue_embedded: StueServer, stop_signal: signal.Signals
) -> None:
    """A supervisor or `timeout` stopping the monitor: the other side hears `peer-left` (left) at once, not after
    the resume grace, and the probe prints its report with the signal's exit status."""
    links = stue_embedded.new_consultation()
    clinician = await Client.open(stue_embedded.ws_url, stue_embedded.url)
    await clinician.join(token_of(links["clinician_link"]))
    process = await start_probe(links["citizen_link"], timeout=60)
    joined = await clinician.expect("peer-joined", timeout=15)
    # The probe is the newcomer, so it offers; the clinician never answers, and the probe keeps negotiating.
    assert (await clinician.expect("offer"))["from"] == joined["participant"]
    process.send_signal(stop_signal)
    left = await clinician.expect("peer-left", timeout=5)
    assert left == {"type": "peer-left", "participant": joined["participant"], "reason": "left"}
    out, _ = await asyncio.wait_for(process.communicate(), 10 * TIME_SCALE)
    assert process.returncode == 128 + stop_signal
    report = json.loads(out)
    assert report["error"] == "interrupted"
    assert report["stage"] == "negotiating"
    assert report["connected"] is False
    await clinician.close()
