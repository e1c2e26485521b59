"""``comfyline``: run the whole system locally.

comfyline up [--state-dir DIR] [--port 8000]      start everything, Ctrl-C stops it
comfyline down [--state-dir DIR]                  stop a stack started elsewhere
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from .local import LocalStack
from .servers import ServerError
from .supervisor import Supervisor

DEFAULT_STATE = Path(".comfyline")


def _up(args: argparse.Namespace) -> int:
    comfyui_url = os.environ.get("COMFYUI_URL") or None
    stack = LocalStack(
        state_dir=args.state_dir.resolve(),
        port=args.port,
        host=args.host,
        comfyui_url=comfyui_url,
        sim_args=["--step-time", str(args.sim_step_time)] if args.sim_step_time else [],
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

  API         {info["gateway_url"]}/v1
  Docs        {info["docs_url"]}
  Playground  {info["playground_url"]}
  S3          {info["s3_endpoint"]} (bucket {info["s3_bucket"]})
  NATS        {info["nats_url"]}
  ComfyUI     {info["comfyui_url"]}{sim_note}

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="comfyline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the whole system locally")
    up.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    up.add_argument("--port", type=int, default=8000, help="the gateway's port")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--sim-step-time", type=float, default=0.0, help="simulator s per step")
    up.set_defaults(run=_up)
    down = sub.add_parser("down", help="stop the stack recorded in the state folder")
    down.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    down.set_defaults(run=_down)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
