"""VideoHelperSuite's VHS_LoadVideo and VHS_VideoCombine: files named and reported the way VHS
does (`<prefix>_00001.mp4`, `-audio` variant, first-frame PNG, under `gifs`)."""

from __future__ import annotations

import os
import re

from comfyline.comfyui_sim.nodes.base import (
    BOOLEAN,
    COMBO,
    FLOAT,
    INT,
    LINK,
    STRING,
    FileLoader,
    Inputs,
    InputTypes,
    Node,
    NodeEnv,
    NodeOutput,
    RunContext,
    hidden_prompt,
)
from comfyline.comfyui_sim.nodes.encode import (
    read_audio,
    read_video_frames,
    save_png,
    write_animated,
    write_video,
)
from comfyline.comfyui_sim.nodes.media import Audio, Images, resize
from comfyline.comfyui_sim.paths import save_target

VHS_CATEGORY = "Video Helper Suite \U0001f3a5\U0001f145\U0001f157\U0001f162"
VHS_SUFFIX = " \U0001f3a5\U0001f145\U0001f157\U0001f162"
VHS_MODULE = "custom_nodes.comfyui-videohelpersuite"
VHS_FORMATS = [
    "image/gif",
    "image/webp",
    "video/16bit-png",
    "video/8bit-png",
    "video/ProRes",
    "video/av1-webm",
    "video/ffmpeg-gif",
    "video/ffv1-mkv",
    "video/h264-mp4",
    "video/h265-mp4",
    "video/nvenc_av1-mp4",
    "video/nvenc_h264-mp4",
    "video/nvenc_hevc-mp4",
    "video/webm",
]
#: VHS format -> (extension, codec, container, default crf); formats missing here are refused.
VHS_ENCODERS: dict[str, tuple[str, str, str, int]] = {
    "video/h264-mp4": ("mp4", "h264", "mp4", 19),
    "video/nvenc_h264-mp4": ("mp4", "h264", "mp4", 19),
    "video/h265-mp4": ("mp4", "h265", "mp4", 22),
    "video/nvenc_hevc-mp4": ("mp4", "h265", "mp4", 22),
    "video/webm": ("webm", "vp9", "webm", 20),
    "video/av1-webm": ("webm", "av1", "webm", 23),
    "video/nvenc_av1-mp4": ("mp4", "av1", "mp4", 23),
}


class VHSLoadVideo(FileLoader):
    CLASS = "VHS_LoadVideo"
    DISPLAY = "Load Video (Upload)" + VHS_SUFFIX
    CATEGORY = VHS_CATEGORY
    MODULE = VHS_MODULE
    RETURN_TYPES = ("IMAGE", "INT", "AUDIO", "VHS_VIDEOINFO")
    RETURN_NAMES = ("IMAGE", "frame_count", "audio", "video_info")
    VALIDATES = ("video",)
    FILE_INPUT = "video"

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        big = 2**63 - 1
        return {
            "required": {
                "video": COMBO(env.dirs.input_videos()),
                "force_rate": FLOAT(0, min=0, max=60, step=1, disable=0),
                "custom_width": INT(0, min=0, max=8192, disable=0),
                "custom_height": INT(0, min=0, max=8192, disable=0),
                "frame_load_cap": INT(0, min=0, max=big, step=1, disable=0),
                "skip_first_frames": INT(0, min=0, max=big, step=1),
                "select_every_nth": INT(1, min=1, max=big, step=1),
            },
            "optional": {"meta_batch": LINK("VHS_BatchManager"), "vae": LINK("VAE")},
            "hidden": {"force_size": "STRING", "unique_id": "UNIQUE_ID"},
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        path = ctx.dirs.input_file(inputs.as_str("video"))
        frames, source_fps = read_video_frames(path)
        fps = source_fps
        indices = list(range(len(frames)))
        rate = inputs.as_float("force_rate")
        if rate > 0 and frames:
            total = len(frames) / source_fps
            indices = [
                min(len(frames) - 1, int(i * source_fps / rate)) for i in range(int(total * rate))
            ]
            fps = rate
        indices = indices[inputs.as_int("skip_first_frames") :: inputs.as_int("select_every_nth")]
        cap = inputs.as_int("frame_load_cap")
        if cap > 0:
            indices = indices[:cap]
        height, width = frames[0].shape[:2] if frames else (64, 64)
        new_w, new_h = inputs.as_int("custom_width"), inputs.as_int("custom_height")
        if new_w or new_h:
            new_w = new_w or max(1, round(width * new_h / height))
            new_h = new_h or max(1, round(height * new_w / width))
            width, height = new_w, new_h
        w, h = width, height
        images = Images(
            len(indices), h, w, 3, lambda i: resize(frames[indices[i]], w, h), ctx.signature
        )
        audio = read_audio(path)
        info = {"source_fps": source_fps, "source_frame_count": len(frames), "loaded_fps": fps}
        return NodeOutput((images, images.count, audio, info))


def _vhs_counter(folder: str, filename: str) -> int:
    matcher = re.compile(f"{re.escape(filename)}_(\\d+)\\D*\\..+", re.IGNORECASE)
    highest = 0
    for existing in os.listdir(folder):
        match = matcher.fullmatch(existing)
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1


class VHSVideoCombine(Node):
    CLASS = "VHS_VideoCombine"
    DISPLAY = "Video Combine" + VHS_SUFFIX
    CATEGORY = VHS_CATEGORY
    MODULE = VHS_MODULE
    RETURN_TYPES = ("VHS_FILENAMES",)
    RETURN_NAMES = ("Filenames",)
    OUTPUT_NODE = True
    ACCEPTS_EXTRA_INPUTS = True

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "images": LINK("IMAGE"),
                "frame_rate": FLOAT(8, min=1, step=1),
                "loop_count": INT(0, min=0, max=100, step=1),
                "filename_prefix": STRING("AnimateDiff"),
                "format": COMBO(VHS_FORMATS),
                "pingpong": BOOLEAN(False),
                "save_output": BOOLEAN(True),
            },
            "optional": {
                "audio": LINK("AUDIO"),
                "meta_batch": LINK("VHS_BatchManager"),
                "vae": LINK("VAE"),
            },
            "hidden": {**hidden_prompt(), "unique_id": "UNIQUE_ID"},
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        images = inputs.get("images", Images)
        fmt, fps = inputs.as_str("format"), inputs.as_float("frame_rate")
        if inputs.as_bool("pingpong") and images.count > 2:
            order = list(range(images.count)) + list(range(images.count - 2, 0, -1))
            images = images.select(order, images.sig)
        save_output = inputs.as_bool("save_output")
        kind = "output" if save_output else "temp"
        base = ctx.dirs.output if save_output else ctx.dirs.temp
        target = save_target(inputs.as_str("filename_prefix"), base)
        counter = _vhs_counter(str(target.folder), target.filename)
        stem = f"{target.filename}_{counter:05}"
        workflow = f"{stem}.png"
        save_png(target.folder / workflow, images.frame(0), 4, {"prompt": ctx.prompt})
        files = [str(target.folder / workflow)]
        audio = inputs.optional("audio", Audio)
        if fmt in ("image/gif", "image/webp"):
            ext = fmt.split("/")[1]
            file = f"{stem}.{ext}"
            write_animated(
                target.folder / file, images, fps, ext.upper(), inputs.as_int("loop_count")
            )
            files.append(str(target.folder / file))
        elif fmt in VHS_ENCODERS:
            ext, codec, container, default_crf = VHS_ENCODERS[fmt]
            crf = float(inputs.raw("crf", default_crf))
            pix_fmt = str(inputs.raw("pix_fmt", "yuv420p"))
            file = f"{stem}.{ext}"
            write_video(target.folder / file, images, fps, codec, container, crf, pix_fmt)
            files.append(str(target.folder / file))
            if audio is not None and audio.samples > 0:
                if inputs.raw("trim_to_audio", False) is True:
                    keep = max(1, min(images.count, round(audio.duration * fps)))
                    images = images.select(list(range(keep)), images.sig)
                fitted = audio.fitted(images.count / fps)
                file = f"{stem}-audio.{ext}"
                audio_codec = "aac" if ext == "mp4" else "libopus"
                rate = 48000 if audio_codec == "libopus" else None
                write_video(
                    target.folder / file,
                    images,
                    fps,
                    codec,
                    container,
                    crf,
                    pix_fmt,
                    audio=fitted,
                    audio_codec=audio_codec,
                    audio_rate=rate,
                )
                files.append(str(target.folder / file))
        else:
            raise ValueError(f"format {fmt!r} is not supported by the Comfyline ComfyUI simulator")
        preview = {
            "filename": file,
            "subfolder": target.subfolder,
            "type": kind,
            "format": fmt,
            "frame_rate": inputs.raw("frame_rate"),
            "workflow": workflow,
            "fullpath": files[-1],
        }
        return NodeOutput(((save_output, files),), {"gifs": [preview]})


NODES: tuple[type[Node], ...] = (
    VHSLoadVideo,
    VHSVideoCombine,
)
