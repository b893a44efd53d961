"""Fixtures that start real parts on free loopback ports: Redis 7 and Stue server processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support import RedisServer, StueServer, start_redis, start_server


@pytest.fixture(scope="session")
def redis7() -> Iterator[RedisServer]:
    """Debian's redis-server (7.x) on a free port, with AOF on, in a temporary directory."""
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(params=["embedded", "redis7"])
def redis_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """STUE_* variables for the embedded Redis (a fresh data dir) or for Debian's Redis 7."""
    if request.param == "embedded":
        return {"STUE_DATA_DIR": str(tmp_path / "data")}
    server: RedisServer = request.getfixturevalue("redis7")
    return {"STUE_REDIS_URL": server.url, "STUE_DATA_DIR": str(tmp_path / "unused")}


@pytest.fixture
def stue_factory(tmp_path: Path) -> Iterator[Callable[..., StueServer]]:
    """Start Stue server processes; all are stopped at the end of the test."""
    started: list[StueServer] = []

    def factory(env: dict[str, str], port: int | None = None) -> StueServer:
        server = start_server(env, tmp_path, port)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def stue(stue_factory: Callable[..., StueServer], redis_env: dict[str, str]) -> StueServer:
    """One Stue server, run once on the embedded Redis and once on Redis 7."""
    return stue_factory(redis_env)


@pytest.fixture
def stue_embedded(stue_factory: Callable[..., StueServer], tmp_path: Path) -> StueServer:
    """One Stue server on the embedded Redis only."""
    return stue_factory({"STUE_DATA_DIR": str(tmp_path / "data")})
