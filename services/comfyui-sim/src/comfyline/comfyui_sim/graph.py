"""Graph bookkeeping for one run: cache signatures and the order nodes execute in.

- `Signatures`: ComfyUI's input-signature cache key, as a Merkle hash: class, IS_CHANGED value,
  literal inputs and the signatures of linked ancestors. Node ids only count for nodes with a
  hidden UNIQUE_ID input. Equal signature means "cached".
- `ExecutionList`: ComfyUI's `ExecutionList`: a node is added with its uncached ancestors
  (depth first), runs when nothing blocks it, and among ready nodes an output node is picked
  first, then a node feeding an output, then one two hops from an output (its "UX-friendly" pick).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from comfyline.comfyui_sim.nodes import NodeRegistry
from comfyline.comfyui_sim.nodes.media import digest


def is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int | float)
    )


class Signatures:
    """Cache keys of every node of one prompt, computed lazily and memoised."""

    def __init__(self, prompt: dict[str, Any], registry: NodeRegistry) -> None:
        self._prompt = prompt
        self._registry = registry
        self._memo: dict[str, str] = {}
        self._visiting: set[str] = set()

    def of(self, node_id: str) -> str:
        if node_id in self._memo:
            return self._memo[node_id]
        node = self._prompt.get(node_id)
        if node is None or node_id in self._visiting:
            return f"unknown-{time.time_ns()}"
        self._visiting.add(node_id)
        cls = self._registry.get(node["class_type"])
        parts: list[Any] = [node["class_type"]]
        if cls is not None:
            try:
                parts.append(repr(cls.is_changed(self._registry.env, node["inputs"])))
            except Exception:
                parts.append(f"nan-{time.time_ns()}")
            hidden = cls.input_types(self._registry.env).get("hidden", {})
            if "UNIQUE_ID" in hidden.values():
                parts.append(node_id)
        inputs = node["inputs"]
        for key in sorted(inputs):
            value = inputs[key]
            if is_link(value):
                parts.append((key, "ANCESTOR", self.of(value[0]), value[1]))
            else:
                parts.append((key, json.dumps(value, sort_keys=True)))
        self._visiting.discard(node_id)
        self._memo[node_id] = digest(*parts)
        return self._memo[node_id]


class DependencyCycleError(Exception):
    """No node can run, yet some are pending."""


class ExecutionList:
    """Which node runs next, ComfyUI's way."""

    def __init__(
        self,
        prompt: dict[str, Any],
        is_cached: Callable[[str], bool],
        is_output: Callable[[str], bool],
    ) -> None:
        self._prompt = prompt
        self._is_cached = is_cached
        self._is_output = is_output
        self.pending: dict[str, bool] = {}
        self._block_count: dict[str, int] = {}
        self._blocking: dict[str, dict[str, dict[int, bool]]] = {}

    def add_node(self, node_id: str) -> None:
        stack = [node_id]
        links: list[tuple[str, float, str]] = []
        while stack:
            unique_id = stack.pop()
            if unique_id in self.pending:
                continue
            self.pending[unique_id] = True
            self._block_count[unique_id] = 0
            self._blocking[unique_id] = {}
            for value in self._prompt[unique_id]["inputs"].values():
                if is_link(value):
                    from_id, socket = value
                    if not self._is_cached(from_id):
                        stack.append(from_id)
                    links.append((from_id, socket, unique_id))
        for from_id, socket_value, to_id in links:
            socket = int(socket_value)
            if not self._is_cached(from_id):
                self.add_node(from_id)
                if to_id not in self._blocking[from_id]:
                    self._blocking[from_id][to_id] = {}
                    self._block_count[to_id] += 1
                self._blocking[from_id][to_id][socket] = True

    def is_empty(self) -> bool:
        return not self.pending

    def stage(self) -> str:
        """The next node to run; raises DependencyCycleError when none is ready."""
        ready = [n for n in self.pending if self._block_count[n] == 0]
        if not ready:
            raise DependencyCycleError("Dependency cycle detected")
        for node_id in ready:
            if self._is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self._is_output(b) for b in self._blocking[node_id]):
                return node_id
        for node_id in ready:
            for blocked in self._blocking[node_id]:
                if any(self._is_output(b) for b in self._blocking.get(blocked, {})):
                    return node_id
        return ready[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self._blocking.pop(node_id, {}):
            self._block_count[blocked] -= 1
