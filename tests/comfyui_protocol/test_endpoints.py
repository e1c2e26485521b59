"""Facts of the endpoint table: shapes, status codes, the `/api/` prefix, `/view` rules."""

from __future__ import annotations

import struct
import uuid

from comfyline.testkit.comfyui import ComfyClient, ServerInfo, empty_image_graph

JSON = "application/json; charset=utf-8"


async def test_system_stats_has_system_and_devices(comfy: ComfyClient) -> None:
    reply = await comfy.get("/system_stats")
    assert (reply.status, reply.content_type) == (200, JSON)
    stats = reply.json()
    for key in (
        "os",
        "ram_total",
        "ram_free",
        "comfyui_version",
        "python_version",
        "pytorch_version",
        "argv",
    ):
        assert key in stats["system"], key
    assert isinstance(stats["system"]["argv"], list)
    device = stats["devices"][0]
    assert set(device) >= {
        "name",
        "type",
        "index",
        "vram_total",
        "vram_free",
        "torch_vram_total",
        "torch_vram_free",
    }


async def test_features_reports_preview_metadata_and_upload_size(comfy: ComfyClient) -> None:
    features = await comfy.get_json("/features")
    assert features["supports_preview_metadata"] is True
    assert features["max_upload_size"] == 104857600


async def test_get_prompt_gives_queue_remaining(comfy: ComfyClient) -> None:
    assert await comfy.get_json("/prompt") == {"exec_info": {"queue_remaining": 0}}


async def test_object_info_lists_node_classes_with_input_specs(comfy: ComfyClient) -> None:
    info = await comfy.get_json("/object_info")
    for name in ("EmptyImage", "SaveImage", "LoadImage", "KSampler", "CheckpointLoaderSimple"):
        entry = info[name]
        assert {"input", "output", "output_node", "category", "name"} <= set(entry)
        assert set(entry["input"]) <= {"required", "optional", "hidden"}
    assert info["EmptyImage"]["input"]["required"]["width"] == [
        "INT",
        {"default": 512, "min": 1, "max": 16384, "step": 1},
    ]
    assert info["SaveImage"]["output_node"] is True
    assert info["EmptyImage"]["output_node"] is False


async def test_object_info_combos_come_in_four_forms(comfy: ComfyClient) -> None:
    info = await comfy.get_json("/object_info")
    forms = set()
    for entry in info.values():
        for group in entry["input"].values():
            for spec in group.values() if isinstance(group, dict) else []:
                if isinstance(spec, list) and spec and isinstance(spec[0], list):
                    forms.add("list" if len(spec) == 1 else "list+options")
                elif isinstance(spec, list) and spec and spec[0] == "COMBO":
                    if "options" in spec[1]:
                        assert isinstance(spec[1]["options"], list)
                        forms.add("COMBO")
                    else:
                        forms.add("COMBO without options")
    assert {"list", "list+options", "COMBO", "COMBO without options"} <= forms
    assert info["LoadImageOutput"]["input"]["required"]["image"] == [
        "COMBO",
        {
            "image_upload": True,
            "image_folder": "output",
            "remote": {
                "route": "/internal/files/output",
                "refresh_button": True,
                "control_after_refresh": "first",
            },
        },
    ]


async def test_object_info_of_one_class_and_of_an_unknown_class(comfy: ComfyClient) -> None:
    one = await comfy.get_json("/object_info/EmptyImage")
    assert list(one) == ["EmptyImage"]
    assert one["EmptyImage"]["output"] == ["IMAGE"]
    unknown = await comfy.get("/object_info/NoSuchNodeClass")
    assert (unknown.status, unknown.content_type, unknown.json()) == (200, JSON, {})


async def test_history_of_an_unknown_id_is_200_empty(comfy: ComfyClient) -> None:
    reply = await comfy.get(f"/history/{uuid.uuid4()}")
    assert (reply.status, reply.content_type, reply.json()) == (200, JSON, {})


async def test_every_route_is_also_under_api(comfy: ComfyClient) -> None:
    for path in ("/system_stats", "/features", "/prompt", "/queue", "/object_info/EmptyImage"):
        plain, prefixed = await comfy.get(path), await comfy.get("/api" + path)
        assert plain.status == prefixed.status == 200, path
        assert set(plain.json()) == set(prefixed.json()), path
    socket = await comfy.session.ws_connect(f"{comfy.url}/api/ws", params={"clientId": "x"})
    first = await socket.receive_json(timeout=10)
    assert first["type"] == "status"
    await socket.close()


async def test_wrong_method_is_405_and_unknown_get_is_404(comfy: ComfyClient) -> None:
    assert (await comfy.request("DELETE", "/prompt")).status == 405
    assert (await comfy.request("PUT", "/queue")).status == 405
    assert (await comfy.get("/prompt/not-a-route")).status == 404


async def test_view_returns_the_file_with_content_disposition(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    prefix = f"view_{uuid.uuid4().hex[:8]}"
    _, frames = await comfy.run(empty_image_graph(prefix, width=24, height=16), socket)
    saved = next(f for f in frames if f.type == "executed").data["output"]["images"][0]
    reply = await comfy.get("/view", filename=saved["filename"], subfolder="", type="output")
    assert (reply.status, reply.content_type) == (200, "image/png")
    assert reply.headers["Content-Disposition"] == f'filename="{saved["filename"]}"'
    assert reply.body[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", reply.body[16:24]) == (24, 16)


async def test_view_error_codes(comfy: ComfyClient) -> None:
    missing = await comfy.get("/view", filename=f"missing_{uuid.uuid4().hex}.png", type="output")
    assert (missing.status, missing.body) == (404, b"")
    assert (await comfy.get("/view", filename="../secret.png", type="output")).status == 400
    assert (await comfy.get("/view", filename="a..b.png", type="output")).status == 400
    assert (
        await comfy.get("/view", filename="x.png", subfolder="../..", type="output")
    ).status == 403
    assert (await comfy.get("/view", filename="x.png", subfolder="..", type="output")).status == 403
    assert (await comfy.get("/view", filename="x.png", type="bogus")).status == 400
    assert (await comfy.get("/view")).status == 404


async def test_interrupt_and_queue_answer_200_with_an_empty_body(comfy: ComfyClient) -> None:
    for reply in (
        await comfy.request("POST", "/interrupt"),
        await comfy.post("/interrupt", {"prompt_id": str(uuid.uuid4())}),
        await comfy.post("/queue", {"delete": [str(uuid.uuid4())]}),
        await comfy.post("/queue", {"clear": True}),
    ):
        assert (reply.status, reply.content_type, reply.body) == (200, None, b"")


async def test_malformed_json_on_interrupt_is_200_and_on_queue_is_500(comfy: ComfyClient) -> None:
    interrupt = await comfy.request("POST", "/interrupt", data=b"{not json")
    assert interrupt.status == 200
    queue = await comfy.request("POST", "/queue", data=b"{not json")
    assert (queue.status, queue.content_type) == (500, "text/plain; charset=utf-8")


async def test_post_history_delete_removes_the_entry(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    prompt_id, _ = await comfy.run(empty_image_graph(), socket)
    assert prompt_id in await comfy.history(prompt_id)
    reply = await comfy.post("/history", {"delete": [prompt_id]})
    assert (reply.status, reply.content_type, reply.body) == (200, None, b"")
    assert await comfy.history(prompt_id) == {}


async def test_history_max_items_gives_the_newest_entries(comfy: ComfyClient) -> None:
    socket = await comfy.connect()
    prompt_id, _ = await comfy.run(empty_image_graph(), socket)
    latest = await comfy.get_json("/history", max_items="1")
    assert list(latest) == [prompt_id]
    assert set(latest[prompt_id]) == {"prompt", "outputs", "status", "meta"}


async def test_server_reports_its_version(server: ServerInfo) -> None:
    assert server.version.count(".") >= 2
