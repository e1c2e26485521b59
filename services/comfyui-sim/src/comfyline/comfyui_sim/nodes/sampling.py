"""Latents, samplers and the VAE: where pictures and videos are "generated".

Samplers tick `progress` once per step (sleeping `--step-time` first), like ComfyUI's
`ProgressBar` in the sampling callback; with `--preview-method auto` each tick carries a JPEG
preview at latent resolution. Decoding makes deterministic frames from the latent's signature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from comfyline.comfyui_sim.lazy import lazy
from comfyline.comfyui_sim.nodes.base import (
    BOOLEAN,
    COMBO,
    FLOAT,
    INT,
    LINK,
    MAX_RESOLUTION,
    SEED_MAX,
    Inputs,
    InputTypes,
    Node,
    NodeEnv,
    NodeOutput,
    Preview,
    RunContext,
)
from comfyline.comfyui_sim.nodes.encode import encode_preview
from comfyline.comfyui_sim.nodes.image_ops import box_blur
from comfyline.comfyui_sim.nodes.media import Conditioning, Images, Latent, Mask, pattern_frame

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy("numpy")

SAMPLERS = [
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "heun",
    "heunpp2",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "ipndm",
    "ipndm_v",
    "deis",
    "res_multistep",
    "res_multistep_cfg_pp",
    "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp",
    "gradient_estimation",
    "gradient_estimation_cfg_pp",
    "er_sde",
    "seeds_2",
    "seeds_3",
    "sa_solver",
    "sa_solver_pece",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
]
SCHEDULERS = [
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
]


def _preview(latent: Latent, sig: str) -> Preview:
    frame = pattern_frame(sig, 0, max(8, latent.height // 8), max(8, latent.width // 8))
    return Preview("JPEG", encode_preview(frame, "JPEG"))


def _sampled(ctx: RunContext, latent: Latent, ticks: int, strength: float) -> Latent:
    ctx.steps(ticks, preview=lambda step: _preview(latent, f"{ctx.signature}:{step}"))
    return Latent(
        sig=ctx.signature,
        width=latent.width,
        height=latent.height,
        batch=latent.batch,
        frames=latent.frames,
        channels=latent.channels,
        base=latent.base,
        mask=latent.mask,
        strength=strength if latent.base is not None else 1.0,
    )


class KSampler(Node):
    CLASS = "KSampler"
    CATEGORY = "sampling"
    DESCRIPTION = (
        "Uses the provided model, positive and negative conditioning to denoise the latent image."
    )
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent.",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "model": LINK("MODEL", tooltip="The model used for denoising the input latent."),
                "seed": INT(
                    0,
                    min=0,
                    max=SEED_MAX,
                    control_after_generate=True,
                    tooltip="The random seed used for creating the noise.",
                ),
                "steps": INT(
                    20,
                    min=1,
                    max=10000,
                    tooltip="The number of steps used in the denoising process.",
                ),
                "cfg": FLOAT(
                    8.0,
                    min=0.0,
                    max=100.0,
                    step=0.1,
                    round=0.01,
                    tooltip="The Classifier-Free Guidance scale balances creativity and "
                    "adherence to the prompt.",
                ),
                "sampler_name": COMBO(SAMPLERS, tooltip="The algorithm used when sampling."),
                "scheduler": COMBO(
                    SCHEDULERS, tooltip="The scheduler controls how noise is gradually removed."
                ),
                "positive": LINK("CONDITIONING", tooltip="What to include in the image."),
                "negative": LINK("CONDITIONING", tooltip="What to exclude from the image."),
                "latent_image": LINK("LATENT", tooltip="The latent image to denoise."),
                "denoise": FLOAT(
                    1.0, min=0.0, max=1.0, step=0.01, tooltip="The amount of denoising applied."
                ),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        latent = inputs.get("latent_image", Latent)
        denoise = inputs.as_float("denoise")
        ticks = inputs.as_int("steps") if denoise > 0 else 0
        return NodeOutput((_sampled(ctx, latent, ticks, denoise),))


class KSamplerAdvanced(Node):
    CLASS = "KSamplerAdvanced"
    DISPLAY = "KSampler (Advanced)"
    CATEGORY = "sampling"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "model": LINK("MODEL"),
                "add_noise": COMBO(["enable", "disable"]),
                "noise_seed": INT(0, min=0, max=SEED_MAX, control_after_generate=True),
                "steps": INT(20, min=1, max=10000),
                "cfg": FLOAT(8.0, min=0.0, max=100.0, step=0.1, round=0.01),
                "sampler_name": COMBO(SAMPLERS),
                "scheduler": COMBO(SCHEDULERS),
                "positive": LINK("CONDITIONING"),
                "negative": LINK("CONDITIONING"),
                "latent_image": LINK("LATENT"),
                "start_at_step": INT(0, min=0, max=10000),
                "end_at_step": INT(10000, min=0, max=10000),
                "return_with_leftover_noise": COMBO(["disable", "enable"]),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        latent = inputs.get("latent_image", Latent)
        steps = inputs.as_int("steps")
        start = inputs.as_int("start_at_step")
        ticks = max(0, min(inputs.as_int("end_at_step"), steps) - start)
        return NodeOutput((_sampled(ctx, latent, ticks, 1.0),))


class EmptyLatentImage(Node):
    CLASS = "EmptyLatentImage"
    DISPLAY = "Empty Latent Image"
    CATEGORY = "latent"
    DESCRIPTION = "Create a new batch of empty latent images to be denoised via sampling."
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The empty latent image batch.",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "width": INT(
                    512, min=16, max=MAX_RESOLUTION, step=8, tooltip="The width in pixels."
                ),
                "height": INT(
                    512, min=16, max=MAX_RESOLUTION, step=8, tooltip="The height in pixels."
                ),
                "batch_size": INT(1, min=1, max=4096, tooltip="The number of latent images."),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        return NodeOutput(
            (
                Latent(
                    ctx.signature,
                    inputs.as_int("width"),
                    inputs.as_int("height"),
                    inputs.as_int("batch_size"),
                ),
            )
        )


class VAEDecode(Node):
    CLASS = "VAEDecode"
    DISPLAY = "VAE Decode"
    CATEGORY = "latent"
    DESCRIPTION = "Decodes latent images back into pixel space images."
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The decoded image.",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "samples": LINK("LATENT", tooltip="The latent to be decoded."),
                "vae": LINK("VAE", tooltip="The VAE model used for decoding the latent."),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        latent = inputs.get("samples", Latent)
        images = Images.pattern(
            latent.sig,
            latent.batch * latent.frames,
            latent.height,
            latent.width,
            base=latent.base,
            mask=latent.mask,
            strength=latent.strength,
        )
        return NodeOutput((images,))


def _encoded(ctx: RunContext, pixels: Images, mask: Mask | None = None) -> Latent:
    width, height = max(8, pixels.width // 8 * 8), max(8, pixels.height // 8 * 8)
    return Latent(
        ctx.signature,
        width,
        height,
        batch=pixels.count,
        base=pixels,
        mask=None if mask is None else mask.first(),
    )


class VAEEncode(Node):
    CLASS = "VAEEncode"
    DISPLAY = "VAE Encode"
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"pixels": LINK("IMAGE"), "vae": LINK("VAE")}}

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        return NodeOutput((_encoded(ctx, inputs.get("pixels", Images)),))


def _grown(mask: Mask, by: int) -> Mask:
    if by <= 0:
        return mask
    frames = []
    for plane in mask.values:
        spread = box_blur((plane * 255).astype(np.uint8)[..., None], by)[..., 0]
        frames.append((spread > 0).astype(np.float32))
    return Mask(np.stack(frames).astype(np.float32), mask.sig)


class VAEEncodeForInpaint(Node):
    CLASS = "VAEEncodeForInpaint"
    DISPLAY = "VAE Encode (for Inpainting)"
    CATEGORY = "latent/inpaint"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "pixels": LINK("IMAGE"),
                "vae": LINK("VAE"),
                "mask": LINK("MASK"),
                "grow_mask_by": INT(6, min=0, max=64, step=1),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        mask = _grown(inputs.get("mask", Mask), inputs.as_int("grow_mask_by"))
        return NodeOutput((_encoded(ctx, inputs.get("pixels", Images), mask),))


class InpaintModelConditioning(Node):
    CLASS = "InpaintModelConditioning"
    CATEGORY = "conditioning/inpaint"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "positive": LINK("CONDITIONING"),
                "negative": LINK("CONDITIONING"),
                "vae": LINK("VAE"),
                "pixels": LINK("IMAGE"),
                "mask": LINK("MASK"),
                "noise_mask": BOOLEAN(
                    True,
                    tooltip="Add a noise mask to the latent so sampling will only happen "
                    "within the mask.",
                ),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        positive, negative = (
            inputs.get("positive", Conditioning),
            inputs.get("negative", Conditioning),
        )
        mask = inputs.get("mask", Mask) if inputs.as_bool("noise_mask") else None
        latent = _encoded(ctx, inputs.get("pixels", Images), mask)
        return NodeOutput(
            (
                Conditioning(f"{ctx.signature}:+", positive.text),
                Conditioning(f"{ctx.signature}:-", negative.text),
                latent,
            )
        )


NODES: tuple[type[Node], ...] = (
    KSampler,
    KSamplerAdvanced,
    EmptyLatentImage,
    VAEDecode,
    VAEEncode,
    VAEEncodeForInpaint,
    InpaintModelConditioning,
)
