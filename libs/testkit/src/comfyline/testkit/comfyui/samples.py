"""Sample graphs and files for tests: model-free stock graphs that also run on a real CPU
ComfyUI, the SDXL txt2img template, PNGs to upload, and a probe for media files."""

from __future__ import annotations

import io
import uuid
from typing import Any

from comfyline.testkit.comfyui.client import Frame


def fresh_color() -> int:
    """A random 24-bit colour, so a graph is never served from the cache by accident."""
    return uuid.uuid4().int & 0xFFFFFF


def empty_image_graph(
    prefix: str = "proto",
    width: int = 32,
    height: int = 32,
    batch: int = 1,
    color: int | None = None,
    saver: str = "SaveImage",
) -> dict[str, Any]:
    """`cpu-smoke`: EmptyImage -> SaveImage (or another image output node), model-free."""
    save_inputs: dict[str, Any] = {"images": ["1", 0]}
    if saver == "SaveImage":
        save_inputs["filename_prefix"] = prefix
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {
                "width": width,
                "height": height,
                "batch_size": batch,
                "color": fresh_color() if color is None else color,
            },
        },
        "2": {"class_type": saver, "inputs": save_inputs},
    }


def slow_graph(blurs: int = 3, size: int = 1024) -> dict[str, Any]:
    """EmptyImage -> `blurs` x ImageBlur(31) -> PreviewImage: about 1 s per blur on a real CPU
    ComfyUI; the simulator is made slow with `--node-delay ImageBlur=...`. Node ids: 1, 10.., 99."""
    graph: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": fresh_color()},
        }
    }
    previous = "1"
    for index in range(blurs):
        node = str(10 + index)
        graph[node] = {
            "class_type": "ImageBlur",
            "inputs": {"image": [previous, 0], "blur_radius": 31, "sigma": 5.0},
        }
        previous = node
    graph["99"] = {"class_type": "PreviewImage", "inputs": {"images": [previous, 0]}}
    return graph


def outputs_of(frames: list[Frame]) -> dict[str, Any]:
    """`{node_id: output}` of a run's `executed` frames."""
    return {f.data["node"]: f.data["output"] for f in frames if f.type == "executed"}


def png_bytes(size: tuple[int, int], color: tuple[int, int, int], alpha: bool = False) -> bytes:
    """A PNG to upload; with `alpha`, its right half is transparent (mask 1 = repaint)."""
    from PIL import Image

    image = Image.new("RGBA" if alpha else "RGB", size, (*color, 0) if alpha else color)
    if alpha:
        image.paste((*color, 255), (0, 0, size[0] // 2, size[1]))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def txt2img_graph(
    seed: int = 123456,
    text: str = "photo of a red fox in snow",
    size: int = 64,
    ckpt: str = "RealVisXL_V5.0_fp16.safetensors",
    steps: int = 4,
) -> dict[str, Any]:
    """The SDXL txt2img template of workflows.md (node 3 samples, node 9 saves)."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": size, "height": size, "batch_size": 1},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "bad hands", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 5.0,
                "sampler_name": "dpmpp_sde",
                "scheduler": "karras",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {
            "class_type": "SaveImage",
            "inputs": {"filename_prefix": "txt2img", "images": ["8", 0]},
        },
    }


def probe_media(data: bytes) -> dict[str, Any]:
    """What a media file holds: container, video (codec, size, frames, fps), audio (codec,
    rate, seconds)."""
    import av

    info: dict[str, Any] = {"format": None, "audio": None, "video": None}
    with av.open(io.BytesIO(data), mode="r") as container:
        info["format"] = container.format.name
        if container.streams.video:
            video = container.streams.video[0]
            frames = sum(1 for _ in container.decode(video))
            info["video"] = {
                "codec": video.codec_context.name,
                "width": video.width,
                "height": video.height,
                "frames": frames,
                "fps": float(video.average_rate or 0),
            }
    with av.open(io.BytesIO(data), mode="r") as container:
        if container.streams.audio:
            audio = container.streams.audio[0]
            samples = sum(frame.samples for frame in container.decode(audio))
            info["audio"] = {
                "codec": audio.codec_context.name,
                "rate": audio.rate,
                "seconds": samples / (audio.rate or 1),
            }
    return info
