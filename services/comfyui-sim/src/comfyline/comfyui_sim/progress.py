"""Per-node progress of one run, and the `progress_state` / `progress` / preview frames it makes.

Mirrors ComfyUI's progress registry: a node starts at 0.0/1.0 "running", progress ticks set
value/max, finishing sets value = max. Every change sends `progress_state` listing every
non-pending node (to the prompt's client, or to everyone when it has none). A tick also sends
`progress`, then its preview: binary type 4 with JSON metadata for a client that announced
`supports_preview_metadata`, otherwise type 1.
"""

from __future__ import annotations

import json
import struct
from typing import Any, TypedDict

from comfyline.comfyui_sim.hub import PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA, WebSocketHub
from comfyline.comfyui_sim.nodes.base import InterruptProcessingError, Preview


class NodeProgress(TypedDict):
    state: str
    value: float
    max: float


class ProgressRegistry:
    """Progress of every node touched in one run, in first-touched order."""

    def __init__(self, prompt_id: str, hub: WebSocketHub, client_id: str | None) -> None:
        self.prompt_id = prompt_id
        self._hub = hub
        self._client_id = client_id
        self.nodes: dict[str, NodeProgress] = {}

    def _entry(self, node_id: str) -> NodeProgress:
        if node_id not in self.nodes:
            self.nodes[node_id] = {"state": "pending", "value": 0, "max": 1}
        return self.nodes[node_id]

    def _send_state(self) -> None:
        active = {
            node_id: {
                "value": entry["value"],
                "max": entry["max"],
                "state": entry["state"],
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
            for node_id, entry in self.nodes.items()
            if entry["state"] != "pending"
        }
        data = {"prompt_id": self.prompt_id, "nodes": active}
        self._hub.send_sync("progress_state", data, self._client_id)

    def start(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry["state"], entry["value"], entry["max"] = "running", 0.0, 1.0
        self._send_state()

    def finish(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry["state"], entry["value"] = "finished", entry["max"]
        self._send_state()

    def update(self, node_id: str, value: float, total: float, preview: Preview | None) -> None:
        entry = self._entry(node_id)
        entry["state"], entry["value"], entry["max"] = "running", value, total
        self._send_state()
        if preview is not None and self._hub.supports_preview_metadata(self._client_id):
            metadata: dict[str, Any] = {
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
                "image_type": preview.mime,
            }
            header = json.dumps(metadata).encode()
            payload = struct.pack(">I", len(header)) + header + preview.data
            self._hub.send_sync(PREVIEW_IMAGE_WITH_METADATA, payload, self._client_id)

    def tick(
        self, node_id: str, value: int, total: int, preview: Preview | None, interrupted: bool
    ) -> None:
        """One progress-bar step: the interrupt check, then the frames in ComfyUI's order."""
        if interrupted:
            raise InterruptProcessingError()
        value = min(value, total)
        self.update(node_id, value, total, preview)
        data = {"value": value, "max": total, "prompt_id": self.prompt_id, "node": node_id}
        self._hub.send_sync("progress", data, self._client_id)
        if preview is not None and not self._hub.supports_preview_metadata(self._client_id):
            kind = 1 if preview.fmt == "JPEG" else 2
            self._hub.send_sync(
                PREVIEW_IMAGE, struct.pack(">I", kind) + preview.data, self._client_id
            )
