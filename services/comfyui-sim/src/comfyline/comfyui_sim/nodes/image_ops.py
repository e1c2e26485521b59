"""Stock image operations that need no model: invert, scale, blur, masks, size (the last one
sends its result as a binary text frame, event type 3, which goes to every socket)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from comfyline.comfyui_sim.lazy import lazy
from comfyline.comfyui_sim.nodes.base import (
    COMBO,
    FLOAT,
    INT,
    LINK,
    MAX_RESOLUTION,
    Inputs,
    InputTypes,
    Node,
    NodeEnv,
    NodeOutput,
    RunContext,
)
from comfyline.comfyui_sim.nodes.media import Images, Mask

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from comfyline.comfyui_sim.nodes.media import Frame
else:
    np = lazy("numpy")
    Image = lazy("PIL.Image")


class ImageInvert(Node):
    CLASS = "ImageInvert"
    DISPLAY = "Invert Image"
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"image": LINK("IMAGE")}}

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        images = inputs.get("image", Images)
        return NodeOutput((images.map(lambda f: 255 - f, ctx.signature),))


RESAMPLERS = {
    "nearest-exact": "NEAREST",
    "bilinear": "BILINEAR",
    "area": "BOX",
    "bicubic": "BICUBIC",
    "lanczos": "LANCZOS",
}


def _center_crop(frame: Frame, width: int, height: int) -> Frame:
    old_h, old_w = frame.shape[:2]
    old_aspect, new_aspect = old_w / old_h, width / height
    if old_aspect > new_aspect:
        keep = round(old_w * (new_aspect / old_aspect))
        x = (old_w - keep) // 2
        return frame[:, x : x + keep]
    keep = round(old_h * (old_aspect / new_aspect))
    y = (old_h - keep) // 2
    return frame[y : y + keep]


class ImageScale(Node):
    CLASS = "ImageScale"
    DISPLAY = "Upscale Image"
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "image": LINK("IMAGE"),
                "upscale_method": COMBO(list(RESAMPLERS)),
                "width": INT(512, min=0, max=MAX_RESOLUTION, step=1),
                "height": INT(512, min=0, max=MAX_RESOLUTION, step=1),
                "crop": COMBO(["disabled", "center"]),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        images = inputs.get("image", Images)
        width, height = inputs.as_int("width"), inputs.as_int("height")
        if width == 0 and height == 0:
            return NodeOutput((images,))
        if width == 0:
            width = max(1, round(images.width * height / images.height))
        elif height == 0:
            height = max(1, round(images.height * width / images.width))
        method = getattr(Image.Resampling, RESAMPLERS[inputs.as_str("upscale_method")])
        center = inputs.as_str("crop") == "center"

        def scale(frame: Frame) -> Frame:
            source = _center_crop(frame, width, height) if center else frame
            return np.asarray(Image.fromarray(source).resize((width, height), method))

        return NodeOutput((images.map(scale, ctx.signature, height=height, width=width),))


def box_blur(frame: Frame, radius: int) -> Frame:
    """A separable box blur through cumulative sums: cheap at any radius."""
    data = frame.astype(np.float32)
    for axis in (0, 1):
        pad = [(0, 0)] * data.ndim
        pad[axis] = (radius + 1, radius)
        padded = np.pad(data, pad, mode="edge")
        summed = np.cumsum(padded, axis=axis)
        upper = np.take(summed, range(2 * radius + 1, summed.shape[axis]), axis=axis)
        lower = np.take(summed, range(0, summed.shape[axis] - 2 * radius - 1), axis=axis)
        data = ((upper - lower) / np.float32(2 * radius + 1)).astype(np.float32)
    return np.clip(data, 0, 255).astype(np.uint8)


class ImageBlur(Node):
    CLASS = "ImageBlur"
    V3 = True
    CATEGORY = "image/postprocessing"
    MODULE = "comfy_extras.nodes_post_processing"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "image": LINK("IMAGE"),
                "blur_radius": INT(1, min=1, max=31, step=1),
                "sigma": FLOAT(1.0, min=0.1, max=10.0, step=0.1),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        images = inputs.get("image", Images)
        radius = max(1, round(inputs.as_int("blur_radius") * min(1.0, inputs.as_float("sigma"))))
        frames = np.stack([box_blur(frame, radius) for frame in images])
        return NodeOutput((Images.from_array(frames, ctx.signature),))


class ImageToMask(Node):
    CLASS = "ImageToMask"
    DISPLAY = "Convert Image to Mask"
    CATEGORY = "mask"
    MODULE = "comfy_extras.nodes_mask"
    RETURN_TYPES = ("MASK",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "image": LINK("IMAGE"),
                "channel": COMBO(["red", "green", "blue", "alpha"]),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        images = inputs.get("image", Images)
        index = ["red", "green", "blue", "alpha"].index(inputs.as_str("channel"))
        if index >= images.channels:
            raise IndexError(
                f"index {index} is out of bounds for dimension 3 with size {images.channels}"
            )
        values = np.stack([frame[..., index].astype(np.float32) / 255.0 for frame in images])
        return NodeOutput((Mask(values.astype(np.float32), ctx.signature),))


class MaskToImage(Node):
    CLASS = "MaskToImage"
    DISPLAY = "Convert Mask to Image"
    CATEGORY = "mask"
    MODULE = "comfy_extras.nodes_mask"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"mask": LINK("MASK")}}

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        values = inputs.get("mask", Mask).values
        gray = np.clip(values * 255.0, 0, 255).astype(np.uint8)
        frames = np.repeat(gray[..., None], 3, axis=3)
        return NodeOutput((Images.from_array(frames, ctx.signature),))


class GetImageSize(Node):
    """Sends its result as a binary text frame (event type 3), which goes to every socket."""

    CLASS = "GetImageSize"
    DISPLAY = "Get Image Size"
    CATEGORY = "image"
    DESCRIPTION = "Returns width and height of the image, and passes it through unchanged."
    MODULE = "comfy_extras.nodes_images"
    RETURN_TYPES = ("INT", "INT", "INT")
    RETURN_NAMES = ("width", "height", "batch_size")

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"image": LINK("IMAGE")}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        images = inputs.get("image", Images)
        ctx.send_text(
            f"width: {images.width}, height: {images.height}\n batch size: {images.count}"
        )
        return NodeOutput((images.width, images.height, images.count))


class PreviewAny(Node):
    """Shows any value as text in its `ui` (`{"text": [value]}`): strings as they are, numbers
    and booleans with `str`, anything else as JSON where it can be."""

    CLASS = "PreviewAny"
    DISPLAY = "Preview Any"
    CATEGORY = "utils"
    MODULE = "comfy_extras.nodes_preview_any"
    OUTPUT_NODE = True

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"source": ["*", {}]}}

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        source = inputs.optional("source", object)
        if source is None:
            value = "None"
        elif isinstance(source, str):
            value = source
        elif isinstance(source, int | float | bool):
            value = str(source)
        else:
            try:
                value = json.dumps(source)
            except (TypeError, ValueError):
                value = str(source)
        return NodeOutput((), {"text": [value]})


NODES: tuple[type[Node], ...] = (
    ImageInvert,
    ImageScale,
    ImageBlur,
    ImageToMask,
    MaskToImage,
    GetImageSize,
    PreviewAny,
)
