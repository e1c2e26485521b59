"""The official Comfy SDK (unchanged) with Comfyline's ``/api/v2`` assets, event stream and
idempotency: an uploaded image used by ``LoadImage`` runs end to end on a worker."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from typing import Any

import pytest
from blake3 import blake3
from comfy_sdk import Comfy, ComfyError, NotFound
from comfy_sdk.events import OutputReady, StatusChange
from PIL import Image

from comfyline.comfyui_sim import SimulatorProcess

from .conftest import ADMIN, Fleet
from .test_workflows import graph


def png(color: tuple[int, int, int], size: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="PNG")
    return out.getvalue()


def load_invert_save(image: Any) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "in"}},
    }


async def sdk_fleet(
    fleet: Fleet, comfyui_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    await fleet.orchestrator()
    await fleet.worker(comfyui_url, "worker-a")
    await fleet.servers_known(1)
    headers = await fleet.key("erin", scopes=["workflows"])
    monkeypatch.setenv("COMFY_BASE_URL", fleet.url)
    monkeypatch.setenv("COMFY_API_KEY", headers["Authorization"].split()[1])
    return headers


async def test_an_uploaded_asset_runs_through_load_image_and_is_content_addressed(
    fleet: Fleet, any_comfyui: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the simulator and on a real ComfyUI (``any_comfyui``)."""
    user = await sdk_fleet(fleet, any_comfyui, monkeypatch)
    red = png((255, 0, 0))
    digest = "blake3:" + blake3(red).hexdigest()

    def run() -> tuple[str, str, bytes, bool | None, bool | None, str | None]:
        with Comfy() as client:
            asset = client.assets.from_bytes(red, filename="red.png")
            job = client.run(client.workflows.from_json(load_invert_save(asset)), timeout=60)
            again = client.assets.from_bytes(red, filename="again.png")
            again.commit()  # HEAD by-hash finds the bytes: minted from the hash, no upload
            return (
                asset.id or "",
                again.id or "",
                job.get_outputs("9")[0].to_bytes(),
                asset.created_new,
                again.created_new,
                client.assets.get(asset.id or "").hash,
            )

    asset_id, again_id, inverted, first_new, again_new, stored_hash = await asyncio.to_thread(run)
    pixel = Image.open(io.BytesIO(inverted)).convert("RGB").getpixel((0, 0))
    assert pixel == (0, 255, 255), "the worker ran the graph on the uploaded image"
    assert stored_hash == digest
    assert (first_new, again_new) == (True, False)
    assert again_id == asset_id, "one owner's identical bytes are one asset"

    # The same upload is in the caller's /v1 gallery.
    gallery = (await fleet.http.get("/v1/assets", headers=user)).json()["data"]
    assert [a["id"] for a in gallery if a["source"] == "upload"] == [asset_id]

    # Content, whole and by range.
    path = f"/api/v2/assets/{asset_id}/content"
    whole = await fleet.http.get(path, headers=user)
    assert whole.status_code == 200 and whole.content == red
    head = await fleet.http.get(path, headers={**user, "Range": "bytes=0-7"})
    assert head.status_code == 206 and head.content == red[:8]
    assert head.headers["content-range"] == f"bytes 0-7/{len(red)}"
    tail = await fleet.http.get(path, headers={**user, "Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == red[-5:]
    middle = await fleet.http.get(path, headers={**user, "Range": "bytes=10-"})
    assert middle.status_code == 206 and middle.content == red[10:]
    beyond = await fleet.http.get(path, headers={**user, "Range": f"bytes={len(red)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(red)}"

    # Another owner sees neither the asset nor that its bytes exist.
    other = await fleet.key("frank", scopes=["workflows"])
    assert (await fleet.http.get(f"/api/v2/assets/{asset_id}", headers=other)).status_code == 404
    probe = f"/api/v2/assets/by-hash/{digest}"
    assert (await fleet.http.head(probe, headers=other)).status_code == 404
    assert (await fleet.http.head(probe, headers=user)).status_code == 200
    minted = await fleet.http.post("/api/v2/assets/from-hash", json={"hash": digest}, headers=other)
    assert minted.status_code == 404 and minted.json()["error"]["code"] == "blob_not_found"
    stolen = await fleet.http.post(
        "/api/v2/jobs",
        json={"workflow": load_invert_save({"__type": "core/ASSET", "info": {"id": asset_id}})},
        headers=other,
    )
    assert stolen.status_code == 422 and stolen.json()["error"]["code"] == "missing_asset"
    # Nor can a graph name the file the worker staged in ComfyUI's input folder for erin's job.
    for name in (f"comfyline/{asset_id}.png", f"{asset_id}.png"):
        named = await fleet.http.post(
            "/v1/jobs", json={"workflow": load_invert_save(name)}, headers=other
        )
        assert named.status_code == 422, named.text
        errors = named.json()["details"]["node_errors"]["1"]["errors"]
        assert errors[0]["type"] == "value_not_in_list"

    from_path = await fleet.http.post(
        "/api/v2/assets/from-path", json={"path": "/etc/passwd"}, headers=user
    )
    assert from_path.status_code == 501, from_path.text

    # A declared hash that the bytes do not have mints nothing.
    blue = png((0, 0, 255))
    mismatch = await fleet.http.post(
        "/api/v2/assets",
        data={"content_type": "image/png", "file_path": "blue.png", "expected_hash": digest},
        files={"file": ("blue.png", blue, "image/png")},
        headers=user,
    )
    assert mismatch.status_code == 409 and mismatch.json()["error"]["code"] == "hash_mismatch"
    blue_probe = f"/api/v2/assets/by-hash/blake3:{blake3(blue).hexdigest()}"
    assert (await fleet.http.head(blue_probe, headers=user)).status_code == 404

    def delete() -> str:
        with Comfy() as client:
            client.assets.delete(asset_id)
            with pytest.raises(NotFound):
                client.assets.get(asset_id)
            bad = client.workflows.from_json(
                load_invert_save({"__type": "core/ASSET", "info": {"id": asset_id}})
            )
            with pytest.raises(ComfyError) as caught:
                client.submit(bad)
            return str(caught.value.code)

    assert await asyncio.to_thread(delete) == "missing_asset"
    assert (await fleet.http.head(probe, headers=user)).status_code == 404


async def test_the_sdk_follows_a_job_over_v2_sse_and_outputs_are_assets(
    fleet: Fleet, sims: Callable[..., SimulatorProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await sdk_fleet(fleet, sims().url, monkeypatch)

    def follow() -> tuple[str, list[Any]]:
        with Comfy() as client:
            job = client.submit(client.workflows.from_json(graph("ImageInvert")))
            return job.id, list(job.events())

    job_id, events = await asyncio.to_thread(follow)
    statuses = [e.status for e in events if isinstance(e, StatusChange)]
    assert statuses[0] == "queued" and "running" in statuses and statuses[-1] == "succeeded"
    outputs = [e.output for e in events if isinstance(e, OutputReady)]
    assert [o.node_id for o in outputs] == ["9"]

    # Every frame carries the job event's sequence: a client resumes after it.
    stream = await fleet.http.get(f"/api/v2/jobs/{job_id}/events", headers=user)
    ids = [int(line[4:]) for line in stream.text.splitlines() if line.startswith("id: ")]
    assert ids and ids == sorted(ids)
    seqs = sorted(set(ids))
    resumed = await fleet.http.get(
        f"/api/v2/jobs/{job_id}/events", headers={**user, "Last-Event-ID": str(seqs[-2])}
    )
    assert "event: status" in resumed.text and "event: output" in resumed.text
    assert '"status":"queued"' not in resumed.text
    # A client that has seen the end is told the end again, and the stream closes.
    ended = await fleet.http.get(
        f"/api/v2/jobs/{job_id}/events", headers={**user, "Last-Event-ID": str(seqs[-1])}
    )
    assert ended.text.count("event: ") == 1 and '"status":"succeeded"' in ended.text

    # An output is an asset: read by its id, with its job named.
    view = (await fleet.http.get(f"/api/v2/jobs/{job_id}", headers=user)).json()
    output_id = view["outputs"][0]["id"]
    asset = (await fleet.http.get(f"/api/v2/assets/{output_id}", headers=user)).json()
    assert asset["job_id"] == job_id and asset["content_type"] == "image/png"
    first = await fleet.http.get(
        f"/api/v2/assets/{output_id}/content", headers={**user, "Range": "bytes=0-3"}
    )
    assert first.status_code == 206 and first.content == b"\x89PNG"
    whole = await fleet.http.get(f"/api/v2/assets/{output_id}/content", headers=user)
    assert (
        asset["hash"] == view["outputs"][0]["hash"] == "blake3:" + blake3(whole.content).hexdigest()
    )


async def test_v2_idempotency_replays_the_job_and_refuses_another_body(
    fleet: Fleet, sims: Callable[..., SimulatorProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await sdk_fleet(fleet, sims().url, monkeypatch)
    keyed = {**user, "Idempotency-Key": "a0e5d1c2-7b7e-4c55-9d52-1f0c6e3b9a10"}
    body = {"workflow": graph("ImageInvert")}
    first = await fleet.http.post("/api/v2/jobs", json=body, headers=keyed)
    assert first.status_code == 201 and "idempotency-replayed" not in first.headers
    again = await fleet.http.post("/api/v2/jobs", json=body, headers=keyed)
    assert again.status_code == 201 and again.headers["idempotency-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = await fleet.http.post(
        "/api/v2/jobs", json={"workflow": graph("ImageInvert", color=7)}, headers=keyed
    )
    assert other.status_code == 422, other.text
    assert other.json()["error"]["code"] == "idempotency_key_reuse"
    done = await fleet.wait(first.json()["id"])
    assert done.status.value == "succeeded"

    # v2's advisory priority: below 0 queues in the batch lane, behind interactive work.
    low = await fleet.http.post(
        "/api/v2/jobs",
        json={"workflow": graph("ImageInvert", color=9), "priority": -10},
        headers=user,
    )
    assert low.status_code == 201, low.text
    assert (await fleet.wait(low.json()["id"])).priority == "batch"
    assert done.priority == "interactive"
    bad = await fleet.http.post(
        "/api/v2/jobs", json={"workflow": graph("ImageInvert"), "priority": 10**7}, headers=user
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"

    # A full queue is v2's 429 queue_full with Retry-After (the SDK backs off and retries).
    made = await fleet.http.post(
        "/v1/keys",
        json={"owner": "gail", "name": "gail", "scopes": ["workflows"], "limits": {"max_queue": 0}},
        headers=ADMIN,
    )
    full = await fleet.http.post(
        "/api/v2/jobs",
        json=body,
        headers={"Authorization": f"Bearer {made.json()['secret']}"},
    )
    assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full"
    assert int(full.headers["retry-after"]) > 0


async def test_a_job_whose_asset_is_deleted_before_it_runs_fails_with_the_reason(
    fleet: Fleet, sims: Callable[..., SimulatorProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await sdk_fleet(fleet, sims("--node-delay", "ImageBlur=2").url, monkeypatch)
    files = {"file": ("red.png", png((255, 0, 0)), "image/png")}
    upload = await fleet.http.post("/api/v2/assets", files=files, headers=user)
    assert upload.status_code == 201, upload.text
    asset_id = upload.json()["id"]
    # Blurs keep the one server busy (one running, one queued in ComfyUI): the next job waits.
    blurs = [
        (await fleet.http.post("/api/v2/jobs", json={"workflow": graph("ImageBlur")}, headers=user))
        for _ in range(3)
    ]
    assert [b.status_code for b in blurs] == [201, 201, 201]
    ref = {"__type": "core/ASSET", "info": {"id": asset_id}}
    made = await fleet.http.post(
        "/api/v2/jobs", json={"workflow": load_invert_save(ref)}, headers=user
    )
    assert made.status_code == 201, made.text
    deleted = await fleet.http.delete(f"/api/v2/assets/{asset_id}", headers=user)
    assert deleted.status_code == 204
    record = await fleet.wait(made.json()["id"])
    assert record.status.value == "failed" and record.error is not None
    assert record.error.code.value == "asset_not_found", record.error
    view = (await fleet.http.get(f"/api/v2/jobs/{record.id}", headers=user)).json()
    assert view["status"] == "failed" and view["error"]["code"] == "asset_not_found"
