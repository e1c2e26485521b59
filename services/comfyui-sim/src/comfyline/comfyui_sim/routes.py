"""HTTP routes of ComfyUI's `server.py`: prompt, queue, history, interrupt, object_info, stats.

Handlers copy the real ones' control flow, so malformed bodies fail the same way: `await
request.json()` raising on `POST /prompt` or `/queue` becomes aiohttp's plain-text 500, while
`/interrupt` swallows it; empty successes are `web.Response(status=200)` with no content type.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from aiohttp import web

from comfyline.comfyui_sim.simulator import SIMULATOR, Simulator

log = logging.getLogger("comfyui_sim.http")
routes = web.RouteTableDef()

SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
MODEL_FOLDERS = (
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "audio_encoders",
    "sonic",
    "chatterbox",
    "f5_tts",
)


def sim_of(request: web.Request) -> Simulator:
    return request.app[SIMULATOR]


def canonical_uuid(value: Any) -> str:
    """The newer releases' `validate_job_id`: a lowercase hyphenated UUID string, or ValueError."""
    if not isinstance(value, str) or str(uuid.UUID(value)) != value:
        raise ValueError("job id must be a UUID in canonical lowercase hyphenated form")
    return value


@routes.get("/ws")
async def websocket(request: web.Request) -> web.WebSocketResponse:
    return await sim_of(request).hub.handle(request)


@routes.get("/")
async def root(request: web.Request) -> web.Response:
    body = (
        "<!doctype html><title>Comfyline ComfyUI simulator</title>"
        "<p>This is the Comfyline ComfyUI simulator, not ComfyUI. It speaks ComfyUI's HTTP and "
        "WebSocket protocol and runs no models.</p>"
    )
    return web.Response(text=body, content_type="text/html")


@routes.get("/system_stats")
async def system_stats(request: web.Request) -> web.Response:
    return web.json_response(sim_of(request).system_stats())


@routes.get("/features")
async def features(request: web.Request) -> web.Response:
    return web.json_response(dict(sim_of(request).features))


@routes.get("/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    return web.json_response([])


@routes.get("/extensions")
async def extensions(request: web.Request) -> web.Response:
    return web.json_response([])


@routes.get("/models")
async def model_folders(request: web.Request) -> web.Response:
    return web.json_response(list(MODEL_FOLDERS))


@routes.get("/models/{folder}")
async def model_files(request: web.Request) -> web.Response:
    folder = request.match_info["folder"]
    if folder not in MODEL_FOLDERS:
        return web.Response(status=404)
    return web.json_response(sorted(sim_of(request).config.models.get(folder, ())))


@routes.get("/prompt")
async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response(sim_of(request).queue_info())


@routes.post("/prompt")
async def post_prompt(request: web.Request) -> web.Response:
    sim = sim_of(request)
    log.info("got prompt")
    json_data = await request.json()
    if "number" in json_data:
        number: float = float(json_data["number"])
    else:
        number = sim.number
        if "front" in json_data and json_data["front"]:  # noqa: RUF019  (`in` works on any JSON)
            number = -number
        sim.number += 1
    if "prompt" not in json_data:
        error = {
            "type": "no_prompt",
            "message": "No prompt provided",
            "details": "No prompt provided",
            "extra_info": {},
        }
        return web.json_response({"error": error, "node_errors": {}}, status=400)
    prompt = json_data["prompt"]
    if sim.release.validates_prompt_id:
        client_prompt_id = json_data.get("prompt_id")
        if client_prompt_id is None:
            prompt_id = str(uuid.uuid4())
        else:
            try:
                prompt_id = canonical_uuid(client_prompt_id)
            except ValueError:
                error = {
                    "type": "invalid_prompt_id",
                    "message": "prompt_id must be a valid UUID",
                    "details": "prompt_id must be a UUID string in canonical lowercase hyphenated "
                    "form; omit it to let the server generate one",
                    "extra_info": {},
                }
                return web.json_response({"error": error, "node_errors": {}}, status=400)
    else:
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
    partial = (
        json_data["partial_execution_targets"] if "partial_execution_targets" in json_data else None
    )
    verdict = sim.validator.validate_prompt(prompt, partial)
    extra_data: Any = json_data["extra_data"] if "extra_data" in json_data else {}
    if "client_id" in json_data:
        extra_data["client_id"] = json_data["client_id"]
    if not verdict.ok:
        log.warning("invalid prompt: %s", verdict.error)
        return web.json_response(
            {"error": verdict.error, "node_errors": verdict.node_errors}, status=400
        )
    for key in SENSITIVE_EXTRA_DATA_KEYS:
        extra_data.pop(key, None)
    if sim.release.is_newer:
        extra_data["create_time"] = int(time.time() * 1000)
    item = sim.queue.make_item(number, prompt_id, prompt, extra_data, verdict.outputs)
    if sim.queue.put(item):
        # An idle executor takes the prompt before the answer goes out, as the real server's
        # thread does while aiohttp writes the response: status(1) then comes exactly twice.
        await asyncio.to_thread(item.taken.wait, 0.1)
    return web.json_response(
        {"prompt_id": prompt_id, "number": number, "node_errors": verdict.node_errors}
    )


@routes.get("/queue")
async def get_queue(request: web.Request) -> web.Response:
    queue = sim_of(request).queue
    return web.json_response(
        {
            "queue_running": [item.wire() for item in queue.running()],
            "queue_pending": [item.wire() for item in queue.pending()],
        }
    )


@routes.post("/queue")
async def post_queue(request: web.Request) -> web.Response:
    queue = sim_of(request).queue
    json_data = await request.json()
    if "clear" in json_data and json_data["clear"]:  # noqa: RUF019  (`in` works on any JSON)
        queue.wipe()
    if "delete" in json_data:
        for prompt_id in json_data["delete"]:
            queue.delete(prompt_id)
    return web.Response(status=200)


@routes.post("/interrupt")
async def post_interrupt(request: web.Request) -> web.Response:
    sim = sim_of(request)
    try:
        json_data = await request.json()
    except json.JSONDecodeError:
        json_data = {}
    prompt_id = json_data.get("prompt_id")
    if prompt_id:
        if sim.queue.is_running(prompt_id):
            log.info("Interrupting prompt %s", prompt_id)
            sim.executor.interrupt()
        else:
            log.info("Prompt %s is not currently running, skipping interrupt", prompt_id)
    else:
        log.info("Global interrupt (no prompt_id specified)")
        sim.executor.interrupt()
    return web.Response(status=200)


@routes.post("/free")
async def post_free(request: web.Request) -> web.Response:
    await request.json()
    return web.Response(status=200)


@routes.get("/history")
async def get_history(request: web.Request) -> web.Response:
    query = request.rel_url.query
    max_items = int(query["max_items"]) if "max_items" in query else None
    offset = int(query["offset"]) if "offset" in query else -1
    return web.json_response(sim_of(request).queue.history.get_many(max_items, offset))


@routes.get("/history/{prompt_id}")
async def get_history_entry(request: web.Request) -> web.Response:
    return web.json_response(sim_of(request).queue.history.get(request.match_info["prompt_id"]))


@routes.post("/history")
async def post_history(request: web.Request) -> web.Response:
    history = sim_of(request).queue.history
    json_data = await request.json()
    if "clear" in json_data and json_data["clear"]:  # noqa: RUF019  (`in` works on any JSON)
        history.clear()
    if "delete" in json_data:
        for prompt_id in json_data["delete"]:
            history.delete(prompt_id)
    return web.Response(status=200)


@routes.get("/object_info")
async def object_info(request: web.Request) -> web.Response:
    return web.json_response(sim_of(request).registry.object_info())


@routes.get("/object_info/{node_class}")
async def object_info_node(request: web.Request) -> web.Response:
    registry = sim_of(request).registry
    node_class = request.match_info["node_class"]
    cls = registry.get(node_class)
    return web.json_response({} if cls is None else {node_class: cls.info(registry.env)})


async def executions(request: web.Request) -> web.Response:
    """Simulator-only (ComfyUI has no such route, and it is not under ``/api``): when each prompt
    ran, oldest first, as epoch seconds with sub-millisecond precision: ``started`` when the
    executor took it, ``ended`` when its last node finished, ``done`` once its history entry was
    written. Benchmarks read busy time and idle gaps from here, not from a client's clock."""
    sim = sim_of(request)
    return web.json_response({"executions": sim.executor.executions()})
