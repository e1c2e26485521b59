"""Stock image nodes that need no model: load, make, change, save and preview images.

Input specs follow ComfyUI 0.3.64's `nodes.py`, `comfy_extras/nodes_mask.py`,
`nodes_post_processing.py`, `nodes_images.py` and the example `websocket_image_save.py`.
"""

from __future__ import annotations

import os
import random
import time
from typing import TYPE_CHECKING, Any

from comfyline.comfyui_sim.lazy import lazy
from comfyline.comfyui_sim.nodes.base import (
    COMBO,
    INT,
    LINK,
    MAX_RESOLUTION,
    STRING,
    FileLoader,
    Inputs,
    InputTypes,
    Node,
    NodeEnv,
    NodeOutput,
    Preview,
    RunContext,
    hidden_prompt,
)
from comfyline.comfyui_sim.nodes.encode import encode_preview, save_png
from comfyline.comfyui_sim.nodes.media import Images, Mask
from comfyline.comfyui_sim.paths import save_target

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image, ImageOps

else:
    np = lazy("numpy")
    Image = lazy("PIL.Image")
    ImageOps = lazy("PIL.ImageOps")

PREFIX_TOOLTIP = (
    "The prefix for the file to save. This may include formatting information such as "
    "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."
)


class EmptyImage(Node):
    CLASS = "EmptyImage"
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "width": INT(512, min=1, max=MAX_RESOLUTION, step=1),
                "height": INT(512, min=1, max=MAX_RESOLUTION, step=1),
                "batch_size": INT(1, min=1, max=4096),
                "color": INT(0, min=0, max=0xFFFFFF, step=1, display="color"),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        color = inputs.as_int("color")
        rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
        batch, height, width = (inputs.as_int(k) for k in ("batch_size", "height", "width"))
        allocate(batch * height * width * 3 * 4, channel=batch * height * width * 4)
        images = Images.solid(rgb, batch, height, width)
        return NodeOutput((images,))


def allocate(total: int, channel: int) -> None:
    """The CPU allocator's refusal, as torch raises it, for an image larger than this machine's
    memory: ComfyUI builds EmptyImage one float32 channel at a time, so the first allocation is
    one channel's worth."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if total > memory:
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            f"memory: you tried to allocate {min(channel, total)} bytes. "
            "Error code 12 (Cannot allocate memory)"
        )


def _open_image(ctx: RunContext, name: str) -> Image.Image:
    image = Image.open(ctx.dirs.input_file(name))
    return ImageOps.exif_transpose(image) or image


class LoadImage(FileLoader):
    CLASS = "LoadImage"
    DISPLAY = "Load Image"
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    VALIDATES = ("image",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        files = env.dirs.input_files(("image",))
        return {"required": {"image": COMBO(files, image_upload=True)}}

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        image = _open_image(ctx, inputs.as_str("image"))
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        if "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info):
            alpha = np.asarray(image.convert("RGBA"), dtype=np.float32)[..., 3] / 255.0
            mask = (1.0 - alpha)[None, ...].astype(np.float32)
        else:
            mask = np.zeros((1, 64, 64), dtype=np.float32)
        images = Images.from_array(rgb[None, ...], ctx.signature)
        return NodeOutput((images, Mask(mask, ctx.signature)))


class LoadImageOutput(LoadImage):
    """Loads an earlier output (`name.png [output]`); its combo is 0.3.64's fourth form, a
    `COMBO` with no `options`: the front end asks `remote.route` for the choices."""

    CLASS = "LoadImageOutput"
    DISPLAY = "Load Image (from Outputs)"
    DESCRIPTION = (
        "Load an image from the output folder. When the refresh button is clicked, the node will "
        "update the image list and automatically select the first image, allowing for easy "
        "iteration."
    )
    EXPERIMENTAL = True

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        remote = {
            "route": "/internal/files/output",
            "refresh_button": True,
            "control_after_refresh": "first",
        }
        spec = ["COMBO", {"image_upload": True, "image_folder": "output", "remote": remote}]
        return {"required": {"image": spec}}


class LoadImageMask(FileLoader):
    CLASS = "LoadImageMask"
    DISPLAY = "Load Image (as Mask)"
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    VALIDATES = ("image",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        files = env.dirs.input_files(("image",))
        return {
            "required": {
                "image": COMBO(files, image_upload=True),
                "channel": COMBO(["alpha", "red", "green", "blue"]),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        image = _open_image(ctx, inputs.as_str("image")).convert("RGBA")
        band = inputs.as_str("channel")[0].upper()
        values = np.asarray(image.getchannel(band), dtype=np.float32) / 255.0
        if band == "A":
            values = np.float32(1.0) - values
        return NodeOutput((Mask(values[None, ...].astype(np.float32), ctx.signature),))


def _save_frames(ctx: RunContext, images: Images, prefix: str, kind: str, level: int) -> NodeOutput:
    base = ctx.dirs.output if kind == "output" else ctx.dirs.temp
    target = save_target(prefix, base, images.width, images.height)
    text = {"prompt": ctx.prompt} if ctx.prompt else None
    if isinstance(ctx.extra_pnginfo, dict):
        text = {**(text or {}), **ctx.extra_pnginfo}
    results = []
    counter = target.counter
    for batch_number, frame in enumerate(images):
        name = target.filename.replace("%batch_num%", str(batch_number))
        file = f"{name}_{counter:05}_.png"
        save_png(target.folder / file, frame, level, text)
        results.append({"filename": file, "subfolder": target.subfolder, "type": kind})
        counter += 1
    return NodeOutput((), {"images": results})


class SaveImage(Node):
    CLASS = "SaveImage"
    DISPLAY = "Save Image"
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."
    OUTPUT_NODE = True

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "images": LINK("IMAGE", tooltip="The images to save."),
                "filename_prefix": STRING("ComfyUI", tooltip=PREFIX_TOOLTIP),
            },
            "hidden": hidden_prompt(),
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        level = ctx.config.png_compress_level
        return _save_frames(
            ctx,
            inputs.get("images", Images),
            inputs.as_str("filename_prefix"),
            "output",
            4 if level is None else level,
        )


class PreviewImage(Node):
    CLASS = "PreviewImage"
    DISPLAY = "Preview Image"
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."
    OUTPUT_NODE = True

    def __init__(self) -> None:
        letters = "abcdefghijklmnopqrstupvxyz"
        self.prefix_append = "_temp_" + "".join(random.choice(letters) for _ in range(5))

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"images": LINK("IMAGE")}, "hidden": hidden_prompt()}

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        level = ctx.config.png_compress_level
        prefix = "ComfyUI" + self.prefix_append
        images = inputs.get("images", Images)
        return _save_frames(ctx, images, prefix, "temp", 1 if level is None else level)


class SaveImageWebsocket(Node):
    """The stock example node: images only as binary preview frames, one progress tick each."""

    CLASS = "SaveImageWebsocket"
    CATEGORY = "api/image"
    MODULE = "custom_nodes.websocket_image_save"
    OUTPUT_NODE = True

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"images": LINK("IMAGE")}}

    @classmethod
    def is_changed(cls, env: NodeEnv, inputs: dict[str, Any]) -> object:
        return time.time()

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        images = inputs.get("images", Images)
        for step, frame in enumerate(images):
            ctx.tick(step, images.count, Preview("PNG", encode_preview(frame, "PNG")))
        return NodeOutput((), {})


NODES: tuple[type[Node], ...] = (
    EmptyImage,
    LoadImage,
    LoadImageOutput,
    LoadImageMask,
    SaveImage,
    PreviewImage,
    SaveImageWebsocket,
)
