"""Settings are validated at start-up with one clear line each."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import load_settings
from server.exceptions import ConfigError


def test_defaults() -> None:
    settings = load_settings({})
    assert settings.redis_url is None
    assert settings.public_url == "http://127.0.0.1:8000"
    assert settings.data_dir == Path(".data")
    assert settings.origins == {"http://127.0.0.1:8000"}
    assert settings.link("abc") == "http://127.0.0.1:8000/call#t=abc"
    assert settings.resume_grace_s == 20
    assert settings.max_unjoined_per_address == 50
    assert settings.trusted_proxies == ("127.0.0.1", "::1")


def test_resume_grace_is_read_in_seconds() -> None:
    assert load_settings({"STUE_RESUME_GRACE": "1.5"}).resume_grace_s == 1.5


def test_max_unjoined_per_address_is_a_whole_number() -> None:
    assert load_settings({"STUE_MAX_UNJOINED_PER_ADDRESS": "3"}).max_unjoined_per_address == 3


def test_trusted_proxies_are_addresses_and_networks_written_as_uvicorn_compares_them() -> None:
    settings = load_settings({"STUE_TRUSTED_PROXIES": " 10.0.0.0/8, 192.0.2.10 ,2001:DB8::1,fd00::/64"})
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.0.2.10", "2001:db8::1", "fd00::/64")
    assert load_settings({"STUE_TRUSTED_PROXIES": ""}).trusted_proxies == ()  # no proxy trusted


def test_allowed_origins_are_added_to_the_public_origin() -> None:
    settings = load_settings(
        {
            "STUE_PUBLIC_URL": "https://stue.example.dk/",
            "STUE_ALLOWED_ORIGINS": "https://a.example, https://B.example:8443",
        }
    )
    assert settings.origins == {"https://stue.example.dk", "https://a.example", "https://b.example:8443"}
    assert settings.link("t") == "https://stue.example.dk/call#t=t"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"STUE_PUBLIC_URL": "ftp://x"}, "STUE_PUBLIC_URL"),
        ({"STUE_PUBLIC_URL": "localhost:8000"}, "STUE_PUBLIC_URL"),
        ({"STUE_PUBLIC_URL": "http://x:99999"}, "bad port"),
        ({"STUE_REDIS_URL": "http://localhost:6379"}, "STUE_REDIS_URL"),
        ({"STUE_MEMBERSHIP_TTL": "soon"}, "STUE_MEMBERSHIP_TTL"),
        ({"STUE_RESUME_GRACE": "twenty"}, "STUE_RESUME_GRACE"),
        ({"STUE_RESUME_GRACE": "0"}, "greater than zero"),
        ({"STUE_FRAME_RATE": "-1"}, "greater than zero"),
        ({"STUE_NODE_ID": "a b"}, "STUE_NODE_ID"),
        ({"STUE_MAX_UNJOINED_PER_ADDRESS": "0"}, "STUE_MAX_UNJOINED_PER_ADDRESS='0' must be at least 1"),
        ({"STUE_MAX_UNJOINED_PER_ADDRESS": "2.5"}, "STUE_MAX_UNJOINED_PER_ADDRESS='2.5' is not a whole number"),
        ({"STUE_MAX_UNJOINED_PER_ADDRESS": "many"}, "not a whole number"),
        ({"STUE_TRUSTED_PROXIES": "proxy.internal"}, "'proxy.internal' is not an IP address or network"),
        ({"STUE_TRUSTED_PROXIES": "127.0.0.1,10.0.0.1/8"}, "has host bits set"),
        ({"STUE_TRUSTED_PROXIES": "*"}, "any client choose its own address"),
        ({"STUE_REDIS_ULR": "redis://x"}, "unknown setting STUE_REDIS_ULR"),
    ],
)
def test_bad_settings_say_what_and_how(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings(env)
