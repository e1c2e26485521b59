"""People's own ComfyUI graphs as jobs: scope, validation against the live fleet, and routing by
what a graph needs (two workers with different node sets)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from comfyline.comfyui_sim import SimulatorProcess
from comfyline.contracts import JobState

from .conftest import ADMIN, Fleet


def graph(*middle: str, color: int = 0xFF0000) -> dict[str, Any]:
    """EmptyImage -> each class of ``middle`` in turn (image in, image out) -> SaveImage."""
    nodes: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": color},
        }
    }
    last = "1"
    for index, class_type in enumerate(middle, start=2):
        inputs: dict[str, Any] = {"image": [last, 0]}
        if class_type == "ImageBlur":
            inputs |= {"blur_radius": 1, "sigma": 1.0}
        nodes[str(index)] = {"class_type": class_type, "inputs": inputs}
        last = str(index)
    nodes["9"] = {
        "class_type": "SaveImage",
        "inputs": {"images": [last, 0], "filename_prefix": "wf"},
    }
    return nodes


async def submit(fleet: Fleet, headers: dict[str, str], body: dict[str, Any]) -> Any:
    return await fleet.http.post("/v1/jobs", json=body, headers=headers)


async def test_a_graph_runs_only_where_its_nodes_are_and_never_waits_behind_another(
    fleet: Fleet, sims: Callable[..., SimulatorProcess]
) -> None:
    # Server A cannot blur; server B cannot invert. Blurring is slow.
    sim_a = sims("--disable-node", "ImageBlur")
    sim_b = sims("--disable-node", "ImageInvert", "--node-delay", "ImageBlur=0.4")
    await fleet.orchestrator()
    await fleet.worker(sim_a.url, "worker-a")
    await fleet.worker(sim_b.url, "worker-b")
    await fleet.servers_known(2)
    user = await fleet.key("alice", scopes=["workflows"])

    blurs = []
    for n in range(8):
        made = await submit(fleet, user, {"workflow": graph("ImageBlur", color=n)})
        assert made.status_code == 202, made.text
        blurs.append(made.json()["id"])
    made = await submit(fleet, user, {"workflow": graph("ImageInvert")})
    assert made.status_code == 202, made.text
    invert_id = made.json()["id"]

    invert = await fleet.wait(invert_id)
    still_blurring = [
        r for r in [await fleet.record(i) for i in blurs] if r and not r.status.terminal
    ]
    assert invert.status is JobState.SUCCEEDED, invert.error
    assert [a.worker_id for a in invert.attempt_log] == ["worker-a"]
    # The invert job did not wait for the blur backlog, which only worker B can work off.
    assert still_blurring, "every blur job had ended before the invert job: it waited behind them"

    done = await asyncio.gather(*(fleet.wait(i) for i in blurs))
    assert {r.status for r in done} == {JobState.SUCCEEDED}
    assert {a.worker_id for r in done for a in r.attempt_log} == {"worker-b"}

    view = (await fleet.http.get(f"/v1/jobs/{invert_id}", headers=user)).json()
    assert view["status"] == "succeeded" and len(view["outputs"]) == 1
    content = await fleet.http.get(f"/v1/jobs/{invert_id}/outputs/0/content", headers=user)
    assert content.status_code == 200 and content.content.startswith(b"\x89PNG")


async def test_scope_validation_and_unservable_graphs(
    fleet: Fleet, sims: Callable[..., SimulatorProcess]
) -> None:
    sim = sims("--disable-node", "ImageBlur")
    await fleet.orchestrator()
    await fleet.worker(sim.url, "worker-a")
    await fleet.servers_known(1)

    plain = await fleet.key("bob")
    refused = await submit(fleet, plain, {"workflow": graph()})
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "forbidden"

    # A class no live server has: 503 naming it.
    missing = await submit(fleet, ADMIN, {"workflow": graph("ImageBlur")})
    assert missing.status_code == 503, missing.text
    error = missing.json()
    assert error["code"] == "workflow_unservable"
    assert "ImageBlur" in error["error"] and error["details"]["missing"] == ["node ImageBlur"]

    # A bad input: ComfyUI's own node_errors.
    bad = graph()
    bad["1"]["inputs"]["width"] = 0
    del bad["1"]["inputs"]["height"]
    invalid = await submit(fleet, ADMIN, {"workflow": bad})
    assert invalid.status_code == 422, invalid.text
    error = invalid.json()
    assert error["code"] == "invalid_workflow"
    node = error["details"]["node_errors"]["1"]
    assert node["class_type"] == "EmptyImage"
    assert {e["type"] for e in node["errors"]} == {
        "value_smaller_than_min",
        "required_input_missing",
    }

    # The editor's format is named as such.
    ui = await submit(fleet, ADMIN, {"workflow": {"nodes": [], "links": []}})
    assert ui.status_code == 422 and ui.json()["details"]["format"] == "ui"

    # A good graph runs; its requirement set's model is hidden and cannot be named directly.
    ok = await submit(fleet, ADMIN, {"workflow": graph("ImageInvert")})
    assert ok.status_code == 202, ok.text
    record = await fleet.wait(ok.json()["id"])
    assert record.status is JobState.SUCCEEDED, record.error
    assert record.model.startswith("workflow-")
    listed = (await fleet.http.get("/v1/models", headers=ADMIN)).json()["data"]
    assert not [m for m in listed if m["name"].startswith("workflow-")]
    direct = await submit(fleet, plain, {"model": record.model, "input": {"workflow": graph()}})
    assert direct.status_code == 422 and direct.json()["code"] == "unknown_model"


async def test_a_published_workflow_is_a_model_that_lists_its_schema_and_runs(
    fleet: Fleet, sims: Callable[..., SimulatorProcess]
) -> None:
    sim = sims("--disable-node", "ImageBlur")
    await fleet.orchestrator()
    await fleet.worker(sim.url, "worker-a")
    await fleet.servers_known(1)
    parameters = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "color": {"type": "integer", "minimum": 0, "maximum": 0xFFFFFF, "default": 0},
            "size": {"type": "integer", "minimum": 8, "maximum": 256, "default": 32},
        },
    }
    spec = {
        "name": "inverted-square",
        "title": "Inverted square",
        "description": "A square of one color, inverted.",
        "workflow": graph("ImageInvert"),
        "parameters": parameters,
        "bindings": [
            {"param": "color", "node": "1", "input": "color"},
            {"param": "size", "node": "1", "input": "width"},
            {"param": "size", "node": "1", "input": "height"},
        ],
    }
    user = await fleet.key("carol")
    assert (await fleet.http.post("/v1/models", json=spec, headers=user)).status_code == 403

    published = await fleet.http.post("/v1/models", json=spec, headers=ADMIN)
    assert published.status_code == 201, published.text
    assert published.json()["version"] == 1
    again = await fleet.http.post("/v1/models", json=spec, headers=ADMIN)
    assert again.status_code == 201 and again.json()["version"] == 2

    listed = (await fleet.http.get("/v1/models", headers=user)).json()["data"]
    model = next(m for m in listed if m["name"] == "inverted-square")
    assert model["parameters"] == parameters

    made = await submit(fleet, user, {"model": "inverted-square", "input": {"size": 16}})
    assert made.status_code == 202, made.text
    record = await fleet.wait(made.json()["id"])
    assert record.status is JobState.SUCCEEDED, record.error
    assert record.template_version == 2 and len(record.outputs) == 1
    bad_input = await submit(fleet, user, {"model": "inverted-square", "input": {"size": 4}})
    assert bad_input.status_code == 422

    # Checked against the fleet on publish: a class no server has, a binding to nowhere.
    blur = {**spec, "name": "blurred", "workflow": graph("ImageBlur")}
    refused = await fleet.http.post("/v1/models", json=blur, headers=ADMIN)
    assert refused.status_code == 503 and refused.json()["code"] == "workflow_unservable"
    nowhere = {**spec, "bindings": [{"param": "color", "node": "77", "input": "color"}]}
    refused = await fleet.http.post("/v1/models", json=nowhere, headers=ADMIN)
    assert refused.status_code == 422, refused.text
