"""The node classes the simulator implements, and the registry a server instance uses."""

from __future__ import annotations

from typing import Any

from comfyline.comfyui_sim.nodes import (
    audio,
    image,
    image_ops,
    lipsync,
    loaders,
    sampling,
    vhs,
    video,
    wan,
)
from comfyline.comfyui_sim.nodes.base import Node, NodeEnv

ALL_NODES: tuple[type[Node], ...] = (
    sampling.NODES
    + loaders.NODES
    + image.NODES
    + image_ops.NODES
    + wan.NODES
    + video.NODES
    + vhs.NODES
    + audio.NODES
    + lipsync.NODES
)


class NodeRegistry:
    """The node classes of one server: all of them minus `--disable-node` ones."""

    def __init__(self, env: NodeEnv, disabled: frozenset[str] = frozenset()) -> None:
        self.env = env
        self.classes: dict[str, type[Node]] = {
            cls.CLASS: cls for cls in ALL_NODES if cls.CLASS not in disabled
        }

    def get(self, class_type: Any) -> type[Node] | None:
        """The class for a `class_type` (unhashable values raise, as in ComfyUI)."""
        return self.classes.get(class_type)

    def object_info(self) -> dict[str, Any]:
        return {name: cls.info(self.env) for name, cls in self.classes.items()}


__all__ = ["ALL_NODES", "Node", "NodeEnv", "NodeRegistry"]
