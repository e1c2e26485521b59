"""Video latents of the WAN templates (core nodes_hunyuan.py and nodes_wan.py): a latent of
`length` frames, optionally starting from an image, which VAEDecode turns into that many frames."""

from __future__ import annotations

from comfyline.comfyui_sim.nodes.base import (
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
from comfyline.comfyui_sim.nodes.media import Conditioning, Images, Latent


class EmptyHunyuanLatentVideo(Node):
    CLASS = "EmptyHunyuanLatentVideo"
    CATEGORY = "latent/video"
    MODULE = "comfy_extras.nodes_hunyuan"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "width": INT(848, min=16, max=MAX_RESOLUTION, step=16),
                "height": INT(480, min=16, max=MAX_RESOLUTION, step=16),
                "length": INT(25, min=1, max=MAX_RESOLUTION, step=4),
                "batch_size": INT(1, min=1, max=4096),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        latent = Latent(
            ctx.signature,
            inputs.as_int("width"),
            inputs.as_int("height"),
            inputs.as_int("batch_size"),
            frames=inputs.as_int("length"),
            channels=16,
        )
        return NodeOutput((latent,))


class WanImageToVideo(Node):
    CLASS = "WanImageToVideo"
    V3 = True
    CATEGORY = "conditioning/video_models"
    MODULE = "comfy_extras.nodes_wan"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "positive": LINK("CONDITIONING"),
                "negative": LINK("CONDITIONING"),
                "vae": LINK("VAE"),
                "width": INT(832, min=16, max=MAX_RESOLUTION, step=16),
                "height": INT(480, min=16, max=MAX_RESOLUTION, step=16),
                "length": INT(81, min=1, max=MAX_RESOLUTION, step=4),
                "batch_size": INT(1, min=1, max=4096),
            },
            "optional": {
                "clip_vision_output": LINK("CLIP_VISION_OUTPUT"),
                "start_image": LINK("IMAGE"),
            },
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        positive, negative = (
            inputs.get("positive", Conditioning),
            inputs.get("negative", Conditioning),
        )
        latent = Latent(
            ctx.signature,
            inputs.as_int("width"),
            inputs.as_int("height"),
            inputs.as_int("batch_size"),
            frames=inputs.as_int("length"),
            channels=16,
            base=inputs.optional("start_image", Images),
        )
        return NodeOutput(
            (
                Conditioning(f"{ctx.signature}:+", positive.text),
                Conditioning(f"{ctx.signature}:-", negative.text),
                latent,
            )
        )


class Wan22ImageToVideoLatent(Node):
    CLASS = "Wan22ImageToVideoLatent"
    V3 = True
    CATEGORY = "conditioning/inpaint"
    MODULE = "comfy_extras.nodes_wan"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "vae": LINK("VAE"),
                "width": INT(1280, min=32, max=MAX_RESOLUTION, step=32),
                "height": INT(704, min=32, max=MAX_RESOLUTION, step=32),
                "length": INT(49, min=1, max=MAX_RESOLUTION, step=4),
                "batch_size": INT(1, min=1, max=4096),
            },
            "optional": {"start_image": LINK("IMAGE")},
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        latent = Latent(
            ctx.signature,
            inputs.as_int("width"),
            inputs.as_int("height"),
            inputs.as_int("batch_size"),
            frames=inputs.as_int("length"),
            channels=48,
            base=inputs.optional("start_image", Images),
        )
        return NodeOutput((latent,))


NODES: tuple[type[Node], ...] = (
    EmptyHunyuanLatentVideo,
    WanImageToVideo,
    Wan22ImageToVideoLatent,
)
