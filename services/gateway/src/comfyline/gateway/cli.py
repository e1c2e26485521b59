"""``python -m comfyline.gateway``: serve the API, or manage API keys.

::

    python -m comfyline.gateway                         # serve on GATEWAY_HOST:GATEWAY_PORT
    python -m comfyline.gateway keys create --owner u1 --role admin [--limit submit_per_min=1000]
    python -m comfyline.gateway keys list [--owner u1]
    python -m comfyline.gateway keys revoke key_...
    python -m comfyline.gateway admin --help          # the fleet over HTTP (= comfyline admin)

Key commands write the ``keys`` bucket over NATS with the same :class:`KeyStore` that backs
``/v1/keys``; ``create`` prints the secret once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

import uvicorn

from comfyline.contracts import bucket_spec
from comfyline.runtime import (
    Bus,
    run,
    settle_heap,
    setup_logging,
    setup_tracing,
    shutdown_tracing,
)

from .app import create_app
from .keys import KeyStore
from .schemas.account import LIMIT_NAMES
from .settings import Settings


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run uvicorn until ``stop`` is set (SIGTERM/SIGINT) or the server exits."""
    config = uvicorn.Config(
        create_app(settings, on_started=settle_heap),
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=True,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopper.cancel()
    await task


def _limits(items: Sequence[str]) -> dict[str, float]:
    limits = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in LIMIT_NAMES:
            raise SystemExit(f"unknown limit {name!r}; known: {', '.join(sorted(LIMIT_NAMES))}")
        limits[name] = float(value)
    return limits


async def keys_command(settings: Settings, args: argparse.Namespace) -> int:
    """Create, list or revoke keys in the ``keys`` bucket."""
    names = settings.names
    bus = await Bus.connect(settings.nats, names, "comfyline-gateway-cli")
    try:
        await bus.ensure_buckets([bucket_spec(names, "keys")])
        store = KeyStore(await bus.kv(names.bucket("keys")))
        if args.action == "create":
            secret, record = await store.create(
                args.owner,
                role=args.role,
                name=args.name,
                content_tier=args.tier,
                limits=_limits(args.limit),
            )
            print(json.dumps({"secret": secret, **record.model_dump(mode="json")}, indent=2))
            print("store the secret now: it is not shown again", file=sys.stderr)
        elif args.action == "list":
            for record in await store.list(args.owner):
                print(record.model_dump_json(exclude_none=True))
        else:
            record = await store.revoke(args.key_id, None)
            print(record.model_dump_json(exclude_none=True))
        return 0
    finally:
        await bus.close()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m comfyline.gateway", description=__doc__)
    commands = top.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the API (the default)")
    commands.add_parser("admin", help="operate the fleet: workers, model pauses, dead letters")
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    create = keys.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--owner", required=True)
    create.add_argument("--role", choices=["user", "admin"], default="user")
    create.add_argument("--name", default="")
    create.add_argument("--tier", choices=["general", "mature", "explicit"], default="general")
    create.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE")
    listing = keys.add_parser("list", help="list keys (an owner's, or all)")
    listing.add_argument("--owner")
    revoke = keys.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """The command line entry point."""
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["admin"]:
        from comfyline.client.admin_cli import app

        return int(app(given[1:], prog_name="comfyline-gateway admin", standalone_mode=False) or 0)
    args = parser().parse_args(argv)
    settings = Settings()
    setup_logging("gateway", settings.log_level, settings.log_json)
    if args.command == "keys":
        return asyncio.run(keys_command(settings, args))
    setup_tracing("gateway", settings.otel)

    async def service(stop: asyncio.Event) -> None:
        try:
            await serve(settings, stop)
        finally:
            shutdown_tracing()

    run(service)
    return 0
