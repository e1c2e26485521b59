"""The Comfyline ComfyUI simulator: a protocol-faithful stand-in for a ComfyUI server.

It is not ComfyUI and runs no models; it answers ComfyUI's HTTP and WebSocket protocol as
ComfyUI 0.3.64 does (docs/comfyui-protocol.md), and writes real, deterministic output files.

- `create_app(config)`: an aiohttp application for in-process tests.
- `SimulatorProcess`: start it as a subprocess on a free port, wait until ready, stop by PID.
- `SimConfig`, `Release`, `config_from_args`: every knob.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from comfyline.comfyui_sim.config import (
    DEFAULT_MODELS,
    SIMULATOR_NAME,
    Release,
    SimConfig,
    config_from_args,
)

if TYPE_CHECKING:
    from comfyline.comfyui_sim.launcher import SimulatorProcess
    from comfyline.comfyui_sim.server import create_app, serve


def __getattr__(name: str) -> Any:
    """Load the server and the launcher on demand, so `python -m` starts fast."""
    if name == "SimulatorProcess":
        from comfyline.comfyui_sim.launcher import SimulatorProcess

        return SimulatorProcess
    if name in ("create_app", "serve"):
        from comfyline.comfyui_sim import server

        return getattr(server, name)
    raise AttributeError(name)


__all__ = [
    "DEFAULT_MODELS",
    "SIMULATOR_NAME",
    "Release",
    "SimConfig",
    "SimulatorProcess",
    "config_from_args",
    "create_app",
    "serve",
]
