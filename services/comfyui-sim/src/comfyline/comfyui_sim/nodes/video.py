"""Video nodes: core CreateVideo/SaveVideo/SaveWEBM/SaveAnimatedWEBP (newer-style, V3 combos)
and VideoHelperSuite's VHS_LoadVideo/VHS_VideoCombine, reporting files exactly as each does:
core savers under `images` with `animated: [true]`, VHS under `gifs`.
"""

from __future__ import annotations

from comfyline.comfyui_sim.nodes.base import (
    BOOLEAN,
    COMBO,
    COMBO_V3,
    FLOAT,
    INT,
    LINK,
    STRING,
    Inputs,
    InputTypes,
    Node,
    NodeEnv,
    NodeOutput,
    RunContext,
    hidden_prompt,
)
from comfyline.comfyui_sim.nodes.encode import (
    write_animated,
    write_video,
)
from comfyline.comfyui_sim.nodes.image import PREFIX_TOOLTIP
from comfyline.comfyui_sim.nodes.media import Audio, Images, Video
from comfyline.comfyui_sim.paths import save_target


class CreateVideo(Node):
    CLASS = "CreateVideo"
    V3 = True
    DISPLAY = "Create Video"
    CATEGORY = "image/video"
    DESCRIPTION = "Create a video from images."
    MODULE = "comfy_extras.nodes_video"
    RETURN_TYPES = ("VIDEO",)

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "images": LINK("IMAGE", tooltip="The images to create a video from."),
                "fps": FLOAT(30.0, min=1.0, max=120.0, step=1.0),
            },
            "optional": {"audio": LINK("AUDIO", tooltip="The audio to add to the video.")},
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        video = Video(
            inputs.get("images", Images), inputs.as_float("fps"), inputs.optional("audio", Audio)
        )
        return NodeOutput((video,))


class SaveVideo(Node):
    CLASS = "SaveVideo"
    V3 = True
    DISPLAY = "Save Video"
    CATEGORY = "image/video"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."
    MODULE = "comfy_extras.nodes_video"
    OUTPUT_NODE = True

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "video": LINK("VIDEO", tooltip="The video to save."),
                "filename_prefix": STRING("video/ComfyUI", tooltip=PREFIX_TOOLTIP),
                "format": COMBO_V3(
                    ["auto", "mp4"], default="auto", tooltip="The format to save the video as."
                ),
                "codec": COMBO_V3(
                    ["auto", "h264"], default="auto", tooltip="The codec to use for the video."
                ),
            },
            "hidden": hidden_prompt(),
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        video = inputs.get("video", Video)
        images = video.images
        target = save_target(
            inputs.as_str("filename_prefix"), ctx.dirs.output, images.width, images.height
        )
        file = f"{target.filename}_{target.counter:05}_.mp4"
        write_video(target.folder / file, images, video.fps, "h264", "mp4", audio=video.audio)
        entry = {"filename": file, "subfolder": target.subfolder, "type": "output"}
        return NodeOutput((), {"images": [entry], "animated": [True]})


class SaveWEBM(Node):
    CLASS = "SaveWEBM"
    V3 = True
    EXPERIMENTAL = True
    CATEGORY = "image/video"
    MODULE = "comfy_extras.nodes_video"
    OUTPUT_NODE = True

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "images": LINK("IMAGE"),
                "filename_prefix": STRING("ComfyUI"),
                "codec": COMBO_V3(["vp9", "av1"]),
                "fps": FLOAT(24.0, min=0.01, max=1000.0, step=0.01),
                "crf": FLOAT(
                    32.0,
                    min=0,
                    max=63.0,
                    step=1,
                    tooltip="Higher crf means lower quality with a smaller file size, lower crf "
                    "means higher quality higher filesize.",
                ),
            },
            "hidden": hidden_prompt(),
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        images = inputs.get("images", Images)
        target = save_target(
            inputs.as_str("filename_prefix"), ctx.dirs.output, images.width, images.height
        )
        file = f"{target.filename}_{target.counter:05}_.webm"
        write_video(
            target.folder / file,
            images,
            inputs.as_float("fps"),
            inputs.as_str("codec"),
            "webm",
            crf=inputs.as_float("crf"),
        )
        entry = {"filename": file, "subfolder": target.subfolder, "type": "output"}
        return NodeOutput((), {"images": [entry], "animated": [True]})


class SaveAnimatedWEBP(Node):
    CLASS = "SaveAnimatedWEBP"
    CATEGORY = "image/animation"
    MODULE = "comfy_extras.nodes_images"
    OUTPUT_NODE = True
    METHODS = {"default": 4, "fastest": 0, "slowest": 6}

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "images": LINK("IMAGE"),
                "filename_prefix": STRING("ComfyUI"),
                "fps": FLOAT(6.0, min=0.01, max=1000.0, step=0.01),
                "lossless": BOOLEAN(True),
                "quality": INT(80, min=0, max=100),
                "method": COMBO(list(cls.METHODS)),
            },
            "hidden": hidden_prompt(),
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        images = inputs.get("images", Images)
        target = save_target(
            inputs.as_str("filename_prefix"), ctx.dirs.output, images.width, images.height
        )
        file = f"{target.filename}_{target.counter:05}_.webp"
        write_animated(
            target.folder / file,
            images,
            inputs.as_float("fps"),
            "WEBP",
            lossless=inputs.as_bool("lossless"),
            quality=inputs.as_int("quality"),
            method=self.METHODS[inputs.as_str("method")],
        )
        entry = {"filename": file, "subfolder": target.subfolder, "type": "output"}
        return NodeOutput((), {"images": [entry], "animated": [images.count != 1]})


NODES: tuple[type[Node], ...] = (
    CreateVideo,
    SaveVideo,
    SaveWEBM,
    SaveAnimatedWEBP,
)
