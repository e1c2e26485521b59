"""``admin models publish``: the command line publishes a workflow through the admin route, which
checks it against the /object_info the fleet's servers shared."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from comfyline.client.admin_cli import app
from comfyline.contracts import ServerStatus, WorkerHeartbeat
from comfyline.runtime import Bus, ObjectStore

from .conftest import ADMIN, ADMIN_KEY, Served

#: /object_info of a server with two nodes, in ComfyUI's shapes.
OBJECT_INFO = {
    "EmptyImage": {
        "input": {
            "required": {
                "width": ["INT", {"default": 512, "min": 1, "max": 16384}],
                "height": ["INT", {"default": 512, "min": 1, "max": 16384}],
                "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}],
                "color": ["INT", {"default": 0, "min": 0, "max": 16777215}],
            }
        },
        "output": ["IMAGE"],
        "output_node": False,
    },
    "SaveImage": {
        "input": {
            "required": {
                "images": ["IMAGE", {}],
                "filename_prefix": ["STRING", {"default": "ComfyUI"}],
            }
        },
        "output": [],
        "output_node": True,
    },
}
SPEC: dict[str, Any] = {
    "name": "solid-color",
    "title": "Solid color",
    "workflow": {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "c"}},
    },
    "parameters": {
        "type": "object",
        "properties": {"color": {"type": "integer", "minimum": 0, "default": 0}},
    },
    "bindings": [{"param": "color", "node": "1", "input": "color"}],
}


async def share_object_info(bus: Bus, store: ObjectStore) -> None:
    """A worker's heartbeat naming its server's stored /object_info, as a worker writes them."""
    key = "fleet/object_info/test.json"
    await store.put_bytes(key, json.dumps(OBJECT_INFO).encode(), "application/json")
    beat = WorkerHeartbeat(
        worker_id="w1",
        models=[],
        servers=[ServerStatus(url="http://127.0.0.1:1", healthy=True, busy=False, object_info=key)],
        started_at=datetime.now(UTC),
    )
    kv = await bus.kv(bus.names.bucket("workers"))
    await kv.put("w1", beat.to_bytes())


def publish(served: Served, spec: Path) -> tuple[int, str]:
    args = ["--url", served.url, "--key", ADMIN_KEY, "models", "publish", str(spec)]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


async def test_publish_refused_without_a_fleet_then_published_and_listed(
    served: Served, bus: Bus, store: ObjectStore, tmp_path: Path
) -> None:
    spec = tmp_path / "solid-color.json"
    spec.write_text(json.dumps(SPEC))
    code, output = await asyncio.to_thread(publish, served, spec)
    assert code == 1 and "workflow_unservable" in output

    await share_object_info(bus, store)
    code, output = await asyncio.to_thread(publish, served, spec)
    assert code == 0, output
    published = json.loads(output)
    assert published["name"] == "solid-color" and published["version"] == 1

    async with httpx.AsyncClient(base_url=served.url) as http:
        listed = (await http.get("/v1/models", headers=ADMIN)).json()["data"]
    model = next(m for m in listed if m["name"] == "solid-color")
    assert model["parameters"] == SPEC["parameters"]

    bad = {
        **SPEC,
        "workflow": {**SPEC["workflow"], "1": {"class_type": "EmptyImage", "inputs": {}}},
    }
    spec.write_text(json.dumps(bad))
    code, output = await asyncio.to_thread(publish, served, spec)
    assert code == 1 and "invalid_workflow" in output and "required_input_missing" in output
