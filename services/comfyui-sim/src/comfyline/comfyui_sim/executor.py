"""The single executor thread: takes one prompt at a time and runs it the way ComfyUI does.

For each prompt: `execution_start`, `execution_cached`, then node by node `progress_state`
(running) -> `executing` -> node work (progress ticks) -> `executed` (output nodes) ->
`progress_state` (finished); then `execution_success` (or `execution_error` /
`execution_interrupted`), a pause of `--history-delay` (the real server's race: the history
entry is written after `execution_success`), the history entry with its `status` broadcast, and
finally `executing {node: null}`. Frames that name the prompt go to its `client_id` only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from comfyline.comfyui_sim.config import SimConfig
from comfyline.comfyui_sim.graph import DependencyCycleError, ExecutionList, Signatures
from comfyline.comfyui_sim.history import HistoryEntry
from comfyline.comfyui_sim.hub import WebSocketHub
from comfyline.comfyui_sim.node_runner import Failure, NodeRunner, OutputCache
from comfyline.comfyui_sim.nodes import NodeRegistry
from comfyline.comfyui_sim.nodes.base import (
    Node,
)
from comfyline.comfyui_sim.paths import DataDirs
from comfyline.comfyui_sim.progress import ProgressRegistry
from comfyline.comfyui_sim.prompt_queue import PromptQueue, QueueItem

log = logging.getLogger("comfyui_sim.executor")

#: How many executions ``GET /sim/executions`` remembers (ComfyUI's history size).
EXECUTION_LOG_SIZE = 10000


def now_ms() -> int:
    return int(time.time() * 1000)


class Executor:
    """Owns the executor thread, the output cache, node instances and the interrupt flag."""

    def __init__(
        self,
        config: SimConfig,
        dirs: DataDirs,
        registry: NodeRegistry,
        queue: PromptQueue,
        hub: WebSocketHub,
    ) -> None:
        self.config, self.dirs, self.registry = config, dirs, registry
        self.queue, self.hub = queue, hub
        self.cache = OutputCache()
        self.objects: dict[tuple[str, str], Node] = {}
        self.interrupted = threading.Event()
        self.stopping = threading.Event()
        self.folder_of = {name: f for f, names in config.models.items() for name in names}
        self.loaded: dict[str, str] = {}  # model folder -> the file loaded from it last
        self.model_loads = 0
        #: Simulator-only: when each prompt ran, as epoch seconds (``GET /sim/executions``).
        self._executions: deque[dict[str, Any]] = deque(maxlen=EXECUTION_LOG_SIZE)
        self._executions_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="comfyui-sim-executor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        self.interrupted.set()
        self.queue.close()
        self._thread.join(timeout)

    def load_models(self, values: dict[str, Any]) -> None:
        """A node reads model files: a file other than its folder's loaded one costs the load
        time (``--model-load-time``); one already loaded costs nothing, as on a GPU server."""
        for value in values.values():
            folder = self.folder_of.get(value) if isinstance(value, str) else None
            if folder is None or self.loaded.get(folder) == value:
                continue
            self.loaded[folder] = value
            self.model_loads += 1
            if self.config.model_load_time > 0:
                self.stopping.wait(self.config.model_load_time)

    def interrupt(self) -> None:
        """Cooperative: the running node finishes; the next boundary or tick stops the run."""
        self.interrupted.set()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            got = self.queue.get(timeout=0.5)
            if got is None:
                continue
            item, task_id = got
            started = time.perf_counter()
            began = time.time()
            try:
                entry = self._run_prompt(item)
            except Exception:
                log.exception("simulator bug while running prompt %s", item.prompt_id)
                entry = self._entry(item, {}, {}, False, [])
            ended = time.time()
            if self.stopping.wait(self.config.history_delay):
                return
            self.queue.task_done(task_id, entry)
            self._log_execution(item, began, ended, entry["status"]["completed"])
            if item.client_id is not None:
                self.hub.send_sync(
                    "executing", {"node": None, "prompt_id": item.prompt_id}, item.client_id
                )
            log.info("Prompt executed in %.2f seconds", time.perf_counter() - started)

    def _log_execution(self, item: QueueItem, began: float, ended: float, success: bool) -> None:
        record = {
            "prompt_id": item.prompt_id,
            "queued": item.queued_at,
            "started": began,
            "ended": ended,
            "done": time.time(),
        }
        with self._executions_lock:
            self._executions.append(record | {"success": success})

    def executions(self) -> list[dict[str, Any]]:
        """Simulator-only: when each prompt ran, oldest first (``GET /sim/executions``)."""
        with self._executions_lock:
            return list(self._executions)

    @staticmethod
    def _entry(
        item: QueueItem,
        outputs: dict[str, Any],
        meta: dict[str, Any],
        success: bool,
        messages: list[list[Any]],
    ) -> HistoryEntry:
        return {
            "prompt": item.wire(),
            "outputs": outputs,
            "status": {
                "status_str": "success" if success else "error",
                "completed": success,
                "messages": messages,
            },
            "meta": meta,
        }

    def _run_prompt(self, item: QueueItem) -> HistoryEntry:
        self.interrupted.clear()
        prompt_id, prompt, client_id = item.prompt_id, item.prompt, item.client_id
        self.hub.client_id = client_id
        messages: list[list[Any]] = []

        def add_message(event: str, data: dict[str, Any], broadcast: bool) -> None:
            data = {**data, "timestamp": now_ms()}
            messages.append([event, data])
            if client_id is not None or broadcast:
                self.hub.send_sync(event, data, client_id)

        add_message("execution_start", {"prompt_id": prompt_id}, False)
        signatures = Signatures(prompt, self.registry)
        keys = {node_id: signatures.of(node_id) for node_id in prompt}
        self.cache.keep_only(set(keys.values()))
        alive = {(node_id, node["class_type"]) for node_id, node in prompt.items()}
        self.objects = {k: v for k, v in self.objects.items() if k in alive}
        cached = [node_id for node_id in prompt if self.cache.has(keys[node_id])]
        add_message("execution_cached", {"nodes": cached, "prompt_id": prompt_id}, False)

        run = NodeRunner(self, item, keys, ProgressRegistry(prompt_id, self.hub, client_id))
        order = ExecutionList(
            prompt,
            is_cached=lambda n: self.cache.has(keys[n]),
            is_output=lambda n: self._is_output(prompt[n]["class_type"]),
        )
        for output in item.outputs:
            order.add_node(output)
        success = True
        while not order.is_empty():
            failure: Failure | None
            try:
                node_id = order.stage()
            except DependencyCycleError as ex:
                details = {
                    "exception_message": str(ex),
                    "exception_type": "graph.DependencyCycleError",
                    "traceback": [],
                    "current_inputs": [],
                }
                failure = Failure(next(iter(order.pending)), details=details)
            else:
                failure = run.execute(node_id)
            if failure is not None:
                success = False
                self._report(failure, run, add_message)
                break
            order.complete(node_id)
        else:
            add_message("execution_success", {"prompt_id": prompt_id}, False)

        outputs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for node_id in prompt:
            ui = self.cache.ui.get(keys[node_id])
            if ui is not None:
                outputs[node_id] = ui
                meta[node_id] = {
                    "node_id": node_id,
                    "display_node": node_id,
                    "parent_node": None,
                    "real_node_id": node_id,
                }
        self.hub.last_node_id = None
        return self._entry(item, outputs, meta, success, messages)

    def _is_output(self, class_type: str) -> bool:
        cls = self.registry.get(class_type)
        return cls is not None and cls.OUTPUT_NODE

    def _report(self, failure: Failure, run: NodeRunner, add_message: Any) -> None:
        prompt = run.item.prompt
        base = {
            "prompt_id": run.item.prompt_id,
            "node_id": failure.node_id,
            "node_type": prompt[failure.node_id]["class_type"],
            "executed": list(run.executed),
        }
        if failure.interrupted:
            add_message("execution_interrupted", base, True)
            return
        base.update(failure.details)
        base["current_outputs"] = list(prompt)
        add_message("execution_error", base, False)
