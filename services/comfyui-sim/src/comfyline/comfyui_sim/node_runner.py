"""Running one node: cache hits, input resolution, the interrupt check, faults, the node's own
work with progress ticks, and the `executed` frame; failures come back as a `Failure`.

It mirrors ComfyUI's `execution.execute`: a cached output node only re-sends `executed` (with
the old UI) and its finished `progress_state`; an uncached node sends `progress_state`
(running) and `executing` before its work, so an interrupt names the node that never ran.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from comfyline.comfyui_sim.graph import is_link
from comfyline.comfyui_sim.hub import TEXT
from comfyline.comfyui_sim.nodes.base import Inputs as NodeInputs
from comfyline.comfyui_sim.nodes.base import (
    InterruptProcessingError,
    Node,
    NodeOutput,
    Preview,
    RunContext,
)
from comfyline.comfyui_sim.progress import ProgressRegistry
from comfyline.comfyui_sim.prompt_queue import QueueItem
from comfyline.comfyui_sim.validation import full_type_name

if TYPE_CHECKING:
    from comfyline.comfyui_sim.executor import Executor

log = logging.getLogger("comfyui_sim.executor")


def format_value(value: Any) -> Any:
    if value is None or isinstance(value, int | float | bool | str):
        return value
    return str(value)


class OutputCache:
    """ComfyUI's classic cache: outputs and UI by signature, pruned to the current prompt."""

    def __init__(self) -> None:
        self.outputs: dict[str, tuple[Any, ...]] = {}
        self.ui: dict[str, dict[str, Any]] = {}

    def keep_only(self, keys: set[str]) -> None:
        for store in (self.outputs, self.ui):
            for key in [k for k in store if k not in keys]:
                del store[key]

    def has(self, key: str) -> bool:
        return key in self.outputs


@dataclass
class Failure:
    """Why a node stopped the run: an interrupt, or an exception with its details."""

    node_id: str
    interrupted: bool = False
    details: dict[str, Any] = field(default_factory=dict)


class NodeRunner:
    """Runs the nodes of one prompt, one at a time, on the executor thread."""

    def __init__(
        self,
        executor: Executor,
        item: QueueItem,
        keys: dict[str, str],
        progress: ProgressRegistry,
    ) -> None:
        self.ex, self.item, self.keys, self.progress = executor, item, keys, progress
        self.executed: dict[str, None] = {}

    def execute(self, node_id: str) -> Failure | None:
        ex, hub, client_id = self.ex, self.ex.hub, self.item.client_id
        node = self.item.prompt[node_id]
        class_type = node["class_type"]
        key = self.keys[node_id]
        if ex.cache.has(key):
            if client_id is not None:
                output = ex.cache.ui.get(key)
                frame = {
                    "node": node_id,
                    "display_node": node_id,
                    "output": output,
                    "prompt_id": self.item.prompt_id,
                }
                hub.send_sync("executed", frame, client_id)
            self.progress.finish(node_id)
            return None
        self.progress.start(node_id)
        values: dict[str, Any] | None = None
        try:
            cls = ex.registry.get(class_type)
            if cls is None:
                raise KeyError(class_type)
            values = self._inputs(node_id, node, cls)
            if client_id is not None:
                hub.last_node_id = node_id
                frame = {"node": node_id, "display_node": node_id, "prompt_id": self.item.prompt_id}
                hub.send_sync("executing", frame, client_id)
            obj = ex.objects.get((node_id, class_type))
            if obj is None:
                obj = ex.objects[(node_id, class_type)] = cls()
            if ex.interrupted.is_set():
                raise InterruptProcessingError()
            self._faults(class_type)
            delay = ex.config.node_delay(class_type)
            if delay > 0:
                ex.stopping.wait(delay)
            ex.load_models(values)
            result = obj.run(self._context(node_id, key), NodeInputs(values))
        except InterruptProcessingError:
            log.info("Processing interrupted")
            return Failure(node_id, interrupted=True)
        except Exception as error:
            typ, _, tb = sys.exc_info()
            log.error("!!! Exception during processing !!! %s", error)
            formatted = {k: [format_value(v)] for k, v in (values or {}).items()}
            details = {
                "exception_message": f"{error}\n",
                "exception_type": full_type_name(typ or Exception),
                "traceback": traceback.format_tb(tb),
                "current_inputs": formatted,
            }
            return Failure(node_id, details=details)
        self._store(node_id, key, result)
        return None

    def _store(self, node_id: str, key: str, result: NodeOutput) -> None:
        ex, client_id = self.ex, self.item.client_id
        if result.ui:
            ex.cache.ui[key] = result.ui
            if client_id is not None:
                frame = {
                    "node": node_id,
                    "display_node": node_id,
                    "output": result.ui,
                    "prompt_id": self.item.prompt_id,
                }
                ex.hub.send_sync("executed", frame, client_id)
        ex.cache.outputs[key] = result.values
        self.progress.finish(node_id)
        self.executed[node_id] = None

    def _inputs(self, node_id: str, node: dict[str, Any], cls: type[Node]) -> dict[str, Any]:
        """ComfyUI's `get_input_data`: links resolved from the cache, undeclared inputs dropped."""
        types = cls.input_types(self.ex.registry.env)
        declared = {**types.get("required", {}), **types.get("optional", {})}
        values: dict[str, Any] = {}
        for name, raw in node["inputs"].items():
            if is_link(raw):
                upstream = self.ex.cache.outputs.get(self.keys[raw[0]])
                index = int(raw[1])
                values[name] = upstream[index] if upstream and index < len(upstream) else None
            elif name in declared or cls.ACCEPTS_EXTRA_INPUTS:
                values[name] = raw
        for name, kind in types.get("hidden", {}).items():
            if kind == "PROMPT":
                values[name] = self.item.prompt
            elif kind == "EXTRA_PNGINFO":
                values[name] = self.item.extra_data.get("extra_pnginfo")
            elif kind == "UNIQUE_ID":
                values[name] = node_id
        return values

    def _faults(self, class_type: str) -> None:
        config = self.ex.config
        if class_type in config.die_nodes:
            log.error("fault injection: exiting at %s (--die-at)", class_type)
            logging.shutdown()
            os._exit(70)
        if class_type in config.drop_ws_nodes:
            log.warning(
                "fault injection: dropping every WebSocket at %s (--drop-ws-at)", class_type
            )
            self.ex.hub.drop_all_sync()
        if class_type in config.fail_nodes:
            raise RuntimeError(
                f"Simulated failure in {class_type} (Comfyline ComfyUI simulator, --fail-node)"
            )

    def _context(self, node_id: str, key: str) -> RunContext:
        ex = self.ex

        def tick(value: int, total: int, preview: Preview | None) -> None:
            self.progress.tick(node_id, value, total, preview, ex.interrupted.is_set())

        def send_text(text: str) -> None:
            node = node_id.encode()
            ex.hub.send_sync(TEXT, struct.pack(">I", len(node)) + node + text.encode(), None)

        return RunContext(
            node_id=node_id,
            prompt_id=self.item.prompt_id,
            signature=key,
            config=ex.config,
            dirs=ex.dirs,
            prompt=self.item.prompt,
            extra_pnginfo=self.item.extra_data.get("extra_pnginfo"),
            tick=tick,
            send_text=send_text,
            pause=ex.stopping.wait,
        )
