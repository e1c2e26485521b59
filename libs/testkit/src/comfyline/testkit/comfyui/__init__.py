"""Test tooling for ComfyUI's protocol, usable against the simulator or a real ComfyUI:
an HTTP + WebSocket client that records frames (`ComfyClient`, `Socket`, `Frame`), sample graphs
and files, and a replayer of recorded transcripts (`comfyline.testkit.comfyui.replay`)."""

from comfyline.testkit.comfyui.client import (
    DEFAULT_TIMEOUT,
    ComfyClient,
    Frame,
    Reply,
    ServerInfo,
    Socket,
    is_done,
    of_type,
)
from comfyline.testkit.comfyui.samples import (
    empty_image_graph,
    fresh_color,
    outputs_of,
    png_bytes,
    probe_media,
    slow_graph,
    txt2img_graph,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "ComfyClient",
    "Frame",
    "Reply",
    "ServerInfo",
    "Socket",
    "empty_image_graph",
    "fresh_color",
    "is_done",
    "of_type",
    "outputs_of",
    "png_bytes",
    "probe_media",
    "slow_graph",
    "txt2img_graph",
]
