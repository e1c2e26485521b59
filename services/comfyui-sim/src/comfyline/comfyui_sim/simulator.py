"""One simulator instance: the pieces a server is made of, wired together once."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from comfyline.comfyui_sim.config import SIMULATOR_NAME, SIMULATOR_VERSION, SimConfig
from comfyline.comfyui_sim.executor import Executor
from comfyline.comfyui_sim.hub import WebSocketHub
from comfyline.comfyui_sim.nodes import NodeEnv, NodeRegistry
from comfyline.comfyui_sim.paths import DataDirs
from comfyline.comfyui_sim.prompt_queue import PromptQueue
from comfyline.comfyui_sim.validation import Validator


def _memory() -> tuple[int, int]:
    """(total, available) bytes of RAM, as the CPU "device" of `/system_stats` reports it."""
    try:
        info = {}
        with open("/proc/meminfo") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                info[name] = int(rest.split()[0]) * 1024
        return info["MemTotal"], info.get("MemAvailable", info.get("MemFree", 0))
    except (OSError, KeyError, ValueError, IndexError):
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return pages, pages // 2


class Simulator:
    """Config, folders, node classes, validator, WebSocket hub, queue and executor."""

    def __init__(self, config: SimConfig, argv: Sequence[str] = ()) -> None:
        self.config = config
        self.release = config.release
        self.argv = ["comfyui-sim", *argv]
        self.dirs = DataDirs.create(config.data_dir)
        self.registry = NodeRegistry(NodeEnv(config, self.dirs), config.disabled_nodes)
        self.validator = Validator(self.registry, config.release)
        self.features = {
            "supports_preview_metadata": True,
            "max_upload_size": config.max_upload_size,
        }
        self.hub = WebSocketHub(self.queue_info, self.features)
        self.queue = PromptQueue(self.hub.broadcast_status)
        self.executor = Executor(config, self.dirs, self.registry, self.queue, self.hub)
        self.number = 0

    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.queue.remaining()}}

    def system_stats(self) -> dict[str, Any]:
        """The documented shape, with the simulator named in `argv`, `pytorch_version`, the
        device name and an extra `simulator` key, so nobody mistakes it for ComfyUI."""
        total, free = _memory()
        return {
            "system": {
                "os": os.name,
                "ram_total": total,
                "ram_free": free,
                "comfyui_version": self.release.version,
                "required_frontend_version": "1.27.10",
                "installed_templates_version": "0.1.95",
                "required_templates_version": "0.1.95",
                "python_version": sys.version,
                "pytorch_version": f"none ({SIMULATOR_NAME})",
                "embedded_python": False,
                "argv": self.argv,
                "simulator": {
                    "name": SIMULATOR_NAME,
                    "version": SIMULATOR_VERSION,
                    "plays_comfyui": self.release.version,
                    "note": "not ComfyUI: a protocol-faithful simulator that runs no models",
                },
            },
            "devices": [
                {
                    "name": f"cpu ({SIMULATOR_NAME})",
                    "type": "cpu",
                    "index": None,
                    "vram_total": total,
                    "vram_free": free,
                    "torch_vram_total": total,
                    "torch_vram_free": free,
                }
            ],
        }


SIMULATOR = web.AppKey("simulator", Simulator)
