"""Fixtures that start real parts on free loopback ports: Redis 7, Stue server processes, consultations."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
#: Every wait in the tests is multiplied by this; raise it on a slow machine instead of editing timeouts.
TIME_SCALE = float(os.environ.get("STUE_TEST_TIME_SCALE", "1"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout * TIME_SCALE
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


# --- Redis ---------------------------------------------------------------------------------------------------


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
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            workdir,
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

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


# --- Stue server processes -----------------------------------------------------------------------------------


@dataclass
class StueServer:
    url: str
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/ws"

    def new_consultation(self) -> dict[str, str]:
        return new_consultation(self.env)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def stue_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "server.cli", *args]


def new_consultation(env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run(
        stue_command("consultation", "new", "--json"),
        env={**os.environ, **env},
        capture_output=True,
        check=True,
        timeout=30 * TIME_SCALE,
        cwd=ROOT,
    )
    links: dict[str, str] = json.loads(out.stdout)
    return links


def start_server(env: dict[str, str], log_dir: Path, port: int | None = None) -> StueServer:
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    full_env = {"STUE_PUBLIC_URL": url, **env}
    log = log_dir / f"stue-{port}.log"
    process = subprocess.Popen(
        stue_command("serve", "--port", str(port)),
        env={**os.environ, **full_env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    server = StueServer(url, port, full_env, process, log)

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"stue serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=0.5) as response:  # noqa: S310 - loopback
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        wait_until(healthy, 30, "stue serve")
    except BaseException:
        server.stop()
        raise
    return server


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
    """One Stue server on the embedded Redis and on Redis 7 (the test runs once for each)."""
    return stue_factory(redis_env)


@pytest.fixture
def stue_embedded(stue_factory: Callable[..., StueServer], tmp_path: Path) -> StueServer:
    """One Stue server on the embedded Redis only."""
    return stue_factory({"STUE_DATA_DIR": str(tmp_path / "data")})


def token_of(link: str) -> str:
    return link.split("#t=", 1)[1]
