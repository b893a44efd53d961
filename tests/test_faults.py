"""Faults with real parts: Redis stops and comes back under a running server; nothing durable is lost."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from support import StueServer, start_redis, token_of
from wsclient import Client

pytestmark = pytest.mark.slow


def health(server: StueServer) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=2) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_redis_outage_is_reported_and_survived(stue_factory: Callable[..., StueServer]) -> None:
    redis = start_redis()
    try:
        first = stue_factory({"STUE_REDIS_URL": redis.url})
        second = stue_factory({"STUE_REDIS_URL": redis.url, "STUE_PUBLIC_URL": first.url})
        links = first.new_consultation()

        redis.stop(keep_files=True)
        status, body = health(first)
        assert (status, body["redis"]) == (503, "unreachable")
        client = await Client.open(first.ws_url, first.url)
        await client.send({"type": "join", "token": token_of(links["citizen_link"])})
        assert (await client.expect("error"))["code"] == "internal"
        assert await client.closed() == 1011

        # Redis comes back with its append-only file: the consultation is still there, and the bus reconnects.
        redis = start_redis(port=redis.port, workdir=redis.workdir)
        assert health(first)[0] == 200
        citizen = await Client.open(first.ws_url, first.url)
        await citizen.join(token_of(links["citizen_link"]))
        clinician = await Client.open(second.ws_url, first.url)
        await clinician.join(token_of(links["clinician_link"]))

        async def relayed() -> None:
            # While the bus reconnects, envelopes (even `peer-joined`) may be lost: clients offer again.
            while True:
                await clinician.send({"type": "offer", "to": citizen.id, "sdp": "v=0"})
                try:
                    while (await citizen.recv(timeout=0.5))["type"] != "offer":
                        pass
                    return
                except TimeoutError:
                    continue

        await asyncio.wait_for(relayed(), 10)
        # The citizen can answer even if its `peer-joined` was lost: the server looks the peer up.
        await citizen.send({"type": "answer", "to": clinician.id, "sdp": "v=0"})
        assert (await clinician.expect("answer"))["from"] == citizen.id
    finally:
        redis.stop()
