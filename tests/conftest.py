"""Fixtures that start real parts on free loopback ports: Redis 7 and Stue server processes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import StueServer, free_port, start_server, wait_until


@dataclass
class RedisServer:
    url: str
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
def redis7() -> Iterator[RedisServer]:
    """Debian's redis-server (7.x) on a free port, with AOF on, in a temporary directory."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        pytest.fail("redis-server is not installed: run `make test` (it installs it) or apt-get install redis-server")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="stue-redis-")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir, "--appendonly", "yes",
         "--save", "", "--daemonize", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_until(answers, 10, "redis-server")
    yield RedisServer(f"redis://127.0.0.1:{port}/0", process)
    process.terminate()
    process.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


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
