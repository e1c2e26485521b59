"""Every job kind's template (workflows.md) runs and writes real files of the right kind and size,
reported where the real save nodes report them; outputs follow the inputs and the seed."""

from __future__ import annotations

import io
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from PIL import Image

from comfyline.testkit.comfyui import (
    ComfyClient,
    outputs_of,
    png_bytes,
    probe_media,
    txt2img_graph,
)

MakeSim = Callable[..., Awaitable[ComfyClient]]


async def test_txt2img_writes_a_png_of_the_latent_size_with_per_step_progress(
    sim: ComfyClient,
) -> None:
    frames = await sim.run_ok(txt2img_graph(size=96, steps=5))
    progress = [f.data for f in frames if f.type == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [
        (i, 5, "3") for i in range(1, 6)
    ]
    image = outputs_of(frames)["9"]["images"][0]
    assert image == {"filename": "txt2img_00001_.png", "subfolder": "", "type": "output"}
    with Image.open(io.BytesIO(await sim.fetch(image))) as png:
        assert png.size == (96, 96) and png.format == "PNG"
        assert "prompt" in png.info


async def test_outputs_follow_seed_and_prompt_and_repeat_exactly(make_sim: MakeSim) -> None:
    first, second = await make_sim(), await make_sim()
    results = []
    for client, graph in (
        (first, txt2img_graph(seed=1)),
        (second, txt2img_graph(seed=1)),
        (first, txt2img_graph(seed=2)),
        (first, txt2img_graph(seed=1, text="a cat")),
    ):
        frames = await client.run_ok(graph)
        data = await client.fetch(outputs_of(frames)["9"]["images"][0])
        with Image.open(io.BytesIO(data)) as png:
            results.append(png.tobytes())
    assert results[0] == results[1]
    assert results[0] != results[2] and results[0] != results[3]


async def test_a_missing_model_fails_validation_with_value_not_in_list(sim: ComfyClient) -> None:
    reply = await sim.prompt(txt2img_graph(ckpt="not_installed.safetensors"))
    assert reply.status == 400
    error = reply.json()["node_errors"]["4"]["errors"][0]
    assert error["type"] == "value_not_in_list"
    assert error["details"].startswith("ckpt_name: 'not_installed.safetensors' not in [")
    info = await sim.get_json("/object_info/CheckpointLoaderSimple")
    options = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    assert "RealVisXL_V5.0_fp16.safetensors" in options


async def test_inpaint_keeps_the_unmasked_area_of_the_source(sim: ComfyClient) -> None:
    await sim.upload("src.png", png_bytes((64, 64), (10, 200, 30)))
    await sim.upload("mask.png", png_bytes((64, 64), (255, 255, 255), alpha=True))
    graph = txt2img_graph()
    del graph["5"]
    graph["10"] = {"class_type": "LoadImage", "inputs": {"image": "src.png"}}
    graph["11"] = {
        "class_type": "LoadImageMask",
        "inputs": {"image": "mask.png", "channel": "alpha"},
    }
    graph["12"] = {
        "class_type": "VAEEncodeForInpaint",
        "inputs": {"pixels": ["10", 0], "vae": ["4", 2], "mask": ["11", 0], "grow_mask_by": 0},
    }
    graph["3"]["inputs"]["latent_image"] = ["12", 0]
    graph["9"]["inputs"]["filename_prefix"] = "inpaint"
    frames = await sim.run_ok(graph)
    with Image.open(io.BytesIO(await sim.fetch(outputs_of(frames)["9"]["images"][0]))) as png:
        rgb = png.convert("RGB")
        assert rgb.getpixel((5, 5)) == (10, 200, 30)  # opaque: kept
        assert rgb.getpixel((60, 5)) != (10, 200, 30)  # transparent = mask 1: repainted
    graph["12"] = {
        "class_type": "InpaintModelConditioning",
        "inputs": {
            "positive": ["6", 0],
            "negative": ["7", 0],
            "vae": ["4", 2],
            "pixels": ["10", 0],
            "mask": ["11", 0],
            "noise_mask": True,
        },
    }
    graph["3"]["inputs"].update(positive=["12", 0], negative=["12", 1], latent_image=["12", 2])
    await sim.run_ok(graph)


def wan_i2v(length: int = 9) -> dict[str, Any]:
    return {
        "37": {
            "class_type": "UNETLoader",
            "inputs": {
                "unet_name": "wan2.1_i2v_480p_14B_fp16.safetensors",
                "weight_dtype": "default",
            },
        },
        "38": {
            "class_type": "CLIPLoader",
            "inputs": {
                "clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                "type": "wan",
                "device": "default",
            },
        },
        "39": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
        "49": {
            "class_type": "CLIPVisionLoader",
            "inputs": {"clip_name": "clip_vision_h.safetensors"},
        },
        "52": {"class_type": "LoadImage", "inputs": {"image": "start.png"}},
        "51": {
            "class_type": "CLIPVisionEncode",
            "inputs": {"clip_vision": ["49", 0], "image": ["52", 0], "crop": "none"},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "she smiles", "clip": ["38", 0]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "static", "clip": ["38", 0]}},
        "50": {
            "class_type": "WanImageToVideo",
            "inputs": {
                "positive": ["6", 0],
                "negative": ["7", 0],
                "vae": ["39", 0],
                "width": 64,
                "height": 48,
                "length": length,
                "batch_size": 1,
                "clip_vision_output": ["51", 0],
                "start_image": ["52", 0],
            },
        },
        "54": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["37", 0], "shift": 8.0}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 1,
                "steps": 3,
                "cfg": 6.0,
                "sampler_name": "uni_pc",
                "scheduler": "simple",
                "denoise": 1.0,
                "model": ["54", 0],
                "positive": ["50", 0],
                "negative": ["50", 1],
                "latent_image": ["50", 2],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["39", 0]}},
        "60": {"class_type": "CreateVideo", "inputs": {"images": ["8", 0], "fps": 16.0}},
        "61": {
            "class_type": "SaveVideo",
            "inputs": {
                "video": ["60", 0],
                "filename_prefix": "video/i2v",
                "format": "auto",
                "codec": "auto",
            },
        },
    }


async def test_wan_i2v_saves_an_h264_mp4_under_images_with_animated(sim: ComfyClient) -> None:
    await sim.upload("start.png", png_bytes((64, 48), (200, 10, 10)))
    frames = await sim.run_ok(wan_i2v(length=9))
    saved = outputs_of(frames)["61"]
    assert saved == {
        "images": [{"filename": "i2v_00001_.mp4", "subfolder": "video", "type": "output"}],
        "animated": [True],
    }
    info = probe_media(await sim.fetch(saved["images"][0]))
    assert info["video"] == {"codec": "h264", "width": 64, "height": 48, "frames": 9, "fps": 16.0}


async def test_wan22_two_stage_t2v_writes_webm_and_animated_webp(sim: ComfyClient) -> None:
    graph = wan_i2v()
    for node in ("49", "51", "52"):
        del graph[node]
    graph["50"] = {
        "class_type": "EmptyHunyuanLatentVideo",
        "inputs": {"width": 64, "height": 32, "length": 5, "batch_size": 1},
    }
    common = {
        "cfg": 3.5,
        "sampler_name": "euler",
        "scheduler": "simple",
        "steps": 4,
        "positive": ["6", 0],
        "negative": ["7", 0],
    }
    graph["3"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            **common,
            "model": ["54", 0],
            "add_noise": "enable",
            "noise_seed": 5,
            "start_at_step": 0,
            "end_at_step": 2,
            "return_with_leftover_noise": "enable",
            "latent_image": ["50", 0],
        },
    }
    graph["4"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            **common,
            "model": ["54", 0],
            "add_noise": "disable",
            "noise_seed": 0,
            "start_at_step": 2,
            "end_at_step": 10000,
            "return_with_leftover_noise": "disable",
            "latent_image": ["3", 0],
        },
    }
    graph["8"]["inputs"]["samples"] = ["4", 0]
    graph["60"] = {
        "class_type": "SaveWEBM",
        "inputs": {
            "images": ["8", 0],
            "filename_prefix": "t2v",
            "codec": "vp9",
            "fps": 16.0,
            "crf": 32.0,
        },
    }
    graph["61"] = {
        "class_type": "SaveAnimatedWEBP",
        "inputs": {
            "images": ["8", 0],
            "filename_prefix": "t2v",
            "fps": 16.0,
            "lossless": False,
            "quality": 80,
            "method": "default",
        },
    }
    frames = await sim.run_ok(graph)
    ticks = [(f.data["node"], f.data["value"]) for f in frames if f.type == "progress"]
    assert ticks == [("3", 1), ("3", 2), ("4", 1), ("4", 2)]
    saved = outputs_of(frames)
    assert saved["60"]["animated"] == [True] and saved["60"]["images"][0]["filename"].endswith(
        ".webm"
    )
    webm = probe_media(await sim.fetch(saved["60"]["images"][0]))
    assert webm["video"]["codec"] == "vp9" and webm["video"]["frames"] == 5
    with Image.open(io.BytesIO(await sim.fetch(saved["61"]["images"][0]))) as webp:
        assert webp.format == "WEBP" and getattr(webp, "n_frames", 1) == 5


def f5_graph(speech_text: str, speed: float = 1.0, saver: str = "SaveAudio") -> dict[str, Any]:
    save: dict[str, Any] = {"audio": ["2", 0], "filename_prefix": "audio/tts"}
    if saver == "SaveAudioMP3":
        save["quality"] = "128k"
    if saver == "SaveAudioOpus":
        save["quality"] = "64k"
    return {
        "1": {"class_type": "LoadAudio", "inputs": {"audio": "ref.flac"}},
        "2": {
            "class_type": "F5TTSAudioInputs",
            "inputs": {
                "sample_audio": ["1", 0],
                "sample_text": "reference",
                "speech": speech_text,
                "seed": 42,
                "model": "F5v1",
                "vocoder": "auto",
                "speed": speed,
                "model_type": "F5TTS_Base",
            },
        },
        "3": {"class_type": saver, "inputs": save},
    }


@pytest.mark.parametrize(
    ("saver", "codec", "ext"),
    [
        ("SaveAudio", "flac", "flac"),
        ("SaveAudioMP3", "mp3", "mp3"),
        ("SaveAudioOpus", "opus", "opus"),
    ],
)
async def test_tts_audio_length_follows_text_and_speed(
    sim: ComfyClient, speech_flac: bytes, saver: str, codec: str, ext: str
) -> None:
    await sim.upload("ref.flac", speech_flac, content_type="audio/flac")
    text = "Hello, this is my cloned voice speaking." * 2
    frames = await sim.run_ok(f5_graph(text, 1.0, saver))
    entry = outputs_of(frames)["3"]["audio"][0]
    assert entry == {"filename": f"tts_00001_.{ext}", "subfolder": "audio", "type": "output"}
    assert len([f for f in frames if f.type == "progress"]) == 32
    info = probe_media(await sim.fetch(entry))
    assert info["audio"]["codec"].startswith(codec)
    assert abs(info["audio"]["seconds"] - len(text) / 14.0) < 0.2
    frames = await sim.run_ok(f5_graph(text, 1.5, saver))
    slower = probe_media(await sim.fetch(outputs_of(frames)["3"]["audio"][0]))
    assert abs(slower["audio"]["seconds"] - 1.5 * len(text) / 14.0) < 0.2


async def test_chatterbox_speaks_with_no_ui_of_its_own(sim: ComfyClient) -> None:
    graph = {
        "2": {
            "class_type": "ChatterboxTTS",
            "inputs": {
                "model_pack_name": "resembleai_default_voice",
                "text": "Short line.",
                "max_new_tokens": 1000,
                "flow_cfg_scale": 0.7,
                "exaggeration": 0.5,
                "temperature": 0.8,
                "cfg_weight": 0.5,
                "repetition_penalty": 1.2,
                "min_p": 0.05,
                "top_p": 1.0,
                "seed": 42,
                "use_watermark": False,
            },
        },
        "3": {
            "class_type": "SaveAudioMP3",
            "inputs": {"audio": ["2", 0], "filename_prefix": "audio/cb", "quality": "V0"},
        },
    }
    frames = await sim.run_ok(graph)
    assert list(outputs_of(frames)) == ["3"]
    info = probe_media(await sim.fetch(outputs_of(frames)["3"]["audio"][0]))
    assert info["audio"]["codec"].startswith("mp3")


async def test_sonic_makes_a_talking_mp4_with_sound(sim: ComfyClient, speech_flac: bytes) -> None:
    await sim.upload("face.png", png_bytes((80, 64), (220, 180, 160)))
    await sim.upload("speech.flac", speech_flac, content_type="audio/flac")
    graph = {
        "16": {
            "class_type": "ImageOnlyCheckpointLoader",
            "inputs": {"ckpt_name": "svd_xt_1_1.safetensors"},
        },
        "14": {
            "class_type": "SONICTLoader",
            "inputs": {
                "model": ["16", 0],
                "sonic_unet": "unet.pth",
                "ip_audio_scale": 1.0,
                "use_interframe": True,
                "dtype": "fp16",
            },
        },
        "18": {"class_type": "LoadImage", "inputs": {"image": "face.png"}},
        "19": {"class_type": "LoadAudio", "inputs": {"audio": "speech.flac"}},
        "17": {
            "class_type": "SONIC_PreData",
            "inputs": {
                "clip_vision": ["16", 1],
                "vae": ["16", 2],
                "audio": ["19", 0],
                "image": ["18", 0],
                "weight_dtype": ["14", 1],
                "min_resolution": 128,
                "duration": 30.0,
                "expand_ratio": 0.5,
            },
        },
        "15": {
            "class_type": "SONICSampler",
            "inputs": {
                "model": ["14", 0],
                "data_dict": ["17", 0],
                "seed": 1,
                "inference_steps": 3,
                "dynamic_scale": 1.0,
                "fps": 10.0,
            },
        },
        "21": {
            "class_type": "CreateVideo",
            "inputs": {"images": ["15", 0], "audio": ["19", 0], "fps": ["15", 1]},
        },
        "20": {
            "class_type": "SaveVideo",
            "inputs": {
                "video": ["21", 0],
                "filename_prefix": "video/talk",
                "format": "mp4",
                "codec": "h264",
            },
        },
    }
    frames = await sim.run_ok(graph)
    entry = outputs_of(frames)["20"]["images"][0]
    assert entry["subfolder"] == "video"
    info = probe_media(await sim.fetch(entry))
    assert info["video"]["frames"] == 20 and info["video"]["height"] == 128
    assert info["audio"]["codec"] == "aac"


async def test_latentsync_through_vhs_reports_gifs_with_the_audio_file(
    sim: ComfyClient, speech_flac: bytes, face_video: bytes
) -> None:
    await sim.upload("src.mp4", face_video, content_type="video/mp4")
    await sim.upload("speech.flac", speech_flac, content_type="audio/flac")
    graph = {
        "40": {
            "class_type": "VHS_LoadVideo",
            "inputs": {
                "video": "src.mp4",
                "force_rate": 25,
                "custom_width": 0,
                "custom_height": 0,
                "frame_load_cap": 0,
                "skip_first_frames": 0,
                "select_every_nth": 1,
            },
        },
        "37": {"class_type": "LoadAudio", "inputs": {"audio": "speech.flac"}},
        "55": {
            "class_type": "VideoLengthAdjuster",
            "inputs": {
                "images": ["40", 0],
                "audio": ["37", 0],
                "mode": "pingpong",
                "fps": 25.0,
                "silent_padding_sec": 0.5,
            },
        },
        "54": {
            "class_type": "LatentSyncNode",
            "inputs": {
                "images": ["55", 0],
                "audio": ["55", 1],
                "seed": 1247,
                "lips_expression": 1.5,
                "inference_steps": 4,
            },
        },
        "41": {
            "class_type": "VHS_VideoCombine",
            "inputs": {
                "images": ["54", 0],
                "audio": ["54", 1],
                "frame_rate": 25,
                "loop_count": 0,
                "filename_prefix": "latentsync",
                "format": "video/h264-mp4",
                "pingpong": False,
                "save_output": True,
                "pix_fmt": "yuv420p",
                "crf": 19,
                "save_metadata": True,
                "trim_to_audio": False,
            },
        },
    }
    frames = await sim.run_ok(graph)
    gif = outputs_of(frames)["41"]["gifs"][0]
    assert gif["filename"] == "latentsync_00001-audio.mp4"
    assert (gif["subfolder"], gif["type"], gif["format"]) == ("", "output", "video/h264-mp4")
    assert gif["frame_rate"] == 25 and gif["workflow"] == "latentsync_00001.png"
    assert gif["fullpath"].endswith("output/latentsync_00001-audio.mp4")
    info = probe_media(await sim.fetch(gif))
    assert info["video"]["frames"] == math.ceil(2.5 * 25) and info["audio"]["codec"] == "aac"
    silent = await sim.get("/view", filename="latentsync_00001.mp4", type="output")
    assert silent.status == 200


async def test_subfolders_in_prefixes_are_honoured_and_counters_climb(sim: ComfyClient) -> None:
    graph = txt2img_graph()
    graph["9"]["inputs"]["filename_prefix"] = f"deep/{uuid.uuid4().hex[:6]}/img"
    names = []
    for seed in (1, 2):
        graph["3"]["inputs"]["seed"] = seed
        frames = await sim.run_ok(graph)
        names.append(outputs_of(frames)["9"]["images"][0])
    assert [n["filename"] for n in names] == ["img_00001_.png", "img_00002_.png"]
    assert names[0]["subfolder"].startswith("deep/")
