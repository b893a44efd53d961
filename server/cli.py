"""The `stue` command: serve, create consultations, probe a link."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any, Final

from server.config import Settings, load_settings
from server.exceptions import ConfigError
from server.protocol import TRANSPORT_MAX_BYTES
from server.store.connection import open_redis, stop_unstopped
from server.store.consultations import ConsultationStore, NewConsultation

log = logging.getLogger("stue")

#: How uvicorn serves the benchmarks' bare relay, and Stue apart from its WebSocket protocol (`SERVE_OPTIONS`), so
#: the two are compared like for like.
UVICORN_OPTIONS: Final[dict[str, Any]] = {
    "loop": "asyncio",  # measured: uvloop, if installed, made the relay's p50 worse (0.7 ms vs 0.5 ms)
    "ws": "websockets-sansio",
    "ws_max_size": TRANSPORT_MAX_BYTES,  # uvicorn's default is 16 MiB
    "ws_per_message_deflate": False,  # compression costs ~64 KiB per connection and CPU per frame
    "ws_ping_interval": 20.0,
    "ws_ping_timeout": 20.0,
    "access_log": False,
    "log_level": "info",
    "lifespan": "on",
}
#: What `stue serve` runs: the same, on the subclass of that protocol with a direct path for frames (by name, so
#: that commands other than `serve` do not import uvicorn).
SERVE_OPTIONS: Final[dict[str, Any]] = {**UVICORN_OPTIONS, "ws": "server.wsprotocol:DirectWebSocketProtocol"}


class _WithoutClientAddresses(logging.Filter):
    """Drops uvicorn's line per WebSocket handshake (`<address>:<port> - "WebSocket /ws" [accepted]`, or 403),
    which it writes even with the access log off: client addresses are personal data and stay out of the logs.
    Stue logs the refusals it makes itself, without the address."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith('%s - "WebSocket '))


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {host} is in use; stop the other program or choose one with --port"
                ) from None
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


async def _new_consultation(settings: Settings) -> NewConsultation:
    handle = await open_redis(settings)
    try:
        store = ConsultationStore(handle.client, membership_ttl_s=settings.membership_ttl_s)
        return await store.create(now_ms=int(time.time() * 1000), ttl_s=settings.consultation_ttl_s)
    finally:
        await handle.close()


def _links(settings: Settings, made: NewConsultation) -> dict[str, str]:
    return {
        "consultation": made.consultation,
        "citizen_link": settings.link(made.tokens["citizen"]),
        "clinician_link": settings.link(made.tokens["clinician"]),
        "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(made.expires_ms / 1000)),
    }


def _print_links(links: dict[str, str]) -> None:
    print(f"Consultation {links['consultation']} (until {links['expires_at']})")
    print(f"  citizen:   {links['citizen_link']}")
    print(f"  clinician: {links['clinician_link']}")


class _Terminated(Exception):
    """SIGTERM, as systemd, `docker stop` and `timeout` send it."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


async def _serve(settings: Settings, host: str, port: int, demo: bool) -> None:
    import uvicorn

    from server.app import create_app

    handle = await open_redis(settings)
    try:
        config = uvicorn.Config(
            create_app(settings, handle),
            host=host,
            port=port,
            # Given always, so uvicorn's own FORWARDED_ALLOW_IPS (unvalidated) never decides who the client is.
            forwarded_allow_ips=list(settings.trusted_proxies),
            **SERVE_OPTIONS,
        )
        logging.getLogger("uvicorn.error").addFilter(_WithoutClientAddresses())  # after uvicorn set up its logging
        server = uvicorn.Server(config)
        _tune_gc()
        # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler it found (ours,
        # from `main`), which unwinds to stop the embedded Redis below.
        serving = asyncio.create_task(server.serve())
        # Print the links only once the port is open.
        while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn offers only a flag
            await asyncio.sleep(0.05)
        if server.started:
            print(f"Stue is serving {settings.public_url} (Redis: {handle.description})", flush=True)
            if demo:
                store = ConsultationStore(handle.client, membership_ttl_s=settings.membership_ttl_s)
                made = await store.create(now_ms=int(time.time() * 1000), ttl_s=settings.consultation_ttl_s)
                print("Try a call: open the two links in two browser windows (or on a tablet and a PC).")
                _print_links(_links(settings, made))
                sys.stdout.flush()
        await serving
    finally:
        await handle.close()


def _tune_gc() -> None:
    """Shorten the garbage collector's full pauses: start-up objects (modules, Starlette, uvicorn) are frozen,
    so no collection scans them again."""
    gc.collect()
    gc.freeze()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stue", description="Stue: video consultations for homecare.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the web and signalling server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--demo", action="store_true", help="also create a consultation and print its links")

    consultation = commands.add_parser("consultation", help="manage consultations")
    consultation_commands = consultation.add_subparsers(dest="action", required=True)
    new = consultation_commands.add_parser("new", help="create a consultation and print its links")
    new.add_argument("--json", action="store_true", help="print JSON")

    probe = commands.add_parser("probe", help="join a consultation as a headless participant and report")
    probe.add_argument("link")
    probe.add_argument("--timeout", type=float, default=20.0, help="give up after this many seconds")
    probe.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (systemd, `docker stop`, `timeout`) unwinds as Ctrl-C does: by default it would end the process at
    # once, and leave the embedded Redis it started running. (The probe sets its own, to leave its consultation.)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except _Terminated:
        return 128 + signal.SIGTERM
    finally:
        stop_unstopped()


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("aioice", "aiortc"):  # ICE check chatter, at INFO, on every probe
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        settings = load_settings()
        if args.command == "serve":
            if not 0 < args.port < 65536:
                raise ConfigError(f"--port {args.port} is not a port number")
            _check_port_free(args.host, args.port)
            asyncio.run(_serve(settings, args.host, args.port, args.demo))
            return 0
        if args.command == "consultation":
            links = _links(settings, asyncio.run(_new_consultation(settings)))
            if args.json:
                print(json.dumps(links))
            else:
                _print_links(links)
            return 0
        if args.command == "probe":
            from server.probe import main as probe_main

            return probe_main(args.link, timeout=args.timeout, json_output=args.json)
    except ConfigError as exc:
        print(f"stue: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
