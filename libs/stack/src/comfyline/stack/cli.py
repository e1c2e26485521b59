"""``comfyline``: the command line, with ``up`` and ``down`` to run the whole system locally.

comfyline up [--state-dir DIR] [--port 8000]      start everything, Ctrl-C stops it
    [--nats-nodes 3]                              ... on a 3-node NATS cluster started here
    [--nats-url URLS --nats-replicas 3]           ... on a NATS (cluster) already running
    [--gateways 2]                                ... with more than one gateway process
comfyline down [--state-dir DIR]                  stop a stack started elsewhere

Every other command (``run``, ``jobs``, ``models``, ...) is :mod:`comfyline.client.cli`'s.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from comfyline.client.cli import EPILOG, app
from comfyline.client.cli import main as client_main

from .local import LocalStack
from .servers import ServerError
from .supervisor import Supervisor

DEFAULT_STATE = Path(".comfyline")


def _up(args: argparse.Namespace) -> int:
    comfyui_url = os.environ.get("COMFYUI_URL") or None
    output_dir = os.environ.get("COMFYUI_OUTPUT_DIR") or None
    stack = LocalStack(
        state_dir=args.state_dir.resolve(),
        port=args.port,
        host=args.host,
        comfyui_url=comfyui_url,
        comfyui_output_dir=Path(output_dir).resolve() if comfyui_url and output_dir else None,
        nats_url=args.nats_url,
        nats_nodes=args.nats_nodes,
        nats_replicas=args.nats_replicas,
        gateways=args.gateways,
        sim_args=(["--step-time", str(args.sim_step_time)] if args.sim_step_time else [])
        # More simulator knobs for demos and fault tests, e.g. "--node-delay EmptyImage=0.05".
        + shlex.split(os.environ.get("COMFYLINE_SIM_ARGS", "")),
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"Comfyline: starting (state in {stack.state_dir})", flush=True)
    try:
        info = stack.start()
    except ServerError as exc:
        print(f"Comfyline could not start: {exc}", file=sys.stderr)
        return 1
    sim_note = " (Comfyline's ComfyUI simulator)" if info["comfyui_is_simulator"] else ""
    print(
        f"""
Comfyline is up in {info["started_in_s"]} s.

  API         {", ".join(f"{url}/v1" for url in info["gateway_urls"])}
  Docs        {info["docs_url"]}
  Playground  {info["playground_url"]}
  S3          {info["s3_endpoint"]} (bucket {info["s3_bucket"]})
  NATS        {", ".join(info["nats_urls"])} ({info["nats_replicas"]} replicas)
  ComfyUI     {info["comfyui_url"]}{sim_note}
  CORS        browsers may call the API from {info["cors_origins"]}

  Dev API key {info["api_key"]}
  Try it:     curl -s -H "Authorization: Bearer {info["api_key"]}" \\
                -H 'Content-Type: application/json' \\
                -d '{{"model": "cpu-smoke", "input": {{"width": 256, "height": 128}}}}' \\
                {info["gateway_url"]}/v1/jobs

  Logs in {stack.logs}; details in {stack.state_dir / "stack.json"}. Ctrl-C stops everything.
""",
        flush=True,
    )
    supervisor = Supervisor(stack.all_children, lambda line: print(line, file=sys.stderr))
    try:
        while not stop.wait(0.5):
            before = supervisor.restarts
            if supervisor.check() is not None:
                return 1
            if supervisor.restarts != before:
                stack.record_pids(supervisor.restarts)
        return 0
    finally:
        print("Comfyline: stopping", flush=True)
        stack.stop()
        (stack.state_dir / "stack.json").unlink(missing_ok=True)
        print("Comfyline: stopped", flush=True)


def _down(args: argparse.Namespace) -> int:
    path = args.state_dir / "stack.json"
    if not path.exists():
        print(f"no running stack recorded in {path}")
        return 1
    info = json.loads(path.read_text())
    up_pid = info.get("up_pid")
    if up_pid:
        os.kill(int(up_pid), signal.SIGTERM)
        print(f"asked comfyline up (pid {up_pid}) to stop")
    return 0


StateDir = Annotated[
    Path, typer.Option("--state-dir", help="Where the stack keeps its data, logs and stack.json.")
]


@app.command(epilog=EPILOG)
def up(
    state_dir: StateDir = DEFAULT_STATE,
    port: Annotated[int, typer.Option(help="The gateway's port (another if taken).")] = 8000,
    host: Annotated[str, typer.Option(help="The address the gateway listens on.")] = "127.0.0.1",
    sim_step_time: Annotated[
        float, typer.Option(help="Seconds per sampling step in the ComfyUI simulator.")
    ] = 0.0,
    nats_url: Annotated[
        str | None,
        typer.Option(
            envvar="COMFYLINE_NATS_URL",
            help="Use this NATS instead of starting one: a URL, or a cluster's node URLs "
            "comma-separated (nats://127.0.0.1:4222,nats://127.0.0.1:4223,...).",
        ),
    ] = None,
    nats_nodes: Annotated[
        int,
        typer.Option(
            min=1, max=5, help="Start this many nats-server nodes here, as one JetStream cluster."
        ),
    ] = 1,
    nats_replicas: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=5,
            envvar="COMFYLINE_NATS_REPLICAS",
            help="Copies of each stream and KV bucket (default: the nodes started here, at most "
            "3; 1 on a NATS given with --nats-url).",
        ),
    ] = None,
    gateways: Annotated[
        int,
        typer.Option(
            min=1, max=8, help="Gateway processes (the first on --port, the others on free ports)."
        ),
    ] = 1,
) -> None:
    """Start the whole system on this machine (NATS, S3, ComfyUI or its simulator, the
    services); Ctrl-C stops it. Writes STATE_DIR/stack.json, which the other commands read."""
    args = argparse.Namespace(
        state_dir=state_dir,
        port=port,
        host=host,
        sim_step_time=sim_step_time,
        nats_url=nats_url,
        nats_nodes=nats_nodes,
        nats_replicas=nats_replicas,
        gateways=gateways,
    )
    raise typer.Exit(_up(args))


@app.command(epilog=EPILOG)
def down(state_dir: StateDir = DEFAULT_STATE) -> None:
    """Stop the stack that `comfyline up` started with this state folder."""
    raise typer.Exit(_down(argparse.Namespace(state_dir=state_dir)))


def main(argv: list[str] | None = None) -> int:
    """``comfyline ...``: the exit code."""
    return client_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
