"""Model loaders: their combos list the configured "installed" model files, so a template naming
a missing model fails validation with the real `value_not_in_list` error, and `/object_info`
tells a worker which models this server can run. Nothing is loaded; each returns a named `Ref`.
"""

from __future__ import annotations

from comfyline.comfyui_sim.nodes.base import (
    COMBO,
    FLOAT,
    LINK,
    Inputs,
    InputTypes,
    Node,
    NodeEnv,
    NodeOutput,
    RunContext,
)
from comfyline.comfyui_sim.nodes.media import Conditioning, Images, Ref

CLIP_TYPES = [
    "stable_diffusion",
    "stable_cascade",
    "sd3",
    "stable_audio",
    "mochi",
    "ltxv",
    "pixart",
    "cosmos",
    "lumina2",
    "wan",
    "hidream",
    "chroma",
    "ace",
    "omnigen2",
    "qwen_image",
    "hunyuan_image",
]


class CheckpointLoaderSimple(Node):
    CLASS = "CheckpointLoaderSimple"
    DISPLAY = "Load Checkpoint"
    CATEGORY = "loaders"
    DESCRIPTION = (
        "Loads a diffusion model checkpoint, diffusion models are used to denoise latents."
    )
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = (
        "The model used for denoising latents.",
        "The CLIP model used for encoding text prompts.",
        "The VAE model used for encoding and decoding images to and from latent space.",
    )

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "ckpt_name": COMBO(
                    env.models("checkpoints"), tooltip="The name of the checkpoint (model) to load."
                )
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        name = inputs.as_str("ckpt_name")
        return NodeOutput(
            tuple(Ref(kind, name, f"{ctx.signature}:{kind}") for kind in ("MODEL", "CLIP", "VAE"))
        )


class ImageOnlyCheckpointLoader(Node):
    CLASS = "ImageOnlyCheckpointLoader"
    DISPLAY = "Image Only Checkpoint Loader (img2vid model)"
    CATEGORY = "loaders/video_models"
    MODULE = "comfy_extras.nodes_video_model"
    RETURN_TYPES = ("MODEL", "CLIP_VISION", "VAE")

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"ckpt_name": COMBO(env.models("checkpoints"))}}

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        name = inputs.as_str("ckpt_name")
        kinds = ("MODEL", "CLIP_VISION", "VAE")
        return NodeOutput(tuple(Ref(kind, name, f"{ctx.signature}:{kind}") for kind in kinds))


class _SingleLoader(Node):
    FOLDER = ""
    FIELD = ""
    KIND = ""

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {cls.FIELD: COMBO(env.models(cls.FOLDER))}}

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        return NodeOutput((Ref(self.KIND, inputs.as_str(self.FIELD), ctx.signature),))


class UNETLoader(_SingleLoader):
    CLASS = "UNETLoader"
    DISPLAY = "Load Diffusion Model"
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("MODEL",)
    FOLDER, FIELD, KIND = "diffusion_models", "unet_name", "MODEL"

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        dtypes = ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]
        return {
            "required": {
                "unet_name": COMBO(env.models("diffusion_models")),
                "weight_dtype": COMBO(dtypes),
            }
        }


class CLIPLoader(_SingleLoader):
    CLASS = "CLIPLoader"
    DISPLAY = "Load CLIP"
    CATEGORY = "advanced/loaders"
    DESCRIPTION = "[Recipes]\n\nwan: umt5 xxl"
    RETURN_TYPES = ("CLIP",)
    FOLDER, FIELD, KIND = "text_encoders", "clip_name", "CLIP"

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "clip_name": COMBO(env.models("text_encoders")),
                "type": COMBO(CLIP_TYPES),
            },
            "optional": {"device": COMBO(["default", "cpu"], advanced=True)},
        }


class VAELoader(_SingleLoader):
    CLASS = "VAELoader"
    DISPLAY = "Load VAE"
    CATEGORY = "loaders"
    RETURN_TYPES = ("VAE",)
    FOLDER, FIELD, KIND = "vae", "vae_name", "VAE"


class CLIPVisionLoader(_SingleLoader):
    CLASS = "CLIPVisionLoader"
    DISPLAY = "Load CLIP Vision"
    CATEGORY = "loaders"
    RETURN_TYPES = ("CLIP_VISION",)
    FOLDER, FIELD, KIND = "clip_vision", "clip_name", "CLIP_VISION"


class CLIPVisionEncode(Node):
    CLASS = "CLIPVisionEncode"
    DISPLAY = "CLIP Vision Encode"
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CLIP_VISION_OUTPUT",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "clip_vision": LINK("CLIP_VISION"),
                "image": LINK("IMAGE"),
                "crop": COMBO(["center", "none"]),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        inputs.get("image", Images)
        return NodeOutput((Ref("CLIP_VISION_OUTPUT", "clip_vision_output", ctx.signature),))


LORA_DESCRIPTION = (
    "LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are "
    "denoised such as applying styles. Multiple LoRA nodes can be linked together."
)
LORA_OUTPUT_TOOLTIPS = ("The modified diffusion model.", "The modified CLIP model.")


class LoraLoader(Node):
    CLASS = "LoraLoader"
    DISPLAY = "Load LoRA"
    CATEGORY = "loaders"
    DESCRIPTION = LORA_DESCRIPTION
    RETURN_TYPES = ("MODEL", "CLIP")
    OUTPUT_TOOLTIPS = LORA_OUTPUT_TOOLTIPS

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        strength = "How strongly to modify the {} model. This value can be negative."
        return {
            "required": {
                "model": LINK("MODEL", tooltip="The diffusion model the LoRA will be applied to."),
                "clip": LINK("CLIP", tooltip="The CLIP model the LoRA will be applied to."),
                "lora_name": COMBO(env.models("loras"), tooltip="The name of the LoRA."),
                "strength_model": FLOAT(
                    1.0, min=-100.0, max=100.0, step=0.01, tooltip=strength.format("diffusion")
                ),
                "strength_clip": FLOAT(
                    1.0, min=-100.0, max=100.0, step=0.01, tooltip=strength.format("CLIP")
                ),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        model, clip = inputs.get("model", Ref), inputs.get("clip", Ref)
        return NodeOutput(
            (
                Ref("MODEL", model.name, f"{ctx.signature}:MODEL"),
                Ref("CLIP", clip.name, f"{ctx.signature}:CLIP"),
            )
        )


class LoraLoaderModelOnly(Node):
    CLASS = "LoraLoaderModelOnly"
    CATEGORY = "loaders"
    DESCRIPTION = LORA_DESCRIPTION
    RETURN_TYPES = ("MODEL",)
    #: ComfyUI 0.3.64 inherits both of LoraLoader's tooltips for its one output.
    OUTPUT_TOOLTIPS = LORA_OUTPUT_TOOLTIPS

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "model": LINK("MODEL"),
                "lora_name": COMBO(env.models("loras")),
                "strength_model": FLOAT(1.0, min=-100.0, max=100.0, step=0.01),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        model = inputs.get("model", Ref)
        return NodeOutput((Ref("MODEL", model.name, ctx.signature),))


class ModelSamplingSD3(Node):
    CLASS = "ModelSamplingSD3"
    CATEGORY = "advanced/model"
    MODULE = "comfy_extras.nodes_model_advanced"
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "model": LINK("MODEL"),
                "shift": FLOAT(3.0, min=0.0, max=100.0, step=0.01),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        return NodeOutput((Ref("MODEL", inputs.get("model", Ref).name, ctx.signature),))


class CLIPTextEncode(Node):
    CLASS = "CLIPTextEncode"
    DISPLAY = "CLIP Text Encode (Prompt)"
    CATEGORY = "conditioning"
    DESCRIPTION = (
        "Encodes a text prompt using a CLIP model into an embedding that can be used to guide "
        "the diffusion model towards generating specific images."
    )
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = (
        "A conditioning containing the embedded text used to guide the diffusion model.",
    )

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "text": [
                    "STRING",
                    {
                        "multiline": True,
                        "dynamicPrompts": True,
                        "tooltip": "The text to be encoded.",
                    },
                ],
                "clip": LINK("CLIP", tooltip="The CLIP model used for encoding the text."),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        if inputs.optional("clip", Ref) is None:
            raise RuntimeError(
                "ERROR: clip input is invalid: None\n\nIf the clip is from a checkpoint loader "
                "node your checkpoint does not contain a valid clip or text encoder model."
            )
        return NodeOutput((Conditioning(ctx.signature, inputs.as_str("text")),))


NODES: tuple[type[Node], ...] = (
    CheckpointLoaderSimple,
    ImageOnlyCheckpointLoader,
    UNETLoader,
    CLIPLoader,
    VAELoader,
    CLIPVisionLoader,
    CLIPVisionEncode,
    LoraLoader,
    LoraLoaderModelOnly,
    ModelSamplingSD3,
    CLIPTextEncode,
)
