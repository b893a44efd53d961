"""Start and measure the processes a benchmark needs: redis-server, `stue serve`, the bare relay (loopback only)."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
#: Relay load is far above what a person sends, and every benchmark client comes from one address: the
#: per-connection frame budget and the per-address cap on sockets not yet joined would refuse the benchmark.
LOAD_LIMITS = {"STUE_FRAME_RATE": "100000", "STUE_FRAME_BURST": "100000", "STUE_MAX_UNJOINED_PER_ADDRESS": "100000"}
LOG_DIR = Path(tempfile.gettempdir()) / "stue-bench-logs"
#: The Origin every benchmark client sends; each Stue process allows it beside its own public origin.
ORIGIN = f"http://{HOST}"


def raise_nofile(wanted: int = 65_536) -> int:
    """Raise RLIMIT_NOFILE as far as allowed; processes started afterwards inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def rss_kib(pid: int) -> int:
    """VmRSS of `pid` in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time consumed so far by `pid`."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_config() -> dict[str, str]:
    """How this machine's CPUs idle, which sets how fast a sleeping process wakes: on a VM, a vCPU that halts has
    to be scheduled again by the host, and guest halt polling (`haltpoll`) trades CPU for a shorter wake-up."""

    def read(path: str) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return "unknown"

    return {
        "cpuidle_driver": read("/sys/devices/system/cpu/cpuidle/current_driver"),
        "guest_halt_poll_ns": read("/sys/module/haltpoll/parameters/guest_halt_poll_ns"),
    }


@dataclass
class Proc:
    """A child process started for a benchmark, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}; log {self.log}:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _spawn(name: str, argv: list[str], env: dict[str, str] | None, port: int) -> Proc:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{name}-{port}.log"
    process = subprocess.Popen(
        argv,
        env={**os.environ, **(env or {})},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    return Proc(name, process, log, port)


def start_redis() -> Proc:
    """A throwaway redis-server on a free loopback port."""
    port = free_port()
    proc = _spawn(
        "redis",
        [
            "/usr/bin/redis-server",
            "--port",
            str(port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--dir",
            tempfile.gettempdir(),
        ],
        None,
        port,
    )

    def answers() -> bool:
        proc.check_alive()
        try:
            with socket.create_connection((HOST, port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_until(answers, 10, "redis-server")
    proc.extra["url"] = f"redis://{HOST}:{port}/0"
    return proc


def _wait_http(proc: Proc, path: str) -> None:
    def healthy() -> bool:
        proc.check_alive()
        try:
            with urllib.request.urlopen(f"{proc.url}{path}", timeout=0.5) as response:  # noqa: S310 - loopback
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        wait_until(healthy, 30, proc.name)
    except BaseException:
        proc.stop()
        raise


def start_stue(redis_url: str, name: str = "stue") -> Proc:
    port = free_port()
    env = {
        "STUE_REDIS_URL": redis_url,
        "STUE_PUBLIC_URL": f"http://{HOST}:{port}",
        "STUE_ALLOWED_ORIGINS": ORIGIN,
        **LOAD_LIMITS,
    }
    proc = _spawn(name, [sys.executable, "-m", "server.cli", "serve", "--port", str(port)], env, port)
    _wait_http(proc, "/healthz")
    return proc


def start_bare(
    redis_url: str = "", node: str = "", peer: str = "", name: str = "bare", *, direct: bool = False
) -> Proc:
    """The bare relay; given a Redis URL, the hop-matched one (publishing to `peer`, subscribed as `node`); with
    `direct`, forwarding on Stue's direct path (server/wsprotocol.py) instead of through ASGI."""
    port = free_port()
    hops = ["--redis", redis_url, "--node", node, "--peer", peer] if redis_url else []
    flags = ["--direct"] if direct else []
    argv = [sys.executable, "-m", "bench.bare_relay", "--port", str(port), *hops, *flags]
    proc = _spawn(name, argv, None, port)
    _wait_http(proc, "/healthz")
    return proc


def settle_rss(pid: int, *, quiet_s: float = 0.5, timeout_s: float = 5.0) -> int:
    """RSS once it has stopped changing for `quiet_s` (bounded by `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    last = rss_kib(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = rss_kib(pid)
        if abs(now - last) < 64:
            return now
        last = now
    return last
