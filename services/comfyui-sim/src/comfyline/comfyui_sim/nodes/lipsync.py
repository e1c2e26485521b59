"""Lip-sync packs: Sonic (image + speech -> talking video) and LatentSync (video + speech ->
re-lipped video, with its VideoLengthAdjuster). The face is animated with a mouth whose opening
follows the loudness of the sound, frame by frame, so the output visibly depends on the input.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from comfyline.comfyui_sim.nodes.base import (
    BOOLEAN,
    COMBO,
    FLOAT,
    INT,
    LINK,
    Inputs,
    InputTypes,
    Node,
    NodeEnv,
    NodeOutput,
    RunContext,
)
from comfyline.comfyui_sim.nodes.media import Audio, Images, Ref, SonicData, resize

if TYPE_CHECKING:
    from comfyline.comfyui_sim.nodes.media import Frame

SONIC_MODULE = "custom_nodes.ComfyUI_Sonic"
LATENTSYNC_MODULE = "custom_nodes.ComfyUI-LatentSyncWrapper"


def talking(
    source: Images, audio: Audio, fps: float, count: int, width: int, height: int, sig: str
) -> Images:
    """`count` frames of `source` (looped) with a mouth opening by the sound's loudness."""
    loudness = audio.loudness(fps, count)

    def make(index: int) -> Frame:
        frame = resize(source.frame(index % source.count)[..., :3], width, height).copy()
        opening = float(loudness[index]) if index < len(loudness) else 0.0
        mouth_w = max(2, width // 4)
        mouth_h = max(1, round(height * 0.12 * opening))
        x0, y0 = (width - mouth_w) // 2, int(height * 0.72)
        frame[y0 : y0 + mouth_h, x0 : x0 + mouth_w] = (40, 10, 20)
        return frame

    return Images(count, height, width, 3, make, sig)


class SONICTLoader(Node):
    CLASS = "SONICTLoader"
    CATEGORY = "Sonic"
    MODULE = SONIC_MODULE
    RETURN_TYPES = ("MODEL_SONIC", "DTYPE")
    RETURN_NAMES = ("model", "weight_dtype")

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "model": LINK("MODEL"),
                "sonic_unet": COMBO(["none", *env.models("sonic")]),
                "ip_audio_scale": FLOAT(1.0, min=0.5, max=2.0, step=0.1),
                "use_interframe": BOOLEAN(True),
                "dtype": COMBO(["fp16", "fp32", "bf16"]),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        inputs.get("model", Ref)
        unet = inputs.as_str("sonic_unet")
        if unet == "none":
            raise FileNotFoundError("Please download the model first")
        dtype = inputs.as_str("dtype")
        return NodeOutput((Ref("MODEL_SONIC", unet, ctx.signature), Ref("DTYPE", dtype, dtype)))


class SONICPreData(Node):
    CLASS = "SONIC_PreData"
    CATEGORY = "Sonic"
    MODULE = SONIC_MODULE
    RETURN_TYPES = ("SONIC_PREDATA",)
    RETURN_NAMES = ("data_dict",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "clip_vision": LINK("CLIP_VISION"),
                "vae": LINK("VAE"),
                "audio": LINK("AUDIO"),
                "image": LINK("IMAGE"),
                "weight_dtype": LINK("DTYPE"),
                "min_resolution": INT(512, min=128, max=2048, step=64),
                "duration": FLOAT(10.0, min=1.0, max=1000.0, step=0.1),
                "expand_ratio": FLOAT(0.5, min=0.1, max=1.0, step=0.1),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        audio = inputs.get("audio", Audio)
        data = SonicData(
            ctx.signature,
            inputs.get("image", Images),
            audio,
            min(inputs.as_float("duration"), audio.duration),
            inputs.as_int("min_resolution"),
        )
        return NodeOutput((data,))


class SONICSampler(Node):
    """`inference_steps` ticks; frames = duration x fps at `min_resolution` (shorter side)."""

    CLASS = "SONICSampler"
    CATEGORY = "Sonic"
    MODULE = SONIC_MODULE
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("image", "fps")

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "model": LINK("MODEL_SONIC"),
                "data_dict": LINK("SONIC_PREDATA"),
                "seed": INT(0, min=0, max=2**31 - 1),
                "inference_steps": INT(25, min=1, max=1024, step=1),
                "dynamic_scale": FLOAT(1.0, min=0.5, max=2.0, step=0.1),
                "fps": FLOAT(25.0, min=5.0, max=120.0, step=1.0),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        data = inputs.get("data_dict", SonicData)
        fps = inputs.as_float("fps")
        ctx.steps(inputs.as_int("inference_steps"))
        side = data.min_resolution
        image = data.image
        scale = side / min(image.width, image.height)
        width = max(64, round(image.width * scale / 64) * 64)
        height = max(64, round(image.height * scale / 64) * 64)
        count = max(1, round(data.duration * fps))
        frames = talking(image, data.audio, fps, count, width, height, ctx.signature)
        return NodeOutput((frames, fps))


class LatentSyncNode(Node):
    CLASS = "LatentSyncNode"
    DISPLAY = "LatentSync1.6 Node"
    CATEGORY = "LatentSyncNode"
    MODULE = LATENTSYNC_MODULE
    RETURN_TYPES = ("IMAGE", "AUDIO")
    RETURN_NAMES = ("images", "audio")

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "images": LINK("IMAGE"),
                "audio": LINK("AUDIO"),
                "seed": INT(1247),
                "lips_expression": FLOAT(1.5, min=1.0, max=3.0, step=0.1),
                "inference_steps": INT(20, min=1, max=999, step=1),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        images = inputs.get("images", Images)
        audio = inputs.get("audio", Audio)
        ctx.steps(inputs.as_int("inference_steps"))
        frames = talking(
            images, audio, 25.0, images.count, images.width, images.height, ctx.signature
        )
        return NodeOutput((frames, audio))


class VideoLengthAdjuster(Node):
    CLASS = "VideoLengthAdjuster"
    DISPLAY = "Video Length Adjuster"
    CATEGORY = "LatentSyncNode"
    MODULE = LATENTSYNC_MODULE
    RETURN_TYPES = ("IMAGE", "AUDIO")
    RETURN_NAMES = ("images", "audio")

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "images": LINK("IMAGE"),
                "audio": LINK("AUDIO"),
                "mode": COMBO(["normal", "pingpong", "loop_to_audio"], default="normal"),
                "fps": FLOAT(25.0, min=1.0, max=120.0),
                "silent_padding_sec": FLOAT(0.5, min=0.1, max=3.0, step=0.1),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        images = inputs.get("images", Images)
        audio = inputs.get("audio", Audio)
        fps = inputs.as_float("fps")
        seconds = audio.duration + inputs.as_float("silent_padding_sec")
        target = max(1, math.ceil(seconds * fps))
        count = max(1, images.count)
        mode = inputs.as_str("mode")
        if mode == "pingpong" and count > 1:
            cycle = list(range(count)) + list(range(count - 2, 0, -1))
            order = [cycle[i % len(cycle)] for i in range(target)]
        elif mode == "loop_to_audio":
            order = [i % count for i in range(target)]
        else:
            order = [min(i, count - 1) for i in range(target)]
        padded = audio.fitted(target / fps)
        return NodeOutput((images.select(order, ctx.signature), padded))


NODES: tuple[type[Node], ...] = (
    SONICTLoader,
    SONICPreData,
    SONICSampler,
    LatentSyncNode,
    VideoLengthAdjuster,
)
