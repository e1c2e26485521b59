"""Facts of `POST /upload/image` and of using uploads with LoadImage."""

from __future__ import annotations

import io
import uuid

import aiohttp
from PIL import Image

from comfyline.testkit.comfyui import ComfyClient, empty_image_graph, fresh_color, is_done


def png(color: tuple[int, int, int], size: tuple[int, int] = (24, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def load_graph(name: str) -> dict[str, object]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }


async def test_same_name_and_bytes_keep_the_name_other_bytes_are_renamed(
    comfy: ComfyClient,
) -> None:
    name = f"up_{uuid.uuid4().hex[:8]}.png"
    first = await comfy.upload(name, png((1, 2, 3)))
    assert (first.status, first.json()) == (200, {"name": name, "subfolder": "", "type": "input"})
    assert (await comfy.upload(name, png((1, 2, 3)))).json()["name"] == name
    stem = name[:-4]
    assert (await comfy.upload(name, png((9, 9, 9)))).json()["name"] == f"{stem} (1).png"
    assert (await comfy.upload(name, png((8, 8, 8)))).json()["name"] == f"{stem} (2).png"


async def test_overwrite_true_or_1_replaces_in_place(comfy: ComfyClient) -> None:
    name = f"ow_{uuid.uuid4().hex[:8]}.png"
    await comfy.upload(name, png((1, 1, 1)))
    for flag, color in (("true", (2, 2, 2)), ("1", (3, 3, 3))):
        reply = await comfy.upload(name, png(color), overwrite=flag)
        assert reply.json()["name"] == name
        view = await comfy.get("/view", filename=name, type="input")
        assert view.body == png(color)


async def test_upload_into_a_subfolder_and_load_it_as_sub_name(comfy: ComfyClient) -> None:
    name, sub = f"s_{uuid.uuid4().hex[:8]}.png", f"sub{uuid.uuid4().hex[:6]}"
    reply = await comfy.upload(name, png((5, 6, 7), (20, 12)), subfolder=sub, type="input")
    assert reply.json() == {"name": name, "subfolder": sub, "type": "input"}
    socket = await comfy.connect()
    _, frames = await comfy.run(load_graph(f"{sub}/{name}"), socket)
    assert "execution_success" in [f.type for f in frames]
    view = await comfy.get("/view", filename=name, subfolder=sub, type="input")
    assert view.status == 200 and view.body == png((5, 6, 7), (20, 12))


async def test_missing_image_field_or_escaping_subfolder_is_400_empty(comfy: ComfyClient) -> None:
    form = aiohttp.FormData()
    form.add_field("overwrite", "true")
    reply = await comfy.request("POST", "/upload/image", data=form)
    assert (reply.status, reply.content_type, reply.body) == (400, None, b"")
    escape = await comfy.upload("x.png", png((0, 0, 0)), subfolder="../escape")
    assert (escape.status, escape.body) == (400, b"")


async def test_an_uploaded_name_with_temp_annotation_validates_for_loadimage(
    comfy: ComfyClient,
) -> None:
    name = f"t_{uuid.uuid4().hex[:8]}.png"
    assert (await comfy.upload(name, png((4, 4, 4)), type="temp")).json()["type"] == "temp"
    socket = await comfy.connect()
    prompt_id = await comfy.submit(load_graph(f"{name} [temp]"), socket)
    await socket.wait_for(is_done(prompt_id))
    assert "execution_success" in socket.types(prompt_id)
    missing = await comfy.prompt(load_graph(f"nope_{uuid.uuid4().hex}.png"))
    error = missing.json()["node_errors"]["1"]["errors"][0]
    assert error["type"] == "custom_validation_failed"
    assert error["details"].startswith("image - Invalid image file: nope_")


async def test_uploaded_files_appear_in_the_loadimage_combo(comfy: ComfyClient) -> None:
    name = f"combo_{uuid.uuid4().hex[:8]}.png"
    await comfy.upload(name, png((3, 2, 1)))
    info = await comfy.get_json("/object_info/LoadImage")
    options, extra = info["LoadImage"]["input"]["required"]["image"]
    assert name in options and extra == {"image_upload": True}


async def test_load_image_output_reads_an_annotated_earlier_output(comfy: ComfyClient) -> None:
    color = fresh_color()
    frames = await comfy.run_ok(empty_image_graph("loadout", 16, 8, color=color))
    [saved] = next(f for f in frames if f.type == "executed").data["output"]["images"]
    annotated = f"{saved['filename']} [output]"
    load = {
        "1": {"class_type": "LoadImageOutput", "inputs": {"image": annotated}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    frames = await comfy.run_ok(load)
    [preview] = next(f for f in frames if f.type == "executed").data["output"]["images"]
    image = Image.open(io.BytesIO(await comfy.fetch(preview)))
    assert image.size == (16, 8)
    assert image.convert("RGB").getpixel((0, 0)) == (color >> 16, (color >> 8) & 255, color & 255)
    # Without the annotation the name is looked up in input/, where it is not.
    bare = {"1": {"class_type": "LoadImageOutput", "inputs": {"image": saved["filename"]}}}
    bare["2"] = load["2"]
    reply = await comfy.prompt(bare)
    assert reply.status == 400
    [error] = reply.json()["node_errors"]["1"]["errors"]
    assert error["type"] == "custom_validation_failed"
    assert error["details"] == f"image - Invalid image file: {saved['filename']}"
